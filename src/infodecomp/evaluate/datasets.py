"""Reading evaluation data: compositional (caption choice), ARO, localization and COCO items.

Every reader returns ``(items, bad)``. A line or entry that cannot be used raises a
``BadItemError`` whose message starts with ``"{path}:{line}: "`` (lines count from 1; for a JSON
array file the entry index, ``"{path}[{index}]: "``) and says in one line what is wrong. With
``skip_bad=True`` the reader goes on instead, and ``bad`` lists ``(source, message)`` for every
bad line, ``message`` being the text the error would have had. Errors about a whole file (missing,
not JSON, wrong top-level shape) are always raised.

Item ids key the estimators' random noise, so they must stay stable from run to run: an item's
id is the line's ``"id"`` field when it has one (unique within the file), else ``"line{N}"``
(``"entry{i}"`` for a JSON array). Relative image and mask paths resolve against ``image_root``,
by default the data file's folder. Files are checked to exist when read, but images are decoded
only when evaluated (``load_item_image_and_masks``, ``load_mask``, ``crop_box``).
"""

from __future__ import annotations

import contextlib
import filecmp
import io
import json
import math
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from ..images import check_fit, is_lazy_image, load_image
from ..interactions import pair_conditions, word_pairs
from ..sampling import MAX_SEED
from ..words import occurrences, split_words, text_key
from .items import (
    PROTOCOLS,
    BadItemError,
    CompositionalItem,
    InteractionItem,
    InterventionItem,
    LocalizationItem,
)

Bad = list[tuple[str, str]]
T = TypeVar("T")

# Extra words for COCO category names, found in captions by our protocol (short on purpose;
# extend it through ``read_coco(synonyms=...)``). Plurals need no entry: regular ones ("dogs",
# "buses") are matched as such, irregular ones ("mice", "geese") come from ``inflect``.
COCO_SYNONYMS: dict[str, tuple[str, ...]] = {
    "person": (
        "man",
        "men",
        "woman",
        "women",
        "people",
        "boy",
        "girl",
        "child",
        "children",
        "kid",
        "guy",
        "lady",
        "ladies",
    ),
    "bicycle": ("bike",),
    "motorcycle": ("motorbike",),
    "airplane": ("plane", "jet", "aircraft"),
    "tv": ("television",),
    "couch": ("sofa",),
    "cell phone": ("phone", "cellphone"),
    "dining table": ("table",),
    "sports ball": ("ball",),
    "potted plant": ("plant",),
    "donut": ("doughnut",),
    "hair drier": ("hair dryer",),
    "knife": ("knives",),
}


class InvalidLine(Exception):
    """One line is unusable; the message says why, without the ``path:line`` prefix."""


# ----------------------------------------------------------------------------- JSON helpers


def json_object(line: str) -> dict[str, Any]:
    """The JSON object on one line of a JSON-lines file; ``InvalidLine`` saying why not."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise InvalidLine(f"malformed JSON line: {err.msg} (column {err.colno})") from None
    if not isinstance(record, dict):
        raise InvalidLine(f"expected a JSON object, got {_kind(record)}")
    return record


def _kind(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _require(record: dict[str, Any], key: str) -> Any:
    """``record[key]``, or ``InvalidLine`` naming the missing key."""
    if key not in record:
        raise InvalidLine(f"missing key {key!r}")
    return record[key]


def _string(record: dict[str, Any], key: str, *, optional: bool = False) -> str | None:
    """A non-empty string field (``None`` if optional and absent or null)."""
    if optional and record.get(key) is None:
        return None
    value = _require(record, key)
    if not isinstance(value, str):
        raise InvalidLine(f"{key!r} must be a string, got {_kind(value)}")
    if not value.strip():
        raise InvalidLine(f"{key!r} is empty")
    return value


def _integer(record: dict[str, Any], key: str) -> int:
    """An integer field (booleans refused)."""
    value = _require(record, key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidLine(f"{key!r} must be an integer, got {_kind(value)}")
    return value


def _number(record: dict[str, Any], key: str) -> float:
    """A finite number field (booleans, ``NaN`` and ``Infinity`` refused)."""
    value = _require(record, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidLine(f"{key!r} must be a number, got {_kind(value)}")
    if not _finite(value):
        raise InvalidLine(f"{key!r} must be a finite number, got {json.dumps(value)[:20]}")
    return float(value)


def _finite(value: float) -> bool:
    """Whether a JSON number is finite as a float (a 400-digit integer is not)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _strings(record: dict[str, Any], key: str) -> list[str]:
    """A field holding an array of strings."""
    value = _require(record, key)
    if not isinstance(value, list):
        raise InvalidLine(f"{key!r} must be an array of strings, got {_kind(value)}")
    for k, element in enumerate(value):
        if not isinstance(element, str):
            raise InvalidLine(f"{key!r}[{k}] must be a string, got {_kind(element)}")
    return value


def _captions(record: dict[str, Any], key: str = "captions") -> tuple[str, ...]:
    """Two or more non-empty captions."""
    captions = _strings(record, key)
    if len(captions) < 2:
        raise InvalidLine(f"fewer than two captions (got {len(captions)})")
    for k, caption in enumerate(captions):
        if not caption.strip():
            raise InvalidLine(f"caption {k} is empty")
    _check_distinct(captions)
    return tuple(captions)


def _check_distinct(captions: list[str] | tuple[str, ...]) -> None:
    """``InvalidLine`` if two captions differ only in case or spacing.

    CLIP's tokenizer (the text encoder of SD, SDXL and SD3, and of the bundled model) lowercases
    and collapses whitespace, as does the exact world model, so such captions get equal scores
    and the test is a coin toss (credit 0.5); for a case-sensitive encoder (T5) it would test
    spelling, not composition. The check is the same for every model.
    """
    seen: dict[str, int] = {}
    for k, caption in enumerate(captions):
        key = text_key(caption)
        if key in seen:
            raise InvalidLine(
                f"captions {seen[key]} and {k} are the same text (ignoring case and spacing, as "
                "CLIP's tokenizer does): the test could not be passed"
            )
        seen[key] = k


def _item_id(record: dict[str, Any], default: str) -> str:
    """The record's ``"id"`` (a string or integer) or ``default`` when it has none."""
    value = record.get("id")
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidLine(f"'id' must be a string or integer, got {_kind(value)}")
    if not str(value).strip():
        raise InvalidLine("'id' is empty")
    return str(value)


def _existing(root: Path, name: str, what: str) -> Path:
    """``root / name`` (``name`` as is when absolute), which must be a file."""
    path = root / name
    try:
        found = path.is_file()
    except OSError as err:  # a name over the system's limit, say
        raise InvalidLine(f"{what} file unusable ({err.strerror}): {path}") from None
    if not found:
        raise InvalidLine(f"{what} file missing: {path}")
    return path


def _same_file(a: Path, b: Path) -> bool:
    """Whether two existing files are one file, or hold the same bytes."""
    return os.path.samefile(a, b) or filecmp.cmp(a, b, shallow=False)


