"""Run an evaluation over a dataset: rows written as they come, resumable, sharded.

Layout of an output folder ``DIR``:

* ``settings.json``: what the run measures (task, model, data, seed, draws, ...). A later run into
  the same folder must have the same settings (``limit`` may grow), or it is refused.
* ``rows.jsonl`` (one process) or ``rows.<rank>.jsonl`` (one file per process under Accelerate):
  one JSON line per item, written and flushed when the item is done. A half-written last line
  (a kill in the middle of a write) is detected and dropped on the next run.
* ``summary.json``: every metric as ``{"value", "ci95", "n"}``, rebuilt from the rows by
  :func:`summarize` (``infodecomp eval summarize DIR``).
* ``items/<id>.npz``: each item's small pictures (thumbnail, maps, masks), written whole just
  before its row, and ``report.html`` (:mod:`infodecomp.report.datasets`), rebuilt with the
  summary.
* ``batching.json`` (``batching.<rank>.json`` per process): the last session's denoiser calls,
  the rows they carried and their mean fill (rows / (calls x batch size)).

Items are assigned to processes by position (item ``i`` to process ``i % n``) and skipped if any
rows file already holds their id, so a rerun (with any number of processes) neither loses nor
repeats an item; each item's numbers depend only on the item, the seed and the settings (bit for
bit when one item is in flight; with several, to float rounding across resumes and shards, which
give an item other partners in its denoiser calls: :mod:`infodecomp.batching`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..batching import DEFAULT_IN_FLIGHT, BatchedDenoiser, Scheduler
from ..files import appending, remove_leftovers, write_atomic
from ..report.datasets import ITEMS, write_item_pictures, write_report
from .items import BadItemError

# The key under which a task's measure returns the item's pictures for the report: written to
# the item's file, never into its row.
PICTURES = "_pictures"

# Settings that may differ between runs into one folder: a larger limit or sample (more items; a
# sample's items are chosen by id, so a larger one keeps a smaller one's), how they
# are batched (rows agree to float rounding), and package versions (each row records its own).
RESUMABLE_KEYS = ("limit", "sample", "batch_size", "versions")
# Settings added after runs were made, and the value those runs had without them.
ADDED_DEFAULTS = {
    "protocol": "ours",
    "ranking": "fixed",
    "sample": None,
    "report_mi": False,
    # Sequential runs before the rule was recorded used the symmetric sequence.
    "sequential_rule": {"skew_factor": 0.0, "futility": "symmetric interval's upper end"},
}
# The item fields that hold files (by the items' schemas: images, masks, recorded noise): a
# fingerprint reads these by content; every other string is text, never probed as a path.
FILE_FIELDS = ("image", "masks", "noise")
# Each kind of run by the name its settings.json gives: the module with its summarize(rows,
# settings) and table(summary). Filled by the package (evaluate/__init__.py), which imports them.
TASKS: dict[str, Any] = {}


@dataclass
class Task:
    """One kind of evaluation with its model, as the runner sees it. (Its summary and table
    come from the evaluation's module, so :func:`summarize` needs no model.)

    Attributes:
        name: ``"compositional"``, ``"localization"``, ``"intervention"`` or ``"prompts"``.
        measure: item -> the item's row (a JSON-ready dict), from the item alone; it may hold
            the item's pictures for the report under :data:`PICTURES` (name: array).
        denoiser_rows: item -> denoiser rows (network evaluations) the item will take.
        denoisers: the denoisers ``measure`` calls, by name (``"model"``, ``"reference"``), each
            wrapped by :func:`~infodecomp.batching.batched`: the runner merges their
            calls across the items in flight. Empty: one item at a time.
        batch_size: rows per merged denoiser call (the sampling's).
    """

    name: str
    measure: Callable[[Any], dict[str, Any]]
    denoiser_rows: Callable[[Any], int]
    denoisers: dict[str, BatchedDenoiser] = dataclasses.field(default_factory=dict)
    batch_size: int | None = None


def process_state() -> tuple[int, int, Callable[[], None], Callable[[bool], bool]]:
    """``(rank, n_processes, barrier, all_ok)`` from Accelerate when launched by ``accelerate
    launch``, else a single process. ``all_ok(flag)`` is true when every process's flag is
    (a barrier too). ``ValueError`` if ``accelerate launch`` was asked for several processes
    but started this one alone (see :func:`lone_accelerate_process`)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        if lone_accelerate_process():
            raise ValueError(
                "`accelerate launch` was asked for several processes but started one (it shards "
                "only with --multi_gpu; --cpu or no flag runs a single process): run `accelerate "
                "launch --multi_gpu --num_processes N -m infodecomp eval ...` (GPUs, or CPU "
                "processes when torch sees no GPU), or `infodecomp eval ...` for one process"
            )
        return 0, 1, lambda: None, lambda ok: ok
    from accelerate import PartialState

    # Without CUDA, Accelerate needs cpu=True to join the processes (gloo) instead of running
    # each alone.
    state = PartialState(cpu=not torch.cuda.is_available())

    def all_ok(ok: bool) -> bool:
        flag = torch.tensor([1 if ok else 0], device=state.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        return bool(flag.item())

    return state.process_index, state.num_processes, state.wait_for_everyone, all_ok


def lone_accelerate_process() -> bool:
    """Whether ``accelerate launch`` started this process alone although asked for several:
    its single-process launcher (no ``--multi_gpu``; with or without ``--cpu``) sets
    ``ACCELERATE_USE_CPU``, and ``MASTER_ADDR`` only for ``--num_processes`` above 1, but no
    ``WORLD_SIZE`` (which ``--multi_gpu``'s torchrun sets, with ``RANK``)."""
    env = os.environ
    return "ACCELERATE_USE_CPU" in env and "MASTER_ADDR" in env and "WORLD_SIZE" not in env


def run(
    task: Task,
    items: Sequence[Any],
    out: str | Path,
    settings: dict[str, Any],
    *,
    skip_bad: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    bad_data: Sequence[tuple[str, str]] = (),
    in_flight: int = DEFAULT_IN_FLIGHT,
) -> dict[str, Any] | None:
    """Measure every item not yet in ``out`` and write its row; then (on the main process)
    rebuild and return the summary. ``bad_data``: ``(source, message)`` of the data's lines
    that were skipped when read (recorded in ``skipped_data.jsonl``, counted as skipped).
    ``in_flight``: items measured at once, their denoiser calls merged
    (:mod:`infodecomp.batching`; not a setting: rows agree to float rounding whatever it is).

    Raises ``ValueError`` if ``out`` holds a run with other settings, or another run is writing
    into it; :class:`BadItemError` on a bad item unless ``skip_bad`` (then the item's row records
    the error and the item counts as done).
    """
    out = Path(out)
    rank, n_proc, _, all_ok = process_state()
    log = log or _stderr
    quiet = log if rank == 0 else (lambda message: None)  # one voice for the whole run
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise ValueError("item ids are not unique")
    with contextlib.ExitStack() as locks:
        # Every process runs the same checks on the same files, so all stop alike (one line
        # each) instead of one stopping and the others waiting for it.
        error: Exception | None = None
        new_folder, locked = not out.exists(), False
        try:
            out.mkdir(parents=True, exist_ok=True)
            if rank == 0:  # held for the whole run: a second run into this folder is refused
                locks.enter_context(_lock(out / ".lock"))
                locked = True
                _remove_leftovers(out)  # before the other processes write any
                for stale in out.glob("batching*.json"):  # an earlier session's
                    stale.unlink()
            _check_settings(out, settings)
            done = {row["id"]: row for row in read_rows(out) if "skipped" not in row}
            _check_unchanged(items, done, out)
        except (ValueError, OSError) as err:
            error = err
        if all_ok(error is None) and rank == 0:  # then written once, by one process
            try:
                _write_json(out / "settings.json", settings)
                skipped = out / "skipped_data.jsonl"
                lines = [json.dumps({"source": src, "error": msg}) + "\n" for src, msg in bad_data]
                if lines:
                    write_atomic(skipped, "".join(lines))
                else:
                    skipped.unlink(missing_ok=True)
            except OSError as err:
                error = err
        if error and locked and new_folder and not (out / "settings.json").exists():
            _remove_new_folder(out)  # e.g. a full disk: a rerun starts as the first did
        _all_or_none(all_ok, error)
        rows_path = out / ("rows.jsonl" if n_proc == 1 else f"rows.{rank}.jsonl")
        locks.enter_context(_lock(out / f".lock.{rows_path.stem}"))
        _drop_partial_line(rows_path)
        todo = [(i, it) for i, it in enumerate(items) if i % n_proc == rank and it.id not in done]
        left = [item for item in items if item.id not in done]
        cost = sum(task.denoiser_rows(item) for item in left)
        quiet(
            f"{task.name}: {len(items)} items, {len(items) - len(left)} already done; "
            f"{len(left)} to measure, about {cost} denoiser rows"
            + (f" over {n_proc} processes" if n_proc > 1 else "")
        )
        try:
            show = progress and rank == 0
            _measure_all(task, todo, rows_path, settings, skip_bad, show, quiet, in_flight)
        except (ValueError, OSError) as err:
            error = err
        _all_or_none(all_ok, error)
        return summarize(out) if rank == 0 else None


def _all_or_none(all_ok: Callable[[bool], bool], error: Exception | None) -> None:
    """Go on together, or stop together: this process's error, or one line saying that
    another process stopped (it says why)."""
    if not all_ok(error is None):
        raise error or ValueError("another process stopped (see its message)")


def _remove_leftovers(out: Path) -> None:
    """Remove the temporary files that killed processes left in ``out`` and its items."""
    for folder in (out, out / ITEMS):
        remove_leftovers(folder)


def _remove_new_folder(out: Path) -> None:
    """Remove the folder this run created (its lock, then the folder if that left it empty)."""
    with contextlib.suppress(OSError):
        (out / ".lock").unlink(missing_ok=True)
        out.rmdir()


def _stderr(message: str) -> None:
    """Log to standard error; a closed pipe (``... 2>&1 | head``) does not stop the run."""
    with contextlib.suppress(BrokenPipeError):
        print(message, file=sys.stderr, flush=True)


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write ``path`` whole or not at all (strict JSON: NaN written as null)."""
    write_atomic(path, json.dumps(_plain(doc), indent=2, allow_nan=False) + "\n")


def fingerprint(item: Any) -> str:
    """A short hash of everything an item holds (captions, words, pixels or the size and first
    MiB of image and mask files, masks), stored in its row so that a resumed run notices an item
    that changed under its id. Only :data:`FILE_FIELDS` are read as files."""
    digest = hashlib.sha256()

    def feed(value: Any, files: bool = False) -> None:
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        if isinstance(value, np.ndarray):
            digest.update(f"array{value.shape}{value.dtype}".encode() + value.tobytes())
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                feed(str(key))
                feed(value[key], files)
        elif isinstance(value, (list, tuple)):
            digest.update(f"seq{len(value)}".encode())
            for v in value:
                feed(v, files)
        elif isinstance(value, Image.Image):
            digest.update(f"image{value.mode}{value.size}".encode() + value.tobytes())
        elif files and isinstance(value, (str, Path)) and _is_file(value):  # by content
            try:
                with Path(value).open("rb") as f:
                    digest.update(f"file{Path(value).stat().st_size}:".encode() + f.read(1 << 20))
            except OSError:  # unreadable: its measure says so; the name stands in
                digest.update(f"file:{value}".encode())
        else:
            digest.update(f"{type(value).__name__}:{value!s};".encode())

    # Neither where the item was read nor how the bootstrap groups it changes its numbers.
    skip = ("source", "cluster")
    fields = {f.name: getattr(item, f.name) for f in dataclasses.fields(item) if f.name not in skip}
    for name in sorted(fields):  # as feed(fields) would, with the file fields read as files
        feed(name)
        feed(fields[name], files=name in FILE_FIELDS)
    return digest.hexdigest()[:16]


def _is_file(path: str | Path) -> bool:
    try:
        return Path(path).is_file()
    except OSError:  # a name over the system's limit, say: not a file we can read
        return False


def _check_unchanged(items: Sequence[Any], done: dict[str, dict[str, Any]], out: Path) -> None:
    """Every row in ``out`` is of an item of this run, and of the same item."""
    extra = set(done) - {item.id for item in items}
    if extra:
        raise ValueError(
            f"{out} holds rows of {len(extra)} items that this run does not have (a smaller "
            "`limit`, or other data): use another `out`, or the same items to resume"
        )
    for item in items:
        row = done.get(item.id)
        if row is not None and row.get("fingerprint") != fingerprint(item):
            raise ValueError(
                f"item {item.id!r} ({item.source}) is not the item whose row {out} holds "
                "(the data changed under its id): use another `out`"
            )


def _measure_all(
    task: Task,
    todo: list[tuple[int, Any]],
    rows_path: Path,
    settings: dict[str, Any],
    skip_bad: bool,
    progress: bool,
    log: Callable[[str], None],
    in_flight: int = DEFAULT_IN_FLIGHT,
) -> None:
    on_terminal = progress and sys.stderr.isatty()
    bar = tqdm(total=len(todo), unit="item", disable=not on_terminal, leave=False)
    start = last_log = time.monotonic()
    failure: BaseException | None = None
    with (
        appending(rows_path) as append,
        Scheduler(task.denoisers, task.batch_size, in_flight) as scheduler,
    ):
        outcomes = scheduler.run(todo, task.measure)
        for n_done, (index, item, outcome) in enumerate(outcomes, start=1):
            if isinstance(outcome, BaseException):
                # ValueError: BadItemError and any other reason it cannot be measured.
                bad = isinstance(outcome, ValueError)
                message = str(outcome)
                if bad and not message.startswith(item.source):
                    message = f"{item.source}: {message}"
                if not (bad and skip_bad):
                    # The first failing item stops the run, as when items ran one by one: the
                    # items before it finish and are written, those after it are dropped.
                    failure = BadItemError(message) if bad else outcome
                    scheduler.stop_after(index)
                    if not isinstance(outcome, Exception):  # e.g. Ctrl-C: at once
                        break
                    continue
                result: dict[str, Any] = {"skipped": message}
            else:
                result = outcome
            pictures = result.pop(PICTURES, None)
            if pictures:  # before the row: a row on disk always has its pictures
                write_item_pictures(rows_path.parent, item.id, pictures)
            cluster = getattr(item, "cluster", None) or item.id  # what the bootstrap resamples
            row = {"index": index, "id": item.id, "source": item.source, "cluster": cluster}
            row |= {"fingerprint": fingerprint(item), **result}
            # Not the row's: how many items the run takes.
            row["settings"] = {k: v for k, v in settings.items() if k not in ("limit", "sample")}
            append(json.dumps(_plain(row), allow_nan=False))
            bar.update(1)
            now = time.monotonic()
            left = (now - start) / n_done * (len(todo) - n_done)
            if n_done == 1 and len(todo) > 1:
                log(f"first item took {now - start:.1f} s; about {_duration(left)} left")
            elif progress and not on_terminal and now - last_log > 30:
                log(f"{n_done}/{len(todo)} items, {_duration(left)} left")
                last_log = now
    bar.close()
    if failure is not None:
        raise failure from None
    if todo:
        seconds = time.monotonic() - start
        log(f"measured {len(todo)} items in {seconds:.1f} s ({seconds / len(todo):.2f} s/item)")
    stats = scheduler.stats()
    if stats["calls"]:
        log(
            f"{stats['calls']} denoiser calls of {stats['rows']} rows: mean fill "
            f"{stats['fill']:.2f} of {stats['batch_size']} rows ({stats['in_flight']} in flight)"
        )
        name = rows_path.name.replace("rows", "batching", 1).replace(".jsonl", ".json")
        _write_json(rows_path.with_name(name), stats)


def read_rows(out: str | Path) -> list[dict[str, Any]]:
    """Every complete row of every rows file in ``out``, each id once (a measured row before a
    skipped one), in item order. A damaged line is named (file and line)."""
    rows: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(out).glob("rows*.jsonl")):
        with path.open("rb") as f:
            for number, line in enumerate(f, start=1):
                if not line.endswith(b"\n"):
                    break  # a half-written last line
                try:
                    row = json.loads(line)
                    key, _ = row["id"], row["index"]
                except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
                    raise ValueError(f"{path}:{number}: damaged row (not a row of ours)") from None
                # A measured row replaces a skipped one (the item was fixed and rerun).
                if key not in rows or "skipped" in rows[key]:
                    rows[key] = row
    return sorted(rows.values(), key=lambda r: r["index"])


def summarize(out: str | Path, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Rebuild ``out/summary.json`` and ``out/report.html`` from the rows (and the items'
    pictures) and return the summary (``log`` gets the table)."""
    out = Path(out)
    settings_path = out / "settings.json"
    if not settings_path.exists():
        raise ValueError(f"{out} holds no evaluation (no settings.json)")
    try:
        settings = json.loads(settings_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"{settings_path}: damaged (not JSON)") from None
    task = settings.get("task") if isinstance(settings, dict) else None
    if task not in TASKS:
        known = ", ".join(TASKS)
        what = "missing" if task is None else f"unknown task {task!r}"
        raise ValueError(f"{settings_path}: field 'task': {what} (known: {known})")
    _remove_leftovers(out)
    rows = read_rows(out)
    skipped = [r for r in rows if "skipped" in r]
    data_skipped = out / "skipped_data.jsonl"
    n_bad_data = len(data_skipped.read_text().splitlines()) if data_skipped.exists() else 0
    evaluation = TASKS[task]
    summary = evaluation.summarize([r for r in rows if "skipped" not in r], settings)
    summary = {
        "task": task,
        "n_items": len(rows) - len(skipped),
        "n_skipped": len(skipped) + n_bad_data,  # bad items, and bad lines of the data
        **summary,
        "settings": settings,
    }
    _write_json(out / "summary.json", summary)
    try:
        write_report(out, summary, rows)
    except (KeyError, TypeError, IndexError, ValueError) as err:
        # The report is a view of the rows: one it cannot draw must not fail the run (the rows
        # and summary are written), nor leave an older report that looks current.
        (out / "report.html").unlink(missing_ok=True)
        (log or _stderr)(f"report.html not written ({type(err).__name__}: {err})")
    except OSError:  # e.g. a full disk: said, and no older report left to look current
        with contextlib.suppress(OSError):
            (out / "report.html").unlink(missing_ok=True)
        raise
    if log is not None:
        log(evaluation.table(summary))
    return summary


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Refuse a run whose settings differ from those of the rows already in ``out`` (a folder
    without rows, e.g. left by a run that failed at once, takes any settings)."""
    path = out / "settings.json"
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"{path}: damaged (not JSON): use another `out`") from None
    if not isinstance(old, dict) or "task" not in old:
        raise ValueError(f"{out} is not an evaluation's folder ({path} is not ours)")
    if not any(p.stat().st_size for p in out.glob("rows*.jsonl")):
        return
    # Runs made before these settings existed ran with their defaults.
    old = {k: v for k, v in ADDED_DEFAULTS.items() if k in settings and k not in old} | old
    changed = [
        f"{k}: {old.get(k)!r} -> {settings.get(k)!r}"
        for k in sorted(set(old) | set(settings))
        if k not in RESUMABLE_KEYS and old.get(k) != settings.get(k)
    ]
    if changed:
        hint = ""
        if old.get("ranking") == "fixed" and settings.get("ranking") == "sequential":
            hint = " (the sequential ranking is the default: --fixed, or ranking='fixed')"
        raise ValueError(
            f"{out} holds a run with other settings ({'; '.join(changed)}): "
            f"use another `out`, or the same settings to resume{hint}"
        )


def _drop_partial_line(path: Path) -> None:
    """Truncate a rows file after its last complete line (a kill can leave half a line)."""
    if not path.exists():
        return
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep != len(data):
        with path.open("r+b") as f:
            f.truncate(keep)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    with path.open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(
                f"another run is writing into {path.parent}: wait for it or use another `out`"
            ) from None
        yield


def _plain(value: Any) -> Any:
    """JSON-ready copy: NaN and inf become ``None`` (strict JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"
