"""Figures for papers (matplotlib). Every helper returns ``(fig, ax)``.

Sized for print: the figure size is its printed size (inches), no text is under 8 pt, maps are
upsampled without smoothing (one block per model-input pixel, as measured), every colour bar
states its range and unit and has distinct ticks. Save with :func:`save_figure` as PNG (300 dpi),
PDF or SVG.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from ..files import write_atomic
from ..results import entry_flags, format_entry

if TYPE_CHECKING:
    from ..explanation import Explanation
    from ..interactions import Interaction

MAP_CMAP = "viridis"  # perceptually uniform, legible in greyscale print
# Signed quantities (interaction information): white at 0, red positive (redundant), blue
# negative (synergistic); on a scale symmetric about 0.
DIVERGING_CMAP = "RdBu_r"
DPI = 300
SMALL, TEXT, TITLE = 8, 8.5, 9.5  # points at the printed size: nothing smaller than 8
PANEL = 1.25  # inches per map: a word figure with attention fits a 7 in text width
GRID_PANEL = 1.05  # inches per map in the comparison grid
OVERLAY_ALPHA = 0.65  # the map over a dimmed grey image: the map's colours stay readable
FORMATS = ("png", "pdf", "svg")
WARNING_COLOUR = "#b00020"
ATTENTION_UNIT = "attention (a.u.)"  # summed over heads and layers: no unit of its own


@dataclass
class Panel:
    """One map to draw: ``heat`` ``(h, w)`` (any resolution; drawn in blocks over the image),
    on the colour scale ``[vmin, vmax]`` in ``unit``; ``over`` draws it over the image."""

    title: str
    heat: torch.Tensor
    vmin: float
    vmax: float
    unit: str
    over: bool = False
    warning: str = ""
    cmap: str = MAP_CMAP


def to_rgb(image: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` in [-1, 1] to an ``(H, W, 3)`` array in [0, 1] for ``imshow``."""
    return ((image.detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()


def plain_text(text: str) -> str:
    """``text`` shown as typed: matplotlib would read ``$...$`` as mathtext (and fail on
    unknown commands such as ``$\\foo$``)."""
    return text.replace("$", r"\$")


def scale_of(*heats: torch.Tensor, zero: bool = True) -> tuple[float, float]:
    """``(vmin, vmax)`` covering all ``heats``, with 0 included when ``zero`` (information
    starts at 0; attention, whose zero means nothing, spans its own range); a constant map gets
    a range of 1, so its bar still reads."""
    low = min(h.min().item() for h in heats)
    high = max(h.max().item() for h in heats)
    if zero:
        low, high = min(0.0, low), max(0.0, high)
    return (low, high) if high > low else (low, low + 1.0)


def colour_ticks(vmin: float, vmax: float, n: int = 4) -> tuple[list[float], list[str]]:
    """Up to ``n + 1`` round ticks in ``[vmin, vmax]``, each labelled exactly ("0", "0.015",
    "0.03", ...; scientific for tiny or huge ranges), so labels are distinct."""
    from matplotlib.ticker import MaxNLocator

    span = vmax - vmin
    ticks = [
        float(t)
        for t in MaxNLocator(nbins=n, min_n_ticks=2).tick_values(vmin, vmax)
        if vmin - 1e-9 * span <= t <= vmax + 1e-9 * span
    ]
    size = max(abs(vmin), abs(vmax))
    scientific = size > 0 and (size < 1e-3 or size >= 1e5)
    for digits in range(12):  # the fewest digits that write every tick exactly
        labels = [_tick_label(t, digits, scientific) for t in ticks]
        if all(
            abs(float(label) - t) <= 1e-9 * span for label, t in zip(labels, ticks, strict=True)
        ):
            return ticks, labels
    return ticks, labels


def _tick_label(t: float, digits: int, scientific: bool) -> str:
    if t == 0:
        return "0"
    if scientific:
        return f"{t:.{digits}e}"
    return f"{t:.{digits}f}"


def colour_bar(
    ax: Any, vmin: float, vmax: float, label: str, cax: Any = None, cmap: str = MAP_CMAP
) -> Any:
    """A vertical colour bar (in ``cax``, else beside ``ax``) for the map colours (``cmap``) on
    ``[vmin, vmax]``: opaque (also under an overlay), ticks from :func:`colour_ticks`, ``label``
    naming the unit."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    mappable = ScalarMappable(Normalize(vmin, vmax), colormaps[cmap])
    if cax is None:
        bar = ax.figure.colorbar(mappable, ax=ax, fraction=0.07, pad=0.03, aspect=14)
    else:
        bar = ax.figure.colorbar(mappable, cax=cax)
    ticks, labels = colour_ticks(vmin, vmax)
    bar.set_ticks(ticks, labels=labels)
    bar.ax.tick_params(labelsize=SMALL, length=2, pad=1.5)
    bar.set_label(plain_text(label), fontsize=SMALL, labelpad=2)
    bar.outline.set_linewidth(0.4)
    return bar


def plot_image(image: torch.Tensor, title: str = "", ax: Any = None) -> tuple[Any, Any]:
    """An image ``(3, H, W)`` in [-1, 1], alone, pixels as blocks (no smoothing)."""
    import matplotlib.pyplot as plt

    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(PANEL, PANEL))
    ax.imshow(to_rgb(image), interpolation="nearest")
    _title(ax, title)
    _no_axis(ax)
    return fig, ax


def plot_map(
    image: torch.Tensor, panel: Panel, ax: Any = None, cax: Any = None, bar: bool = True
) -> tuple[Any, Any]:
    """``panel``'s map with its colour bar (in ``cax`` if given; none if not ``bar``): over a
    dimmed grey copy of ``image`` (``panel.over``) or alone, in blocks of one model-input pixel
    each, stretched over the image's extent."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(PANEL + 0.9, PANEL + 0.6), layout="constrained")
    _draw_map(image, panel, ax, cax, bar)
    return ax.figure, ax


def _draw_map(image: torch.Tensor, panel: Panel, ax: Any, cax: Any, bar: bool) -> _DrawnMap:
    height, width = image.shape[-2:]
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)
    if panel.over:
        grey = to_rgb(image).mean(-1)
        ax.imshow(0.25 + 0.5 * grey, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    shown = ax.imshow(
        panel.heat.detach().float().cpu().numpy(),
        cmap=panel.cmap,
        vmin=panel.vmin,
        vmax=panel.vmax,
        alpha=OVERLAY_ALPHA if panel.over else 1.0,
        interpolation="nearest",
        extent=extent,
    )
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    colours = colour_bar(ax, panel.vmin, panel.vmax, panel.unit, cax, panel.cmap) if bar else None
    title, warning = _title(ax, panel.title, panel.warning)
    _no_axis(ax)
    return _DrawnMap(shown, colours, title, warning)


@dataclass
class _DrawnMap:
    """A drawn panel's artists, to draw another map of the same layout into them."""

    image: Any
    bar: Any
    title: Any
    warning: Any

    def update(self, panel: Panel) -> None:
        self.image.set_data(panel.heat.detach().float().cpu().numpy())
        self.image.set_clim(panel.vmin, panel.vmax)
        if self.bar is not None:
            self.bar.mappable.set_clim(panel.vmin, panel.vmax)
            ticks, labels = colour_ticks(panel.vmin, panel.vmax)
            self.bar.set_ticks(ticks, labels=labels)
        _set_title(self.title, self.warning, panel.title, panel.warning)


# Fixed layouts (inches): fast (no layout solver) and nothing can spill off the canvas.
MARGIN, GAP, BAR_GAP, BAR_WIDTH, BAR_TEXT = 0.08, 0.14, 0.05, 0.08, 0.62
HEADING, TITLES, WARNINGS, NOTE = 0.3, 0.36, 0.18, 0.2
GRID_TITLES = 0.46  # a word and its value, wrapped to the map's width: three lines


def word_figure(
    image: torch.Tensor, panels: Sequence[Panel], heading: str, note: str | None = None
) -> tuple[Any, Any]:
    """The image, then each panel (e.g. a word's map over the image and beside it) with a colour
    bar after each run of panels on one scale, a heading (the word and its value) and a note
    under the panels (scale, crop). ``(fig, axes)``."""
    drawn = _WordFigure(image, panels, heading, note)
    return drawn.fig, drawn.axes


class _WordFigure:
    """A word figure whose artists are kept, so that the next word (same layout) is drawn by
    updating them: building a figure's axes was most of the time of drawing it."""

    def __init__(
        self, image: torch.Tensor, panels: Sequence[Panel], heading: str, note: str | None
    ) -> None:
        import matplotlib.pyplot as plt

        # A colour bar after each panel but a map over the image, which shares the bar of the
        # same map beside it (by layout, not by value: later words reuse the layout).
        bars = [not (panels[k].over and k + 1 < len(panels)) for k in range(len(panels))]
        bar_width = BAR_GAP + BAR_WIDTH + BAR_TEXT
        width = 2 * MARGIN + PANEL + sum(GAP + PANEL + bar_width * b for b in bars)
        bottom = WARNINGS + (NOTE if note else 0.0)
        height = HEADING + TITLES + PANEL + bottom
        self.fig = plt.figure(figsize=(width, height))

        def box(x: float, w: float) -> list[float]:
            return [x / width, bottom / height, w / width, PANEL / height]

        self.axes = [self.fig.add_axes(box(MARGIN, PANEL))]
        plot_image(image, "image", self.axes[0])
        self.maps = []
        x = MARGIN + PANEL + GAP
        for panel, bar in zip(panels, bars, strict=True):
            self.axes.append(self.fig.add_axes(box(x, PANEL)))
            cax = self.fig.add_axes(box(x + PANEL + BAR_GAP, BAR_WIDTH)) if bar else None
            self.maps.append(_draw_map(image, panel, self.axes[-1], cax, bar))
            x += PANEL + GAP + bar_width * bar
        self.texts = _heading(self.fig, heading, note, width, height)

    def update(self, panels: Sequence[Panel], heading: str, note: str | None) -> None:
        """Draw ``panels`` (as many as the first word's, of the same kinds) in place."""
        for drawn, panel in zip(self.maps, panels, strict=True):
            drawn.update(panel)
        width = self.fig.get_figwidth()
        for text, content, points in zip(self.texts, (heading, note), (TITLE, SMALL), strict=False):
            text.set_text(plain_text(_fit(content or "", width, points)))


def grid_figure(
    image: torch.Tensor,
    rows: Sequence[tuple[str, list[Panel]]],
    heading: str,
    note: str | None = None,
) -> tuple[Any, Any]:
    """The comparison view: a row per kind of map (``(name, panels)``), the image first in each
    row; a row's panels share the scale of its first panel, shown once by a colour bar at the
    row's end. ``(fig, axes)``, axes a list of rows ``[image axes, maps axes]``: a row's maps
    are tiles of one axes (an axes per map was most of the time of drawing a grid)."""
    import matplotlib.pyplot as plt
    from matplotlib import colormaps
    from matplotlib.transforms import offset_copy

    n_cols = max(len(panels) for _, panels in rows)
    side, gap = GRID_PANEL, GAP / 2
    width = 2 * MARGIN + (1 + n_cols) * (side + gap) + BAR_GAP + BAR_WIDTH + BAR_TEXT
    row_height = GRID_TITLES + side + WARNINGS
    height = HEADING + len(rows) * row_height + (NOTE if note else 0.0)
    fig = plt.figure(figsize=(width, height))
    cmap = colormaps[MAP_CMAP].with_extremes(bad=(0, 0, 0, 0))  # the gaps between tiles
    axes = []
    for r, (name, panels) in enumerate(rows):
        y = height - HEADING - r * row_height - GRID_TITLES - side

        def box(x: float, w: float, y: float = y) -> list[float]:
            return [x / width, y / height, w / width, side / height]

        row = [fig.add_axes(box(MARGIN, side))]
        plot_image(image, name, row[0])
        tiles, step, w = _tiles([p.heat for p in panels], gap / side)
        n = len(panels)
        row.append(fig.add_axes(box(MARGIN + side + gap, n * side + (n - 1) * gap)))
        ax = row[-1]
        ax.imshow(
            tiles,
            cmap=cmap,
            vmin=panels[0].vmin,
            vmax=panels[0].vmax,
            interpolation="nearest",
            aspect="auto",
        )
        h = tiles.shape[0]
        above = offset_copy(ax.transData, fig=fig, y=2, units="points")
        below = offset_copy(ax.transData, fig=fig, y=-2, units="points")
        for k, panel in enumerate(panels):
            x = k * step + (w - 1) / 2
            ax.text(
                x,
                -0.5,
                plain_text(_wrap(panel.title, side, TEXT)),
                transform=above,
                ha="center",
                va="bottom",
                fontsize=TEXT,
            )
            if panel.warning:
                ax.text(
                    x,
                    h - 0.5,
                    plain_text(panel.warning),
                    transform=below,
                    ha="center",
                    va="top",
                    fontsize=SMALL,
                    color=WARNING_COLOUR,
                )
        _no_axis(ax)
        bar_x = MARGIN + (1 + n) * (side + gap)
        colour_bar(
            ax, panels[0].vmin, panels[0].vmax, panels[0].unit, fig.add_axes(box(bar_x, BAR_WIDTH))
        )
        axes.append(row)
    _heading(fig, heading, note, width, height)
    return fig, axes


def _tiles(heats: list[torch.Tensor], gap: float) -> tuple[np.ndarray, int, int]:
    """Maps side by side in one array, gaps of ``gap`` map widths (NaN) between them, each
    brought to the largest map's size without smoothing. Returns it, the step between the
    tiles' left edges and a tile's width, in array columns."""
    import torch.nn.functional as F

    h = max(t.shape[-2] for t in heats)
    w = max(t.shape[-1] for t in heats)
    cols = max(1, round(w * gap))
    out = np.full((h, len(heats) * (w + cols) - cols), np.nan, dtype=np.float32)
    for k, heat in enumerate(heats):
        heat = heat.detach().float().cpu()
        if tuple(heat.shape) != (h, w):
            heat = F.interpolate(heat[None, None], size=(h, w), mode="nearest")[0, 0]
        out[:, k * (w + cols) : k * (w + cols) + w] = heat.numpy()
    return out, w + cols, w


def save_figure(
    fig: Any, path: str | Path | None = None, fmt: str = "png", close: bool = True
) -> bytes:
    """Write ``fig`` as ``fmt`` (``png`` at 300 dpi, ``pdf`` or ``svg``: vector) to ``path`` (if
    given), close it (unless not ``close``) and return the bytes."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown figure format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "png":
        data = _png(_rgba(fig))
    else:
        buffer = io.BytesIO()
        # No creator or date: the same figure gives the same file.
        metadata = {"Creator": None, "CreationDate": None} if fmt == "pdf" else {"Date": None}
        fig.savefig(buffer, format=fmt, dpi=DPI, metadata=metadata)
        data = buffer.getvalue()
    if close:
        import matplotlib.pyplot as plt

        plt.close(fig)
    if path is not None:
        write_atomic(path, data)
    return data


def _rgba(fig: Any) -> np.ndarray:
    """``fig`` drawn at 300 dpi, ``(H, W, 4)`` uint8."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="rgba", dpi=DPI)
    pixels = np.frombuffer(buffer.getvalue(), np.uint8)
    width = int(fig.get_figwidth() * DPI)  # (Agg's canvas: the size in pixels, truncated)
    return pixels.reshape(pixels.size // (4 * width), width, 4)


def _png(rgba: np.ndarray) -> bytes:
    """PNG bytes of an opaque drawing, 300 dpi, lightly compressed (a third of the time of
    the default level; files a little larger)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgba[..., :3]).save(buffer, "PNG", compress_level=1, dpi=(DPI, DPI))
    return buffer.getvalue()


class _Files:
    """Figure files by name. PNGs are compressed on a second thread while the next figure is
    drawn (zlib releases the GIL): a quarter less time for a word figure per word."""

    def __init__(self, fmt: str) -> None:
        from concurrent.futures import ThreadPoolExecutor

        if fmt not in FORMATS:
            raise ValueError(f"unknown figure format {fmt!r}; choose one of {', '.join(FORMATS)}")
        self.fmt, self.pending = fmt, {}
        self.encoder = ThreadPoolExecutor(1)

    def add(self, name: str, fig: Any, close: bool = True) -> None:
        if self.fmt == "png":
            self.pending[name] = self.encoder.submit(_png, _rgba(fig))
            if close:
                import matplotlib.pyplot as plt

                plt.close(fig)
        else:
            self.pending[name] = save_figure(fig, fmt=self.fmt, close=close)

    def result(self) -> dict[str, bytes]:
        self.encoder.shutdown()
        return {k: v if isinstance(v, bytes) else v.result() for k, v in self.pending.items()}


def _no_axis(ax: Any) -> None:
    """No frame, ticks or labels: a picture, not a plot (and no ticks computed on drawing)."""
    from matplotlib.ticker import NullLocator

    ax.set_axis_off()
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(NullLocator())


def _title(ax: Any, title: str, warning: str = "") -> tuple[Any, Any]:
    """A panel's title above it and a warning below it in red (each maybe empty): text, not
    ``set_title``, whose position is solved against every axes' extent on each draw (half the
    time of a figure). Returns both texts."""
    above = ax.text(0.5, 1.02, "", transform=ax.transAxes, ha="center", va="bottom", fontsize=TEXT)
    below = ax.text(
        0.5,
        -0.02,
        "",
        transform=ax.transAxes,
        ha="center",
        va="top",
        fontsize=SMALL,
        color=WARNING_COLOUR,
    )
    _set_title(above, below, title, warning)
    return above, below


def _set_title(above: Any, below: Any, title: str, warning: str) -> None:
    """The title wrapped to its panel's width, and the warning."""
    ax = above.axes
    above.set_text(plain_text(_wrap(title, ax.get_position().width * ax.figure.get_figwidth())))
    below.set_text(plain_text(warning))


def _wrap(text: str, inches: float, points: float = TEXT) -> str:
    """``text`` wrapped at spaces to lines of about ``inches`` (three lines at most)."""
    chars = max(8, int(inches * 72 / (points * 0.6)))
    lines = [line for part in text.split("\n") for line in textwrap.wrap(part, chars)]
    return "\n".join(lines[:3])


def _heading(
    fig: Any, heading: str, note: str | None, width: float, height: float
) -> tuple[Any, ...]:
    """The heading at the top and the note at the bottom, each one line cut to the width.
    Returns their texts (the note's only when there is one)."""
    top = fig.text(
        0.5,
        1 - 0.05 / height,
        plain_text(_fit(heading, width, TITLE)),
        ha="center",
        va="top",
        fontsize=TITLE,
    )
    if not note:
        return (top,)
    bottom = fig.text(
        0.5,
        0.03 / height,
        plain_text(_fit(note, width, SMALL)),
        ha="center",
        va="bottom",
        fontsize=SMALL,
    )
    return top, bottom


def _fit(text: str, width: float, points: float) -> str:
    """``text`` cut (with "...") to about the characters that ``width`` inches hold."""
    chars = int(width * 72 / (points * 0.56))
    return text if len(text) <= chars else text[: chars - 3] + "..."


# Figures of an explanation ------------------------------------------------------------------

Kind = Literal["information", "attention", "generation"]
Scale = Literal["word", "shared"]
KIND_NAMES = {
    "information": "information",
    "attention": "attention + information",
    "generation": "DAAM (generation)",
}


def explanation_maps(res: Explanation, kind: Kind) -> dict[str, torch.Tensor]:
    """Each word's map of ``kind`` at the model's input resolution (``maps.safetensors``):
    its information (CMI, nats per model-input pixel), the attention collected in the
    estimator's calls, or the attention of the traced generation (DAAM). Empty when not held."""
    if kind == "information":
        return {w: res.heat_map(w, upsample=False) for w in res.words}
    held = {"attention": res.attention, "generation": res.generation_attention}[kind]
    return {} if held is None else {w: held[w].float() for w in res.words}


def map_unit(res: Explanation, kind: Kind) -> str:
    """The unit of a map of ``kind`` (information: per image pixel, or per latent pixel with
    the image pixels it covers)."""
    if kind != "information":
        return ATTENTION_UNIT
    return pixel_unit(res.image, res.heat_map(upsample=False))


def pixel_unit(image: torch.Tensor, heat: torch.Tensor) -> str:
    """The unit of an information map ``heat`` of ``image``: nats per image pixel, or per
    latent pixel with the image pixels it covers."""
    side = image.shape[-1] // heat.shape[-1]
    return "nats/pixel" if side == 1 else f"nats/latent pixel ({side}x{side} px)"


def plot_explanation(
    res: Explanation,
    word: str | None = None,
    kind: Kind = "information",
    scale: Scale = "word",
    ax: Any = None,
    over: bool = True,
) -> tuple[Any, Any]:
    """One map of ``res``: ``word``'s (None: the prompt's MI) of ``kind``, over the image (or
    beside it, ``over=False``), on the word's own scale or the one all its words share, with
    its value, interval and flags in the title. ``(fig, ax)``."""
    panel = _panels(res, word, kind, scale)[0 if over else 1]
    mi = res.entry()
    name = "whole prompt" if word is None else f"{word} | rest"
    value = nats(mi) if word is None else nats(res.entry(word), mi["value"])
    kind_name = KIND_NAMES[kind] if kind != "information" else ""
    panel.title = f"{name}: {value}" + (f"\n{kind_name}" if kind_name else "")
    return plot_map(res.image, panel, ax)


def explanation_figures(
    res: Explanation, scale: Scale = "word", fmt: str = "png", grid: Any = None
) -> dict[str, bytes]:
    """The figure files of :meth:`Explanation.save`, by file name: per word
    ``<word>.heat_map.<fmt>`` (its information over and beside the image, then its attention +
    information when collected and the generation's attention when traced), the prompt's
    ``prompt_mi.heat_map.<fmt>``, and ``grid.<fmt>``, the comparison on shared scales (or the
    figure ``grid``)."""
    from ..words import file_name

    note = f"input {res.image_note}" if res.image_note else None
    mi = res.entry()
    files = _Files(fmt)
    panels, text = _word_figure(res, None, "word", note)
    heading = f"whole prompt: i(x; {res.prompt}) = {nats(mi)}"
    files.add(f"prompt_mi.heat_map.{fmt}", word_figure(res.image, panels, heading, text)[0])
    drawn = None  # every word's figure has one layout: drawn once, then updated
    for word in res.words:
        panels, text = _word_figure(res, word, scale, note)
        heading = f"{word} | rest: {nats(res.entry(word), mi['value'])}"
        if drawn is None:
            drawn = _WordFigure(res.image, panels, heading, text)
        else:
            drawn.update(panels, heading, text)
        files.add(f"{file_name(word)}.heat_map.{fmt}", drawn.fig, close=word == res.words[-1])
    files.add(f"grid.{fmt}", grid or grid_explanation(res, note)[0])
    return files.result()


def grid_explanation(res: Explanation, note: str | None = None) -> tuple[Any, Any]:
    """The comparison view of ``res``: a row per kind of map (information, attention +
    information, DAAM of the generation, those held), the words' maps of a row on one scale.
    ``(fig, axes)``."""
    mi_value = res.entry()["value"]
    rows = []
    for kind in ("information", "attention", "generation"):
        maps = explanation_maps(res, kind)
        if not maps:
            continue
        low, high = scale_of(*maps.values(), zero=kind == "information")
        panels = []
        for word, heat in maps.items():
            entry = res.entry(word)
            title = word
            if kind == "information":
                title = f"{word}\n{format_entry(entry, reference=mi_value, flags='none')}"
            warning = warning_text(entry) if kind == "information" else ""
            panels.append(Panel(title, heat, low, high, map_unit(res, kind), warning=warning))
        rows.append((KIND_NAMES[kind], panels))
    heading = f"{res.prompt}: i(x; prompt) = {nats(res.entry())}; each row's maps share one scale"
    return grid_figure(res.image, rows, heading, note)


def _word_figure(
    res: Explanation, word: str | None, scale: Scale, note: str | None
) -> tuple[list[Panel], str]:
    """A word's panels (None: the prompt's): its information over and beside the image, then
    the attention maps held; and the figure's note (the scale, the input's fitting)."""
    panels = _panels(res, word, "information", scale)
    for other in ("attention", "generation"):  # beside the information, when held
        if word is not None and explanation_maps(res, other):
            panels.append(_panels(res, word, other, scale)[1])
    low, high = panels[0].vmin, panels[0].vmax
    whose = "this word's own" if scale == "word" or word is None else "shared by all words"
    scale_note = f"scale {format_entry(low)} to {format_entry(high)} {panels[0].unit} ({whose})"
    return panels, "; ".join(filter(None, [scale_note, note]))


def _panels(res: Explanation, word: str | None, kind: Kind, scale: Scale) -> list[Panel]:
    """A map as two panels, over the image and beside it."""
    if scale not in ("word", "shared"):
        raise ValueError(f"unknown scale {scale!r}; choose 'word' or 'shared'")
    if kind not in KIND_NAMES:
        raise ValueError(f"unknown map kind {kind!r}; choose one of {', '.join(KIND_NAMES)}")
    if word is None:
        if kind != "information":
            raise ValueError("the whole prompt has an information map only (word=None)")
        heat = res.heat_map(upsample=False)
        entry = res.entry()
    else:
        maps = explanation_maps(res, kind)
        if not maps:
            what = {"attention": "attention=True", "generation": "infodecomp.trace"}[kind]
            raise ValueError(f"no {KIND_NAMES[kind]} maps in this explanation (see {what})")
        entry = res.entry(word)  # an unknown word fails here, naming the explained ones
        heat = maps[word.strip().lower()]
    shared = word is not None and scale == "shared"
    zero = kind == "information"
    low, high = scale_of(*maps.values(), zero=zero) if shared else scale_of(heat, zero=zero)
    unit = map_unit(res, kind)
    warning = warning_text(entry) if kind == "information" else ""
    name = KIND_NAMES[kind] if kind != "information" else "information"
    return [
        Panel("over the image", heat, low, high, unit, over=True, warning=warning),
        Panel(name, heat, low, high, unit, warning=warning),
    ]


def nats(entry: dict[str, Any], reference: float | None = None) -> str:
    """``"1.29 [0.96, 2.09] nats"`` and its flags in a word each: a figure's title."""
    warning = warning_text(entry)
    text = f"{format_entry(entry, reference, flags='none')} nats"
    return f"{text} ({warning})" if warning else text


def warning_text(entry: dict[str, Any]) -> str:
    """An entry's flags for a picture ("unreliable; truncated"; empty when none)."""
    return "; ".join(entry_flags(entry))


# Figures of an interaction -----------------------------------------------------------------

# Fixed layout of a pair's figure (inches): a heading of two lines, then rows of panels.
PAIR_WIDTH = 6.9  # a page's text width
PAIR_HEADING = 0.5
PAIR_TITLES = 0.48  # three lines of a panel's title
CHART_HEIGHT = 1.55
CHART_AXIS = 0.36  # the chart's ticks and axis label
CHART_NUMBERS = 1.2  # the column of numbers right of the chart, at least
NUMBERS_GAP = 0.07  # inches between the chart and its numbers
CHART_BARS = 0.9  # the bars' width, at least, where the labels can give way
ATOM_COLOURS = {
    "redundancy": "#b2182b",  # the diverging map's red: redundant
    "unique_first": "#7b5ea7",
    "unique_second": "#7b5ea7",
    "synergy": "#2166ac",  # its blue: synergistic
}
REFERENCE_COLOUR = "#a3abb5"


def interaction_figures(inter: Interaction, fmt: str = "png") -> dict[str, bytes]:
    """The figure files of :meth:`Interaction.save`, by file name: per pair
    ``<w1>__<w2>.interaction.<fmt>`` (:func:`plot_interaction`)."""
    from ..words import file_name

    files = _Files(fmt)
    for p, (w1, w2) in enumerate(inter.pairs):
        fig, _ = plot_interaction(inter, p)
        files.add(f"{file_name(w1)}__{file_name(w2)}.interaction.{fmt}", fig)
    return files.result()


def interaction_sign(entry: dict[str, Any]) -> str:
    """What the interaction information's sign says, in words: "redundant" or "synergistic"
    when its 95% interval excludes 0, else which way it leans."""
    low, high = entry["ci95"]
    if low > 0:
        return "redundant"
    if high < 0:
        return "synergistic"
    if entry["value"] == 0:
        return "no interaction shown"
    lean = "redundant" if entry["value"] > 0 else "synergistic"
    return f"leans {lean}; interval covers 0"


def plot_interaction(inter: Interaction, pair: Sequence[str] | int = 0) -> tuple[Any, Any]:
    """One pair's figure: the image and the maps of i(x; w1 | rest), i(x; w2 | rest) and
    i(x; w1, w2 | rest) on one scale; the interaction information's map (diverging, symmetric
    about 0) beside a chart of the image's atoms and informations with their 95% intervals;
    the pixel atoms' maps on one scale, with their totals (which are not the image's atoms).
    Maps in nats per model-input pixel. ``(fig, axes)``, axes a dict by what they show. The
    words stand in the order they were measured, whichever order ``pair`` gives them."""
    import matplotlib.pyplot as plt

    p, _ = inter._pair(pair)
    w1, w2 = inter.pairs[p]
    has_maps = inter.estimates["joint"].map is not None
    has_atoms = "redundancy" in inter.estimates
    ii = inter.entry(p, "interaction")
    sign, flags = interaction_sign(ii), warning_text(ii)
    heading = _lines(
        f"{w1} & {w2} | rest: interaction i(x; {w1}; {w2} | rest) = "
        f"{format_entry(ii, flags='none')} nats",
        PAIR_WIDTH - 2 * MARGIN,
        TITLE,
    )
    rest = inter.settings["pairs"][p]["rest"]
    sub = f'{sign}{"; " + flags if flags else ""} · prompt "{inter.prompt}"; rest ' + (
        f'"{rest}"' if rest else "empty"
    )
    sub_lines = _lines(sub, PAIR_WIDTH - 2 * MARGIN, TEXT)
    heading_height = 0.1 + 0.18 * len(heading) + 0.16 * len(sub_lines)
    map_row = PAIR_TITLES + PANEL + WARNINGS
    chart_row = PAIR_TITLES + CHART_HEIGHT + CHART_AXIS
    rows = [map_row] * has_maps + [chart_row] + [map_row] * (has_maps and has_atoms)
    notes = [
        line
        for note in _pair_notes(inter, p, has_maps, has_atoms)
        for line in _lines(note, PAIR_WIDTH - 2 * MARGIN, SMALL)
    ]
    height = heading_height + sum(rows) + NOTE * len(notes)
    fig = plt.figure(figsize=(PAIR_WIDTH, height))
    axes: dict[str, Any] = {}
    top = height - heading_height
    # The map rows (the image and three maps, or four maps; a colour bar at the end), centred.
    row_width = 4 * PANEL + 3 * GAP + BAR_GAP + BAR_WIDTH + BAR_TEXT
    left = (PAIR_WIDTH - row_width) / 2

    def box(x: float, y: float, w: float, h: float) -> list[float]:
        return [x / PAIR_WIDTH, y / height, w / PAIR_WIDTH, h / height]

    def add_map(name: str, panel: Panel, x: float, y: float, bar: bool) -> Any:
        axes[name] = fig.add_axes(box(x, y, PANEL, PANEL))
        cax = fig.add_axes(box(x + PANEL + BAR_GAP, y, BAR_WIDTH, PANEL)) if bar else None
        drawn = _draw_map(inter.image, panel, axes[name], cax, bar)
        # Titles may use the gap beside the panel: the numbers stay on one line.
        drawn.title.set_text(plain_text(_title_lines(panel.title, PANEL + GAP)))
        return cax

    def map_row_of(panels: dict[str, Panel], y: float, image: bool) -> None:
        x = left
        if image:
            axes["image"] = fig.add_axes(box(x, y, PANEL, PANEL))
            plot_image(inter.image, "image", axes["image"])
            x += PANEL + GAP
        for k, (name, panel) in enumerate(panels.items()):
            add_map(name, panel, x, y, k == len(panels) - 1)
            x += PANEL + GAP

    unit = ""
    if has_maps:
        unit = pixel_unit(inter.image, inter.heat_map(p, "joint"))
        titles = {
            "first": f"i(x; {w1} | rest)",
            "second": f"i(x; {w2} | rest)",
            "joint": f"i(x; {w1}, {w2} | rest)",
        }
        heats = {n: inter.heat_map(p, n) for n in titles}
        low, high = scale_of(*heats.values())
        panels = {
            n: Panel(
                f"{t}\n{format_entry(inter.entry(p, n), flags='none')}",
                heats[n],
                low,
                high,
                unit,
                warning=warning_text(inter.entry(p, n)),
            )
            for n, t in titles.items()
        }
        top -= map_row
        map_row_of(panels, top + WARNINGS, image=True)

    # The interaction's map beside the chart of the image's atoms and informations.
    top -= chart_row
    y = top + CHART_AXIS
    chart_x = MARGIN
    if has_maps:
        heat = inter.heat_map(p, "interaction")
        size = max(abs(heat.min().item()), abs(heat.max().item())) or 1.0
        panel = Panel(
            f"interaction\ni1 + i2 - i12\n{format_entry(ii, flags='none')}",
            heat,
            -size,
            size,
            unit,
            warning=flags,
            cmap=DIVERGING_CMAP,
        )
        cax = add_map("interaction", panel, left, y + CHART_HEIGHT - PANEL, True)
        for end, at, va in (("redundant", 1.02, "bottom"), ("synergistic", -0.02, "top")):
            cax.text(
                0.0,
                at,
                end,
                transform=cax.transAxes,
                ha="left",
                va=va,
                fontsize=SMALL,
                color=ATOM_COLOURS["redundancy" if end == "redundant" else "synergy"],
            )
        chart_x = left + PANEL + BAR_GAP + BAR_WIDTH + BAR_TEXT + GAP
    axes["chart"] = _pair_chart(fig, inter, p, chart_x, y, box)

    if has_maps and has_atoms:
        heats = {n: inter.heat_map(p, n) for n in _ATOM_NAMES}
        low, high = scale_of(*heats.values())
        panels = {
            f"pixel {n}": Panel(
                f"{_atom_label(n, w1, w2)}\npixels sum to {format_entry(h.double().sum().item())}"
                f"\nimage atom {format_entry(inter.entry(p, n)['value'])}",
                h,
                low,
                high,
                unit,
            )
            for n, h in heats.items()
        }
        top -= map_row
        map_row_of(panels, top + WARNINGS, image=False)

    lines = [(t, TITLE) for t in heading] + [(t, TEXT) for t in sub_lines]
    y = 0.05
    for text, points in lines:
        fig.text(0.5, 1 - y / height, plain_text(text), ha="center", va="top", fontsize=points)
        y += 0.18 if points == TITLE else 0.16
    for k, note in enumerate(notes):
        fig.text(
            0.5,
            (0.03 + NOTE * (len(notes) - 1 - k)) / height,
            plain_text(note),
            ha="center",
            va="bottom",
            fontsize=SMALL,
        )
    return fig, axes


def _text_width(text: str, points: float) -> float:
    """The width of ``text`` in inches at ``points`` (the default font, measured)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path

    # The font's layout (as the renderer sets the text), not a path of its glyphs: fast.
    prop = FontProperties(size=points)
    width, _, _ = text_to_path.get_text_width_height_descent(plain_text(text), prop, ismath=False)
    return width / 72


def _title_lines(title: str, inches: float) -> str:
    """A panel's title: each of its lines broken to fit ``inches`` (measured), three at most."""
    lines = [line for part in title.split("\n") for line in _lines(part, inches, TEXT, 3)]
    return "\n".join(lines[:3])


def _cut(text: str, inches: float, points: float) -> str:
    """``text`` cut (with "...") to fit ``inches`` (measured)."""
    if _text_width(text, points) <= inches:
        return text
    while len(text) > 1 and _text_width(text + "...", points) > inches:
        text = text[:-1]
    return text + "..."


def _lines(text: str, inches: float, points: float, most: int = 2) -> list[str]:
    """``text`` broken at spaces into lines that fit ``inches`` (measured), ``most`` at most
    (the last cut with "...")."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and _text_width(f"{lines[-1]} {word}", points) <= inches:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    if len(lines) > most:
        lines = lines[: most - 1] + [_cut(" ".join(lines[most - 1 :]), inches, points)]
    return lines


_ATOM_NAMES = {
    "redundancy": "redundancy",
    "unique_first": "unique",
    "unique_second": "unique",
    "synergy": "synergy",
}


def _atom_label(name: str, w1: str, w2: str) -> str:
    word = {"unique_first": f" {w1}", "unique_second": f" {w2}"}.get(name, "")
    return _ATOM_NAMES[name] + word


def _pair_notes(inter: Interaction, p: int, has_maps: bool, has_atoms: bool) -> list[str]:
    """The figure's notes: the pixel atoms' totals against the image's atoms, the scales."""
    notes = []
    if has_maps and has_atoms:
        notes.append(
            "pixel atoms do not sum to the image's: the bottom row holds each pixel's own atoms "
            "(a minimum is not additive); the maps of i1, i2, i12 and the interaction sum to "
            "their values"
        )
    if has_maps:
        note = (
            "maps in nats per model-input pixel; i1, i2, i12 share a scale, the pixel atoms another"
        )
        notes.append(note + (f"; input {inter.image_note}" if inter.image_note else ""))
    return notes


def _pair_chart(fig: Any, inter: Interaction, p: int, x: float, y: float, box: Any) -> Any:
    """The chart of the image's atoms (when computed) and i1, i2, i12 for reference: bars with
    their 95% intervals, the numbers in a column on the right, labels on the left."""
    from matplotlib.ticker import MaxNLocator
    from matplotlib.transforms import blended_transform_factory

    w1, w2 = inter.pairs[p]
    bars: list[tuple[str, dict[str, Any], str]] = []
    if "redundancy" in inter.estimates:
        for name, symbol in zip(_ATOM_NAMES, ("R", "U1", "U2", "S"), strict=True):
            label = f"{symbol}: {_atom_label(name, w1, w2)}"
            bars.append((label, inter.entry(p, name), ATOM_COLOURS[name]))
    for symbol, name, words in (
        ("i1", "first", w1),
        ("i2", "second", w2),
        ("i12", "joint", f"{w1}, {w2}"),
    ):
        bars.append((f"{symbol}: i(x; {words} | rest)", inter.entry(p, name), REFERENCE_COLOUR))
    numbers = [format_entry(e, flags="none") + ("*" if warning_text(e) else "") for _, e, _ in bars]
    # The numbers column as wide as its widest entry (a long negative interval is wide): the
    # numbers are never cut; the labels give way first, down to what keeps the bars readable.
    numbers_width = max(CHART_NUMBERS, NUMBERS_GAP + max(_text_width(t, SMALL) for t in numbers))
    labels_width = min(2.1, 0.08 + max(_text_width(label, SMALL) for label, _, _ in bars))
    room = PAIR_WIDTH - MARGIN - numbers_width - x
    labels_width = max(min(labels_width, room - CHART_BARS), min(labels_width, 0.6))
    width = room - labels_width
    ax = fig.add_axes(box(x + labels_width, y, width, CHART_HEIGHT))
    ys = [k + (0.5 if k >= 4 and len(bars) == 7 else 0.0) for k in range(len(bars))]
    values = [e["value"] for _, e, _ in bars]
    lows = [max(0.0, e["value"] - e["ci95"][0]) for _, e, _ in bars]
    highs = [max(0.0, e["ci95"][1] - e["value"]) for _, e, _ in bars]
    ax.barh(
        ys,
        values,
        height=0.62,
        color=[c for _, _, c in bars],
        xerr=[lows, highs],
        error_kw={"elinewidth": 0.8, "capsize": 2, "capthick": 0.8, "ecolor": "#1c2430"},
    )
    ends = [e["ci95"][k] for _, e, _ in bars for k in (0, 1)] + values + [0.0]
    low, high = min(ends), max(ends)
    pad = 0.04 * (high - low or 1.0)
    ax.set_xlim(low - pad, high + pad)
    ax.set_ylim(ys[-1] + 0.6, -0.6)
    ax.axvline(0, color="#1c2430", lw=0.6)
    if len(bars) == 7:
        ax.axhline(3.75, color="#d9dee5", lw=0.6)
    labels = [plain_text(_cut(label, labels_width - 0.08, SMALL)) for label, _, _ in bars]
    ax.set_yticks(ys, labels=labels)
    ax.tick_params(axis="both", labelsize=SMALL, length=2, pad=2, width=0.5)
    ax.tick_params(axis="y", length=0)
    ax.set_xlabel("nats (whole image), 95% intervals", fontsize=SMALL, labelpad=2)
    # Plain tick numbers, few of them: an offset or "1e6" would sit on the axis label.
    ax.ticklabel_format(axis="x", style="plain", useOffset=False)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=max(2, int(width / 0.6)), steps=[1, 2, 5, 10]))
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.spines["bottom"].set_linewidth(0.5)
    right = blended_transform_factory(ax.transAxes, ax.transData)
    for yk, text in zip(ys, numbers, strict=True):
        at = 1 + NUMBERS_GAP / width  # a fixed gap in inches
        ax.text(at, yk, text, transform=right, va="center", ha="left", fontsize=SMALL)
    title = "image atoms (DiffusionPID) and informations" if len(bars) == 7 else "informations"
    ax.text(0.5, 1.0, title, transform=ax.transAxes, ha="center", va="bottom", fontsize=TEXT)
    return ax
