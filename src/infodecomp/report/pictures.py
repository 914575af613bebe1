"""Pictures without pyplot: an image, one map beside it with its colour bar (``panel_png``) and
a grid of maps (``grid_png``), as PNG bytes."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..plotting import MAP_CMAP

CELL = 176  # pixels of one map in the report


def image_png(image: torch.Tensor, size: int = CELL) -> bytes:
    """An image ``(3, H, W)`` in [-1, 1] as PNG bytes, ``size`` pixels wide (nearest)."""
    return _png(image_rgb(image), size)


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
