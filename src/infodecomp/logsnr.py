"""Distributions over log-SNR from which the estimators draw: a fixed truncated logistic, and a
piecewise-constant proposal fitted to where an integrand lives."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TruncatedLogistic:
    """Importance distribution over log-SNR: a logistic(loc, scale) cut at ``loc +- clip*scale``.

    The defaults (loc 1, scale 2, clip 3) are the paper's choice for Stable Diffusion.
    """

    loc: float = 1.0
    scale: float = 2.0
    clip: float = 3.0

    def __post_init__(self) -> None:
        if not (self.scale > 0 and self.clip > 0):
            raise ValueError(f"log-SNR scale and clip must be positive, got {self}")

    @classmethod
    def from_range(cls, low: float, high: float, clip: float = 3.0) -> TruncatedLogistic:
        """The distribution covering exactly ``[low, high]``, centred in it."""
        if not high > low:
            raise ValueError(f"log-SNR range must have high > low, got ({low}, {high})")
        return cls(loc=(low + high) / 2, scale=(high - low) / (2 * clip), clip=clip)

    @property
    def low(self) -> float:
        return self.loc - self.clip * self.scale

    @property
    def high(self) -> float:
        return self.loc + self.clip * self.scale

    def sample(self, n: int, rng: np.random.Generator, stratified: bool) -> np.ndarray:
        """``n`` log-SNRs by inverse CDF; stratified draws put one point in each of n quantiles."""
        u = _uniforms(n, rng, stratified)
        lo, hi = _sigmoid(-self.clip), _sigmoid(self.clip)
        p = lo + (hi - lo) * u
        return self.loc + self.scale * np.log(p / (1 - p))

    def weight(self, logsnr: np.ndarray) -> np.ndarray:
        """Importance weights 1/q(a), so that mean(weight * f) estimates the integral of f."""
        z = (logsnr - self.loc) / self.scale
        return self.scale * math.tanh(self.clip / 2) / (_sigmoid(z) * _sigmoid(-z))

    def describe(self) -> dict[str, float | str]:
        return {
            "distribution": "truncated_logistic",
            "loc": self.loc,
            "scale": self.scale,
            "clip": self.clip,
            "low": self.low,
            "high": self.high,
        }


@dataclass(frozen=True, eq=False)
class Piecewise:
    """A density over ``[edges[0], edges[-1]]`` that is constant inside each bin.

    ``probs[b]`` is the probability of bin ``b`` (all > 0, summing to 1).
    """

    edges: np.ndarray
    probs: np.ndarray

    def sample(self, n: int, rng: np.random.Generator, stratified: bool) -> np.ndarray:
        """``n`` log-SNRs by inverse CDF (one per quantile when stratified)."""
        u = _uniforms(n, rng, stratified)
        cdf = np.concatenate([[0.0], np.cumsum(self.probs)])
        cdf[-1] = 1.0
        b = np.clip(np.searchsorted(cdf, u, side="right") - 1, 0, len(self.probs) - 1)
        within = (u - cdf[b]) / self.probs[b]
        return self.edges[b] + within * (self.edges[b + 1] - self.edges[b])

    def weight(self, logsnr: np.ndarray) -> np.ndarray:
        """Importance weights 1/q(a)."""
        b = np.clip(np.searchsorted(self.edges, logsnr, side="right") - 1, 0, len(self.probs) - 1)
        return (self.edges[b + 1] - self.edges[b]) / self.probs[b]


def fit_proposal(
    base: TruncatedLogistic,
    logsnr: np.ndarray,
    values: np.ndarray,
    *,
    n_bins: int,
    defensive: float,
    widened: float,
    widen_by: float,
) -> Piecewise:
    """A proposal close to the variance-optimal one for several integrands at once.

    For one integrand f, the importance density with the least variance is proportional to
    ``sqrt(E[f^2 | a])``. From draws at ``logsnr`` (shape ``(n,)``, from any mix of densities)
    and the integrands' values there, ``values`` (shape ``(k, n)``, unweighted), each
    integrand's ``E[f^2 | a]`` and ``E[f | a]`` are estimated on ``n_bins`` equal bins of
    ``base``'s range (kernel averages one bin wide, so bins without a draw still get a value).
    The proposal mixes the integrands' optimal densities with shares chosen so that each
    integrand reaches about the same *relative* standard error (each integral is floored at a
    tenth of its integrand's scale, so one that is mostly noise about zero cannot take all
    draws; and each keeps at least a quarter of an equal share).

    Draws rarely see the rare large values of an integrand beside its bulk (at higher SNR a
    noise draw now and then flips the posterior between scenes), so the fit underestimates
    ``E[f^2 | a]`` there. Hence a share ``widened`` of the proposal is the fit smoothed by a
    Gaussian of ``widen_by`` nats of log-SNR, shifted up by half that (measured on the world:
    the posterior flips lie above the bulk), and a share ``defensive`` is uniform, which
    bounds every importance weight by ``(high - low) / defensive``.
    """
    if not (0 < defensive <= 1 and widened >= 0 and defensive + widened <= 1):
        raise ValueError(f"need 0 < defensive, 0 <= widened, sum <= 1; got {defensive}, {widened}")
    edges = np.linspace(base.low, base.high, n_bins + 1)
    centres, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
    kernel = np.exp(-0.5 * ((centres[:, None] - logsnr[None, :]) / width) ** 2)
    kernel /= kernel.sum(1, keepdims=True)
    second, first = (values**2) @ kernel.T, values @ kernel.T  # (k, n_bins)
    optimal = np.sqrt(second)
    norm = optimal.sum(1, keepdims=True)
    densities = np.where(norm > 0, optimal / np.where(norm > 0, norm, 1), 1 / n_bins)
    # Each integral, floored at a tenth of its integrand's scale (an integrand that is mostly
    # noise about zero must not claim every draw); a zero integrand asks for none.
    scale = optimal.sum(1) * width
    integral = np.maximum(np.abs(first.sum(1)) * width, 0.1 * scale)
    integral = np.where(scale > 0, integral, np.inf)
    # Centred widen_by / 2 above each bin: the rare values lie on the high-SNR side of the bulk.
    offset = centres[:, None] - centres[None, :] - widen_by / 2
    smooth = np.exp(-0.5 * (offset / widen_by) ** 2)
    smooth /= smooth.sum(0, keepdims=True)  # column b spreads bin b's mass

    def mixture(shares: np.ndarray) -> np.ndarray:
        fit = shares @ densities
        return (1 - widened - defensive) * fit + widened * smooth @ fit + defensive / n_bins

    live = scale > 0
    k = max(int(live.sum()), 1)
    shares = np.where(live, 1 / k, 0.0) if live.any() else np.full(len(values), 1 / len(values))
    for _ in range(50 if k > 1 else 0):
        # Each integrand's predicted variance per draw, relative to its value squared.
        relative = (second / mixture(shares)).sum(1) * width**2 / integral**2
        shares = shares * np.sqrt(relative / relative[live].mean())
        # Every live integrand keeps a quarter of an equal share, whatever the pilot made of it.
        shares = np.maximum(shares / shares.sum(), np.where(live, 0.25 / k, 0.0))
        shares /= shares.sum()
    probs = mixture(shares)
    return Piecewise(edges, probs / probs.sum())


def _uniforms(n: int, rng: np.random.Generator, stratified: bool) -> np.ndarray:
    return (np.arange(n) + rng.random(n)) / n if stratified else rng.random(n)


def _sigmoid(z: np.ndarray | float) -> np.ndarray | float:
    return 1 / (1 + np.exp(-z))
