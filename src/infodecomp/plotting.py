"""Figures: maps of images. Every helper returns ``(fig, ax)``."""

from __future__ import annotations

import io
from typing import Any

import torch


def to_rgb(image: torch.Tensor) -> Any:
    """``(3, H, W)`` in [-1, 1] to an ``(H, W, 3)`` array in [0, 1] for ``imshow``."""
    return ((image.detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()


MAP_CMAP = "viridis"  # drawn beside the image, in colours that no image pixel lends them


def plot_overlay(
    image: torch.Tensor,
    heat: torch.Tensor,
    title: str = "",
    ax: Any = None,
    overlay: bool = False,
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar_label: str = "nats per pixel",
) -> tuple[Any, Any]:
    """A map ``(H, W)`` of an image ``(3, H, W)`` in [-1, 1], with its colour bar.

    By default the map is drawn beside the image (a new figure gets two panels, image and map;
    a given ``ax`` gets the map alone), so that the image's own colours are never read as heat;
    ``overlay=True`` draws it over the image instead. ``vmin`` / ``vmax`` fix the colour scale
    (to share it between maps); by default each map spans its own range. Returns ``(fig, ax)``
    of the map.
    """
    import matplotlib.pyplot as plt  # imported when first drawn: `import infodecomp` stays light

    if ax is None:
        if overlay:
            fig, ax = plt.subplots(figsize=(4, 4))
        else:
            fig, (left, ax) = plt.subplots(1, 2, figsize=(6.4, 3.2))
            plot_image(image, "image", left)
    fig = ax.figure
    if overlay:
        ax.imshow(to_rgb(image))
    shown = ax.imshow(
        heat.detach().float().cpu().numpy(),
        cmap=MAP_CMAP,
        alpha=0.6 if overlay else 1.0,
        vmin=vmin,
        vmax=vmax,
    )
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label=colorbar_label)
    ax.set_title(plain_text(title), fontsize=9)
    ax.set_axis_off()
    return fig, ax


def shared_scale(*heats: torch.Tensor) -> dict[str, float]:
    """``vmin`` and ``vmax`` covering all ``heats`` (0 included), for maps drawn on one scale."""
    low = min(0.0, *(h.min().item() for h in heats))
    high = max(low + 1e-12, *(h.max().item() for h in heats))
    return {"vmin": low, "vmax": high}


def plot_image(image: torch.Tensor, title: str = "", ax: Any = None) -> tuple[Any, Any]:
    """An image ``(3, H, W)`` in [-1, 1], alone (no colour bar)."""
    import matplotlib.pyplot as plt

    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(3.2, 3.2))
    ax.imshow(to_rgb(image))
    ax.set_title(plain_text(title), fontsize=9)
    ax.set_axis_off()
    return fig, ax


def plain_text(text: str) -> str:
    """``text`` shown as typed: matplotlib would read ``$...$`` as mathtext (and fail on
    unknown commands such as ``$\\foo$``)."""
    return text.replace("$", r"\$")


def png_bytes(fig: Any) -> bytes:
    """The figure as PNG bytes (and closes it)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buffer.getvalue()