def _read_text(path: Path) -> str:
    """A data file's text; ``BadItemError`` naming the file if it cannot be read."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise BadItemError(f"{path}: cannot read the file: {err.strerror}") from None
    except UnicodeDecodeError:
        raise BadItemError(f"{path}: not UTF-8 text") from None


def _load_json(path: Path) -> Any:
    """A whole JSON file; ``BadItemError`` naming the file (and line) if it cannot be read."""
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise BadItemError(f"{path}:{err.lineno}: malformed JSON: {err.msg}") from None


class _Collector:
    """Items read so far, the bad lines, and the ids already taken (with where)."""

    def __init__(self, skip_bad: bool) -> None:
        self.skip_bad = skip_bad
        self.items: list[Any] = []
        self.bad: Bad = []
        self.seen: dict[str, str] = {}

    def take(self, source: str, make: Callable[[], list[Any]]) -> None:
        """Add the items ``make()`` builds for ``source``, or record (or raise) why it cannot."""
        try:
            new = make()
            ids = [item.id for item in new]
            for item_id in ids:
                if item_id in self.seen or ids.count(item_id) > 1:
                    first = self.seen.get(item_id, source)
                    raise InvalidLine(f"duplicate id {item_id!r} (first at {first})")
        except InvalidLine as err:
            message = f"{source}: {err}"
            if not self.skip_bad:
                raise BadItemError(message) from None
            self.bad.append((source, message))
            return
        for item in new:
            self.seen[item.id] = source
        self.items.extend(new)


def _read_jsonl(
    path: str | Path,
    parse: Callable[[dict[str, Any], str, str], list[T]],
    skip_bad: bool,
) -> tuple[list[T], Bad]:
    """Items of a JSON-lines file: ``parse(record, source, default_id)`` for each non-blank
    line."""
    path = Path(path)
    text = _read_text(path)
    collector = _Collector(skip_bad)
    # Split on "\n" only: str.splitlines would also split on characters JSON strings may hold.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        source = f"{path}:{number}"

        def make(line: str = line, source: str = source, number: int = number) -> list[T]:
            return parse(json_object(line), source, f"line{number}")

        collector.take(source, make)
    return collector.items, collector.bad


# ------------------------------------------------------------------------------ compositional


def group_items(
    group: str, images: list[Any], captions: tuple[str, ...], kind: str | None, source: str
) -> list[CompositionalItem]:
    """The two items of a Winoground-style 2x2 group: item ``k`` (id ``"{group}/{k}"``) has
    image ``k`` and true caption ``k``; both share the group as their bootstrap cluster."""
    return [
        CompositionalItem(
            id=f"{group}/{k}",
            image=images[k],
            captions=captions,
            true_index=k,
            type=kind,
            group=group,
            source=source,
            cluster=group,
        )
        for k in range(2)
    ]


def read_compositional(
    path: str | Path, image_root: str | Path | None = None, skip_bad: bool = False
) -> tuple[list[CompositionalItem], Bad]:
    """Caption-choice items from a JSON-lines file.

    Each line is ``{"id"?, "image": str, "captions": [str, ...], "true": int, "type"?: str,
    "group"?: str}``: one image, two or more candidate captions, the index of the true one. A
    Winoground-style 2x2 line ``{"id"?, "images": [a, b], "captions": [c0, c1], "type"?: str}``
    gives two items, ids ``"{id}/0"`` and ``"{id}/1"``, both with ``group=id``; item ``k`` has
    image ``k`` and true caption ``k``.

    Ids key the random noise of the estimators, so they must be stable: give each line an
    ``"id"`` (unique in the file) when lines may be added or removed; without one it is
    ``"line{N}"``. Relative image paths resolve against ``image_root`` (default: the file's
    folder). Returns ``(items, bad)``; see the module docstring for errors and ``skip_bad``.
    """
    root = Path(image_root) if image_root is not None else Path(path).parent

    def parse(record: dict[str, Any], source: str, default_id: str) -> list[CompositionalItem]:
        item_id = _item_id(record, default_id)
        kind = _string(record, "type", optional=True)
        if "images" in record:
            if "image" in record or "true" in record:
                raise InvalidLine("a 2x2 line ('images') takes no 'image' or 'true'")
            names = _strings(record, "images")
            if len(names) != 2:
                raise InvalidLine(f"'images' must hold two images, got {len(names)}")
            captions = _captions(record)
            if len(captions) != 2:
                raise InvalidLine(f"a 2x2 line needs exactly two captions, got {len(captions)}")
            images = [_existing(root, name, "image") for name in names]
            if _same_file(*images):
                raise InvalidLine(
                    f"'images' are the same image ({names[0]}, {names[1]}): the group's two "
                    "items would differ only in their noise"
                )
            return group_items(item_id, images, captions, kind, source)
        name = _string(record, "image")
        captions = _captions(record)
        true = _integer(record, "true")
        if not 0 <= true < len(captions):
            raise InvalidLine(f"true index {true} out of range for {len(captions)} captions")
        group = _string(record, "group", optional=True)
        image = _existing(root, name or "", "image")
        return [
            CompositionalItem(
                id=item_id,
                image=image,
                captions=captions,
                true_index=true,
                type=kind,
                group=group,
                source=source,
            )
        ]

    return _read_jsonl(path, parse, skip_bad)


# ------------------------------------------------------------------------------------------ ARO


# Relations that ARO leaves out of VG-Relation's macro accuracy (the swapped caption is as true,
# or the relation is too rare): the list used by ARO's evaluation scripts. The readers keep
# their entries; the summary decides what to count.
ARO_SYMMETRIC_RELATIONS = frozenset(
    """adjusting|attached to|between|bigger than|biting|boarding|brushing|chewing|cleaning|
