"""Many prompts for ``heatmap``: read a prompts file and explain each prompt into its own folder.

``infodecomp heatmap --prompts FILE --out OUT`` reads every line first (:func:`read_prompts`:
one bad line stops the run before the model loads, naming the line), then explains each item
(:func:`~infodecomp.explain`) into ``OUT/<id>/`` (the files of a single ``heatmap``) and writes
its row (MI and each word's CMI with standard errors and 95% intervals) to ``OUT/rows.jsonl``
through the evaluation runner: a rerun resumes, a kill loses no finished item, a rerun with
other settings is refused. :func:`summarize` and :func:`table` are what the runner (and
``infodecomp eval summarize OUT``) use for this task.

The random streams of an item are keyed by its image's content (``explain``'s default, as for a
single ``heatmap``), so an item's numbers depend only on its image, prompt, words and seed and
the settings, and equal those of ``infodecomp heatmap`` on the same inputs.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..explanation import context_warnings, explain
from ..images import load_image
from ..report.datasets import map_pictures, thumbnail
from ..results import entry_warnings, format_entry, output_folder, versions
from ..sampling import MAX_SEED, Sampling, check_sampling
from ..words import check_text, distinct_words, word_spans
from . import metrics
from .common import sampling_line
from .datasets import InvalidLine, json_object
from .items import BadItemError
from .runner import PICTURES, Task, _stderr, run

KEYS = ("prompt", "image", "seed", "words", "id")
# An id names the item's folder in OUT: plain characters, and none of the runner's own files.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


@dataclass(frozen=True)
class PromptItem:
    """One prompt to explain on one image.

    Attributes:
        id: stable id, the name of its folder in the output folder.
        prompt: the prompt (stripped).
        image: the image file.
        seed: seed of its random draws.
        words: words to explain (lower case), or ``None`` for every word.
        source: ``"file:line"``, for messages.
    """

    id: str
    prompt: str
    image: Path
    seed: int
    words: tuple[str, ...] | None = None
    source: str = ""


def read_prompts(
    path: str | Path,
    *,
    image: str | Path | None = None,
    seed: int = 0,
    words: str | list[str] | None = None,
) -> tuple[list[PromptItem], dict[str, Any]]:
    """The items of a prompts file, every line checked (images decoded, words found in their
    prompt), and the data settings a resumed run must repeat (the file, ``image``, ``words``).

    The file is plain text (one prompt per line) or JSON lines (suffix ``.jsonl``, or a first
    prompt line that starts with ``{``): ``{"prompt": str, "image"?: str, "seed"?: int,
    "words"?: [str, ...] or "a,b", "id"?: str or int}``. Blank lines and lines starting with
    ``#`` are skipped. A line without an image, seed or words takes ``image``, ``seed`` or
    ``words`` (default: every word of its prompt); a relative image path is relative to the
    file's folder (``image`` to the current one). Without an ``id`` a line's id is ``p`` and a
    short hash of its prompt, image content, seed and words, so that reordering or extending
    the file keeps every item's folder and row.

    Raises ``ValueError`` with one line (``file:line: why`` for a bad line).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"prompts file {str(path)!r} not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise ValueError(f"cannot read prompts file {str(path)!r}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"prompts file {str(path)!r} is not UTF-8 text") from None
    # Split on "\n" only: str.splitlines would also split on characters JSON strings may hold.
    lines = [
        (number, line.strip())
        for number, line in enumerate(text.split("\n"), start=1)
        if line.strip() and not line.strip().startswith("#")
    ]
    if not lines:
        raise ValueError(f"prompts file {str(path)!r} holds no prompts")
    is_jsonl = path.suffix == ".jsonl" or lines[0][1].startswith("{")
    default_image = Path(image) if image is not None else None
    try:
        default_words = _words(words) if words is not None else None
    except InvalidLine as err:
        raise ValueError(f"`words`: {err}") from None
    if default_words is not None and not default_words:
        raise ValueError("`words` names no word")
    checked: dict[Path, str] = {}  # image file -> content hash, each decoded once
    items: list[PromptItem] = []
    seen: dict[str, str] = {}  # lower-case id -> where it was first (folders may ignore case)
    for number, line in lines:
        source = f"{path}:{number}"
        try:
            record = _record(line) if is_jsonl else {"prompt": line}
            item = _item(record, source, path.parent, default_image, seed, default_words, checked)
            first = seen.get(item.id.lower())
            if first is not None:
                raise InvalidLine(
                    f"repeats {first} (same prompt, image, seed and words)"
                    if record.get("id") is None
                    else f"duplicate id {item.id!r} (first at {first}; ids name folders, "
                    "compared ignoring case)"
                )
        except InvalidLine as err:
            raise BadItemError(f"{source}: {err}") from None
        seen[item.id.lower()] = source
        items.append(item)
    data = {
        "prompts": str(path.resolve()),
        "image": str(default_image.resolve()) if default_image is not None else None,
        "words": list(default_words) if default_words is not None else None,
    }
    return items, data


