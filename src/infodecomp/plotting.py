"""Figures: heat maps over images. Every helper returns ``(fig, ax)``."""

from __future__ import annotations

import io
from typing import Any

import matplotlib.pyplot as plt
import torch


def to_rgb(image: torch.Tensor) -> Any:
    """``(3, H, W)`` in [-1, 1] to an ``(H, W, 3)`` array in [0, 1] for ``imshow``."""
    return ((image.detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()


def plot_overlay(
    image: torch.Tensor,
    heat: torch.Tensor,
    title: str = "",
    ax: Any = None,
    alpha: float = 0.55,
    colorbar_label: str = "nats per pixel",
) -> tuple[Any, Any]:
    """A heat map ``(H, W)`` drawn over an image ``(3, H, W)`` in [-1, 1]."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(4, 4))
    ax.imshow(to_rgb(image))
    shown = ax.imshow(heat.detach().float().cpu().numpy(), cmap="inferno", alpha=alpha)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label=colorbar_label)
    ax.set_title(plain_text(title), fontsize=9)
    ax.set_axis_off()
    return fig, ax


def plot_image(image: torch.Tensor, title: str = "", ax: Any = None) -> tuple[Any, Any]:
    """An image ``(3, H, W)`` in [-1, 1], alone (no colour bar)."""
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
    plt.close(fig)
    return buffer.getvalue()
