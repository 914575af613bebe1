"""Readers of published compositional benchmarks in the layouts their authors release them.

- Winoground (Thrush et al. 2022; ``facebook/winoground`` on the Hugging Face hub): the
  JSON-lines ``data/examples.jsonl``, one line per group ``{"id", "caption_0", "caption_1",
  "image_0", "image_1", "tag", "secondary_tag", "num_main_preds", "collapsed_tag"}`` whose
  ``image_k`` is a file stem (``"ex_0_img_0"``) of ``images/ex_0_img_0.png`` (``data/images.zip``
  unpacked): :func:`read_winoground`.
- ARO's VG-Relation and VG-Attribution JSON: ``datasets.read_aro``; the parquet copies of them
  on the hub (``gowitheflow/ARO-Visual-Relation``, ``mteb/ARO-Visual-Relation``,
  ``gowitheflow/ARO-Visual-Attribution``: columns ``image`` (struct ``{bytes, path}``),
  ``true_caption``, ``false_caption``, ``relation_name`` or ``attributes``, ``bbox`` (struct
  ``{x, y, w, h}``)): :func:`read_aro_parquet`.
- ARO's COCO-Order and Flickr30k-Order, built from BLIP's Karpathy test captions
  (``coco_karpathy_test.json``, ``flickr30k_test.json``: a JSON array of ``{"image":
  "val2014/COCO_val2014_....jpg", "caption": [five captions]}``) with ARO's perturbations:
  :func:`read_aro_order`.

:func:`detect_format` tells them apart by content. Every reader returns ``(items, bad)`` with
the errors, ``skip_bad`` and stable ids of ``datasets``' readers (see its docstring), and sets
each item's ``cluster`` to a key of its photo that does not depend on where the files are.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from . import perturbations
from .datasets import (
    Bad,
    InvalidLine,
    _captions,
    _Collector,
    _existing,
    _item_id,
    _kind,
    _load_json,
    _read_jsonl,
    _string,
    _strings,
    aro_box,
    aro_type,
    default_image_root,
    group_items,
    read_aro,
    read_compositional,
)
from .items import BadItemError, CompositionalItem

# The data formats each evaluation reads (``--format``).
TASK_FORMATS = {
    "compositional": (
        "jsonl",
        "aro",
        "aro-order",
        "aro-parquet",
        "winoground",
        "winoground-parquet",
    ),
    "localization": ("jsonl", "coco"),
    "intervention": ("jsonl", "coco"),
    "interaction": ("jsonl",),
}
# Bytes read from the start of a file to tell its format.
_HEAD = 1 << 16
# A COCO annotation file's first key.
_COCO_START = r'\{\s*"(info|licenses|images|annotations|categories)"\s*:'


# ------------------------------------------------------------------------------------ Winoground


def read_winoground(
    path: str | Path, image_root: str | Path | None = None, skip_bad: bool = False
) -> tuple[list[CompositionalItem], Bad]:
    """Winoground's ``examples.jsonl``: each line gives its group's two items.

    Item ``k`` (``0``, ``1``) has id ``"{id}/{k}"``, image ``image_root / "{image_k}.png"`` (the
    line's ``image_k`` is the file's stem, as released; a name already ending in ``.png`` is
    taken as is), captions ``(caption_0, caption_1)``, ``true_index=k``, ``type`` the line's
    main ``tag`` (``"Object"``, ``"Relation"``, ``"Both"``), ``group`` and ``cluster`` the
    line's id. ``image_root`` defaults to ``images/`` beside the file if it exists, else the
    file's folder. A missing image or field makes the line bad. Returns ``(items, bad)``.
    """
    path = Path(path)
    root = Path(image_root) if image_root is not None else default_image_root(path)

    def parse(record: dict[str, Any], source: str, default_id: str) -> list[CompositionalItem]:
        group = _item_id(record, default_id)
        pair = [_string(record, f"caption_{k}") for k in range(2)]  # names a missing field
        captions = _captions({"captions": pair})
        kind = _string(record, "tag", optional=True)
        images = []
        for k in range(2):
            stem = _string(record, f"image_{k}") or ""
            name = stem if stem.lower().endswith(".png") else f"{stem}.png"
            images.append(_existing(root, name, f"image_{k}"))
        return group_items(group, images, captions, kind, source)

    return _read_jsonl(path, parse, skip_bad)


def read_winoground_parquet(
    path: str | Path, skip_bad: bool = False
) -> tuple[list[CompositionalItem], Bad]:
    """Winoground as the hub serves it now (``facebook/winoground``, ``data/test-*.parquet``):
    columns ``id``, ``image_0``, ``image_1`` (images stored as ``{bytes, path}``),
    ``caption_0``, ``caption_1``, ``tag``, ...; ``path`` a file or a folder of shards. The items
    are those :func:`read_winoground` gives for the same lines (ids ``"{id}/{k}"``, group and
    cluster the id, type the tag), each image a :class:`ParquetImage`. Sources are
    ``"{file}[{row}]"``. Returns ``(items, bad)``.
    """
    pq = _pyarrow()
    collector = _Collector(skip_bad)
    for file in _parquet_files(Path(path)):
        try:
            parquet = pq.ParquetFile(file)
        except Exception as err:  # pyarrow's errors: ArrowInvalid, OSError
            raise BadItemError(f"{file}: not a parquet file ({str(err).splitlines()[0]})") from None
        names = parquet.schema_arrow.names
        missing = [n for n in ("image_0", "image_1", "caption_0", "caption_1") if n not in names]
        if missing:
            raise BadItemError(
                f"{file}: not Winoground: no column {', '.join(map(repr, missing))} "
                f"(it has {', '.join(names)})"
            )
        text = [n for n in names if n not in ("image_0", "image_1")]
        starts = _row_group_starts(file)
        for group in range(parquet.num_row_groups):
            rows = parquet.read_row_group(group, columns=text).to_pylist()
            stored = parquet.read_row_group(group, columns=["image_0", "image_1"]).to_pylist()
            for k, (row, images) in enumerate(zip(rows, stored, strict=True)):
                number = starts[group] + k
                source = f"{file}[{number}]"
                make = functools.partial(
                    _winoground_parquet_items, row, images, file, number, source
                )
                collector.take(source, make)
    return collector.items, collector.bad


def _winoground_parquet_items(
    row: dict[str, Any], images: dict[str, Any], file: Path, number: int, source: str
) -> list[CompositionalItem]:
    record = {k: v for k, v in row.items() if v is not None}
    group = _item_id(record, f"row{number}")
    pair = [_string(record, f"caption_{k}") for k in range(2)]
    captions = _captions({"captions": pair})
    kind = _string(record, "tag", optional=True)
    stored = []
    for k in range(2):
        data, _ = _image_bytes_of(images[f"image_{k}"])
        if data is None:
            raise InvalidLine(f"image_{k} missing: no image bytes")
        digest = hashlib.sha256(data).hexdigest()
        stored.append(ParquetImage(file, number, f"image_{k}", digest))
    return group_items(group, stored, captions, kind, source)


# ------------------------------------------------------------------------------- ARO in parquet


def _pyarrow() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("reading parquet files needs pyarrow: pip install pyarrow") from None
    return pq


@dataclass(frozen=True)
class ParquetImage:
    """An image stored in a parquet file, decoded only when opened.

    Attributes:
        file: the parquet file.
        row: the image's row in the file.
        column: the column holding it (a struct ``{bytes, path}``, as the ``datasets`` library
            stores images, or plain bytes).
        sha256: the SHA-256 of its bytes, hex.

    ``str()`` is the file's name, the row and the digest: what the run's fingerprint hashes
    (it names the content, not where the file lies).
    """

    file: Path
    row: int
    column: str
    sha256: str

    def __str__(self) -> str:
        return f"{self.file.name}[{self.row}]:sha256:{self.sha256}"

    def open(self) -> Image.Image:
        """The decoded image; ``ValueError`` in one line if the bytes are not an image."""
        data = _parquet_image_bytes(self.file, self.column, self.row)
        try:
            image = Image.open(io.BytesIO(data))
            image.load()
            return image
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as err:
            reason = "not an image" if isinstance(err, UnidentifiedImageError) else str(err)
            raise ValueError(f"cannot read image {self}: {reason}") from None


def _image_bytes_of(value: Any) -> tuple[bytes | None, str | None]:
    """``(bytes, path)`` of one stored image: a ``{bytes, path}`` struct or plain bytes."""
    if isinstance(value, dict):
        data, name = value.get("bytes"), value.get("path")
        return data, (name if isinstance(name, str) and name.strip() else None)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), None
    return None, None


def _version(file: Path) -> tuple[int, int]:
    """What the caches below key a file's content by: its size and change time."""
    stat = file.stat()
    return stat.st_size, stat.st_mtime_ns