climbing|close to|coming from|coming out of|contain|crossing|dragging|draped over|drinking|
drinking from|driving|driving down|driving on|eating from|eating in|enclosing|exiting|facing|
filled with|floating in|floating on|flying|flying above|flying in|flying over|flying through|
full of|going down|going into|going through|grazing in|growing in|growing on|guiding|
hanging from|hanging in|hanging off|hanging over|higher than|holding onto|hugging|in between|
jumping off|jumping on|jumping over|kept in|larger than|leading|leaning over|leaving|licking|
longer than|looking in|looking into|looking out|looking over|looking through|lying next to|
lying on top of|making|mixed with|mounted on|moving|on the back of|on the edge of|
on the front of|on the other side of|opening|painted on|parked at|parked beside|parked by|
parked in|parked in front of|parked near|parked next to|perched on|petting|piled on|playing|
playing in|playing on|playing with|pouring|reaching for|reading|reflected on|riding on|
running in|running on|running through|seen through|sitting behind|sitting beside|sitting by|
sitting in front of|sitting near|sitting next to|sitting under|skiing down|skiing on|
sleeping in|sleeping on|smiling at|sniffing|splashing|sprinkled on|stacked on|
standing against|standing around|standing behind|standing beside|standing in front of|
standing near|standing next to|staring at|stuck in|surrounding|swimming in|swinging|talking to|
topped with|touching|traveling down|traveling on|tying|typing on|underneath|wading in|
waiting for|walking across|walking by|walking down|walking next to|walking through|working in|
working on|worn on|wrapped around|wrapped in|by|of|near|next to|with|beside|on the side of|
around""".replace("\n", "").split("|")
)
# VG-Attribution's macro accuracy counts attribute pairs with at least this many items (ARO).
ARO_MIN_PAIR_ITEMS = 25


def read_aro(
    path: str | Path, image_root: str | Path | None = None, skip_bad: bool = False
) -> tuple[list[CompositionalItem], Bad]:
    """Items of ARO's VG-Relation or VG-Attribution file (``visual_genome_relation.json``,
    ``visual_genome_attribution.json``, as released with ARO, Yuksekgonul et al. 2023).

    The file is a JSON array of entries ``{"image_path", "bbox_x", "bbox_y", "bbox_w",
    "bbox_h", "true_caption", "false_caption"}`` plus ``"relation_name"`` (VG-Relation) or
    ``"attributes": [a, b]`` (VG-Attribution). Each entry gives an item with captions in ARO's
    order, ``captions=(false_caption, true_caption)`` and ``true_index=1`` (ARO's argmax gives
    a tie to the first, false caption), ``box=(x, y, w, h)`` (crop it with ``crop_box``, as ARO
    does; finite numbers, checked against the image when cropped), ``type`` what ARO
    macro-averages over: the relation name, or ``"{a}_{b}"`` for the attribute pair, and
    ``cluster`` the entry's ``"image_path"`` as written (the boxes of one photo share it).

    Every entry is read: the relations of :data:`ARO_SYMMETRIC_RELATIONS` and entries whose two
    captions are the same text are kept (the summary decides what to count and flags them).
    ``image_root`` is the folder holding ARO's images (ARO's ``root_dir/images``); by default
    the data file's folder's ``images`` if there is one, else the data file's folder. Ids are
    the entry's ``"id"`` if any, else ``"entry{i}"`` with ``i`` its index in the array: they
    key the random noise, so use the released file unchanged. Sources are ``"{path}[{i}]"``.
    Returns ``(items, bad)``; see the module docstring for errors and ``skip_bad``.
    """
    path = Path(path)
    root = Path(image_root) if image_root is not None else default_image_root(path)
    entries = _load_json(path)
    if not isinstance(entries, list):
        raise BadItemError(f"{path}:1: expected a JSON array of ARO entries, got {_kind(entries)}")

    def parse(entry: Any, source: str, default_id: str) -> list[CompositionalItem]:
        if not isinstance(entry, dict):
            raise InvalidLine(f"expected a JSON object, got {_kind(entry)}")
        item_id = _item_id(entry, default_id)
        kind = aro_type(entry)
        box = aro_box(entry)
        true_caption = _string(entry, "true_caption") or ""
        false_caption = _string(entry, "false_caption") or ""
        name = _string(entry, "image_path") or ""
        image = _existing(root, name, "image")
        return [
            CompositionalItem(
                id=item_id,
                image=image,
                captions=(false_caption, true_caption),
                true_index=1,
                type=kind,
                box=box,
                source=source,
                cluster=name,
            )
        ]

    collector = _Collector(skip_bad)
    for index, entry in enumerate(entries):
        source = f"{path}[{index}]"
        collector.take(source, lambda e=entry, s=source, i=index: parse(e, s, f"entry{i}"))
    return collector.items, collector.bad


def default_image_root(path: Path) -> Path:
    """ARO's layout: the images in ``images/`` beside the data file (ARO's ``root_dir/images``)
    when that folder exists, else the data file's folder."""
    images = path.parent / "images"
    return images if images.is_dir() else path.parent


def aro_type(entry: dict[str, Any]) -> str:
    """What ARO macro-averages over: the entry's relation name, or ``"{a}_{b}"`` for its
    attribute pair; ``InvalidLine`` if it has neither."""
    if "relation_name" in entry:
        return _string(entry, "relation_name") or ""
    if "attributes" in entry:
        attributes = _strings(entry, "attributes")
        if len(attributes) != 2:
            raise InvalidLine(f"'attributes' must hold two attributes, got {len(attributes)}")
        return f"{attributes[0]}_{attributes[1]}"
    raise InvalidLine("missing key 'relation_name' (VG-Relation) or 'attributes' (VG-Attribution)")


def aro_box(entry: dict[str, Any]) -> tuple[float, float, float, float]:
    """The entry's ``(bbox_x, bbox_y, bbox_w, bbox_h)``: finite numbers, a positive size."""
    x, y, w, h = (_number(entry, f"bbox_{k}") for k in "xywh")
    if w <= 0 or h <= 0:
        raise InvalidLine(f"empty box: width {w:g}, height {h:g}")
    return x, y, w, h


def crop_box(image: Any, box: tuple[float, float, float, float]) -> Image.Image:
    """The RGB crop of ``image`` to ``box = (x, y, w, h)``, as ARO crops: PIL's
    ``crop((x, y, x + w, y + h))`` of the image converted to RGB.

    ``image`` is a path, a PIL image or a lazy image (an object whose ``open()`` gives a PIL
    image, as ``released.ParquetImage``).

    A box partly off the image is clipped to it (where PIL's crop, hence ARO, pads it black).
    Raises ``ValueError`` with one line for a box that is not four finite numbers with a
    positive width and height, a box more than half of whose area lies off the image (wholly
    off it, or a misplaced or runaway box), and a file that is missing or not an image.
    """
    try:
        x, y, w, h = (float(v) for v in box)
        finite = all(map(math.isfinite, (x, y, w, h)))
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"a box is four numbers (x, y, w, h), got {box!r}") from None
    if not finite or w <= 0 or h <= 0:
        raise ValueError(f"box (x, y, w, h) = ({x:g}, {y:g}, {w:g}, {h:g}) is not a box")
    if isinstance(image, (str, Path)):
        try:
            with Image.open(image) as opened:
                image = opened.convert("RGB")
        except (OSError, UnidentifiedImageError) as err:
            reason = "not an image" if isinstance(err, UnidentifiedImageError) else err.strerror
            raise ValueError(f"cannot read image {str(image)!r}: {reason}") from None
    elif is_lazy_image(image):
        image = image.open().convert("RGB")
    width, height = image.size
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    inside = max(x1 - x0, 0) * max(y1 - y0, 0)
    left, top, right, bottom = (int(round(v)) for v in (x0, y0, x1, y1))  # as PIL's crop
    if inside < w * h / 2:
        where = "off" if inside == 0 else "mostly off"
        raise ValueError(
            f"box (x, y, w, h) = ({x:g}, {y:g}, {w:g}, {h:g}) lies {where} the "
            f"{width}x{height} image"
        )
    if right <= left or bottom <= top:
        raise ValueError(f"box (x, y, w, h) = ({x:g}, {y:g}, {w:g}, {h:g}) holds no whole pixel")
    return image.convert("RGB").crop((left, top, right, bottom))


# --------------------------------------------------------------------------------- localization


