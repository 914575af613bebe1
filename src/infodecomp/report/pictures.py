"""Pictures drawn without pyplot (fast): images and maps as PNG bytes, thumbnails, the notebook
view of an explanation."""

from __future__ import annotations

import base64
import html
import io
import json
from typing import TYPE_CHECKING, Any

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