def _row_group_starts(file: Path) -> tuple[int, ...]:
    """The first row of each row group of ``file``, and the row count last."""
    return _cached_starts(file, _version(file))


@functools.lru_cache(maxsize=8)
def _cached_starts(file: Path, version: tuple[int, int]) -> tuple[int, ...]:
    meta = _pyarrow().ParquetFile(file).metadata
    starts = [0]
    for k in range(meta.num_row_groups):
        starts.append(starts[-1] + meta.row_group(k).num_rows)
    return tuple(starts)


@functools.lru_cache(maxsize=2)
def _row_group_images(
    file: Path, version: tuple[int, int], column: str, group: int
) -> tuple[Any, ...]:
    """The stored images of one row group (kept for the next items, read in order)."""
    table = _pyarrow().ParquetFile(file).read_row_group(group, columns=[column])
    return tuple(table.column(column).to_pylist())


def _parquet_image_bytes(file: Path, column: str, row: int) -> bytes:
    starts = _row_group_starts(file)
    group = next(k for k in range(len(starts) - 1) if starts[k] <= row < starts[k + 1])
    images = _row_group_images(file, _version(file), column, group)
    data, _ = _image_bytes_of(images[row - starts[group]])
    if data is None:
        raise ValueError(f"{file}[{row}]: no image bytes in column {column!r}")
    return data