def _check_in_caption(phrase: str, caption: str) -> None:
    """Every word of ``phrase`` occurs in ``caption``, or ``InvalidLine``."""
    words = split_words(phrase)
    if not words:
        raise InvalidLine(f"word {phrase!r} holds no word")
    for word in words:
        try:
            occurrences(caption, word.text)
        except ValueError:
            which = repr(word.text) if len(words) == 1 else f"{word.text!r} of {phrase!r}"
            raise InvalidLine(f"word {which} is not in the caption {caption!r}") from None


def read_localization(
    path: str | Path, image_root: str | Path | None = None, skip_bad: bool = False
) -> tuple[list[LocalizationItem], Bad]:
    """Localization items from a JSON-lines file.

    Each line is ``{"id"?, "image": str, "caption": str, "word": str, "mask": str}`` or
    ``{"id"?, "image": str, "caption": str, "masks": {word: mask_path, ...}}``. A word may be a
    phrase; each of its words must occur in the caption. A mask is any image, non-zero inside
    (see ``load_mask``); its size must be the image's, which is checked when loaded
    (``load_item_image_and_masks``).

    Ids key the random noise of the estimators, so they must be stable: give each line an
    ``"id"`` (unique in the file) when lines may be added or removed; without one it is
    ``"line{N}"``. Relative paths resolve against ``image_root`` (default: the file's folder).
    Returns ``(items, bad)``; see the module docstring for errors and ``skip_bad``.
    """
    root = Path(image_root) if image_root is not None else Path(path).parent

    def parse(record: dict[str, Any], source: str, default_id: str) -> list[LocalizationItem]:
        item_id = _item_id(record, default_id)
        caption = _string(record, "caption") or ""
        if "masks" in record:
            if "word" in record or "mask" in record:
                raise InvalidLine("give 'masks', or 'word' and 'mask', not both")
            given = record["masks"]
            if not isinstance(given, dict):
                raise InvalidLine(
                    f"'masks' must be an object {{word: mask path}}, got {_kind(given)}"
                )
            if not given:
                raise InvalidLine("'masks' is empty")
            for word, name in given.items():
                if not isinstance(name, str) or not name.strip():
                    raise InvalidLine(f"'masks'[{word!r}] must be a mask path, got {_kind(name)}")
        elif "word" in record:
            given = {_string(record, "word") or "": _string(record, "mask") or ""}
        else:
            raise InvalidLine("missing key 'masks' (or 'word' and 'mask')")
        for word in given:
            _check_in_caption(word, caption)
        image = _existing(root, _string(record, "image") or "", "image")
        masks = {word: _existing(root, name, f"mask ({word!r})") for word, name in given.items()}
        return [LocalizationItem(item_id, image, caption, masks, source)]

    return _read_jsonl(path, parse, skip_bad)


def read_intervention(
    path: str | Path, image_root: str | Path | None = None, skip_bad: bool = False
) -> tuple[list[InterventionItem], Bad]:
    """Prompt-intervention items from a JSON-lines file: ``{"id"?, "image": str, "caption": str,
    "words": [str, ...]}`` (the words removed one at a time; each must occur in the caption), or
    for an image the model generates, ``"noise"`` (a safetensors file holding the starting
    noise as tensor ``"noise"``) instead of ``"image"``. Ids and paths as in
    :func:`read_localization`. Returns ``(items, bad)``."""
    root = Path(image_root) if image_root is not None else Path(path).parent

    def parse(record: dict[str, Any], source: str, default_id: str) -> list[InterventionItem]:
        item_id = _item_id(record, default_id)
        caption = _string(record, "caption") or ""
        words = _strings(record, "words")
        if not words:
            raise InvalidLine("'words' is empty")
        for word in words:
            _check_in_caption(word, caption)
        if ("image" in record) == ("noise" in record):
            raise InvalidLine("give 'image' (an image to invert) or 'noise' (generate from it)")
        if "noise" in record:
            noise = _existing(root, _string(record, "noise") or "", "noise")
            return [InterventionItem(item_id, None, caption, tuple(words), source, noise)]
        image = _existing(root, _string(record, "image") or "", "image")
        return [InterventionItem(item_id, image, caption, tuple(words), source)]

    return _read_jsonl(path, parse, skip_bad)


def read_interaction(
    path: str | Path, image_root: str | Path | None = None, skip_bad: bool = False
) -> tuple[list[InteractionItem], Bad]:
    """Word-pair items from a JSON-lines file: ``{"id"?, "image": str, "caption": str,
    "pair": [w1, w2]}`` (or ``"pairs": [[w1, w2], ...]``; ``"prompt"`` may stand for
    ``"caption"``), an optional ``"group"`` (what the summary averages the pairs under, e.g. an
    occupation), or for an image the model generates, ``"seed"`` (an integer) instead of
    ``"image"``. Words as for :func:`~infodecomp.interaction` (``"a#2"``: one occurrence). Ids
    and paths as in :func:`read_localization`. Returns ``(items, bad)``."""
    root = Path(image_root) if image_root is not None else Path(path).parent

    def parse(record: dict[str, Any], source: str, default_id: str) -> list[InteractionItem]:
        item_id = _item_id(record, default_id)
        key = "caption" if "caption" in record or "prompt" not in record else "prompt"
        caption = _string(record, key) or ""
        if ("pair" in record) == ("pairs" in record):
            raise InvalidLine("give 'pair' ([w1, w2]) or 'pairs' ([[w1, w2], ...])")
        listed = [record["pair"]] if "pair" in record else record["pairs"]
        if not isinstance(listed, list) or not listed:
            raise InvalidLine("'pairs' must be a non-empty array of [w1, w2] pairs")
        for pair in listed:
            if not (isinstance(pair, list) and len(pair) == 2):
                raise InvalidLine(
                    f"a pair must be two strings [w1, w2], got {json.dumps(pair)[:60]}"
                )
        try:
            pairs = word_pairs([tuple(pair) for pair in listed])
            for w1, w2 in pairs:
                pair_conditions(caption, w1, w2)
        except (TypeError, ValueError) as err:
            raise InvalidLine(str(err)) from None
        group = _string(record, "group", optional=True)
        if ("image" in record) == ("seed" in record):
            raise InvalidLine("give 'image' (an image to measure) or 'seed' (generate it)")
        if "seed" in record:
            seed = _integer(record, "seed")
            if not 0 <= seed <= MAX_SEED:
                raise InvalidLine(f"'seed' must be an integer from 0 to 2**64 - 1, got {seed}")
            generated = InteractionItem(
                item_id, None, caption, tuple(pairs), source, seed, group, cluster=f"seed:{seed}"
            )
            return [generated]
        image = _existing(root, _string(record, "image") or "", "image")
        # The bootstrap resamples images: lines on one image are one cluster.
        cluster = str(image.resolve())
        return [
            InteractionItem(item_id, image, caption, tuple(pairs), source, None, group, cluster)
        ]

    return _read_jsonl(path, parse, skip_bad)


# ----------------------------------------------------------------------------------------- COCO


