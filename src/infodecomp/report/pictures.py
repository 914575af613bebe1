"""The self-contained HTML report of an explanation: numbers with intervals, and one row per
word (image | information | attention + information | combined), maps rendered without pyplot."""

from __future__ import annotations

import base64
import html
import io
import json
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from ..plotting import MAP_CMAP
from ..results import format_entry

if TYPE_CHECKING:
    from ..explanation import Explanation

CELL = 176  # pixels of one map in the report


def image_png(image: torch.Tensor, size: int = CELL) -> bytes:
    """An image ``(3, H, W)`` in [-1, 1] as PNG bytes, ``size`` pixels wide (nearest)."""
    return _png(image_rgb(image), size)


def map_png(heat: torch.Tensor, vmin: float, vmax: float, size: int = CELL) -> bytes:
    """A map ``(H, W)`` coloured on the scale ``[vmin, vmax]`` as PNG bytes."""
    return _png(_colours(heat, vmin, vmax), size)


def _font(size: int = 13) -> Any:
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _tile(rgb: np.ndarray, size: int) -> Image.Image:
    picture = Image.fromarray(rgb)
    height = max(1, round(size * picture.height / picture.width))
    return picture.resize((size, height), Image.Resampling.NEAREST)


def _colours(heat: torch.Tensor, vmin: float, vmax: float) -> np.ndarray:
    from matplotlib import colormaps  # the colour map only: no pyplot

    scaled = ((heat.detach().float().cpu().numpy() - vmin) / max(vmax - vmin, 1e-12)).clip(0, 1)
    return (colormaps[MAP_CMAP](scaled)[..., :3] * 255).round().astype(np.uint8)