def _parquet_files(path: Path) -> list[Path]:
    """``path`` itself, or the ``*.parquet`` files of a folder in name order (the shards
    ``test-00000-of-00007.parquet``, ... of a hub copy)."""
    if path.is_dir():
        files = sorted(path.glob("*.parquet"))
        if not files:
            raise BadItemError(f"{path}: no .parquet files in the folder")
        return files
    if not path.is_file():
        raise BadItemError(f"{path}: cannot read the file: No such file or directory")
    return [path]


def _aro_record(row: dict[str, Any]) -> dict[str, Any]:
    """A parquet row in the shape of an entry of ARO's JSON (``bbox`` struct unpacked)."""
    record = {k: v for k, v in row.items() if v is not None}
    box = record.pop("bbox", None)
    if isinstance(box, dict):
        for k in "xywh":
            if box.get(k) is not None:
                record[f"bbox_{k}"] = box[k]
    return record


def read_aro_parquet(
    path: str | Path, skip_bad: bool = False
) -> tuple[list[CompositionalItem], Bad]:
    """ARO's VG-Relation or VG-Attribution from a parquet copy holding the images.

    ``path`` is a parquet file or a folder of them (a hub copy's shards, taken in name order,
    rows counted across them). Columns: ``image`` (a struct ``{bytes, path}`` as the
    ``datasets`` library stores images, or bytes), ``true_caption``, ``false_caption``,
    ``relation_name`` or ``attributes``, the box as a struct ``bbox {x, y, w, h}`` or as
    ``bbox_x``, ... ``bbox_h``; optionally ``image_path`` and ``id``. The items are those
    ``datasets.read_aro`` gives for the same entries: ids ``"entry{i}"`` (``i`` the row, counted
    across the files) unless an ``id`` column says otherwise, ARO's caption order ``(false,
    true)`` with ``true_index=1``, the same types and boxes. The image is a
    :class:`ParquetImage`, read when evaluated. ``cluster`` is the ``image_path`` column, else
    the stored image's ``path``, else ``"sha256:{digest}"`` of its bytes. Sources are
    ``"{file}[{row}]"``. Returns ``(items, bad)``; a file that is not parquet, or lacks a
    column, is refused whole.
    """
    pq = _pyarrow()
    path = Path(path)
    collector = _Collector(skip_bad)
    index = 0
    for file in _parquet_files(path):
        try:
            parquet = pq.ParquetFile(file)
        except Exception as err:  # pyarrow's errors: ArrowInvalid, OSError
            raise BadItemError(f"{file}: not a parquet file ({str(err).splitlines()[0]})") from None
        names = parquet.schema_arrow.names
        _check_columns(file, names)
        text = [n for n in names if n != "image"]
        starts = _row_group_starts(file)
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group, columns=text)
            rows = table.to_pylist()
            # The images of the group, read for their digest and dropped with the group.
            stored = parquet.read_row_group(group, columns=["image"]).column("image").to_pylist()
            for k, (row, value) in enumerate(zip(rows, stored, strict=True)):
                number = starts[group] + k
                source = f"{file}[{number}]"
                make = functools.partial(
                    _aro_parquet_item, row, value, file, number, source, f"entry{index}"
                )
                collector.take(source, make)
                index += 1
    return collector.items, collector.bad


def _check_columns(file: Path, names: list[str]) -> None:
    missing = [n for n in ("image", "true_caption", "false_caption") if n not in names]
    if "relation_name" not in names and "attributes" not in names:
        missing.append("relation_name' or 'attributes")
    if "bbox" not in names and not all(f"bbox_{k}" in names for k in "xywh"):
        missing.append("bbox")
    if missing:
        raise BadItemError(
            f"{file}: not an ARO parquet copy: no column {', '.join(repr(m) for m in missing)} "
            f"(it has {', '.join(names)})"
        )