@dataclass(frozen=True)
class CocoMask:
    """A COCO category's region in one image, built on demand (``array()``): the union of the
    masks of its instance annotations.

    Attributes:
        height: the image's height in pixels (from the instances file).
        width: its width.
        segmentations: each instance annotation's ``"segmentation"`` (polygons, or RLE
            compressed or not) as its JSON text, which keeps the mask hashable and small.
    """

    height: int
    width: int
    segmentations: tuple[str, ...]

    def array(self) -> np.ndarray:
        """The mask, a bool array ``(height, width)``, as pycocotools' ``annToMask`` builds
        each instance's (polygons with fewer than three points are left out). Raises
        ``ValueError`` for a segmentation that ``read_coco`` would refuse."""
        from pycocotools import mask as mask_utils

        h, w = self.height, self.width
        union = np.zeros((h, w), dtype=bool)
        for text in self.segmentations:
            segmentation = json.loads(text)
            try:
                _segmentation({"segmentation": segmentation}, h, w)
            except InvalidLine as err:
                raise ValueError(str(err)) from None
            if isinstance(segmentation, list):
                polygons = [p for p in segmentation if len(p) >= 6]
                if not polygons:
                    continue
                rle = mask_utils.merge(mask_utils.frPyObjects(polygons, h, w))
            elif isinstance(segmentation.get("counts"), list):
                rle = mask_utils.frPyObjects(segmentation, h, w)
            else:
                rle = segmentation
            with warnings.catch_warnings():
                # pycocotools' decode trips a NumPy 2 DeprecationWarning (no copy keyword).
                warnings.simplefilter("ignore", DeprecationWarning)
                try:
                    union |= mask_utils.decode(rle).astype(bool)
                except (ValueError, TypeError) as err:
                    raise ValueError(f"a segmentation cannot be decoded ({err})") from None
        return union


def _load_coco(path: Path) -> Any:
    """A pycocotools ``COCO`` index of an annotation file, quietly."""
    from pycocotools.coco import COCO

    dataset = _load_json(path)
    if not isinstance(dataset, dict):
        raise BadItemError(f"{path}:1: expected a COCO JSON object, got {_kind(dataset)}")
    coco = COCO()
    coco.dataset = dataset
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
    except (KeyError, TypeError) as err:
        what = f"missing key {err}" if isinstance(err, KeyError) else str(err)
        raise BadItemError(f"{path}: not a COCO annotation file ({what})") from None
    return coco


def _segmentation(instance: dict[str, Any], height: int, width: int) -> str:
    """An instance annotation's ``"segmentation"`` as JSON text, checked (``InvalidLine`` saying
    what is wrong): polygons (arrays of finite numbers, each point within the image give or take
    its size: pycocotools' time and memory grow with the coordinates) or RLE (``"size"``
    ``[height, width]``, ``"counts"`` a non-empty string or run lengths summing to
    ``height * width``)."""
    value = _require(instance, "segmentation")
    if isinstance(value, list):
        for k, polygon in enumerate(value):
            if not isinstance(polygon, list) or not all(_is_finite_number(v) for v in polygon):
                raise InvalidLine(f"'segmentation'[{k}] must be a polygon (an array of numbers)")
            xs, ys = polygon[0::2], polygon[1::2]
            if not all(-width <= v <= 2 * width for v in xs) or not all(
                -height <= v <= 2 * height for v in ys
            ):
                raise InvalidLine(
                    f"'segmentation'[{k}] has a point far off the {width}x{height} image"
                )
        return json.dumps(value)
    if not isinstance(value, dict):
        raise InvalidLine(
            f"'segmentation' must be polygons (an array) or RLE (an object), got {_kind(value)}"
        )
    size, counts = value.get("size"), value.get("counts")
    if size != [height, width]:
        raise InvalidLine(
            f"'segmentation' RLE 'size' must be the image's [{height}, {width}], got "
            f"{json.dumps(size)[:40]}"
        )
    if isinstance(counts, list):
        runs = all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts)
        if not runs or sum(counts) != height * width:
            raise InvalidLine(
                f"'segmentation' RLE 'counts' must be run lengths summing to {height * width} "
                "(height x width)"
            )
    elif not isinstance(counts, str) or not counts:
        raise InvalidLine(
            "'segmentation' RLE 'counts' must be a compressed string or an array of run lengths"
        )
    return json.dumps(value)


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and _finite(value)


def _is_form(token: str, word: str) -> bool:
    """Whether the lower-cased caption word ``token`` is ``word``, its plural or possessive."""
    if token in (word, word + "s", word + "'s", word + "’s"):
        return True
    return word.endswith(("s", "x", "z", "ch", "sh")) and token == word + "es"


def _find_categories(
    caption: str, phrases: list[tuple[tuple[str, ...], int]]
) -> dict[int, tuple[int, str]]:
    """``{category id: (word index, text)}``: where each category's first mention starts and
    its text as written in ``caption``.

    ``phrases`` are ``(lower-cased words, category id)``, longest first: a caption word belongs
    to the first phrase that matches it ("hot dog" is not also a "dog"). The last word of a
    phrase may take a plural or possessive ending.
    """
    tokens = split_words(caption)
    lower = [token.text.lower() for token in tokens]
    used = [False] * len(tokens)
    found: dict[int, tuple[int, str]] = {}
    for words, category in phrases:
        n = len(words)
        for i in range(len(tokens) - n + 1):
            if any(used[i : i + n]) or tuple(lower[i : i + n - 1]) != words[:-1]:
                continue
            if not _is_form(lower[i + n - 1], words[-1]):
                continue
            used[i : i + n] = [True] * n
            if category not in found or i < found[category][0]:
                found[category] = (i, caption[tokens[i].start : tokens[i + n - 1].end])
    return found


def _id_order(value: Any) -> tuple[int, Any]:
    """Sort key for ids: integers by value, then anything else by its text."""
    if isinstance(value, int):
        return 0, value
    return 1, str(value)


def _missing_image(image_id: Any, instances_json: str | Path) -> Callable[[], list[Any]]:
    """A maker that refuses a caption of an image the instances file lacks."""

    def make() -> list[Any]:
        raise InvalidLine(f"image {image_id} is not in {instances_json}")

    return make


def _coco_image(info: dict[str, Any], root: Path, instances_json: str | Path) -> Path:
    """The file of image entry ``info`` (which must exist), its entry checked."""
    for key in ("file_name", "height", "width", "id"):
        if key not in info:
            raise InvalidLine(f"its image entry has no {key!r}")
    image = _existing(root, str(info["file_name"]), "image")
    try:
        height, width = _integer(info, "height"), _integer(info, "width")
    except InvalidLine as err:
        raise InvalidLine(f"image {info['id']} of {instances_json}: {err}") from None
    if height < 1 or width < 1:
        raise InvalidLine(f"image {info['id']} of {instances_json} is {height}x{width}")
    return image


def _category_mask(
    instances: list[dict[str, Any]], info: dict[str, Any], instances_json: str | Path
) -> CocoMask:
    """The union of a category's instances in image ``info`` (checked by ``_coco_image``)."""
    height, width = info["height"], info["width"]
    parts = []
    for instance in instances:
        try:
            parts.append(_segmentation(instance, height, width))
        except InvalidLine as err:
            where = f"instance {instance.get('id')} of {instances_json}"
            raise InvalidLine(f"{where}: {err}") from None
    return CocoMask(height, width, tuple(parts))


