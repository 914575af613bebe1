"""The attention baseline: text attention captured by wrapping the pipeline's own attention
processors (their outputs unchanged; restored afterwards), as DAAM aggregates it: per text token,
summed over heads and layers, upsampled to the network input's resolution.

Why not a dependency: attention-map-diffusers (MIT) replaces the processors with copies of
diffusers' own code and stores maps per timestep of a generation; infodecomp needs the maps of
chosen rows of a batch, and wrapping the processors keeps working across diffusers upgrades.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F

# (attn, hidden_states, encoder_hidden_states, args, kwargs) -> (B, n_image_tokens, L)
TextAttention = Callable[[Any, torch.Tensor, torch.Tensor, tuple, dict], torch.Tensor]


class AttentionCollector:
    """Sums text-attention maps of the rows being collected.

    Layers are summed on the network's device at their own resolution (as they come, no copy);
    :meth:`token_maps` upsamples each resolution's sum once (bicubic, clamped at zero).

    Attributes:
        rows: which rows of the current network call to collect, ``(B,)`` bool, or None.
        n_rows: rows collected so far (the number of network rows, not of layers).
    """

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = size
        self.rows: torch.Tensor | None = None
        self.sums: dict[tuple[int, int], torch.Tensor] = {}  # (h_l, w_l) -> (L, h_l, w_l)
        self.n_rows = 0

    def add(self, probs: torch.Tensor) -> None:
        """``probs``: ``(rows, h_l * w_l, L)`` attention of one layer, summed over heads."""
        h, w = self.size
        scale = math.isqrt(h * w // max(probs.shape[1], 1))
        if scale == 0 or (h // scale) * (w // scale) != probs.shape[1]:
            raise ValueError(
                f"attention over {probs.shape[1]} image tokens does not fit the model input "
                f"{h}x{w} (an image of another size than the model's image_size?)"
            )
        grid = (h // scale, w // scale)
        summed = probs.detach().float().sum(0).T.reshape(-1, *grid)  # (L, h_l, w_l)
        self.sums[grid] = summed if grid not in self.sums else self.sums[grid] + summed

    def token_maps(self) -> torch.Tensor:
        """Mean over the collected rows of the per-token maps, shape ``(L, h, w)``, float64."""
        if not self.sums:
            raise ValueError("no attention was collected")
        # Bicubic overshoot clamped per resolution, so that it cannot cancel another's mass.
        total = sum(
            F.interpolate(m[None].cpu(), size=self.size, mode="bicubic", align_corners=False)[
                0
            ].clamp(min=0)
            for m in self.sums.values()
        )
        return total.double() / self.n_rows


@contextlib.contextmanager
def capture(
    module: Any,
    is_text_attention: Callable[[str], bool],
    text_attention: TextAttention,
    collector: AttentionCollector,
) -> Iterator[AttentionCollector]:
    """Within the block, the text-attention processors of ``module`` (a UNet or transformer)
    also record, for ``collector.rows``, the maps ``text_attention`` computes."""
    original = module.attn_processors
    wrapped = {
        name: _CollectingProcessor(proc, text_attention, collector)
        if is_text_attention(name)
        else proc
        for name, proc in original.items()
    }
    module.set_attn_processor(wrapped)
    try:
        yield collector
    finally:
        module.set_attn_processor(original)


class _CollectingProcessor:
    """Runs the original processor and, on the side, records the text attention of the rows
    being collected."""

    def __init__(self, processor: Any, text_attention: TextAttention, collector: Any) -> None:
        self.processor, self.text_attention, self.collector = processor, text_attention, collector

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ):
        rows = self.collector.rows
        if encoder_hidden_states is not None and rows is not None and rows.any():
            keep = rows.to(hidden_states.device)
            with torch.no_grad():
                probs = self.text_attention(
                    attn, hidden_states[keep], encoder_hidden_states[keep], args, kwargs
                )
            self.collector.add(probs)
        return self.processor(attn, hidden_states, encoder_hidden_states, *args, **kwargs)
