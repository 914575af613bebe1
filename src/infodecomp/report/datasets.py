"""The report of a dataset run: ``DIR/report.html`` beside ``summary.json``.

One self-contained HTML file (inline CSS and JavaScript, pictures as ``data:`` URIs, nothing
from the network): the summary with its 95% intervals, then an item browser, a table sortable by
any column whose heading is a button (click it, or Enter / Space on it), worst first:

* compositional: the true caption's margin over the best false one (nats, 95% interval,
  verdict), each caption with its score;
* localization: per (item, word) the image with the ground-truth mask's outline, each method's
  map with the same outline and its IoU at the paper's threshold;
* intervention: per (item, word) the regenerations with and without the word, the change map
  beside the word's information map, the mean change and their pixel correlation;
* prompts (``heatmap --prompts``): each prompt's thumbnail, its top word's map and a link to its
  own report;
* interaction: per (item, pair of words) the image and the interaction information's map, the
  interaction information, DiffusionPID's redundancy and synergy and the three informations
  (the exact model's below where it measured the same images), most synergistic first.

Pictures come from ``DIR/items/<id>.npz`` (:func:`write_item_pictures`), written by each item as
it is measured, at most :data:`THUMB` pixels a side; an item without one (a run made before these
files existed) is listed with its numbers alone. The runner rebuilds the report whenever it
rebuilds the summary (end of a run, a resumed run, ``infodecomp eval summarize``).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from ..files import write_atomic
from ..results import format_entry
from .pictures import colour_table, image_rgb

THUMB = 64  # longest side, in pixels, of every picture an item keeps for the report
SHOWN = 100  # a run with more rows than twice this shows this many worst and this many best
TILE = 96  # CSS pixels of a picture in the report (upsampled nearest-neighbour)
ITEMS = "items"  # the folder of the items' pictures

Pictures = dict[str, np.ndarray]


# ---------------------------------------------------------------------- the items' picture files


def item_path(out: str | Path, item_id: str) -> Path:
    """``out/items/<id>.npz``: the id with characters other than letters, digits, ``_.-``
    replaced, and a hash of the whole id (two ids never share a file, whatever their case)."""
    plain = re.sub(r"[^A-Za-z0-9_.-]", "_", item_id)[:60]
    digest = hashlib.sha256(item_id.encode()).hexdigest()[:10]
    return Path(out) / ITEMS / f"{plain}-{digest}.npz"


def write_item_pictures(out: str | Path, item_id: str, pictures: Pictures) -> None:
    """Write an item's pictures (name: array; uint8 or float32) whole or not at all: a
    compressed ``.npz`` (no pickled objects), :func:`~infodecomp.files.write_atomic`."""
    path = item_path(out, item_id)
    path.parent.mkdir(exist_ok=True)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **pictures)
    write_atomic(path, buffer.getvalue())


def read_item_pictures(out: str | Path, item_id: str) -> Pictures | None:
    """An item's pictures, or ``None`` if it has none (or its file is damaged)."""
    path = item_path(out, item_id)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def small_shape(height: int, width: int) -> tuple[int, int]:
    """``(h, w)`` of a picture of ``height x width`` pixels shrunk to at most :data:`THUMB` a
    side (never enlarged), aspect kept."""
    scale = min(1.0, THUMB / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def thumbnail(image: Any) -> np.ndarray:
    """An image as ``(h, w, 3)`` uint8, at most :data:`THUMB` pixels a side (area average).

    ``image``: a tensor ``(3, H, W)`` in [-1, 1], a PIL image or an image file. Raises
    ``ValueError`` with one line for a file that cannot be read."""
    if isinstance(image, torch.Tensor):
        picture = Image.fromarray(image_rgb(image))
    elif isinstance(image, Image.Image):
        picture = image.convert("RGB")
    else:
        try:
            with Image.open(image) as opened:
                opened.draft("RGB", (2 * THUMB, 2 * THUMB))  # JPEG: decode at a smaller scale
                picture = opened.convert("RGB")
        except (OSError, UnidentifiedImageError) as err:
            raise ValueError(f"cannot read image {str(image)!r}: {err}") from None
    h, w = small_shape(picture.height, picture.width)
    if (w, h) != picture.size:
        picture = picture.resize((w, h), Image.Resampling.BOX)
    return np.asarray(picture, dtype=np.uint8)


def map_pictures(name: str, heat: Any, shape: tuple[int, int]) -> Pictures:
    """A map ``(H, W)`` (tensor or array, any unit) at ``shape`` (area average), stored as
    ``name``: uint8 from its minimum (0) to its maximum (255), and ``name + "/range"``: those
    two values (float32, in the map's unit)."""
    heat = torch.nan_to_num(_double(heat))
    small = F.adaptive_avg_pool2d(heat[None, None], shape)[0, 0].numpy()
    low, high = float(small.min()), float(small.max())
    scaled = (small - low) / (high - low) if high > low else np.zeros_like(small)
    return {
        name: np.round(scaled * 255).astype(np.uint8),
        f"{name}/range": np.array([low, high], dtype=np.float32),
    }


def small_mask(mask: Any, shape: tuple[int, int]) -> np.ndarray:
    """A mask ``(H, W)`` (non-zero inside) at ``shape``: inside where at least half of a small
    pixel's area is; uint8 0 / 1."""
    inside = (_double(mask) != 0).double()
    small = F.adaptive_avg_pool2d(inside[None, None], shape)[0, 0]
    return (small >= 0.5).numpy().astype(np.uint8)


def _double(values: Any) -> torch.Tensor:
    """A tensor (any dtype or device, bfloat16 too) or array as a float64 CPU tensor."""
    if torch.is_tensor(values):
        return values.detach().to("cpu", torch.float64)
    return torch.as_tensor(np.asarray(values, dtype=np.float64))


# ----------------------------------------------------------------------------------- the report


def write_report(out: str | Path, summary: dict[str, Any], rows: list[dict[str, Any]]) -> Path:
    """Build ``out/report.html`` from the summary and the rows (skipped ones included) and the
    items' picture files; written whole (:func:`~infodecomp.files.write_atomic`). Returns its
    path."""
    out = Path(out)
    text = report_html(summary, rows, lambda item_id: read_item_pictures(out, item_id))
    return write_atomic(out / "report.html", text)


@dataclass
class Column:
    """A column of the item browser: its heading, a note under it, and whether it sorts (by
    each cell's key) as numbers or as text; a column without ``kind`` does not sort."""

    title: str
    note: str = ""
    kind: str | None = "number"


Cell = tuple[str, Any]  # (HTML, sort key: a number, a string or None when it has none)


@dataclass
class Browser:
    """The item browser of a run: columns; per item (or item and word) its sort key and what
    makes its cells (called only for the rows shown); the column it opens sorted by, by that
    key (ascending: worst first), and what that order means."""

    columns: list[Column]
    units: list[tuple[Any, Callable[[], list[Cell]]]]
    sort: int
    order: str
    unit: str = "items"


def report_html(
    summary: dict[str, Any],
    rows: list[dict[str, Any]],
    pictures: Callable[[str], Pictures | None],
) -> str:
    """The report as HTML text: heading, summary table, item browser, skipped items, settings.
    ``pictures(item id)`` gives an item's pictures or ``None``."""
    task = summary["task"]
    settings = summary.get("settings", {})
    measured = [r for r in rows if "skipped" not in r]
    skipped = [r for r in rows if "skipped" in r]
    builders = {
        "compositional": (_compositional_summary, _compositional_browser),
        "localization": (_localization_summary, _localization_browser),
        "intervention": (_intervention_summary, _intervention_browser),
        "prompts": (_prompts_summary, _prompts_browser),
        "interaction": (_interaction_summary, _interaction_browser),
    }
    if task not in builders:
        raise ValueError(f"no report for a run of task {task!r}")
    summary_part, browser_part = builders[task]
    read: dict[str, Pictures | None] = {}  # an item's words share its file: read it once

    def cached(item_id: str) -> Pictures | None:
        if item_id not in read:
            read[item_id] = pictures(item_id)
        return read[item_id]

    if measured:
        tables = summary_part(summary)
        browser = _browser_html(browser_part(summary, measured, cached))
    else:
        tables, browser = "<p>No items measured yet.</p>", ""
    if skipped:
        listed = "".join(
            f"<li><code>{html.escape(str(r['id']))}</code>: {html.escape(str(r['skipped']))}</li>"
            for r in skipped
        )
        browser += f"<h2>Skipped items ({len(skipped)})</h2><ul>{listed}</ul>"
    title = TITLES[task]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>infodecomp: {html.escape(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class=lead>{_describe(summary, settings, measured)}</p>
<h2>Summary</h2>
{tables}
{browser}
<details><summary>settings</summary><pre>{html.escape(json.dumps(settings, indent=2))}</pre>
</details>
<script>{_JS}</script>
</body></html>
"""


TITLES = {
    "compositional": "Compositional tests",
    "localization": "Localization",
    "intervention": "Prompt interventions",
    "prompts": "Prompts (heatmap --prompts)",
    "interaction": "Word-pair interactions",
}

_CSS = f"""
body{{font:14px/1.4 system-ui,sans-serif;margin:1.5em 2em;color:#222}}
h1{{margin:0 0 .3em}}h2{{margin:1.4em 0 .4em}}p.lead,p.note{{max-width:70em}}
h3{{margin:1em 0 .2em;font-size:15px}}
table{{border-collapse:collapse;margin:.4em 0}}
td,th{{padding:4px 10px;border-bottom:1px solid #e3e3e3;text-align:left;vertical-align:top}}
table.summary td.n{{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}}
table.items td{{vertical-align:middle}}
table.items thead th{{position:sticky;top:0;background:#f6f6f6;z-index:2;vertical-align:top}}
table.items tbody tr:nth-child(even){{background:#fafafa}}
th small{{display:block;font-weight:normal;color:#666}}
th button{{font:inherit;font-weight:bold;border:0;background:none;padding:0;cursor:pointer;
text-align:left;color:#1a4f8b}}
th button:focus-visible{{outline:2px solid #1a4f8b}}
th[aria-sort=ascending] button::after{{content:" \\25B2"}}
th[aria-sort=descending] button::after{{content:" \\25BC"}}
.num{{font-variant-numeric:tabular-nums;white-space:nowrap}}
.fig{{font-variant-numeric:tabular-nums}}
.id{{font-family:ui-monospace,monospace;font-size:12px;color:#555;overflow-wrap:break-word}}
.tile{{position:relative;display:inline-block;width:{TILE}px;margin:0 2px;vertical-align:top;
text-align:center;font-size:12px}}
.tile .pic{{position:relative;display:block;width:{TILE}px;line-height:0}}
.tile img{{width:100%;image-rendering:pixelated;border:1px solid #ccc;box-sizing:border-box}}
.tile svg{{position:absolute;inset:0;width:100%;height:100%;overflow:visible}}
.tile .cap{{display:block;margin-top:2px;line-height:1.25}}
.none{{color:#999;font-size:12px}}.pair{{white-space:nowrap}}
use.halo{{stroke:#000;stroke-width:3.5px;fill:none}}
use.line{{stroke:#ff4040;stroke-width:1.6px;fill:none}}
.v{{display:inline-block;padding:0 6px;border-radius:8px;font-size:12px;font-weight:bold}}
.v.right{{background:#d8f0d8;color:#1d6b1d}}.v.wrong{{background:#f8d7d7;color:#9b1c1c}}
.v.undecided{{background:#eee;color:#555}}
ul.caps{{margin:0;padding-left:1.2em}}ul.caps li.true{{font-weight:bold}}
ul.caps li.rival{{color:#9b1c1c}}
mark{{background:#fff1a8;padding:0 2px}}
"""

# Sorting: a heading's button sorts the rows by its column's data-v (ascending first, then
# descending); rows without a key stay at the bottom either way.
_JS = """
for (const table of document.querySelectorAll("table.items")) {
  const heads = [...table.tHead.rows[0].cells];
  heads.forEach((th, col) => {
    const button = th.querySelector("button");
    if (!button) return;
    button.addEventListener("click", () => {
      const up = th.getAttribute("aria-sort") !== "ascending";
      heads.forEach(h => h.removeAttribute("aria-sort"));
      th.setAttribute("aria-sort", up ? "ascending" : "descending");
      const numeric = th.dataset.kind === "number";
      const key = row => {
        const v = row.cells[col].dataset.v;
        return v === undefined ? null : numeric ? parseFloat(v) : v;
      };
      const body = table.tBodies[0];
      const rows = [...body.rows];
      rows.sort((a, b) => {
        const x = key(a), y = key(b);
        if (x === null || y === null) return (x === null) - (y === null);
        const c = numeric ? x - y : x.localeCompare(y, undefined, {numeric: true});
        return up ? c : -c;
      });
      body.append(...rows);
    });
  });
}
"""


def _describe(
    summary: dict[str, Any], settings: dict[str, Any], measured: list[dict[str, Any]]
) -> str:
    """The run in a sentence: model, data, items, draws, DDIM steps where used, seed."""
    model = settings.get("model_label") or settings.get("model") or "?"
    if settings.get("data") in ("world", "world-correlated"):
        which = "correlated world" if settings["data"] == "world-correlated" else "world"
        data = f"the {which}'s {settings.get('split', 'test')} split"
    else:
        data = Path(str(settings.get("data") or settings.get("prompts") or "?")).name
    steps = f", {settings['ddim_steps']} DDIM steps" if settings.get("ddim_steps") else ""
    if summary.get("task") == "interaction":  # DDIM only makes the images given as seeds
        generated = sum("seed" in r for r in measured)
        plural = "s" if generated != 1 else ""
        steps = (
            f", {generated} image{plural} generated from a seed in {settings['ddim_steps']} "
            "DDIM steps"
            if generated and settings.get("ddim_steps")
            else ""
        )
    sampling = settings.get("sampling") or {"draws": "?", "seed": "?"}
    reference = settings.get("reference_label")
    beside = f", with the {html.escape(reference)} beside it" if reference else ""
    return (
        f"Model <b>{html.escape(str(model))}</b>{beside}, on {html.escape(data)}: "
        f"{summary.get('n_items', 0)} items measured, {summary.get('n_skipped', 0)} skipped; "
        f"{'at most ' if settings.get('ranking') == 'sequential' else ''}"
        f"{sampling['draws']} noise draws per item{steps}, seed {sampling['seed']}. "
        "Numbers in nats unless stated, with 95% intervals in brackets."
    )


# -------------------------------------------------------------------------------------- numbers


def _metric(m: dict[str, Any] | None, percent: bool = False) -> str:
    """A summary metric ``{"value", "ci95", "n"}`` as text: ``"61% [52%, 70%]"`` (``percent``)
    or :func:`~infodecomp.results.format_entry`'s ``"0.39 [0.35, 0.44]"``; "n/a" without a
    value."""
    if not m or m.get("value") is None or not math.isfinite(m["value"]):
        return "n/a"
    value = m["value"]
    low, high = m.get("ci95") or (None, None)
    if percent:
        interval = f" [{low:.0%}, {high:.0%}]" if low is not None and high is not None else ""
        return f"{value:.0%}{interval}"
    if low is None or high is None:
        return format_entry(value)
    return format_entry({"value": value, "ci95": [low, high]}, flags="none")


def _entry(e: dict[str, Any] | None) -> str:
    """An estimate's entry (value, ci95, flags) as text, with its short warnings."""
    if not e or e.get("value") is None:
        return "n/a"
    if None in (e.get("ci95") or [None]):
        return format_entry(e["value"])
    return format_entry(e, flags="short")


def _number(value: Any) -> float | None:
    """A sort key: the value as a float, or ``None`` (missing or not finite)."""
    if value is None or isinstance(value, bool):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _key_text(key: Any) -> str | None:
    if key is None:
        return None
    return repr(key) if isinstance(key, float) else str(key)


# ------------------------------------------------------------------------------------- pictures


def _data_uri(picture: np.ndarray, cmap: str | None = None) -> str:
    """A picture as a ``data:`` URI: a map ``(h, w)`` uint8 coloured by the colour map, a photo
    ``(h, w, 3)`` uint8. PNG (exact colours), except a photo over 32 pixels a side (JPEG, a
    quarter of the size) and a map over 32 pixels a side (the colour map as its palette, a
    third of the size; smaller maps are smaller without the palette's 768 bytes). ``cmap``: a
    map's colour map other than the maps' own."""
    table = colour_table() if cmap is None else colour_table(cmap)
    buffer = io.BytesIO()
    large = max(picture.shape[:2]) > 32
    if picture.ndim == 2 and large:
        h, w = picture.shape
        image = Image.frombytes("P", (w, h), np.ascontiguousarray(picture).tobytes())
        image.putpalette(table.tobytes())
        image.save(buffer, format="PNG")
    elif picture.ndim == 2:
        Image.fromarray(table[picture]).save(buffer, format="PNG")
    elif large:
        Image.fromarray(picture).save(buffer, format="JPEG", quality=85)
        return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
    else:
        Image.fromarray(picture).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _outline_defs(ident: str, mask: np.ndarray) -> str:
    """``mask``'s outline as an SVG path with id ``ident``, defined once (in a hidden SVG) and
    drawn over each picture of its row with ``<use>``, so a mask costs its path once."""
    return (
        '<svg width="0" height="0" style="position:absolute" aria-hidden="true"><defs>'
        f'<path id="{ident}" d="{_outline(mask)}" vector-effect="non-scaling-stroke"/>'
        "</defs></svg>"
    )


def _outline(mask: np.ndarray) -> str:
    """SVG path data of the boundary between inside and outside pixels of ``mask`` (and the
    picture's edge), as horizontal and vertical runs in pixel units."""
    inside = np.pad(mask != 0, 1)
    parts = []
    # Horizontal edges: at row boundary y, where the pixel above differs from the one below.
    for y, line in enumerate(inside[1:, 1:-1] != inside[:-1, 1:-1]):
        parts += [f"M{a} {y}h{b - a}" for a, b in _runs(line)]
    for x, line in enumerate((inside[1:-1, 1:] != inside[1:-1, :-1]).T):
        parts += [f"M{x} {a}v{b - a}" for a, b in _runs(line)]
    return "".join(parts)


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` of the runs of true values in a 1-D bool array."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _tile(
    uri: str | None,
    caption: str = "",
    alt: str = "",
    outline: str | None = None,
    size: tuple[int, int] | None = None,
) -> str:
    """A picture ``TILE`` pixels wide with an optional outline (the id of an
    :func:`_outline_defs` path over a picture of ``size`` pixels) and caption."""
    cap = f"<span class=cap>{caption}</span>" if caption else ""
    if uri is None:  # an item measured before item pictures were written
        return f"<span class=tile><span class=none>no picture</span>{cap}</span>"
    over = ""
    if outline is not None and size is not None:
        h, w = size
        over = (
            f'<svg viewBox="0 0 {w} {h}" preserveAspectRatio="none" aria-hidden="true">'
            f'<use class=halo href="#{outline}"/><use class=line href="#{outline}"/></svg>'
        )
    return (
        f'<span class=tile><span class=pic><img src="{uri}" alt="{html.escape(alt)}" '
        f'title="{html.escape(alt)}">{over}</span>{cap}</span>'
    )


def _image(pics: Pictures | None, name: str) -> str | None:
    return _data_uri(pics[name]) if pics is not None and name in pics else None


def _map(pics: Pictures | None, name: str) -> tuple[str | None, str]:
    """The map ``name`` coloured on its own scale, and that scale as text."""
    if pics is None or name not in pics:
        return None, ""
    low, high = pics.get(f"{name}/range", np.array([0.0, 1.0])).tolist()
    return _data_uri(pics[name]), f"{low:.3g} to {high:.3g}"


def _signed_map(pics: Pictures | None, name: str) -> tuple[str | None, str]:
    """The signed map ``name`` on the diverging colour map, symmetric about 0 (white) to its
    largest magnitude, and its range as text."""
    from .figures import DIVERGING_CMAP

    if pics is None or name not in pics:
        return None, ""
    low, high = pics.get(f"{name}/range", np.array([0.0, 1.0])).tolist()
    values = low + pics[name].astype(np.float64) / 255 * (high - low)
    bound = max(abs(low), abs(high)) or 1.0
    index = np.round((values / bound + 1) / 2 * 255).astype(np.uint8)
    return _data_uri(index, DIVERGING_CMAP), f"{low:.3g} to {high:.3g}"


def _mark(caption: str, word: str) -> str:
    """The caption with each occurrence of ``word`` highlighted (HTML)."""
    text = html.escape(caption)
    pattern = r"(?<![\w])(" + re.escape(html.escape(word)) + r")(?![\w])"
    return re.sub(pattern, r"<mark>\1</mark>", text, flags=re.IGNORECASE)


# -------------------------------------------------------------------------------- the browser


def _browser_html(browser: Browser) -> str:
    """The item browser: the rows sorted worst first (``None`` keys last), at most ``SHOWN``
    from each end, in a sortable table (only the rows shown read their pictures)."""
    order = sorted(browser.units, key=lambda unit: _sort_key(unit[0]))
    note = f"{len(order)} {browser.unit}, sorted {browser.order}."
    if len(order) > 2 * SHOWN:
        note = (
            f"{len(order)} {browser.unit}: the {SHOWN} worst and the {SHOWN} best are shown, "
            f"sorted {browser.order} (every item is in rows.jsonl)."
        )
        order = order[:SHOWN] + order[-SHOWN:]
    heads = []
    for k, col in enumerate(browser.columns):
        small = f"<small>{col.note}</small>" if col.note else ""
        if col.kind is None:
            heads.append(f"<th>{html.escape(col.title)}{small}</th>")
            continue
        sort = ' aria-sort="ascending"' if k == browser.sort else ""
        heads.append(
            f'<th data-kind="{col.kind}"{sort}><button type=button>{html.escape(col.title)}'
            f"</button>{small}</th>"
        )
    body = []
    for _, make in order:
        cells = []
        for content, key in make():
            text = _key_text(key)
            attr = f' data-v="{html.escape(text)}"' if text is not None else ""
            cells.append(f"<td{attr}>{content}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f"<h2>Items</h2><p class=note>{note} Click a column's heading (or press Enter on it) to "
        f"sort by it; again to reverse.</p>"
        f"<table class=items><thead><tr>{''.join(heads)}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _sort_key(key: Any) -> tuple[int, Any]:
    return (1, 0) if key is None else (0, key)


def _item_cell(row: dict[str, Any], text: str) -> Cell:
    return (f"<span class=id>{html.escape(str(row['id']))}</span><br>{text}", str(row["id"]))


# ------------------------------------------------------------------------------- compositional


VERDICTS = {
    "true caption significantly ahead": "right",
    "a false caption significantly ahead": "wrong",
}
_SCORE_NAMES = {
    "exact": "exact log-ratio",
    "standard": "standard",
    "orthogonal": "orthogonal (paper)",
    "sequential": "sequential (standard, in stages)",
}


def _compositional_summary(summary: dict[str, Any]) -> str:
    cols = summary.get("columns", {})
    if not cols:
        return "<p>No items measured yet.</p>"
    labels, chance = summary["labels"], summary["chance"]
    heads = [("all items", "accuracy", None)]
    per_type = chance.get("per_type", {})
    shown = summary.get("types_shown", list(per_type))
    if per_type:
        heads.append(("macro over types", "macro_accuracy", None))
        heads += [(f"{t} (n={per_type[t]['n']})", "per_type", t) for t in shown]
    lines = [("chance", chance)]
    for key, col in cols.items():
        who, name = key.split("/")
        star = " *" if key == summary.get("headline") else ""
        lines.append((f"{labels.get(who) or who}: {_SCORE_NAMES.get(name, name)}{star}", col))

    def cell(entry: dict[str, Any], field: str, kind: str | None) -> str:
        m = entry.get(field)
        if m is not None and kind is not None:
            m = m.get(kind)
        return _metric(m, percent=True)

    head = "".join(f"<th>{html.escape(h)}</th>" for h, _, _ in heads)
    body = "".join(
        f"<tr><td>{html.escape(label)}</td>"
        + "".join(f"<td class=n>{cell(entry, f, t)}</td>" for _, f, t in heads)
        + "</tr>"
        for label, entry in lines
    )
    notes = []
    for key, col in cols.items():
        who, name = key.split("/")
        label = f"{labels.get(who) or who}, {name}"
        if "significant_true" in col:
            notes.append(
                f"{html.escape(label)}: margin significantly for the true caption in "
                f"{_metric(col['significant_true'], True)} of items, for a false one in "
                f"{_metric(col['significant_false'], True)}"
            )
        groups = col.get("winoground", {})
        if "text" in groups:
            notes.append(
                f"{html.escape(label)}: Winoground text {_metric(groups['text'], True)}, image "
                f"{_metric(groups['image'], True)}, group {_metric(groups['group'], True)} "
                f"({groups['text']['n']} groups)"
            )
    if len(shown) < len(per_type):
        notes.append(
            f"the {len(shown) // 2} best and worst of {len(per_type)} types shown; all in "
            "summary.json"
        )
    for flag, count in sorted(summary.get("flags", {}).items()):
        what = summary.get("flag_texts", {}).get(flag, flag)
        notes.append(f"flagged: {count} items: {html.escape(what)}")
    listed = "".join(f"<li>{n}</li>" for n in notes)
    cluster = summary.get("cluster", {"unit": "item", "n": summary.get("n_items", 0)})
    return (
        f"<table class=summary><tr><th>score: accuracy (true caption ranked first)</th>{head}"
        f"</tr>{body}</table><ul>{listed}</ul><p class=note>"
        + (
            "* sequential: the standard score's margins on draws taken in stages until an "
            "anytime-valid 95% confidence sequence decides the item (or it is futile, or at the "
            "maximum: counted as a tie). "
            if summary.get("headline", "").endswith("/sequential")
            else "* the ranking score chosen with --estimator. "
        )
        + "standard: log p(x|caption) - log p(x), the score to rank captions with; "
        "orthogonal: the paper's protocol, which grows with how much a caption changes the "
        f"denoiser. Intervals: 95% bootstrap resampling {cluster['n']} {cluster['unit']}s. "
        f"Protocol {html.escape(summary.get('protocol_note', ''))}</p>"
    )


def _compositional_browser(
    summary: dict[str, Any], rows: list[dict[str, Any]], pictures: Callable[[str], Any]
) -> Browser:
    name = summary.get("headline", "model/standard").split("/")[1]
    has_reference = any("reference" in r["scores"] for r in rows)
    has_type = any(r.get("type") for r in rows)
    columns = [
        Column("item", "id", "text"),
        Column("image", kind=None),
        Column(f"margin ({name})", "true caption minus the best false one, nats; verdict"),
        Column("captions", "score of each, nats; true in bold, best false in red", None),
    ]
    if has_reference:
        columns.append(Column("exact model margin", f"{name}, nats"))
    if has_type:
        columns.append(Column("type", "", "text"))

    def margin(r: dict[str, Any], who: str = "model") -> Cell:
        return _margin_cell(r["scores"].get(who, {}).get(name, {}).get("margin"))

    def cells(r: dict[str, Any]) -> list[Cell]:
        flags = "".join(
            f"<br><small>flagged: {html.escape(text)}</small>"
            for text in r.get("flags", {}).values()
        )
        out = [
            _item_cell(r, flags),
            (_tile(_image(pictures(r["id"]), "image"), alt="image"), None),
            margin(r),
            (_captions(r, r["scores"]["model"], name), None),
        ]
        if has_reference:
            out.append(margin(r, "reference"))
        if has_type:
            out.append((html.escape(r.get("type") or ""), r.get("type") or ""))
        return out

    units = [(margin(r)[1], partial(cells, r)) for r in rows]
    return Browser(columns, units, 2, "by margin, smallest (worst) first")


def _margin_cell(margin: dict[str, Any] | None) -> Cell:
    if not margin or margin.get("value") is None:
        return "n/a", None
    verdict = VERDICTS.get(margin.get("verdict", ""), "undecided")
    text = _entry({"value": margin["value"], "ci95": margin.get("ci95")})
    return f"<span class=num>{text}</span> <span class='v {verdict}'>{verdict}</span>", _number(
        margin["value"]
    )


def _captions(row: dict[str, Any], scored: dict[str, Any], name: str) -> str:
    """Each caption with its score (nats, 95% interval; the exact log-ratio where known)."""
    captions, k = row["captions"], row["true_index"]
    s = scored.get(name, {})
    values = s.get("scores", [])
    falses = [j for j in range(len(captions)) if j != k and j < len(values)]
    rival = max(falses, key=lambda j: values[j] if values[j] is not None else -math.inf, default=-1)
    items = []
    for j, caption in enumerate(captions):
        score = "n/a"
        if j < len(values):
            ci = s.get("ci95", [])
            reliable = s.get("reliable", [])
            score = _entry(
                {
                    "value": values[j],
                    "ci95": ci[j] if j < len(ci) else None,
                    "reliable": reliable[j] if j < len(reliable) else True,
                }
            )
        exact = scored.get("exact", {}).get("scores")
        if exact is not None and name != "exact":
            score += f"; exact {exact[j]:.3g}"
        cls = " class=true" if j == k else " class=rival" if j == rival else ""
        items.append(f"<li{cls}>{html.escape(caption)}: <span class=num>{score}</span></li>")
    return f"<ul class=caps>{''.join(items)}</ul>"


# -------------------------------------------------------------------------------- localization


def _localization_summary(summary: dict[str, Any]) -> str:
    methods = summary.get("methods", {})
    if not methods:
        return "<p>No items measured yet.</p>"
    protocol = summary.get("protocol", "ours")
    headline = "mIoU, paper" if protocol == "paper" else "mIoU, honest"
    heads = [["mIoU, paper", "mIoU, ours", "mIoU, honest"]]
    heads.append(["mAP", "IN-Seg pixel acc.", "IN-Seg mIoU", "IN-Seg mAP"])

    def at(e: dict[str, Any] | None, key: str = "threshold") -> str:
        if not e:
            return ""
        values = e[key] if isinstance(e[key], list) else [e[key]]
        t = "/".join(f"{t:.2f}" for t in values) + ("!" if e.get("at_edge") else "")
        return f"<br><small>t = {t}</small>"

    bodies = ["", ""]
    for method, e in methods.items():
        seg = e.get("imagenet_segmentation", {})
        honest = e.get("honest")
        ours = e.get("ours")
        cells = [
            [
                _metric(e["paper"]["miou"]) + at(e["paper"]),
                _metric((ours or {}).get("miou")) + at(ours),
                _metric((honest or {}).get("miou")) + at(honest, "thresholds"),
            ],
            [
                _metric(e.get("map")),
                _metric(seg.get("pixel_accuracy")),
                _metric(seg.get("miou")),
                _metric(seg.get("map")),
            ],
        ]
        for k in range(2):
            bodies[k] += f"<tr><td>{html.escape(method)}</td>" + "".join(
                f"<td class=n>{c}</td>" for c in cells[k]
            )
            bodies[k] += "</tr>"
    tables = "".join(
        "<table class=summary><tr><th>map</th>"
        + "".join(f"<th>{h}{' *' if h == headline else ''}</th>" for h in head)
        + f"</tr>{body}</table>"
        for head, body in zip(heads, bodies, strict=True)
    )
    flags = "".join(
        f"<li>flagged: {f['words']} words: {html.escape(reason)}"
        f"{'' if f['scored'] else ' (not scored)'}</li>"
        for reason, f in summary.get("flags", {}).items()
    )
    images = summary.get("n_clusters", summary["n_items"])
    return (
        f"<p>Protocol '{html.escape(protocol)}' (headline *): {summary['n_items']} items of "
        f"{images} images, {summary.get('n_words', 0)} words scored; mean over words, 95% "
        "bootstrap interval resampling images.</p>"
        + tables
        + (f"<ul>{flags}</ul>" if flags else "")
        + "<p class=note>paper: one threshold (of each map, min-max normalised), the best of 50 "
        "in [0.1, 0.5] chosen on these words (optimistic); ours: the best of 49 in [0.02, 0.98], "
        "chosen likewise; honest: each image's threshold chosen on the wide grid on the other "
        "half of the images (both shown); t: the threshold, ! at its grid's edge. IN-Seg: the "
        "ImageNet-Segmentation protocol (threshold at each map's mean). "
        f"{html.escape(summary.get('protocol_note', ''))}</p>"
    )


def _localization_browser(
    summary: dict[str, Any], rows: list[dict[str, Any]], pictures: Callable[[str], Any]
) -> Browser:
    from ..evaluate.metrics import CMI, PAPER_THRESHOLDS, REPORT_MAPS, WIDE_THRESHOLDS

    methods = summary.get("methods", {})
    shown = [m for m in REPORT_MAPS if m in methods]
    # IoU at the headline protocol's threshold: the paper's grid, or ours (rows before the wide
    # grid existed have the paper's only).
    ours = summary.get("protocol", "ours") == "ours" and all("ours" in methods[m] for m in shown)
    grid, key, name = (
        (WIDE_THRESHOLDS, "iou_wide", "our") if ours else (PAPER_THRESHOLDS, "iou", "the paper's")
    )
    at = {
        m: int(np.argmin(np.abs(grid - methods[m]["ours" if ours else "paper"]["threshold"])))
        for m in shown
    }
    columns = [
        Column("item", "id, caption", "text"),
        Column("word", "its CMI i(x; word | rest), nats; flag if any"),
        Column("image", "ground-truth mask outlined", None),
    ]
    columns += [Column(f"{m}, IoU", f"at {name} threshold {grid[at[m]]:.3f}") for m in shown]

    def iou(scores: dict[str, Any], method: str) -> float | None:
        return _number(scores[method][key][at[method]]) if method in scores else None

    def cells(r: dict[str, Any], word: str, ident: str) -> list[Cell]:
        pics = pictures(r["id"])
        shape = pics["image"].shape[:2] if pics is not None and "image" in pics else None
        outline, defs = None, ""
        if pics is not None and f"mask/{word}" in pics:
            outline, defs = ident, _outline_defs(ident, pics[f"mask/{word}"])
        cmi = r.get("cmi", {}).get(word)
        flag = r["words"][word].get("flag")
        out = [
            _item_cell(r, _mark(r.get("caption", ""), word)),
            (
                f"<b>{html.escape(word)}</b><br><span class=num>{_entry(cmi)}</span>"
                + (f"<br><small>{html.escape(flag)}</small>" if flag else ""),
                _number(cmi["value"]) if cmi else None,
            ),
            (defs + _tile(_image(pics, "image"), "", "image", outline, shape), None),
        ]
        for m in shown:
            value = iou(r["words"][word], m)
            if value is None:
                out.append(("", None))
                continue
            uri, scale = _map(pics, f"map/{word}/{m}")
            picture = _tile(uri, f"IoU {value:.2f}", f"{m}: {scale}", outline, shape)
            out.append((picture, value))
        return out

    units = [
        (iou(scores, CMI), partial(cells, r, word, f"m{k}-{j}"))
        for k, r in enumerate(rows)
        for j, (word, scores) in enumerate(r["words"].items())
    ]
    order = f"by {CMI} IoU, lowest (worst) first"
    return Browser(columns, units, 3 + shown.index(CMI), order, "words")


# -------------------------------------------------------------------------------- intervention


def _intervention_summary(summary: dict[str, Any]) -> str:
    from ..evaluate.metrics import correlations

    models = summary.get("models", {})
    if not models:
        return "<p>No items measured yet.</p>"
    body = "".join(
        f"<tr><td>{html.escape(name)}</td><td class=n>{_metric(pearson)}</td>"
        f"<td class=n>{_metric(spearman)}</td></tr>"
        for m in models.values()
        for name, pearson, spearman in correlations(m)
    )
    notes = "".join(
        f"<li>{html.escape(str(m['label']))}: {m['n_pairs']} (image, word) pairs, mean change "
        f"{_metric(m['mean_change'])}, reconstruction error "
        f"{_metric(m.get('reconstruction_mse'))} per input value</li>"
        for m in models.values()
    )
    return (
        "<table class=summary><tr><th>correlation of the change on removing a word with</th>"
        f"<th>Pearson</th><th>Spearman</th></tr>{body}</table><ul>{notes}</ul>"
        "<p class=note>image level: across (image, word) pairs, the word's CMI (nats) or mean "
        "attention against the mean change; pixel level: per pair, map against change map, then "
        "the mean. The change: squared difference of the regenerations with and without the "
        "word in the model's input space, channels summed. Intervals resample images.</p>"
    )


def _intervention_browser(
    summary: dict[str, Any], rows: list[dict[str, Any]], pictures: Callable[[str], Any]
) -> Browser:
    has_reference = any("reference" in r["models"] for r in rows)
    has_attention = any(
        "pixel_pearson_attention" in e for r in rows for e in r["models"]["model"]["words"].values()
    )
    columns = [
        Column("item", "id, caption", "text"),
        Column("word", "its CMI i(x; word | rest), nats"),
        Column("image", kind=None),
        Column("regenerated", "with the word | without it", None),
        Column("change map", "its mean (squared difference); each map on its own scale"),
        Column("information map, r", "Pearson r of the CMI map with the change map, per pixel"),
    ]
    if has_attention:
        columns.append(Column("attention, r", "Pearson r of the attention map, per pixel"))
    if has_reference:
        columns.append(Column("exact model, r", "its CMI map against its change map"))

    def cells(r: dict[str, Any], word: str) -> list[Cell]:
        pics = pictures(r["id"])
        e = r["models"]["model"]["words"][word]
        change_uri, change_scale = _map(pics, f"change/{word}")
        cmi_uri, cmi_scale = _map(pics, f"cmi/{word}")
        regenerated = (
            "<span class=pair>"
            + _tile(_image(pics, "with"), "with", "regenerated with the word")
            + _tile(_image(pics, f"without/{word}"), "without", "regenerated without it")
            + "</span>"
        )
        r_cmi = _number(e.get("pixel_pearson_cmi"))
        out = [
            _item_cell(r, _mark(r.get("caption", ""), word)),
            (
                f"<b>{html.escape(word)}</b><br><span class=num>{_entry(e.get('cmi'))}</span>",
                _number((e.get("cmi") or {}).get("value")),
            ),
            (_tile(_image(pics, "image"), "", "image"), None),
            (regenerated, None),
            (
                _tile(change_uri, f"{e['change']:.3g}", f"change: {change_scale}"),
                _number(e["change"]),
            ),
            (_tile(cmi_uri, _r(r_cmi), f"CMI map: {cmi_scale} nats per pixel"), r_cmi),
        ]
        if has_attention:
            r_attn = _number(e.get("pixel_pearson_attention"))
            out.append((f"<span class=num>{_r(r_attn)}</span>", r_attn))
        if has_reference:
            ref = r["models"].get("reference", {}).get("words", {}).get(word, {})
            r_ref = _number(ref.get("pixel_pearson_cmi"))
            out.append((f"<span class=num>{_r(r_ref)}</span>", r_ref))
        return out

    units = [
        (_number(e.get("pixel_pearson_cmi")), partial(cells, r, word))
        for r in rows
        for word, e in r["models"]["model"]["words"].items()
    ]
    order = "by the information map's pixel correlation with the change, lowest (worst) first"
    return Browser(columns, units, 5, order, "words")


def _r(value: float | None) -> str:
    return "r n/a" if value is None else f"r = {value:.2f}"


# ------------------------------------------------------------------------------------- prompts


def _prompts_summary(summary: dict[str, Any]) -> str:
    return (
        f"<p>{summary.get('n_items', 0)} prompts; mean MI over prompts "
        f"<span class=num>{_metric(summary.get('mean_mi'))}</span> nats (95% bootstrap "
        f"interval); {summary.get('n_evaluations', 0)} denoiser evaluations. Each prompt's own "
        "report (every word's maps) is linked from its id.</p>"
    )


def _prompts_browser(
    summary: dict[str, Any], rows: list[dict[str, Any]], pictures: Callable[[str], Any]
) -> Browser:
    columns = [
        Column("prompt", "id (link to its report), prompt", "text"),
        Column("image", kind=None),
        Column("top word", "the word with the most information: its map and CMI, nats"),
        Column("MI", "i(x; prompt), nats"),
    ]

    def cells(r: dict[str, Any]) -> list[Cell]:
        pics = pictures(r["id"])
        folder = html.escape(str(r.get("folder", r["id"])), quote=True)
        link = f'<a href="{folder}/report.html">{html.escape(str(r["id"]))}</a>'
        cmi = r.get("cmi", {})
        top = max(cmi, key=lambda w: _number(cmi[w].get("value")) or -math.inf, default=None)
        top_cell: Cell = ("n/a", None)
        if top is not None:
            uri, scale = _map(pics, "map")
            picture = _tile(uri, "", f"{top}: {scale} nats per pixel")
            text = f"<b>{html.escape(top)}</b>: <span class=num>{_entry(cmi[top])}</span>"
            top_cell = (f"{picture}<br>{text}", _number(cmi[top].get("value")))
        return [
            (f"<span class=id>{link}</span><br>{html.escape(r.get('prompt', ''))}", r["id"]),
            (_tile(_image(pics, "image"), "", "image"), None),
            top_cell,
            (f"<span class=num>{_entry(r.get('mi'))}</span>", _mi(r)),
        ]

    units = [(_mi(r), partial(cells, r)) for r in rows]
    return Browser(columns, units, 3, "by MI, least information first", "prompts")


def _mi(row: dict[str, Any]) -> float | None:
    return _number((row.get("mi") or {}).get("value"))


# --------------------------------------------------------------------------------- interaction


_INTERACTION_GROUP_COLUMNS = (
    ("interaction", "interaction, nats", False),
    ("redundancy", "redundancy, nats", False),
    ("synergy", "synergy, nats", False),
    ("redundancy_share", "redundancy share", True),
)


def _interaction_summary(summary: dict[str, Any]) -> str:
    from ..interaction_terms import ESTIMATOR_NOTES

    models = summary.get("models", {})
    if not models:
        return "<p>No items measured yet.</p>"
    estimator = summary.get("settings", {}).get("estimator", "standard")
    head = "<tr><th>group</th><th>pairs</th><th>images</th>" + "".join(
        f"<th>{html.escape(title)}</th>" for _, title, _ in _INTERACTION_GROUP_COLUMNS
    )
    tables = []
    for m in models.values():
        body = "".join(
            f"<tr><td>{html.escape(group)}</td><td class=n>{g['n_pairs']}</td>"
            f"<td class=n>{g['n_images']}</td>"
            + "".join(
                f"<td class=n>{_metric(g.get(key), percent)}</td>"
                for key, _, percent in _INTERACTION_GROUP_COLUMNS
            )
            + "</tr>"
            for group, g in m["groups"].items()
        )
        flagged = (
            f"<p>{html.escape(unreliable_line(m['unreliable']))}</p>" if "unreliable" in m else ""
        )
        tables.append(
            f"<h3>{html.escape(str(m['label']))}</h3><table class=summary>{head}</tr>{body}"
            f"</table>{flagged}"
        )
    note = ESTIMATOR_NOTES.get(estimator, "")
    return (
        f"<p>{summary.get('n_items', 0)} images; per group (a pair's words, or a label the data "
        "gives) the mean over its pairs, with a 95% bootstrap interval resampling images (none "
        "for a group of one image).</p>"
        + "".join(tables)
        + "<p class=note>interaction = i(x; w1; w2 | rest) = i(x; w1 | rest) + i(x; w2 | rest) "
        "- i(x; w1, w2 | rest) (&gt; 0 redundant, &lt; 0 synergistic; rest: the caption without "
        "both words); redundancy = min(i(x; w1 | rest), i(x; w2 | rest)) and synergy = "
        "i(x; w1, w2 | rest) - unique1 - unique2 - redundancy, as DiffusionPID defines them; "
        "redundancy share = mean redundancy / mean i(x; w1, w2 | rest) (our normalisation: the "
        "share of what the two words tell together that either tells alone). "
        f"Estimator: {html.escape(estimator)}{' (' + html.escape(note) + ')' if note else ''}. "
        "The atoms (redundancy, synergy) are the image's, from its informations; the pixel "
        "atoms, each pixel's, do not add up to them (a minimum is not additive), so only the "
        "interaction information is mapped: its map sums to its value.</p>"
    )


_INTERACTION_QUANTITIES = (
    (
        "interaction",
        "interaction",
        "i(x; w1; w2 | rest), nats: &gt; 0 redundant, &lt; 0 synergistic",
    ),
    ("redundancy", "redundancy", "DiffusionPID: min(w1, w2)"),
    ("synergy", "synergy", "DiffusionPID: redundancy - interaction"),
    ("first", "w1", "i(x; w1 | rest)"),
    ("second", "w2", "i(x; w2 | rest)"),
    ("joint", "w1, w2", "i(x; w1, w2 | rest)"),
)


def _interaction_browser(
    summary: dict[str, Any], rows: list[dict[str, Any]], pictures: Callable[[str], Any]
) -> Browser:
    from .figures import interaction_sign

    has_reference = any("reference" in r["models"] for r in rows)
    beside = "; the exact model's below" if has_reference else ""
    whose = "the model's, " if has_reference else ""
    columns = [
        Column("item", "id, caption (the pair's words marked)", "text"),
        Column("image", kind=None),
        Column(
            "interaction map",
            f"{whose}nats per pixel: red redundant, blue synergistic, white 0; sums to the value",
            None,
        ),
        Column("pair", "w1 &amp; w2; its group if the data names one", "text"),
    ]
    columns += [
        Column(title, note + (beside if k == 0 else ""))
        for k, (_, title, note) in enumerate(_INTERACTION_QUANTITIES)
    ]

    def value(r: dict[str, Any], p: int, who: str = "model") -> float | None:
        pairs = r["models"].get(who, {}).get("pairs", [])
        return _number(pairs[p]["interaction"]["value"]) if p < len(pairs) else None

    def cells(r: dict[str, Any], p: int) -> list[Cell]:
        pics = pictures(r["id"])
        w1, w2 = r["pairs"][p]
        group = r["groups"][p]
        e = r["models"]["model"]["pairs"][p]
        ref_pairs = r["models"].get("reference", {}).get("pairs", [])
        ref = ref_pairs[p] if p < len(ref_pairs) else None
        uri, scale = _signed_map(pics, f"interaction/{p}")
        alt = f"interaction map: {scale} nats per pixel, on a scale symmetric about 0"
        pair = f"<b>{html.escape(w1)}</b> &amp; <b>{html.escape(w2)}</b>"
        if group != f"{w1} & {w2}":
            pair += f"<br><small>group: {html.escape(group)}</small>"
        out = [
            _item_cell(r, _mark_words(r.get("caption", ""), (w1, w2))),
            (_tile(_image(pics, "image"), "", "image"), None),
            (_tile(uri, scale, alt), None),
            (pair, f"{group} | {w1} & {w2}"),
        ]
        for name, _, _ in _INTERACTION_QUANTITIES:
            text = f"<span class=fig>{_breakable(_entry(e.get(name)))}</span>"
            if name == "interaction" and e.get(name, {}).get("ci95"):
                text += f"<br><small><i>{html.escape(interaction_sign(e[name]))}</i></small>"
            if ref is not None:
                text += (
                    f"<br><small class=fig>exact:&nbsp;{_breakable(_entry(ref.get(name)))}</small>"
                )
            out.append((text, _number((e.get(name) or {}).get("value"))))
        return out

    units = [(value(r, p), partial(cells, r, p)) for r in rows for p in range(len(r["pairs"]))]
    order = "by interaction information, most synergistic (lowest) first"
    return Browser(columns, units, 4, order, "pairs")


def _breakable(entry: str) -> str:
    """An entry's text that may wrap before its interval and flags but not inside them."""
    return html.escape(entry).replace(", ", ",&nbsp;")


def _mark_words(caption: str, words: tuple[str, ...]) -> str:
    """The caption with the words' occurrences (``"a#2"``: that one) highlighted (HTML)."""
    from ..words import word_spans

    spans = []
    for word in words:
        try:
            spans += word_spans(caption, word)
        except ValueError:
            continue
    out, at = [], 0
    for start, end in sorted(set(spans)):
        if start < at:  # overlapping phrases: mark the first
            continue
        out += [html.escape(caption[at:start]), f"<mark>{html.escape(caption[start:end])}</mark>"]
        at = end
    return "".join(out) + html.escape(caption[at:])


def unreliable_line(counts: dict[str, Any]) -> str:
    """:func:`~infodecomp.evaluate.interaction.unreliable_counts` in a line, for the tables."""
    if not counts.get("values"):
        return f"no value flagged unreliable ({counts.get('of', 0)} values)"
    each = ", ".join(f"{q} {n}" for q, n in counts["by_quantity"].items())
    return (
        f"unreliable: {counts['values']} of {counts['of']} values ({counts['pairs']} of "
        f"{counts['n_pairs']} pairs; {each}) rest on a few draws: take more (--samples)"
    )