def _coco_item(
    ann: dict[str, Any],
    source: str,
    info: dict[str, Any],
    phrases: list[tuple[tuple[str, ...], int]],
    by_category: dict[int, list[dict[str, Any]]],
    root: Path,
    instances_json: str | Path,
) -> Callable[[], list[LocalizationItem]]:
    """A maker of our item (if any) of one caption annotation ``ann`` of image ``info``."""

    def make() -> list[LocalizationItem]:
        caption = _string(ann, "caption") or ""
        found = _find_categories(caption, phrases)
        if not found:
            return []
        image = _coco_image(info, root, instances_json)
        if "id" not in ann:
            raise InvalidLine("caption annotation has no 'id'")
        masks: dict[str, Any] = {}
        for category, (_, text) in sorted(found.items(), key=lambda kv: kv[1][0]):
            masks[text] = _category_mask(by_category[category], info, instances_json)
        item_id = f"{info['id']}/{ann['id']}"
        return [LocalizationItem(item_id, image, caption, masks, source, str(info["id"]))]

    return make


def _inflect_plural(engine: Any, text: str) -> str | None:
    """inflect's plural of ``text`` when it is a plural of it: ``None`` when inflect gives the
    word itself ("sheep") or takes it for a plural already and singularises it ("skis")."""
    plural = engine.plural(text)
    if not plural or plural == text or engine.plural(plural) == text:
        return None
    return plural


def _whole_word(text: str, caption: str) -> bool:
    """Whether ``text`` occurs in ``caption`` as the paper searches it:
    ``re.search(r"\b" + re.escape(text) + r"\b", caption)`` (case-sensitive)."""
    return re.search(r"\b" + re.escape(text) + r"\b", caption) is not None


def _paper_word(name: str, plural: str, caption: str) -> str | None:
    """The paper's word for category ``name`` in ``caption``: the plural if it occurs as a
    whole word, else the name if it does, else ``None``."""
    if _whole_word(plural, caption):
        return plural
    return name if _whole_word(name, caption) else None


def _paper_item(
    instances: Any,
    info: dict[str, Any],
    category: int,
    word: str,
    caption: str,
    source: str,
    root: Path,
    instances_json: str | Path,
) -> Callable[[], list[LocalizationItem]]:
    """A maker of the paper's item of ``category`` in image ``info``, named by ``word`` in
    ``caption``: its mask the union of all the category's instances, crowd ones included."""

    def make() -> list[LocalizationItem]:
        image_id = info.get("id")
        image = _coco_image(info, root, instances_json)
        name = _our_word(word, caption)
        parts = instances.loadAnns(
            instances.getAnnIds(imgIds=[image_id], catIds=[category], iscrowd=None)
        )
        mask = _category_mask(parts, info, instances_json)
        item_id = f"{image_id}/{category}"
        return [LocalizationItem(item_id, image, caption, {name: mask}, source, str(image_id))]

    return make


def _our_word(word: str, caption: str) -> str:
    """``word`` as a word of ours in ``caption``: itself, or where the paper's regular expression
    finds it inside one of our words ("dog" in "dog's" or "hot-dog": ours keep inner apostrophes
    and hyphens), that whole word, whose information is then measured."""
    try:
        occurrences(caption, word)
        return word
    except ValueError:
        pass
    match = re.search(r"\b" + re.escape(word) + r"\b", caption)
    for token in split_words(caption):
        if match is not None and token.start <= match.start() < token.end:
            return token.text
    raise InvalidLine(f"the paper's word {word!r} is not a word of the caption {caption!r}")


def _paper_items(
    instances: Any,
    captions: Any,
    root: Path,
    instances_json: str | Path,
    captions_json: str | Path,
    collector: _Collector,
    limit: int | None,
) -> None:
    """COCO-IT as Kong et al. build it (``datasets/coco_it_generator.py``), into ``collector``."""
    import inflect

    engine = inflect.engine()
    plurals: dict[int, str] = {}
    position = {id(ann): k for k, ann in enumerate(captions.dataset.get("annotations", []))}
    checked: dict[int, bool] = {}

    def caption_of(ann: dict[str, Any]) -> str | None:
        """The caption's text, or ``None`` (recorded as bad, once) if it has none."""
        key = id(ann)
        if key not in checked:
            before = len(collector.bad)
            source = f"{captions_json}[{position[key]}]"

            def check() -> list[Any]:
                _string(ann, "caption")
                return []

            collector.take(source, check)
            checked[key] = len(collector.bad) == before
        return ann["caption"] if checked[key] else None

    for image_id in instances.getImgIds():  # the instances file's order, as the paper's
        info = instances.imgs[image_id]
        anns = captions.imgToAnns.get(image_id, [])  # the captions file's order
        done: set[int] = set()
        for instance in instances.imgToAnns.get(image_id, []):
            if limit is not None and len(collector.items) >= limit:
                return
            category = instance["category_id"]
            if category in done or category not in instances.cats:
                continue
            name = instances.cats[category].get("name")
            if not isinstance(name, str) or not name.strip():
                continue  # no name to find in a caption
            if category not in plurals:
                plurals[category] = engine.plural(name)
            for ann in anns:
                caption = caption_of(ann)
                word = None if caption is None else _paper_word(name, plurals[category], caption)
                if word is None:
                    continue
                done.add(category)
                source = f"{captions_json}[{position[id(ann)]}]"
                make = _paper_item(
                    instances, info, category, word, caption, source, root, instances_json
                )
                collector.take(source, make)
                break