def _aro_parquet_item(
    row: dict[str, Any], value: Any, file: Path, number: int, source: str, default_id: str
) -> list[CompositionalItem]:
    record = _aro_record(row)
    item_id = _item_id(record, default_id)
    kind = aro_type(record)
    box = aro_box(record)
    true_caption = _string(record, "true_caption") or ""
    false_caption = _string(record, "false_caption") or ""
    data, stored_name = _image_bytes_of(value)
    if data is None:
        where = f" (only its path {stored_name!r})" if stored_name else ""
        raise InvalidLine(f"image missing: no image bytes in column 'image'{where}")
    digest = hashlib.sha256(data).hexdigest()
    cluster = _string(record, "image_path", optional=True) or stored_name or f"sha256:{digest}"
    return [
        CompositionalItem(
            id=item_id,
            image=ParquetImage(file, number, "image", digest),
            captions=(false_caption, true_caption),
            true_index=1,
            type=kind,
            box=box,
            source=source,
            cluster=cluster,
        )
    ]


# -------------------------------------------------------------------- COCO-Order, Flickr30k-Order


def read_aro_order(
    path: str | Path,
    image_root: str | Path | None = None,
    skip_bad: bool = False,
    tagger: perturbations.Tagger | None = None,
) -> tuple[list[CompositionalItem], Bad]:
    """ARO's COCO-Order or Flickr30k-Order from BLIP's Karpathy test captions
    (``coco_karpathy_test.json``, ``flickr30k_test.json``).

    The file is a JSON array of ``{"image": name, "caption": [captions]}``. Each caption ``k``
    of an entry gives an item, id ``"{image}#{k}"``, with captions ``[pre_caption(c),
    *(pre_caption(f(c)) for f in ARO's four perturbations)]`` (``perturbations.PERTURBATIONS``,
    ARO's order, seeded by the id: the same in every run; ``pre_caption`` with ARO's 30 words),
    ``true_index=0`` (ARO's order), ``type=None`` and ``cluster`` the image's name as written.
    A perturbed caption equal to the true one is kept (the summary flags it). ``tagger`` tags
    each caption (default: spaCy's ``en_core_web_sm``, as ARO). Images are ``image_root /
    image`` (default: the file's folder, ARO's ``root_dir``). Sources are
    ``"{path}[{i}].caption[{k}]"``. Returns ``(items, bad)``.
    """
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    tag = tagger or perturbations.spacy_tagger
    entries = _load_json(path)
    if not isinstance(entries, list):
        raise BadItemError(
            f"{path}:1: expected a JSON array of {{'image', 'caption'}} entries, got "
            f"{_kind(entries)}"
        )
    collector = _Collector(skip_bad)
    for index, entry in enumerate(entries):
        source = f"{path}[{index}]"
        try:
            if not isinstance(entry, dict):
                raise InvalidLine(f"expected a JSON object, got {_kind(entry)}")
            name = _string(entry, "image") or ""
            captions = _strings(entry, "caption")
            if not captions:
                raise InvalidLine("'caption' is empty")
            image = _existing(root, name, "image")
        except InvalidLine as err:
            collector.take(source, functools.partial(_raise, err))
            continue
        for k, caption in enumerate(captions):
            where = f"{source}.caption[{k}]"
            make = functools.partial(_order_item, name, image, k, caption, where, tag)
            collector.take(where, make)
    return collector.items, collector.bad


def _raise(err: Exception) -> list[Any]:
    raise err


def _order_item(
    name: str, image: Path, k: int, caption: str, source: str, tagger: perturbations.Tagger
) -> list[CompositionalItem]:
    item_id = f"{name}#{k}"
    true = perturbations.pre_caption(caption, perturbations.ARO_MAX_WORDS)
    if not true:
        raise InvalidLine(f"caption {caption!r} is empty after ARO's pre_caption")
    false = perturbations.perturbed_captions(caption, item_id, tagger)
    return [
        CompositionalItem(
            id=item_id,
            image=image,
            captions=(true, *false),
            true_index=0,
            source=source,
            cluster=name,
        )
    ]


# ------------------------------------------------------------------------------------ formats