def _colour_bar(vmin: float, vmax: float, height: int, unit: str) -> Image.Image:
    """A vertical colour bar with its ends and unit written beside it."""
    from PIL import ImageDraw

    ramp = torch.linspace(vmax, vmin, height)[:, None].expand(height, 14)
    bar = Image.new("RGB", (110, height + 30), "white")
    bar.paste(Image.fromarray(_colours(ramp, vmin, vmax)), (4, 15))
    draw = ImageDraw.Draw(bar)
    draw.text((22, 10), f"{vmax:.3g}", fill="black", font=_font(12))
    draw.text((22, height + 4), f"{vmin:.3g}", fill="black", font=_font(12))
    draw.text((22, height // 2 + 8), unit, fill="black", font=_font(11))
    return bar


def panel_png(
    image: torch.Tensor,
    heat: torch.Tensor,
    title: str,
    vmin: float,
    vmax: float,
    unit: str,
    size: int = CELL,
) -> bytes:
    """One map as a PNG, drawn without pyplot: title; the image and the map side by side; a
    colour bar from ``vmin`` to ``vmax`` in ``unit``."""
    from PIL import ImageDraw

    left = _tile(image_rgb(image), size)
    right = _tile(_colours(heat, vmin, vmax), size)
    bar = _colour_bar(vmin, vmax, right.height - 30, unit)
    canvas = Image.new("RGB", (2 * size + 30 + bar.width, size + 40), "white")
    canvas.paste(left, (10, 32))
    canvas.paste(right, (20 + size, 32))
    canvas.paste(bar, (25 + 2 * size, 32))
    ImageDraw.Draw(canvas).text((10, 8), title, fill="black", font=_font(14))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def grid_png(
    image: torch.Tensor,
    rows: list[tuple[str, dict[str, torch.Tensor], str]],
    titles: dict[str, str],
    heading: str,
    size: int = 128,
    scales: dict[str, tuple[float, float]] | None = None,
) -> bytes:
    """All maps at once, drawn without pyplot: a row per kind (``(name, {label: map}, unit)``),
    the image first, the row's maps on one colour scale with its bar at the end (``scales``
    fixes a row's ``(vmin, vmax)``, e.g. to share it between rows); ``titles`` gives each
    label's caption (e.g. its value; ``"row/label"`` for one row only)."""
    from PIL import ImageDraw

    rows = [row for row in rows if row[1]]  # a row with no maps (e.g. no ground truth) is left out
    columns = list(dict.fromkeys(label for _, maps, _ in rows for label in maps))
    n_cols = len(columns)  # a row may leave a label out (its cell stays blank)
    row_height = size + 58  # two caption lines above each map
    canvas = Image.new(
        "RGB", ((n_cols + 1) * (size + 10) + 130, 36 + row_height * len(rows)), "white"
    )
    draw = ImageDraw.Draw(canvas)
    heading_lines = _lines(draw, heading, canvas.width - 20, n=1, points=15)
    draw.text((10, 8), heading_lines[0] if heading_lines else "", fill="black", font=_font(15))
    for r, (name, maps, unit) in enumerate(rows):
        top = 36 + r * row_height
        stacked = torch.stack([m.float() for m in maps.values()])
        vmin, vmax = (scales or {}).get(
            name, (min(0.0, stacked.min().item()), stacked.max().item())
        )
        canvas.paste(_tile(image_rgb(image), size), (10, top + 34))
        draw.text((10, top + 2), "\n".join(_lines(draw, name, size)), fill="black", font=_font(12))
        for label, heat in maps.items():
            x = 10 + (1 + columns.index(label)) * (size + 10)
            canvas.paste(_tile(_colours(heat, vmin, vmax), size), (x, top + 34))
            caption = titles.get(f"{name}/{label}", titles.get(label, label))
            draw.text(
                (x, top + 2), "\n".join(_lines(draw, caption, size)), fill="black", font=_font(12)
            )
        bar = _colour_bar(vmin, vmax, size - 30, unit)
        canvas.paste(bar, (10 + (n_cols + 1) * (size + 10), top + 34))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def _lines(draw: Any, text: str, width: int, n: int = 2, points: int = 12) -> list[str]:
    """``text`` broken at spaces into at most ``n`` lines of at most ``width`` pixels (in the
    ``points``-pixel font), the last shortened with "..." if it still does not fit: captions of
    neighbouring maps never run into each other."""
    font = _font(points)
    lines: list[str] = []
    for word in text.split(" "):
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        elif len(lines) < n:
            lines.append(word)
        else:
            lines[-1] = f"{lines[-1]} {word}"
    last = lines[-1] if lines else ""
    while last and draw.textlength(last, font=font) > width:
        last = last[:-4] + "..." if len(last) > 4 else ""
    return [*lines[:-1], last] if lines else []


def image_rgb(image: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` in [-1, 1] as ``(H, W, 3)`` uint8."""
    rgb = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte()
    return rgb.permute(1, 2, 0).numpy()


def _png(rgb: np.ndarray, size: int) -> bytes:
    buffer = io.BytesIO()
    _tile(rgb, size).save(buffer, format="PNG")
    return buffer.getvalue()


def _img(data: bytes, alt: str) -> str:
    encoded = base64.b64encode(data).decode()
    return f'<img src="data:image/png;base64,{encoded}" alt="{html.escape(alt)}">'


def _cell(v: dict[str, Any] | float) -> str:
    return html.escape(format_entry(v) if isinstance(v, dict) else f"{v:.3g}")


def report_html(
    res: Explanation,
    figures: dict[str, bytes] | None = None,
    columns: dict[str, list[dict[str, Any] | float]] | None = None,
) -> str:
    """The report of ``res``: a table of the caption's MI and each word's CMI (nats, 95%
    intervals; ``columns`` adds columns, one value or :meth:`Estimate.entry` per row, e.g. an
    exact model's), one row per word with its maps on a colour scale shared down each column, then
    ``figures`` (name: PNG bytes) and the settings."""
    doc = res.to_dict()
    names = ["whole caption: i(x; caption)"] + [f"{w}: i(x; {w} | rest)" for w in res.words]
    numbers = [doc["mi"]] + [doc["cmi"][w] for w in res.words]
    extra = columns or {}
    head = "".join(f"<th>{html.escape(c)}</th>" for c in extra)
    body = ""
    for k, (name, number) in enumerate(zip(names, numbers, strict=True)):
        cells = "".join(f"<td>{_cell(col[k])}</td>" for col in extra.values())
        body += f"<tr><td>{html.escape(name)}</td><td>{_cell(number)}</td>{cells}</tr>"

    kinds = {"information (CMI)": res.heat_map}
    if res.attention is not None:
        kinds |= {"attention + information": res.attention_map, "combined (ours)": res.combined_map}
    maps = {kind: {w: get(w) for w in res.words} for kind, get in kinds.items()}
    scales = {}
    for kind, by_word in maps.items():
        stacked = torch.stack(list(by_word.values()))
        scales[kind] = (min(0.0, stacked.min().item()), stacked.max().item())
    units = {
        "information (CMI)": "nats per image pixel",
        "attention + information": "cross-attention",
        "combined (ours)": "0-1",
    }
    picture = _img(image_png(res.image), "image")
    map_heads = "".join(
        f"<th>{html.escape(kind)}<br><small>{scales[kind][0]:.3g} to {scales[kind][1]:.3g} "
        f"({units[kind]})</small></th>"
        for kind in maps
    )
    word_rows = ""
    for word, number in zip(res.words, numbers[1:], strict=True):
        cells = "".join(
            f"<td>{_img(map_png(maps[kind][word], *scales[kind]), f'{word}: {kind}')}</td>"
            for kind in maps
        )
        word_rows += (
            f"<tr><td class=w><b>{html.escape(word)}</b><br>{_cell(number)} nats</td>"
            f"<td>{picture}</td>{cells}</tr>"
        )
    appendix = "".join(
        f"<figure>{_img(data, name)}<figcaption>{html.escape(name)}</figcaption></figure>"
        for name, data in (figures or {}).items()
    )
    settings = html.escape(json.dumps(doc["settings"], indent=2))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>infodecomp: {html.escape(res.prompt)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}
td,th{{padding:3px 10px;text-align:right;vertical-align:middle}}
td:first-child,td.w{{text-align:left}}table.maps td{{text-align:center}}
img{{image-rendering:pixelated;max-width:100%}}figure{{margin:1em 0}}</style></head><body>
<h1>{html.escape(res.prompt)}</h1>
<p>Model <code>{html.escape(res.model_name)}</code>; {doc["n_evaluations"]} denoiser
evaluations; seed {doc["seed"]}. Values in nats with 95% intervals (corrected for the skew of
the draws, so not always symmetric). "unreliable" marks a value that rests on a few draws (take
more); "likely truncated" one whose information extends beyond the model's log-SNR range, where
the model cannot see it.</p>
<table><tr><th>quantity</th><th>estimate [95% interval]</th>{head}</tr>{body}</table>
<h2>Where, word by word</h2>
<p>Each column's maps share one colour scale (given under its title), so a brighter map carries
more (except "combined", each of whose maps is scaled to its own maximum). Information maps
are in nats per image pixel (<code>maps.safetensors</code> holds them per
model-input pixel, e.g. per latent pixel, which covers 8x8 image pixels in Stable Diffusion).
"attention + information" is the paper's: cross-attention collected in the estimator's own
denoiser calls. "combined" is ours: the geometric mean of the two maps scaled to 1.</p>
<table class=maps><tr><th>word</th><th>image</th>{map_heads}</tr>{word_rows}</table>
{appendix}
<details><summary>settings</summary><pre>{settings}</pre></details>
</body></html>
"""