def read_coco(
    instances_json: str | Path,
    captions_json: str | Path,
    image_root: str | Path,
    synonyms: dict[str, list[str]] | None = None,
    skip_bad: bool = False,
    limit: int | None = None,
    protocol: str = "ours",
) -> tuple[list[LocalizationItem], Bad]:
    """Localization items from COCO instances and captions files (read with pycocotools).

    ``protocol="ours"`` (the default): for each image (by id) and each of its captions (by id),
    an item whose masks hold, for each category annotated in the image whose name or synonym
    occurs in the caption as whole words (case-insensitive; the last word may be plural, "dogs"
    for "dog", or possessive; irregular plurals, "mice", "geese", come from ``inflect``), the
    union of that category's instance masks, keyed by the words as written in the caption (its
    first mention). Synonyms are ``COCO_SYNONYMS`` extended by ``synonyms``
    (``{category name: [words]}``). Captions that mention no annotated category give no item.
    Ids are ``"{image_id}/{caption_id}"``; sources ``"{captions_json}[{k}]"``, ``k`` the
    caption's index in the file's ``"annotations"`` array.

    ``protocol="paper"``: COCO-IT as Kong et al. build it. For each image (in the instances
    file's order) and each category annotated in it (in the order of its instance annotations),
    one item: the first of the image's captions (in the captions file's order) holding the
    category's name or its plural (``inflect``'s ``engine().plural``) as a whole word, as the
    paper's regular expression ``\bname\b`` finds it (case-sensitive; no synonyms); the
    word is the plural if it occurs, else the name; the mask is the union of all the category's
    instances (crowd ones included). A category no caption names gives no item. Ids are
    ``"{image_id}/{category_id}"``; the source is the caption's. An item whose word the regular
    expression finds inside one of our words ("dog" in "dog's", "hot-dog") measures that word.
    ``synonyms`` are refused with it.

    Both: items of one image share their ``cluster``, ``str(image_id)``. Masks are
    ``CocoMask``, built only when loaded. Images are ``image_root / file_name``. ``limit``
    stops after that many items. Returns ``(items, bad)``; see the module docstring for errors
    and ``skip_bad``.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {PROTOCOLS}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be at least 0, got {limit}")
    if protocol == "paper" and synonyms:
        raise ValueError("the paper's protocol takes no synonyms (COCO-IT has none)")
    instances = _load_coco(Path(instances_json))
    captions = _load_coco(Path(captions_json))
    root = Path(image_root)
    collector = _Collector(skip_bad)
    if protocol == "paper":
        _paper_items(instances, captions, root, instances_json, captions_json, collector, limit)
        return collector.items, collector.bad

    names = {category["name"]: category["id"] for category in instances.cats.values()}
    unknown = sorted(set(synonyms or {}) - set(names))
    if unknown:
        raise ValueError(f"synonyms for categories not in {instances_json}: {', '.join(unknown)}")
    for name, words in (synonyms or {}).items():
        if isinstance(words, str) or not all(isinstance(word, str) for word in words):
            raise ValueError(f"synonyms of {name!r} must be a list of words, got {words!r}")
    import inflect

    engine = inflect.engine()
    phrases: list[tuple[tuple[str, ...], int]] = []
    for name, category in names.items():
        extra = [*COCO_SYNONYMS.get(name, ()), *(synonyms or {}).get(name, [])]
        texts = [name, *extra]
        texts += [p for text in texts if (p := _inflect_plural(engine, text)) is not None]
        for text in dict.fromkeys(texts):
            words = tuple(word.text.lower() for word in split_words(text))
            if words:
                phrases.append((words, category))
    phrases = list(dict.fromkeys(phrases))
    phrases.sort(key=lambda phrase: (-len(phrase[0]), phrase[1], phrase[0]))

    position = {id(ann): k for k, ann in enumerate(captions.dataset.get("annotations", []))}
    for image_id in sorted(captions.imgToAnns, key=_id_order):
        if limit is not None and len(collector.items) >= limit:
            break
        by_category: dict[int, list[dict[str, Any]]] = {}
        for ann in instances.imgToAnns.get(image_id, []):
            by_category.setdefault(ann["category_id"], []).append(ann)
        present = [phrase for phrase in phrases if phrase[1] in by_category]

        info = instances.imgs.get(image_id)
        for ann in sorted(captions.imgToAnns[image_id], key=lambda a: _id_order(a["id"])):
            if limit is not None and len(collector.items) >= limit:
                break
            source = f"{captions_json}[{position[id(ann)]}]"
            if info is None:
                make = _missing_image(image_id, instances_json)
            else:
                make = _coco_item(ann, source, info, present, by_category, root, instances_json)
            collector.take(source, make)
    return collector.items, collector.bad


def read_coco_interventions(
    instances_json: str | Path,
    captions_json: str | Path,
    image_root: str | Path,
    synonyms: dict[str, list[str]] | None = None,
    skip_bad: bool = False,
    limit: int | None = None,
    protocol: str = "ours",
) -> tuple[list[InterventionItem], Bad]:
    """Prompt-intervention items from COCO: one per item of :func:`read_coco` (same arguments,
    ids, sources and clusters), its ``words`` the category words found in the caption (one
    under the paper's protocol). Returns ``(items, bad)``."""
    items, bad = read_coco(
        instances_json, captions_json, image_root, synonyms, skip_bad, limit, protocol
    )
    return [
        InterventionItem(
            item.id, item.image, item.caption, tuple(item.masks), item.source, cluster=item.cluster
        )
        for item in items
    ], bad


# ---------------------------------------------------------------------------------------- masks


def _mask_from_image(image: Image.Image) -> np.ndarray:
    """A bool array: non-zero pixels of any image mode (16-bit and 32-bit kept as they are,
    palette images by their colours, alpha ignored)."""
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA")
    if len(image.getbands()) == 1:
        return np.asarray(image) != 0
    if image.mode not in ("RGB", "RGBA", "LA"):
        image = image.convert("RGB")
    array = np.asarray(image)
    if image.mode in ("RGBA", "LA"):
        array = array[..., :-1]
    return (array != 0).any(axis=-1)


def _open_mask(path: str | Path) -> np.ndarray:
    """A mask file as a bool array; ``ValueError`` if missing or not an image."""
    try:
        with Image.open(path) as opened:
            return _mask_from_image(opened)
    except (OSError, UnidentifiedImageError) as err:
        reason = "not an image" if isinstance(err, UnidentifiedImageError) else err.strerror
        raise ValueError(f"cannot read mask {str(path)!r}: {reason}") from None


def _file_size_hw(path: str | Path, what: str) -> tuple[int, int]:
    """``(height, width)`` of an image file, reading its header only."""
    try:
        with Image.open(path) as opened:
            width, height = opened.size
    except (OSError, UnidentifiedImageError) as err:
        reason = "not an image" if isinstance(err, UnidentifiedImageError) else err.strerror
        raise ValueError(f"cannot read {what} {str(path)!r}: {reason}") from None
    return height, width


def _mask_size_hw(mask: Any) -> tuple[int, int]:
    """``(height, width)`` of a mask before any resizing."""
    if isinstance(mask, (str, Path)):
        return _file_size_hw(mask, "mask")
    if isinstance(mask, CocoMask):
        return mask.height, mask.width
    if isinstance(mask, Image.Image):
        return mask.height, mask.width
    if isinstance(mask, (np.ndarray, torch.Tensor)):
        if mask.ndim != 2:
            raise ValueError(f"a mask must be 2-D (H, W), got shape {tuple(mask.shape)}")
        return int(mask.shape[0]), int(mask.shape[1])
    raise ValueError(f"expected a mask path, array, tensor or CocoMask, got {type(mask).__name__}")


def _mask_array(mask: Any) -> np.ndarray:
    """A mask of any accepted kind as a bool array ``(H, W)``; ``ValueError`` saying why not."""
    if isinstance(mask, (str, Path)):
        array = _open_mask(mask)
    elif isinstance(mask, Image.Image):
        array = _mask_from_image(mask)
    elif isinstance(mask, CocoMask):
        array = mask.array()
    elif isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu()
        if mask.is_floating_point() and mask.isnan().any():
            raise ValueError("a mask must not hold NaN (neither inside nor outside)")
        array = (mask != 0).numpy()
    elif isinstance(mask, np.ndarray):
        if mask.dtype.kind in "fc" and np.isnan(mask).any():
            raise ValueError("a mask must not hold NaN (neither inside nor outside)")
        array = mask != 0
    else:
        raise ValueError(
            f"expected a mask path, array, tensor or CocoMask, got {type(mask).__name__}"
        )
    if array.ndim != 2:
        raise ValueError(f"a mask must be 2-D (H, W), got shape {tuple(array.shape)}")
    h, w = array.shape
    if h == 0 or w == 0:
        raise ValueError(f"a mask must not be empty, got shape {(h, w)}")
    return array


@dataclass(frozen=True)
class MaskView:
    """A mask as the model sees its image, and what fitting it did to the mask.

    Attributes:
        mask: bool ``(size, size)``, aligned with ``images.load_image(image, size, fit)``.
        original: pixels inside the mask as given.
        resized: pixels inside after resizing, before the centre crop (``fit="crop"``).
        kept: pixels inside in ``mask`` (``resized - kept`` were cut off by the crop).
    """

    mask: torch.Tensor
    original: int
    resized: int
    kept: int


def mask_view(mask: Any, size: int, fit: str = "crop") -> MaskView:
    """:func:`load_mask` with the pixel counts that say what the resize and crop did to it."""
    check_fit(fit)
    array = _mask_array(mask)
    h, w = array.shape
    pixels = torch.from_numpy(np.ascontiguousarray(array)).float()
    if fit == "squash":
        new_h = new_w = size
    else:  # the same sizes and crop as images.load_image
        scale = size / min(h, w)
        new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    if (new_h, new_w) != (h, w):
        pixels = F.interpolate(pixels[None, None], size=(new_h, new_w), mode="nearest-exact")[0, 0]
    resized = pixels > 0.5
    top, left = (new_h - size) // 2, (new_w - size) // 2
    view = resized[top : top + size, left : left + size]
    return MaskView(view, int(array.sum()), int(resized.sum()), int(view.sum()))


def load_mask(mask: Any, size: int, fit: str = "crop") -> torch.Tensor:
    """A mask as a bool tensor ``(size, size)``, aligned with
    ``images.load_image(image, size, fit)``.

    ``mask`` is a path (any image; non-zero inside, 16-bit and palette PNGs included), a PIL
    image, an array or tensor ``(H, W)`` (non-zero inside) or a ``CocoMask``. It is transformed
    as ``load_image`` transforms its image, with nearest-neighbour resampling: shorter side to
    ``size`` then the centre crop (``fit="crop"``), or resized to ``size x size``
    (``fit="squash"``, PIL's ``NEAREST`` as the paper resizes its masks). Raises ``ValueError``
    for a mask that is unreadable, not 2-D or holds NaN.
    """
    return mask_view(mask, size, fit).mask


# Why a word's mask is flagged (the text before " (" of a flag): words with the first three are
# not scored; the fourth are scored, flagged.
FLAG_EMPTY = "mask empty in the annotation"
FLAG_RESIZED_AWAY = "mask empty after resizing"
FLAG_CROPPED_AWAY = "mask empty after the centre crop"
FLAG_MOSTLY_CROPPED = "mask mostly cut off by the centre crop"
UNSCORED_FLAGS = (FLAG_EMPTY, FLAG_RESIZED_AWAY, FLAG_CROPPED_AWAY)


def flag_reason(flag: str) -> str:
    """A flag's reason without its numbers: the text before ``" ("``."""
    return flag.split(" (", 1)[0]


def _mask_flag(view: MaskView, size: int) -> str | None:
    """One line saying what is wrong with a mask as the model sees it, or ``None``."""
    if view.original == 0:
        return f"{FLAG_EMPTY} (no pixel inside)"
    if view.resized == 0:
        return f"{FLAG_RESIZED_AWAY} (its {view.original} pixels vanish at {size}x{size})"
    if view.kept == 0:
        return f"{FLAG_CROPPED_AWAY} (kept 0 of {view.resized} pixels)"
    if 2 * view.kept < view.resized:
        return f"{FLAG_MOSTLY_CROPPED} (kept {view.kept} of {view.resized} pixels)"
    return None


def check_mask_size(
    mask: Any, image_size_hw: tuple[int, int], source: str = "", word: str | None = None
) -> None:
    """Raise ``BadItemError`` ``"mask is HxW, image is HxW"`` unless the mask's original size is
    the image's ``(height, width)`` (before resizing); ``source`` prefixes the message and
    ``word`` names the mask. A path is opened without decoding its pixels."""
    prefix = f"{source}: " if source else ""
    try:
        h, w = _mask_size_hw(mask)
    except ValueError as err:
        raise BadItemError(f"{prefix}{err}") from None
    if (h, w) != tuple(image_size_hw):
        name = "mask" if word is None else f"mask of {word!r}"
        height, width = image_size_hw
        raise BadItemError(f"{prefix}{name} is {h}x{w}, image is {height}x{width}")


def _image_size_hw(image: Any) -> tuple[int, int]:
    """``(height, width)`` of an image before any resizing, decoding no pixels."""
    if isinstance(image, (str, Path)):
        return _file_size_hw(image, "image")
    if isinstance(image, Image.Image):
        return image.height, image.width
    if is_lazy_image(image):
        opened = image.open()
        return opened.height, opened.width
    if isinstance(image, torch.Tensor) and image.ndim == 3:
        return int(image.shape[1]), int(image.shape[2])
    raise ValueError(f"expected an image path, PIL image or tensor (3, H, W), got {type(image)}")


def load_item_image_and_masks(
    item: LocalizationItem, size: int, fit: str = "crop"
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, str]]:
    """The item's image ``(3, size, size)`` in [-1, 1] (``images.load_image``), its masks
    ``{word: bool (size, size)}`` (``load_mask``), aligned, both fitted by ``fit``
    (``"crop"`` or ``"squash"``), and ``{word: flag}`` for the masks that are flagged.

    A flag is one line whose text before ``" ("`` is one of :data:`UNSCORED_FLAGS` (the mask is
    empty where the model sees the image: all zero, lost in the resize, or inside only in the
    margin the centre crop cuts off; such a word has no region and is not scored: its IoU (0)
    and average precision (undefined) would disagree about it) or :data:`FLAG_MOSTLY_CROPPED`
    (the centre crop cut off more than half of it: scored, flagged). Under ``fit="squash"``
    nothing is cut off.

    Raises ``BadItemError`` naming the item's source if a file cannot be read or a mask's size
    is not the image's.
    """
    source = item.source or item.id
    try:
        check_fit(fit)
        image_hw = _image_size_hw(item.image)
    except ValueError as err:
        raise BadItemError(f"{source}: {err}") from None
    for word, mask in item.masks.items():
        check_mask_size(mask, image_hw, source=source, word=word)
    try:
        image = load_image(item.image, size, fit)
    except ValueError as err:
        raise BadItemError(f"{source}: {err}") from None
    masks, flags = {}, {}
    for word, mask in item.masks.items():
        try:
            view = mask_view(mask, size, fit)
        except ValueError as err:
            raise BadItemError(f"{source}: mask of {word!r}: {err}") from None
        masks[word] = view.mask
        flag = _mask_flag(view, size)
        if flag is not None:
            flags[word] = flag
    return image, masks, flags