def detect_format(path: Path, task: str) -> str:
    """The format of data file ``path`` by its content, not its name: a parquet file (or a
    folder of them) is ``"winoground-parquet"`` with a ``caption_0`` column, else
    ``"aro-parquet"``; a JSON array whose first entry has
    ``"relation_name"`` or ``"attributes"`` is ``"aro"``, one whose first entry has ``"image"``
    and a ``"caption"`` list ``"aro-order"``; a JSON object with ``"images"`` or
    ``"annotations"`` is ``"coco"``; JSON lines whose first record has ``"caption_0"`` and
    ``"image_0"`` are ``"winoground"``, other JSON lines ``"jsonl"``. Reads only the start of
    the file (all of it only for an array whose first entry is that long). ``ValueError`` in
    one line naming the file and the ``--format`` choices of ``task`` when it cannot tell.
    """
    path = Path(path)
    every = sorted({f for formats in TASK_FORMATS.values() for f in formats})
    choices = ", ".join(TASK_FORMATS.get(task, every))

    def unknown(what: str) -> ValueError:
        return ValueError(f"cannot tell the format of {path} ({what}): give --format ({choices})")

    if path.is_dir():
        files = sorted(path.glob("*.parquet"))
        if not files:
            raise unknown("a folder without .parquet files")
        path_head = files[0]
    else:
        path_head = path
    try:
        with path_head.open("rb") as f:
            head = f.read(_HEAD)
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror}") from None
    if head[:4] == b"PAR1":
        try:
            names = _pyarrow().ParquetFile(path_head).schema_arrow.names
        except ImportError:
            raise
        except Exception:  # pyarrow's errors: the reader names them
            return "aro-parquet"
        return "winoground-parquet" if "caption_0" in names else "aro-parquet"
    if path.is_dir():
        raise unknown(f"{path_head.name} is not parquet")
    text = head.decode("utf-8-sig", errors="replace").lstrip()
    if text.startswith("["):
        first = _first_entry(path, text)
        if isinstance(first, dict):
            if "relation_name" in first or "attributes" in first:
                return "aro"
            if "image" in first and isinstance(first.get("caption"), list):
                return "aro-order"
        raise unknown("a JSON array of neither ARO's entries nor Karpathy test captions")
    if text.startswith("{"):
        line = text.split("\n", 1)[0]
        record = None
        if "\n" in text or len(head) < _HEAD:  # the first line is whole
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
        if isinstance(record, dict):
            images = record.get("images")
            image_entries = isinstance(images, list) and any(isinstance(i, dict) for i in images)
            if "annotations" in record or image_entries:  # not a 2x2 line's image names
                return "coco"
            if "caption_0" in record and "image_0" in record:
                return "winoground"
            return "jsonl"
        # A long first line (COCO files are one line): its first key, or the keys in view.
        if re.match(_COCO_START, text) or re.search(r'"(images|annotations)"\s*:', text):
            return "coco"
        raise unknown("its first line is not a JSON object")
    raise unknown("neither JSON, JSON lines nor parquet")


def _first_entry(path: Path, text: str) -> Any:
    """The first element of the JSON array whose start is ``text`` (the whole file read if
    the first element runs past it)."""
    decoder = json.JSONDecoder()
    start = len(text) - len(text[1:].lstrip())
    try:
        return decoder.raw_decode(text, start)[0]
    except json.JSONDecodeError:
        pass
    try:
        whole = path.read_text(encoding="utf-8-sig").lstrip()
        return decoder.raw_decode(whole, len(whole) - len(whole[1:].lstrip()))[0]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


# The compositional readers by format, each ``(path, image_root, skip_bad) -> (items, bad)``.
def read(
    fmt: str,
    path: str | Path,
    image_root: str | Path | None,
    skip_bad: bool,
    tagger: perturbations.Tagger | None = None,
) -> tuple[list[CompositionalItem], Bad]:
    """Compositional items of ``path`` in format ``fmt`` (one of
    ``TASK_FORMATS["compositional"]``); ``tagger`` for ``"aro-order"``'s perturbations."""
    if fmt == "jsonl":
        return read_compositional(path, image_root, skip_bad=skip_bad)
    if fmt == "aro":
        return read_aro(path, image_root, skip_bad=skip_bad)
    if fmt == "aro-order":
        return read_aro_order(path, image_root, skip_bad=skip_bad, tagger=tagger)
    if fmt == "winoground":
        return read_winoground(path, image_root, skip_bad=skip_bad)
    if fmt in ("aro-parquet", "winoground-parquet"):
        if image_root is not None:
            raise ValueError("a parquet copy holds its images: image_root does not apply")
        if fmt == "winoground-parquet":
            return read_winoground_parquet(path, skip_bad=skip_bad)
        return read_aro_parquet(path, skip_bad=skip_bad)
    raise ValueError(f"the compositional evaluation does not read {fmt!r} data")