def _record(line: str) -> dict[str, Any]:
    record = json_object(line)
    unknown = sorted(set(record) - set(KEYS))
    if unknown:
        raise InvalidLine(f"unknown key {unknown[0]!r} (keys: {', '.join(KEYS)})")
    return record


def _item(
    record: dict[str, Any],
    source: str,
    folder: Path,
    default_image: Path | None,
    default_seed: int,
    default_words: tuple[str, ...] | None,
    checked: dict[Path, str],
) -> PromptItem:
    """The line's item, checked: a prompt with words, a readable image, a seed, its words in
    the prompt, an id that can name a folder."""
    prompt = record.get("prompt")
    if not isinstance(prompt, str):
        raise InvalidLine("missing key 'prompt'" if prompt is None else "'prompt' must be a string")
    prompt = prompt.strip()
    if not prompt:
        raise InvalidLine("the prompt is empty")
    try:
        check_text(prompt)
    except ValueError as err:
        raise InvalidLine(str(err)) from None
    if not distinct_words(prompt):
        raise InvalidLine(f"the prompt {prompt!r} has no words (letters or digits) to explain")

    name = record.get("image")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise InvalidLine("'image' must be a non-empty string (a path)")
    image = folder / name if name is not None else default_image
    if image is None:
        raise InvalidLine('no image: give the line an "image" or pass `image`')
    if image not in checked:
        try:
            load_image(image, 8)
        except ValueError as err:
            raise InvalidLine(str(err)) from None
        checked[image] = hashlib.sha256(image.read_bytes()).hexdigest()

    seed = record.get("seed", default_seed)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InvalidLine(f"'seed' must be an integer from 0 to 2**64 - 1, got {seed!r}")

    words = default_words
    if record.get("words") is not None:
        words = _words(record["words"])
        if not words:
            raise InvalidLine("'words' names no word")
    for word in words or ():
        try:
            word_spans(prompt, word)
        except ValueError as err:
            raise InvalidLine(str(err)) from None

    if record.get("id") is not None:
        item_id = record["id"]
        if isinstance(item_id, bool) or not isinstance(item_id, (str, int)):
            raise InvalidLine("'id' must be a string or integer")
        item_id = str(item_id).strip()
        if not _ID.fullmatch(item_id) or item_id.endswith((".json", ".jsonl")):
            raise InvalidLine(
                f"id {item_id!r} cannot name a folder: use up to 100 letters, digits, '_', '-' "
                "or '.', starting with a letter or digit (and not ending in .json or .jsonl)"
            )
    else:
        key = json.dumps([prompt, checked[image], seed, words])
        item_id = "p" + hashlib.sha256(key.encode()).hexdigest()[:10]
    return PromptItem(item_id, prompt, image, seed, words, source)


def _words(value: Any) -> tuple[str, ...]:
    """Words from a list of strings or a comma-separated string, stripped and lower-cased."""
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
        raise InvalidLine("'words' must be a list of strings or a comma-separated string")
    return tuple(dict.fromkeys(w.strip().lower() for w in value if w.strip()))


