"""Standard errors, skew-aware 95% intervals and a reliability check for Monte Carlo means.

Importance-sampled information integrands are skewed: a few rare draws are large. A run that
misses them comes out low *and* with a small standard error, so ``value +- 1.96 SE`` covers too
rarely. The remedy here is an interval corrected for the skewness of the mean (Hall 1992, "On the
removal of skewness by transformation", JRSS B 54: 221-228); and ``top_share`` says when a value
rests on a few draws.
"""

from __future__ import annotations

import math

import torch

from .results import Z95

MAX_SKEW = 0.45


def stderr(samples: torch.Tensor, stratified: bool) -> torch.Tensor:
    """Standard error of the mean over the last axis.

    For stratified draws, neighbouring strata are grouped in pairs (a triple at the end if odd)
    and the spread within groups gives a (slightly conservative) variance: sum_g k_g s_g^2 / n^2.
    """
    n = samples.shape[-1]
    if not stratified or n < 4:
        return samples.std(-1) / math.sqrt(n)
    n_pairs = (n - 3) // 2 if n % 2 else n // 2
    paired = samples[..., : 2 * n_pairs]
    var = ((paired[..., 0::2] - paired[..., 1::2]) ** 2).sum(-1)
    if n % 2:
        var = var + 3 * samples[..., 2 * n_pairs :].var(-1)
    return var.sqrt() / n


def skewness_of_mean(
    samples: torch.Tensor, stratified: bool, se: torch.Tensor | None = None
) -> torch.Tensor:
    """Skewness of the mean over the last axis: its third cumulant over its SE cubed.

    Third cumulants are estimated without bias by k-statistics; for stratified draws within
    groups of three neighbouring strata (the last group takes the remainder), as ``stderr`` does
    with pairs. ``se``: the mean's standard error, when already at hand.
    """
    n = samples.shape[-1]
    if n < 3:
        return torch.zeros(samples.shape[:-1], dtype=samples.dtype)
    groups = [(0, n)] if not stratified or n < 6 else _groups_of_three(n)
    third = torch.zeros(samples.shape[:-1], dtype=samples.dtype)
    for lo, hi in groups:
        g, m = samples[..., lo:hi], hi - lo
        k3 = m * ((g - g.mean(-1, keepdim=True)) ** 3).sum(-1) / ((m - 1) * (m - 2))
        third = third + m * k3  # the group's draws add their third cumulants
    se = stderr(samples, stratified) if se is None else se
    return torch.where(se > 0, third / n**3 / se.clamp(min=1e-300) ** 3, 0.0)


def stage_stderr_and_skewness(
    stages: list[torch.Tensor], stratified: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard error and skewness of the mean of all draws of sequential stages (each stage a
    tensor whose last axis holds its draws, stratified within the stage). Each stage is drawn
    given the ones before but is unbiased given them, so the stages' errors are uncorrelated
    and their variances (and third cumulants) add, weighted by their shares of the draws."""
    n = sum(s.shape[-1] for s in stages)
    var = third = 0.0
    for s in stages:
        share, se = s.shape[-1] / n, stderr(s, stratified)
        var = var + share**2 * se**2
        third = third + share**3 * skewness_of_mean(s, stratified, se) * se**3
    se = var.sqrt()
    return se, torch.where(se > 0, third / se.clamp(min=1e-300) ** 3, 0.0)


def skew_interval(
    mean: torch.Tensor, se: torch.Tensor, skewness: torch.Tensor, z: float = Z95
) -> torch.Tensor:
    """A central interval for a mean whose sampling distribution has the given skewness.

    Hall's monotone cubic transformation of the studentized mean removes its first-order skew;
    inverting it at +-z gives the interval. For skewness 0 this is ``mean +- z * se``; for a
    right-skewed mean (rare large draws) the upper arm is the longer. The skewness is capped at
    +-MAX_SKEW: the transformation is a small-skew expansion, and near 0.49 (at z = 1.96) its
    inverse jumps; at the cap the arms are 1.5 and 3.75 standard errors. Shape
    ``mean.shape + (2,)``.
    """
    a = skewness.clamp(-MAX_SKEW, MAX_SKEW) / 3
    small = a.abs() < 1e-8

    def inverse(x: float) -> torch.Tensor:
        inner = 1 + 3 * a * (x - a / 2)
        root = torch.sign(inner) * inner.abs() ** (1 / 3)
        return torch.where(small, torch.full_like(a, x), (root - 1) / torch.where(small, 1.0, a))

    return torch.stack([mean - se * inverse(z), mean - se * inverse(-z)], dim=-1)


def top_share(samples: torch.Tensor, k: int = 3) -> torch.Tensor:
    """The share of ``sum |sample|`` over the last axis carried by the ``k`` largest: near 1 when
    a value rests on a few draws (then its standard error rests on them too)."""
    magnitude = samples.abs()
    total = magnitude.sum(-1)
    top = magnitude.topk(min(k, samples.shape[-1]), dim=-1).values.sum(-1)
    # A value that is zero but for rounding (e.g. a word whose removal changes nothing) rests
    # on no draw: below 1e-9 nats per draw the share is 0.
    return torch.where(total > 1e-9 * samples.shape[-1], top / total.clamp(min=1e-300), 0.0)


def _groups_of_three(n: int) -> list[tuple[int, int]]:
    starts = list(range(0, n - n % 3 - 3 + 1, 3))
    groups = [(s, s + 3) for s in starts]
    groups[-1] = (groups[-1][0], n)
    return groups
