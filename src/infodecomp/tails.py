"""What an integral over log-SNR holds beyond the sampled range, extrapolated from the draws at
its two ends (all in nats).

Beyond each end the integrand is taken to decay like exp(-|a - end|) (any data with finite
variance at low SNR; smooth data at high SNR), so each tail integrates to the integrand's value at
the end. For the log-likelihood's high end a Gaussian coordinate's curve, the locally-Gaussian
limit of smooth data, replaces the plain exponential (:func:`gaussian_high_tail`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class Tails:
    """The two tails of an integral, each a mean over the end's draws with its standard error,
    shape ``(n_x, n_pairs)``; ``high_ratio`` scales the high end's per-coordinate integrand to
    its tail (1 for the plain exponential)."""

    low: torch.Tensor
    low_stderr: torch.Tensor
    high: torch.Tensor
    high_stderr: torch.Tensor
    high_ratio: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.low + self.high

    @property
    def total_stderr(self) -> torch.Tensor:
        return (self.low_stderr**2 + self.high_stderr**2).sqrt()


def exponential_tails(at_low: torch.Tensor, at_high: torch.Tensor) -> Tails:
    """Tails that decay like exp(-|a - end|) from the integrand's draws at each end (shape
    ``(n_x, n_pairs, n_edge)``): each integrates to the integrand's mean there."""
    n_edge = at_low.shape[-1]
    return Tails(
        low=at_low.mean(-1),
        low_stderr=at_low.std(-1) / math.sqrt(n_edge),
        high=at_high.mean(-1),
        high_stderr=at_high.std(-1) / math.sqrt(n_edge),
        high_ratio=torch.ones(at_high.shape[:-1], dtype=at_high.dtype),
    )


def likelihood_tails(
    at_low: torch.Tensor, at_high: torch.Tensor, high: float, x: torch.Tensor
) -> Tails:
    """The log-likelihood integrand's tails for data rows ``x`` (shape ``(n_x, *data_shape)``):
    exponential below the range, a Gaussian coordinate's curve above ``high``."""
    tails = exponential_tails(at_low, at_high)
    sq_norm = x.double().cpu().flatten(1).pow(2).sum(1, keepdim=True)
    scaled, slope = gaussian_high_tail(tails.high, high, sq_norm, math.prod(x.shape[1:]))
    nonzero = tails.high != 0
    tails.high_ratio = torch.where(nonzero, scaled / torch.where(nonzero, tails.high, 1), 1)
    tails.high, tails.high_stderr = scaled, slope * tails.high_stderr
    return tails


def gaussian_high_tail(
    at_end: torch.Tensor, high: float, sq_norm: torch.Tensor, d: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The log-likelihood integrand's integral above ``high``, and its derivative in
    ``at_end`` (the integrand's value there, a total over the d coordinates of rows whose
    squared norms are ``sq_norm``).

    The integrand is half the model's error minus the standard-Gaussian reference's. The
    reference's part is known for each x: its error is d s^2 + s (1 - s) |x|^2 at s = sigmoid(a),
    whose integral above ``high`` is closed-form. The model's error is taken to follow a Gaussian
    coordinate's, d (1 - 1/(1 + E v)) at E = exp(a), with the v that matches it at the end (exact
    for Gaussian data of one variance, the limit of smooth data); its tail is
    -d/2 log(1 + 1/(E v)). Where no v fits (noise), the plain exponential's tail, ``at_end``.
    """
    big_e, s = math.exp(high), 1 / (1 + math.exp(-high))
    reference_at_end = (1 - s) * (s * sq_norm - (1 + s) * d)  # its error minus d
    reference_tail = 0.5 * ((1 - s) * sq_norm - (math.log1p(1 / big_e) + (1 - s)) * d)

    def tail(total: torch.Tensor) -> torch.Tensor:
        deficit = -(2 * total + reference_at_end) / d  # 1 / (1 + E v), per coordinate
        fits = (deficit > 0) & (deficit < 1)
        ev = 1 / torch.where(fits, deficit, 0.5) - 1
        gauss = -0.5 * d * torch.log1p(1 / ev) - reference_tail
        return torch.where(fits, gauss, total)

    h = 1e-6 * (1 + at_end.abs())
    return tail(at_end), (tail(at_end + h) - tail(at_end - h)) / (2 * h)
