"""Pictures drawn without pyplot (fast): images and maps as PNG bytes, thumbnails, the notebook
view of an explanation."""

from __future__ import annotations

import base64
import html
import io
from functools import cache
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from ..results import format_entry
from .figures import MAP_CMAP

if TYPE_CHECKING:
    from ..explanation import Explanation

CELL = 176  # pixels of one map in the report


def image_png(image: torch.Tensor, size: int = CELL) -> bytes:
    """An image ``(3, H, W)`` in [-1, 1] as PNG bytes, ``size`` pixels wide (nearest)."""
    return _png(image_rgb(image), size)


def map_png(heat: torch.Tensor, vmin: float, vmax: float, size: int = CELL) -> bytes:
    """A map ``(H, W)`` coloured on the scale ``[vmin, vmax]`` as PNG bytes."""
    return _png(_colours(heat, vmin, vmax), size)


def _tile(rgb: np.ndarray, size: int) -> Image.Image:
    picture = Image.fromarray(rgb)
    height = max(1, round(size * picture.height / picture.width))
    return picture.resize((size, height), Image.Resampling.NEAREST)


@cache
def colour_table(cmap: str = MAP_CMAP) -> np.ndarray:
    """A colour map (the maps' by default) as 256 RGB colours, ``(256, 3)`` uint8 (for PNG
    palettes and the viewers' scripts)."""
    from matplotlib import colormaps  # the colour map only: no pyplot

    rgb = colormaps[cmap](np.linspace(0, 1, 256))[:, :3]
    return (rgb * 255).round().astype(np.uint8)


def _colours(heat: torch.Tensor, vmin: float, vmax: float) -> np.ndarray:
    from matplotlib import colormaps  # the colour map only: no pyplot

    scaled = ((heat.detach().float().cpu().numpy() - vmin) / max(vmax - vmin, 1e-12)).clip(0, 1)
    return (colormaps[MAP_CMAP](scaled)[..., :3] * 255).round().astype(np.uint8)


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


def notebook_html(res: Explanation, size: int = 96) -> str:
    """A notebook's view of ``res``: the prompt's MI and each word's CMI (nats, 95% intervals,
    flags) beside the word's map, each on its own colour scale (0 to the maximum stated)."""
    mi = res.entry()
    rows = ""
    for word in [None, *res.words]:
        heat = res.heat_map(word, upsample=False)
        high = max(heat.max().item(), 1e-300)
        low = min(0.0, heat.min().item())
        name = "whole prompt" if word is None else f"{word} | rest"
        text = format_entry(res.entry(word), reference=None if word is None else mi["value"])
        rows += (
            f"<tr><td>{html.escape(name)}</td><td>{html.escape(text)}</td>"
            f"<td>{_img(map_png(heat, low, high, size), name)}</td>"
            f"<td>0 to {html.escape(format_entry(high))}</td></tr>"
        )
    note = f"; input {html.escape(res.image_note)}" if res.image_note else ""
    return (
        f"<div><b>{html.escape(res.prompt)}</b> ({html.escape(res.model_name)}; "
        f"{res.estimate.n_evaluations} denoiser evaluations, seed {res.estimate.seed}{note})"
        f"<table><tr><th>quantity</th><th>nats [95% interval]</th><th>map</th>"
        f"<th>scale (nats/pixel)</th></tr>{rows}</table>"
        f"<div>{_img(image_png(res.image, size), 'image')}</div></div>"
    )