def explain_prompts(
    model: Any,
    items: list[PromptItem],
    out: str | Path,
    *,
    data: dict[str, Any],
    sampling: Sampling | None = None,
    context: Literal["remove", "pad"] = "remove",
    check_context: bool = False,
    attention: bool = True,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    scale: Literal["word", "shared"] = "word",
    fmt: str = "png",
) -> dict[str, Any] | None:
    """Explain every item not yet in ``out`` into ``out/<id>/`` and write its row; return the
    summary (``None`` on the processes other than the main one under Accelerate).

    ``model`` is a loaded :class:`~infodecomp.models.DiffusersModel`, ``data`` the settings
    :func:`read_prompts` returned, ``sampling`` the draws of every item (its seed the default,
    recorded; a line's own ``seed`` replaces it for that item); ``scale`` and ``fmt``
    the figures' (:meth:`~infodecomp.Explanation.save`; not settings of the numbers); the rest
    as for :func:`~infodecomp.explain`. Every prompt's length is checked before any is explained.
    With ``check_context``, a context warning is a line of ``log`` (default: standard error)
    naming the item, and the row holds each word's check (``"context_check"``).

    Raises ``ValueError`` if ``out`` holds a run with other settings or items, or another run
    writes into it.
    """
    for item in items:
        try:
            model.check_prompt(item.prompt)
        except ValueError as err:
            raise BadItemError(f"{item.source}: {err}") from None
    # Sized once for the model, not probed again per prompt.
    sampling = check_sampling(sampling).resolve(model)
    settings = {
        "task": "prompts",
        **data,
        "sampling": sampling.describe(),
        "context": context,
        # (only when on: a folder written before the option resumes as it was)
        **({"check_context": True} if check_context else {}),
        "attention": attention,
        **model.describe(),
        "versions": versions(),
    }
    out = Path(out)
    say = log or _stderr

    def measure(item: PromptItem) -> dict[str, Any]:
        result = explain(
            model,
            item.image,
            item.prompt,
            list(item.words) if item.words is not None else None,
            sampling=sampling.replace(seed=item.seed),
            context=context,
            check_context=check_context,
            attention=attention,
            progress=False,
            _warn=False,
        )
        for line in context_warnings(result.context_check, context):
            say(f"infodecomp: warning: {item.id}: {line}")
        result.estimate.settings["image"] = str(item.image)
        with output_folder(out / item.id) as folder:
            result.save(folder, scale=scale, fmt=fmt)
        pictures = {"image": thumbnail(result.image)}
        top = max(result.words, key=lambda w: _value(result.entry(w)))
        shape = pictures["image"].shape[:2]
        pictures |= map_pictures("map", result.heat_map(top, upsample=False), shape)
        return {
            "prompt": item.prompt,
            "image": str(item.image),
            "seed": item.seed,
            "mi": result.entry(),
            "cmi": {w: result.entry(w) for w in result.words},
            "n_evaluations": result.estimate.n_evaluations,
            **({"context_check": result.context_check} if check_context else {}),
            "folder": item.id,
            PICTURES: pictures,
        }

    def denoiser_rows(item: PromptItem) -> int:
        n_words = len(item.words or distinct_words(item.prompt))
        return sampling.rows(2 + (2 if check_context else 1) * n_words)

    task = Task("prompts", measure, denoiser_rows)
    return run(task, items, out, settings, progress=progress, log=log)


def _top_word(row: dict[str, Any]) -> str:
    """The word with the largest CMI in a row."""
    return max(row["cmi"], key=lambda w: _value(row["cmi"][w]))


def _value(entry: dict[str, Any]) -> float:
    return float("nan") if entry["value"] is None else entry["value"]


def summarize(rows: list[dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    """The mean MI over prompts (bootstrap 95% interval), the evaluations spent, and per prompt
    its MI and the word with the largest CMI."""
    return {
        "mean_mi": metrics.mean_with_ci(
            [_value(r["mi"]) for r in rows], seed=settings["sampling"]["seed"]
        ),
        "n_evaluations": sum(r["n_evaluations"] for r in rows),
        "prompts": [
            {
                "id": r["id"],
                "prompt": r["prompt"],
                "mi": r["mi"],
                "top_word": _top_word(r),
                "top_cmi": r["cmi"][_top_word(r)],
            }
            for r in rows
        ],
    }


def table(summary: dict[str, Any]) -> str:
    """One line per prompt: id, MI with its 95% interval, the word with the largest CMI."""
    prompts = summary.get("prompts", [])
    if not prompts:
        return "prompts: none explained yet"
    width = max(4, *(len(p["id"]) for p in prompts)) + 2
    heading = "MI, nats [95% interval]"
    mi_width = max(len(heading), *(len(_interval(p["mi"])) for p in prompts)) + 2
    lines = [f"{'id':<{width}}{heading:<{mi_width}}top word: CMI"]
    for p in prompts:
        mi, top = p["mi"], p["top_cmi"]
        flags = "".join(f"  (MI {w})" for w in entry_warnings(mi))
        lines.append(
            f"{p['id']:<{width}}{_interval(mi):<{mi_width}}{p['top_word']}: "
            f"{_interval(top, mi['value'])}{flags}"
        )
    settings = summary["settings"]
    lines.append(
        f"{summary['n_items']} prompts ({summary['n_skipped']} skipped), mean MI "
        f"{metrics.format_metric(summary['mean_mi'], 3)} nats; {sampling_line(settings)}, "
        f"{summary['n_evaluations']} denoiser evaluations"
    )
    return "\n".join(lines)


def _interval(entry: dict[str, Any], reference: float | None = None) -> str:
    """The value and its interval (:func:`format_entry`), or n/a."""
    if entry["value"] is None:
        return "n/a"
    return format_entry(entry, reference, flags="none")
