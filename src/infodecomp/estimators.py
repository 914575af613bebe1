"""Information estimators for any denoiser (model-agnostic; all values in nats).

A diffusion model gives the MMSE denoiser eps_hat(x_a, a | y) of the Gaussian channel
x_a = sqrt(sigmoid(a)) * x + sqrt(sigmoid(-a)) * eps, with a the log-SNR. By the I-MMSE relation
(Kong et al., ICLR 2024, arXiv 2310.07972), integrals over a of denoising errors are exact
information quantities:

    -log p(x|y) = d/2 log(2 pi e) + 1/2 int E||eps - eps_hat(x_a|y)||^2 - d sigmoid(a) da
                = -log N(x; 0, I) + 1/2 int E[||eps - eps_hat(x_a|y)||^2 - ||eps - e_ref||^2] da
      (e_ref = sqrt(sigmoid(-a)) x_a is the standard-Gaussian denoiser; the second form, used
      here, shares eps between both errors so their noise cancels where eps_hat ~ e_ref)
    i^s(x; y|c) = 1/2 int E[||eps - eps_hat(x_a|c)||^2 - ||eps - eps_hat(x_a|y)||^2] da
    i^o(x; y|c) = 1/2 int E||eps_hat(x_a|c) - eps_hat(x_a|y)||^2 da

Each integrand is a sum over data coordinates, so each estimate splits exactly into a map.
The integral is estimated by importance sampling over a (logsnr.py: a truncated logistic, or an
adaptive proposal fitted to the integrand of the estimator asked, the first listed when several
are); every condition of one call sees the same (a, eps) draws (sampling.py says which), and the
tails beyond the range are extrapolated in closed form and added to every value (tails.py; for
information also flagged as ``truncated`` where they exceed the standard error).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import sys
import time
from collections.abc import Sequence
from typing import Any, Protocol, overload

import numpy as np
import torch
from tqdm.auto import tqdm

from . import intervals
from .logsnr import Piecewise, TruncatedLogistic, fit_proposal
from .results import Estimate
from .sampling import Sampling, check_sampling
from .tails import Tails, exponential_tails, likelihood_tails

ESTIMATORS = ("orthogonal", "standard")

# The adaptive proposal: below this many draws there are too few to fit one. A pilot of
# draws // PILOT_FRACTION draws (spent) starts it; it is refitted before each counted stage,
# on PROPOSAL_BINS bins, a share WIDENED of it smoothed by WIDEN_BY nats, DEFENSIVE uniform.
# Measured by benchmarks/estimator_efficiency.py; see logsnr.fit_proposal.
MIN_ADAPTIVE_SAMPLES = 64
PILOT_FRACTION = 16
PROPOSAL_BINS = 32
WIDENED = 0.5
WIDEN_BY = 2.0
DEFENSIVE = 0.03
# A value is marked unreliable when its TOP_DRAWS largest draws carry over RELIABLE_SHARE of it.
TOP_DRAWS = 3
RELIABLE_SHARE = 0.5
# Bins of the information profile over log-SNR (diagnostics["profile"]).
PROFILE_BINS = 24


class Denoiser(Protocol):
    """What a model implements to be measured.

    ``model(x_noisy, logsnr, conds)`` takes noisy inputs of shape ``(B, *data_shape)``, their
    log-SNRs of shape ``(B,)`` and a length-``B`` sequence of conditions (model-defined: a prompt,
    a label, a dict of factors, or ``None`` for the unconditional denoiser), and returns the
    predicted noise eps_hat with the shape of ``x_noisy``.

    A model may also have an attribute ``logsnr_range = (low, high)``: the log-SNR range it was
    trained on, from which the estimators take their default integration range.
    """

    def __call__(
        self, x_noisy: torch.Tensor, logsnr: torch.Tensor, conds: Sequence[Any]
    ) -> torch.Tensor: ...


class DenoiserOutputError(RuntimeError):
    """The denoiser returned something unusable (wrong shape, NaN or inf)."""


def log_likelihood(
    model: Denoiser,
    x: torch.Tensor,
    cond: Any = None,
    *,
    sampling: Sampling | None = None,
    per_dim: bool = False,
    sum_channels: bool = False,
    keys: Sequence[Any] | None = None,
    progress: bool = True,
    levels: int | None = None,
) -> Estimate:
    """Negative log-likelihood -log p(x | cond) in nats, one per row of ``x``.

    Uses a standard-Gaussian reference, so the value is exact up to Monte Carlo error. The
    log-SNR integral is taken over the range of the sampling's ``logsnr`` and its tails beyond it
    are added in closed form (tails.py: below the range the integrand decays like exp(a); above
    it as a Gaussian coordinate's would, exact for Gaussian data, the limit of smooth data);
    ``Estimate.diagnostics["outside_range"]`` holds what they added. ``Estimate.bits_per_dim``
    gives the value in bits per dimension.

    For discrete data such as 8-bit images, give ``levels`` (256): ``x`` must then lie on the
    grid ``2 k / (levels - 1) - 1``, k = 0 .. levels - 1 (8-bit pixels / 127.5 - 1), and the
    result is the usual dequantized bound on the discrete -log P(x): each row gets uniform noise
    of one level's width (seeded, from the row's stream) and ``d log((levels - 1) / 2)`` nats
    are added; its ``bits_per_dim`` is then the standard bits per dimension.

    Args:
        model: any :class:`Denoiser`.
        x: data, shape ``(n_x, *data_shape)``.
        cond: one condition, or a list of conditions measured on shared noise (the result then
            has a trailing axis of that length). ``None`` is the unconditional model.
        sampling: the draws (:class:`~infodecomp.Sampling`: number, seed, log-SNR proposal,
            batch size); default ``Sampling()``, 256 draws on the model's trained log-SNR range.
        per_dim: also return ``Estimate.map``, the exact split of the value over coordinates.
        sum_channels: sum the map over the channel axis (axis 1 of ``x``).
        keys: one stable key per row of ``x`` (an item id: str or int) naming its random
            stream: a row's draws depend only on ``(seed, key)``, never on the other rows, the
            batch size or sharding. Default: a hash of the row's content, so the same data gives
            the same numbers wherever it sits (two equal rows share their draws).
        progress: show a progress bar (only on a terminal).
        levels: the number of levels discrete data was quantized to (see above), or None.
    """
    sampling = check_sampling(sampling)
    offset = 0.0
    if levels is not None:
        x = _check_inputs(x, sum_channels, keys)
        x, offset = _dequantize(x, levels, sampling.seed, keys)
    est = _estimate(
        "negative_log_likelihood",
        model,
        x,
        cond if isinstance(cond, list) else [cond],
        None,
        many=isinstance(cond, list),
        sampling=sampling,
        per_dim=per_dim,
        sum_channels=sum_channels,
        keys=keys,
        progress=progress,
    )["negative_log_likelihood"]
    if levels is not None:
        per_coordinate = offset * (x.shape[1] if sum_channels else 1)
        est.value = est.value + offset * est.settings["data_dims"]
        est.ci95 = est.ci95 + offset * est.settings["data_dims"]
        if est.map is not None:
            est.map = est.map + per_coordinate
        est.settings["levels"] = levels
    return est


def _dequantize(
    x: torch.Tensor, levels: int, seed: int, keys: Sequence[Any] | None
) -> tuple[torch.Tensor, float]:
    """``x`` plus uniform noise of one level's width, and the nats per coordinate to add."""
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ValueError(f"levels must be an integer >= 2, got {levels!r}")
    step = 2 / (levels - 1)
    k = (x.double() + 1) / step
    # Within a tenth of a level: half-precision data sits up to about 0.03 levels off the grid.
    if ((k - k.round()).abs() > 0.1).any() or k.min() < -0.1 or k.max() > levels - 1 + 0.1:
        raise ValueError(
            f"x is not on the grid of {levels} levels in [-1, 1] (2 k / {levels - 1} - 1): give "
            "the quantized data itself, e.g. 8-bit pixels / 127.5 - 1"
        )
    noise = torch.empty_like(x, dtype=torch.float64)
    for i in range(x.shape[0]):
        rng = np.random.default_rng(
            [seed, row_stream_key(x[i], None if keys is None else keys[i]), 2]
        )
        noise[i] = torch.from_numpy(rng.uniform(-step / 2, step / 2, tuple(x.shape[1:])))
    # At least float32: half precision would round most of the noise away.
    dtype = torch.promote_types(x.dtype, torch.float32)
    return (step * k.round() - 1 + noise).to(dtype), -math.log(step)


@overload
def mutual_info(
    model: Denoiser, x: torch.Tensor, cond: Any, *, estimator: str = ..., **settings: Any
) -> Estimate: ...
@overload
def mutual_info(
    model: Denoiser, x: torch.Tensor, cond: Any, *, estimator: tuple[str, ...], **settings: Any
) -> dict[str, Estimate]: ...


def mutual_info(
    model: Denoiser,
    x: torch.Tensor,
    cond: Any,
    *,
    estimator: str | tuple[str, ...] = "orthogonal",
    sampling: Sampling | None = None,
    per_dim: bool = False,
    sum_channels: bool = False,
    keys: Sequence[Any] | None = None,
    progress: bool = True,
) -> Estimate | dict[str, Estimate]:
    """Pointwise mutual information i(x; cond) in nats, against the null condition ``None``.

    ``estimator="standard"`` estimates log p(x|cond) - log p(x) exactly in expectation;
    ``"orthogonal"`` (default) drops a zero-mean term: same mean over the data, lower variance,
    never negative. A tuple such as ``("standard", "orthogonal")`` computes each from the same
    denoiser calls and returns ``{name: Estimate}``; the adaptive proposal is fitted to the
    integrand of the one listed first (the others are unbiased on its draws, with more
    variance than alone). ``settings["proposal_fitted_to"]`` records it.

    The integral covers the sampling's log-SNR range (by default the range the model declares
    it was trained on); what lies beyond it is extrapolated from the integrand at the range's
    ends (decay like exp(-|a - end|)) and added to the value, with its standard error added to
    the SE (``diagnostics["outside_range"]``, ``["outside_range_stderr"]``). For a model whose
    range is its trained one, that tail is information the model never saw, extrapolated, not
    measured: ``truncated`` marks values whose tail exceeds the standard error of the sampled
    part, and ``value - diagnostics["outside_range"]`` is what the model itself measured.
    Arguments as in :func:`log_likelihood`.
    """
    return conditional_mutual_info(
        model,
        x,
        cond,
        None,
        estimator=estimator,
        sampling=sampling,
        per_dim=per_dim,
        sum_channels=sum_channels,
        keys=keys,
        progress=progress,
    )


@overload
def conditional_mutual_info(
    model: Denoiser,
    x: torch.Tensor,
    cond: Any,
    context: Any,
    *,
    estimator: str = ...,
    **settings: Any,
) -> Estimate: ...
@overload
def conditional_mutual_info(
    model: Denoiser,
    x: torch.Tensor,
    cond: Any,
    context: Any,
    *,
    estimator: tuple[str, ...],
    **settings: Any,
) -> dict[str, Estimate]: ...


def conditional_mutual_info(
    model: Denoiser,
    x: torch.Tensor,
    cond: Any,
    context: Any,
    *,
    estimator: str | tuple[str, ...] = "orthogonal",
    sampling: Sampling | None = None,
    per_dim: bool = False,
    sum_channels: bool = False,
    keys: Sequence[Any] | None = None,
    progress: bool = True,
) -> Estimate | dict[str, Estimate]:
    """Pointwise conditional mutual information i(x; y | context) in nats.

    ``cond`` is the fuller condition (context plus the part y), ``context`` the one with y removed;
    the estimate is log p(x|cond) - log p(x|context) (standard) or its orthogonal version.
    Either may be a list (the other is then broadcast, or both lists of equal length) to measure
    several pairs on shared noise, e.g. a caption against each of its words removed; each distinct
    condition is evaluated once per draw. ``estimator`` as in :func:`mutual_info` (a tuple of
    names returns ``{name: Estimate}``, all from one pass of denoiser calls, the proposal fitted
    to the first; with several pairs, to all of them). The tails beyond the log-SNR range are
    added as in :func:`mutual_info`. Other arguments as in :func:`log_likelihood`.
    """
    names = (estimator,) if isinstance(estimator, str) else tuple(dict.fromkeys(estimator))
    if not names or any(e not in ESTIMATORS for e in names):
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {ESTIMATORS}")
    conds, contexts = _broadcast_pairs(cond, context)
    quantity = "mutual_info" if all(c is None for c in contexts) else "conditional_mutual_info"
    out = _estimate(
        quantity,
        model,
        x,
        conds,
        contexts,
        estimators=names,
        many=isinstance(cond, list) or isinstance(context, list),
        sampling=check_sampling(sampling),
        per_dim=per_dim,
        sum_channels=sum_channels,
        keys=keys,
        progress=progress,
    )
    return out[estimator] if isinstance(estimator, str) else out


T = torch.Tensor


# Each kind's per-coordinate integrand, from the noise e, the fuller condition's eps_hat, the
# context's (information) and the noisy input x_a at s = sigmoid(a) (log-likelihood).
def _likelihood_integrand(e: T, fuller: T, context: T, s: T, x_noisy: T) -> T:
    # Against the standard-Gaussian reference's error on the same eps, whose integral is known in
    # closed form (-log N(x; 0, I)): it cancels tail noise.
    return 0.5 * ((e - fuller) ** 2 - (e - (1 - s).sqrt() * x_noisy.unsqueeze(1)) ** 2)


def _orthogonal_integrand(e: T, fuller: T, context: T, s: T, x_noisy: T) -> T:
    return 0.5 * (context - fuller) ** 2


def _standard_integrand(e: T, fuller: T, context: T, s: T, x_noisy: T) -> T:
    return 0.5 * ((e - context) ** 2 - (e - fuller) ** 2)


INTEGRANDS = {
    "negative_log_likelihood": _likelihood_integrand,
    "orthogonal": _orthogonal_integrand,
    "standard": _standard_integrand,
}


def _estimate(
    quantity: str,
    model: Denoiser,
    x: torch.Tensor,
    conds: list[Any],
    contexts: list[Any] | None,
    *,
    estimators: Sequence[str] = (),
    many: bool,
    sampling: Sampling,
    per_dim: bool,
    sum_channels: bool,
    keys: Sequence[Any] | None,
    progress: bool,
) -> dict[str, Estimate]:
    """The estimates of ``quantity`` (one per name in ``estimators`` for information, keyed by
    name; keyed by ``quantity`` for the log-likelihood), all from one pass of denoiser calls:
    draws -> stages -> integrals -> tails -> flags."""
    if not callable(model):
        raise TypeError(
            f"model must be a denoiser, model(x_noisy, logsnr, conds) -> eps_hat; got "
            f"{type(model).__name__}"
        )
    x = _check_inputs(x, sum_channels, keys)
    sampling = sampling.resolve(model)
    likelihood = quantity == "negative_log_likelihood"
    # Each distinct condition is evaluated once per draw; pairs index into this list.
    unique: list[Any] = []
    for c in conds + (contexts or []):
        if not any(c == u for u in unique):
            unique.append(c)
    # Every information integrand comes from the same denoiser outputs, so all are computed; the
    # adaptive proposal is fitted to the integrand of the estimator listed first (the one the
    # caller reports or ranks by): the others ride on its draws, still unbiased. A value is a
    # function of (row, seed, settings), ``estimators`` included (settings record the fit).
    kinds = [quantity] if likelihood else list(ESTIMATORS)
    fit_kind = quantity if likelihood else estimators[0]
    plan = _Plan.of(sampling)
    n_x = x.shape[0]
    # Random streams keyed by (seed, row key): a row's numbers do not depend on the other rows,
    # on batch_size or on how rows are grouped, sharded or resumed.
    streams = [row_stream_key(x[i], None if keys is None else keys[i]) for i in range(n_x)]
    draws = _Draws(
        model,
        x,
        unique,
        [_index(unique, c) for c in conds],
        None if contexts is None else [_index(unique, c) for c in contexts],
        {kind: INTEGRANDS[kind] for kind in kinds},
        sampling.batch_size,
        sum_channels,
        eps_rngs=[np.random.default_rng([sampling.seed, k, 1]) for k in streams],
        n_units=n_x * (sampling.draws + 2 * plan.n_edge),
        progress=progress,
    )
    alpha_rngs = [np.random.default_rng([sampling.seed, k, 0]) for k in streams]
    # The integrand at each end of the range (for the tails beyond it); only the log-likelihood
    # adds the tails to its maps.
    logsnr = sampling.logsnr
    ends = {
        end: draws.integrands(np.full((n_x, plan.n_edge), at), np.ones((n_x, plan.n_edge)), per_dim)
        for end, at in (("low", logsnr.low), ("high", logsnr.high))
    }
    stages, maps = _run_stages(draws, plan, sampling, alpha_rngs, ends, fit_kind, per_dim)
    draws.close()

    profile_edges = np.linspace(logsnr.low, logsnr.high, PROFILE_BINS + 1)
    settings = {
        "estimator": None,
        **sampling.describe(),
        "stages": plan.describe(),
        # The integrand the adaptive proposal was fitted to (None: the fixed ``logsnr``).
        "proposal_fitted_to": fit_kind if plan.n_pilot else None,
        # What lies beyond the range, extrapolated in closed form, is added to every value.
        "tails": "added",
        "edge_draws": plan.n_edge,
        "conditions": [_jsonable(c) for c in conds],
        "contexts": None if contexts is None else [_jsonable(c) for c in contexts],
        "n_x": n_x,
        "data_shape": list(x.shape[1:]),
        "data_dims": math.prod(x.shape[1:]),
        "per_dim": per_dim,
        "sum_channels": sum_channels,
        "model": type(model).__name__,
        "stream_keys": "row content" if keys is None else [_jsonable(k) for k in keys],
        "profile_edges": profile_edges.tolist(),
    }
    out = {}
    for kind in [quantity] if likelihood else estimators:
        # Each kind's tails from its own integrand at the ends: pointwise, the standard and
        # orthogonal integrands have different means (equal only on average over the data).
        at_low, at_high = (ends[end][0][kind] for end in ends)
        if likelihood:
            tails = likelihood_tails(at_low, at_high, logsnr.high, x)
        else:
            tails = exponential_tails(at_low, at_high)
        end_maps = {end: ends[end][1][kind] for end in ends} if per_dim else None
        offset = _Offset(x if likelihood else None, sum_channels, tails, end_maps, plan.n_edge)
        result = _integral(
            kind, stages, maps.get(kind), plan, sampling.stratified, tails, profile_edges, offset
        )
        if not many:
            result = _first_condition(result)
        out[kind] = Estimate(
            quantity=quantity,
            n_evaluations=n_x * sampling.rows(len(unique)),
            seed=sampling.seed,
            settings=settings | {"estimator": None if likelihood else kind},
            **result,
        )
    return out


class _Plan:
    """How the draws of one row are spent: ``n_edge`` at each end of the log-SNR range, an
    adaptive pilot of ``n_pilot`` (spent, not counted: the estimate stays unbiased), then the
    counted stages of ``sizes``."""

    def __init__(self, n_edge: int, n_pilot: int, sizes: list[int]) -> None:
        self.n_edge, self.n_pilot, self.sizes = n_edge, n_pilot, sizes

    @classmethod
    def of(cls, sampling: Sampling) -> _Plan:
        adaptive = sampling.adaptive and sampling.draws >= MIN_ADAPTIVE_SAMPLES
        n_pilot = max(8, sampling.draws // PILOT_FRACTION) if adaptive else 0
        return cls(sampling.edge_draws, n_pilot, _stage_sizes(sampling.draws - n_pilot, adaptive))

    @property
    def n_counted(self) -> int:
        return sum(self.sizes)

    def describe(self) -> dict[str, Any]:
        return {
            "pilot": self.n_pilot,
            "counted": self.sizes,
            **(
                {"bins": PROPOSAL_BINS, "widened": WIDENED, "widen_by": WIDEN_BY}
                | {"defensive": DEFENSIVE}
                if self.n_pilot
                else {}
            ),
        }


def _run_stages(
    draws: _Draws,
    plan: _Plan,
    sampling: Sampling,
    alpha_rngs: list[np.random.Generator],
    ends: dict[str, Any],
    fit_kind: str,
    per_dim: bool,
) -> tuple[list[tuple[dict[str, torch.Tensor], np.ndarray, np.ndarray]], dict[str, list]]:
    """A pilot from the sampling's ``logsnr`` (spent), then the counted stages, each drawn from
    a proposal fitted to every draw before it. Each stage is unbiased given the past, so the
    plain mean of all counted draws is too. Returns each stage's (integrands, weights,
    log-SNRs) and, with ``per_dim``, each kind's running map sums."""
    logsnr, stratified = sampling.logsnr, sampling.stratified
    n_x = len(alpha_rngs)
    seen_a = [np.full((n_x, plan.n_edge), logsnr.low), np.full((n_x, plan.n_edge), logsnr.high)]
    seen_f = [ends["low"][0][fit_kind], ends["high"][0][fit_kind]]
    proposals: list[TruncatedLogistic | Piecewise] = [logsnr] * n_x
    if plan.n_pilot:
        pilot = np.stack([logsnr.sample(plan.n_pilot, rng, stratified) for rng in alpha_rngs])
        f_pilot, _ = draws.integrands(pilot, np.ones_like(pilot), per_dim=False)
        seen_a.append(pilot)
        seen_f.append(f_pilot[fit_kind])
    stages: list[tuple[dict[str, torch.Tensor], np.ndarray, np.ndarray]] = []
    maps: dict[str, list[torch.Tensor]] = {}
    for size in plan.sizes:
        if plan.n_pilot:
            at, values = np.concatenate(seen_a, 1), torch.cat(seen_f, -1).numpy()
            proposals = [
                fit_proposal(
                    logsnr,
                    at[i],
                    values[i],
                    n_bins=PROPOSAL_BINS,
                    defensive=DEFENSIVE,
                    widened=WIDENED,
                    widen_by=WIDEN_BY,
                )
                for i in range(n_x)
            ]
        alphas = np.stack(
            [p.sample(size, rng, stratified) for p, rng in zip(proposals, alpha_rngs, strict=True)]
        )
        weights = np.stack([p.weight(a) for p, a in zip(proposals, alphas, strict=True)])
        f_stage, stage_maps = draws.integrands(alphas, weights, per_dim)
        stages.append((f_stage, weights, alphas))
        seen_a.append(alphas)
        seen_f.append(f_stage[fit_kind])
        for kind, (total, total_sq) in stage_maps.items():
            if kind in maps:
                maps[kind][0] += total
                maps[kind][1] += total_sq
            else:
                maps[kind] = [total, total_sq]
    return stages, maps


def _integral(
    kind: str,
    stages: list[tuple[dict[str, torch.Tensor], np.ndarray, np.ndarray]],
    map_sums: list[torch.Tensor] | None,
    plan: _Plan,
    stratified: bool,
    tails: Tails,
    profile_edges: np.ndarray,
    offset: _Offset,
) -> dict[str, Any]:
    """One kind's estimate from its counted draws (plus ``offset``, the terms outside the
    sampled integral: the tails, and the log-likelihood's reference term): value, standard
    error, skew-aware interval, map, profile over log-SNR and the reliability and truncation
    flags."""
    # Importance-weighted draws of each stage, shape (n_x, n_pairs, size).
    parts = [f[kind] * torch.from_numpy(w).unsqueeze(1) for f, w, _ in stages]
    contrib = torch.cat(parts, -1)
    value = contrib.mean(-1)
    stderr, skewness = intervals.stage_stderr_and_skewness(parts, stratified)
    at = torch.from_numpy(np.concatenate([a for _, _, a in stages], 1))
    profile, profile_se = information_profile(contrib, at, profile_edges)
    share = intervals.top_share(contrib, TOP_DRAWS)
    est_map = est_map_se = None
    if map_sums is not None:
        est_map, est_map_se = _map_mean(*map_sums, plan.n_counted)
    # Information beyond the range is invisible to the model: the tails (added below) are an
    # extrapolation of it, not a measurement. Flag the information estimates whose tails exceed
    # the standard error of the sampled part (the log-likelihood's tails are its known limit).
    truncated = tails.total.abs() > stderr
    if offset.reference:
        truncated = torch.zeros_like(truncated)
    value, stderr = value + offset.value, (stderr**2 + offset.stderr**2).sqrt()
    if est_map is not None:
        est_map = est_map + offset.map
        est_map_se = (est_map_se**2 + offset.map_stderr**2).sqrt()
    # A pair whose draws missed its rare large values shows little skew; the pairs of one row
    # share their draws, so each takes the largest skew (in size; its own sign) of its row
    # (measured: world word CMIs covered 91% with their own skew, 94-96% with this).
    largest = skewness.abs().amax(1, keepdim=True)
    row_skew = torch.where(skewness < 0, -largest, largest)
    ci95 = intervals.skew_interval(value, stderr, row_skew)
    return {
        "value": value,
        "stderr": stderr,
        # An orthogonal value is never negative: its interval is cut at 0, which keeps its
        # coverage (the truth is inside [0, inf)).
        "ci95": ci95.clamp(min=0) if kind == "orthogonal" else ci95,
        "reliable": share <= RELIABLE_SHARE,
        "truncated": truncated,
        "diagnostics": {
            "top_share": share,
            "skewness": row_skew,
            "outside_range": tails.total,
            "outside_range_stderr": tails.total_stderr,
            "profile": profile,
            "profile_stderr": profile_se,
        },
        "map": est_map,
        "map_stderr": est_map_se,
    }


class _Offset:
    """The terms outside a sampled integral, added to the value and its map: the tails beyond
    the range, and for the log-likelihood (``x`` given) the standard-Gaussian reference's
    -log N(x; 0, I) (exact)."""

    def __init__(
        self,
        x: torch.Tensor | None,
        sum_channels: bool,
        tails: Tails,
        end_maps: dict[str, tuple[torch.Tensor, torch.Tensor]] | None,
        n_edge: int,
    ) -> None:
        self.reference = x is not None
        constant: torch.Tensor | float = 0.0
        self.value = tails.total
        if x is not None:
            constant = 0.5 * (math.log(2 * math.pi) + x.double().cpu() ** 2)
            if sum_channels:
                constant = constant.sum(1)
            self.value = constant.flatten(1).sum(-1, keepdim=True) + tails.total
            constant = constant.unsqueeze(1)
        self.stderr = tails.total_stderr
        self.map = self.map_stderr = None
        if end_maps is not None:
            low_map, low_se = _map_mean(*end_maps["low"], n_edge)
            high_map, high_se = _map_mean(*end_maps["high"], n_edge)
            r = tails.high_ratio.view(*tails.high_ratio.shape, *[1] * (low_map.dim() - 2))
            self.map = constant + low_map + r * high_map
            self.map_stderr = (low_se**2 + (r * high_se) ** 2).sqrt()


def information_profile(
    contrib: torch.Tensor, logsnr: torch.Tensor, edges: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where along the noise levels an integral's value arrives: the importance-weighted draws
    ``contrib`` (shape ``(..., n)``, each an unbiased estimate of the whole integral) at log-SNRs
    ``logsnr`` (``(n_x, n)``) split by the bins of ``edges``, as the integrand's mean over each
    bin (nats per unit of log-SNR) and its i.i.d. standard error, shape ``(..., n_bins)``.

    Each bin's estimate is the mean of ``contrib`` times the bin's indicator: unbiased for the
    integral over the bin, so ``(profile * widths).sum(-1)`` is the estimate itself (the paper's
    MMSE-curve view, from the estimator's own draws; no extra denoiser call)."""
    n, n_bins = contrib.shape[-1], len(edges) - 1
    bins = torch.from_numpy(edges).to(logsnr.dtype)
    index = (torch.bucketize(logsnr, bins, right=True) - 1).clamp(0, n_bins - 1)
    index = index.view(contrib.shape[0], *[1] * (contrib.dim() - 2), n).expand(contrib.shape)
    zeros = torch.zeros(*contrib.shape[:-1], n_bins, dtype=contrib.dtype)
    total = zeros.scatter_add(-1, index, contrib)
    total_sq = zeros.scatter_add(-1, index, contrib**2)
    mean = total / n
    # Each bin's draws are the contributions times an indicator: n - (bin's count) zeros.
    se = ((total_sq / n - mean**2).clamp(min=0) / max(n - 1, 1)).sqrt()
    widths = torch.from_numpy(np.diff(edges)).to(contrib.dtype)
    return mean / widths, se / widths


def _stage_sizes(n: int, adaptive: bool) -> list[int]:
    """Counted draws per stage: one stage on a fixed proposal; when adaptive, stages of a
    sixteenth, a sixteenth, an eighth, a quarter and a half of them, each on a fit to everything
    before (measured on the world: 13% fewer evaluations than four stages)."""
    if not adaptive:
        return [n]
    sizes = [n // 16, n // 16, n // 8, n // 4]
    return [*sizes, n - sum(sizes)]


class _Draws:
    """Evaluates the integrands of every requested estimator and pair at given draws."""

    def __init__(
        self,
        model: Denoiser,
        x: torch.Tensor,
        unique: list[Any],
        cond_idx: list[int],
        ctx_idx: list[int] | None,
        integrands: dict[str, Any],
        batch_size: int,
        sum_channels: bool,
        eps_rngs: list[np.random.Generator],
        n_units: int,
        progress: bool,
    ) -> None:
        self.model, self.x, self.unique = model, x, unique
        self.cond_idx, self.ctx_idx, self.kinds = cond_idx, ctx_idx, integrands
        self.batch_size, self.sum_channels = batch_size, sum_channels
        self.work = torch.float64 if x.dtype == torch.float64 else torch.float32
        self.eps_rngs = eps_rngs
        self.done = 0
        self.bar = tqdm(total=n_units, unit="draw", disable=None if progress else True, leave=False)
        self.clock = _ProgressLog(n_units, len(unique)) if progress else None

    def integrands(
        self, alphas: np.ndarray, weights: np.ndarray, per_dim: bool
    ) -> tuple[dict[str, torch.Tensor], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """For draws at log-SNRs ``alphas`` (shape ``(n_x, k)``; noise from each row's stream, in
        order): each kind's integrand summed over coordinates, unweighted, shape
        ``(n_x, n_pairs, k)``; and, with ``per_dim``, the sum and sum of squares over draws of
        its per-coordinate values times ``weights``."""
        x, data_shape = self.x, tuple(self.x.shape[1:])
        n_x, k = alphas.shape
        n_u, n_q = len(self.unique), len(self.cond_idx)
        map_shape = data_shape[1:] if self.sum_channels else data_shape
        totals = {kind: torch.zeros(n_x, n_q, k, dtype=torch.float64) for kind in self.kinds}
        maps = {}
        if per_dim:
            for kind in self.kinds:
                zero = torch.zeros(n_x, n_q, *map_shape, dtype=torch.float64)
                maps[kind] = (zero, zero.clone())
        # Draws per step: enough that their rows (n_u per draw) fill whole calls of batch_size.
        step = self.batch_size // math.gcd(self.batch_size, n_u)
        for start in range(0, n_x * k, step):
            units = np.arange(start, min(start + step, n_x * k))
            xi, si = units // k, units % k
            eps = _draw_noise(self.eps_rngs, xi, data_shape).to(device=x.device, dtype=self.work)
            alpha = torch.from_numpy(alphas[xi, si]).to(device=x.device, dtype=self.work)
            sig = torch.sigmoid(alpha).view(-1, *[1] * len(data_shape))
            x_rows = x[torch.from_numpy(xi).to(x.device)].to(self.work)
            x_noisy = sig.sqrt() * x_rows + (1 - sig).sqrt() * eps
            eps_hat = _denoise(
                self.model, x_noisy.to(x.dtype), alpha.to(x.dtype), self.unique, self.batch_size
            )
            eps_hat = eps_hat.to(self.work).view(len(units), n_u, *data_shape)
            e, fuller = eps.unsqueeze(1), eps_hat[:, self.cond_idx]
            context = None if self.ctx_idx is None else eps_hat[:, self.ctx_idx]
            for kind, integrand in self.kinds.items():
                # Per-coordinate integrand of every pair, shape (U, n_q, *data_shape).
                f = integrand(e, fuller, context, sig.unsqueeze(1), x_noisy)
                if self.sum_channels:
                    f = f.sum(dim=2)
                totals[kind][xi, :, si] = f.flatten(2).sum(-1).double().cpu()
                if per_dim:
                    w = torch.from_numpy(weights[xi, si]).view(-1, 1, *[1] * (f.dim() - 2))
                    contrib, rows = f.double().cpu() * w, torch.from_numpy(xi)
                    maps[kind][0].index_add_(0, rows, contrib)
                    maps[kind][1].index_add_(0, rows, contrib**2)
            self.done += len(units)
            self.bar.update(len(units))
            if self.clock is not None:
                self.clock.update(self.done)
        return totals, maps

    def close(self) -> None:
        self.bar.close()


def _map_mean(total: torch.Tensor, total_sq: torch.Tensor, n: int) -> tuple[torch.Tensor, ...]:
    """Mean over n draws and its (i.i.d.) standard error, from a sum and a sum of squares."""
    mean = total / n
    return mean, ((total_sq / n - mean**2).clamp(min=0) / (n - 1)).sqrt()


def _first_condition(result: dict[str, Any]) -> dict[str, Any]:
    """Drop the conditions axis (axis 1) of every tensor: one condition was given."""
    out = {}
    for name, v in result.items():
        if isinstance(v, dict):
            out[name] = _first_condition(v)
        else:
            out[name] = None if v is None else v[:, 0]
    return out


class _ProgressLog:
    """Lines on standard error for long estimates: the denoiser rows it will take, after the
    first step the time left, and (when no progress bar shows, e.g. in a log) a line a
    minute."""

    def __init__(self, n_units: int, n_conditions: int) -> None:
        self.n_units, self.start, self.last = n_units, time.monotonic(), time.monotonic()
        self.first = True
        self.bar_shown = sys.stderr.isatty()
        self._say(
            f"{n_units * n_conditions} denoiser rows ({n_units} draws x {n_conditions} conditions)"
        )

    def update(self, done: int) -> None:
        now = time.monotonic()
        left = (now - self.start) / done * (self.n_units - done)
        if self.first and left > 10:
            self._say(f"about {left:.0f} s left")
        elif not self.bar_shown and now - self.last > 60 and done < self.n_units:
            self._say(f"{done}/{self.n_units} draws, about {left:.0f} s left")
            self.last = now
        self.first = False

    def _say(self, message: str) -> None:
        with contextlib.suppress(BrokenPipeError):
            print(f"infodecomp: {message}", file=sys.stderr, flush=True)


def row_stream_key(row: torch.Tensor, key: Any = None) -> int:
    """The 128-bit integer that names a row's random streams: from its ``key`` (a str or int item
    id) if given, else from its content (shape and float64 values)."""
    if key is None:
        data = row.detach().to("cpu", torch.float64).contiguous().numpy()
        payload = b"content:" + repr(data.shape).encode() + data.tobytes()
    elif isinstance(key, (str, int)) and not isinstance(key, bool):
        payload = f"{type(key).__name__}:{key}".encode()
    else:
        raise ValueError(f"a row key must be a str or int item id, got {key!r}")
    return int.from_bytes(hashlib.sha256(payload).digest()[:16], "little")


def _draw_noise(
    rngs: list[np.random.Generator], xi: np.ndarray, data_shape: tuple[int, ...]
) -> torch.Tensor:
    """Standard normal noise for draws of rows ``xi`` (sorted), each row from its own stream."""
    rows, counts = np.unique(xi, return_counts=True)
    noise = [
        rngs[i].standard_normal((int(n), *data_shape)) for i, n in zip(rows, counts, strict=True)
    ]
    return torch.from_numpy(np.concatenate(noise))


def _denoise(
    model: Denoiser, x_noisy: torch.Tensor, alpha: torch.Tensor, unique: list[Any], batch_size: int
) -> torch.Tensor:
    """eps_hat for every (draw, condition) row, shape ``(U * n_u, *data_shape)``, in calls of at
    most ``batch_size`` rows."""
    n_u = len(unique)
    rows_x = x_noisy.repeat_interleave(n_u, dim=0)
    rows_alpha = alpha.repeat_interleave(n_u)
    rows_cond = unique * x_noisy.shape[0]
    outputs = []
    for lo in range(0, rows_x.shape[0], batch_size):
        batch = rows_x[lo : lo + batch_size]
        with torch.no_grad():
            out = model(batch, rows_alpha[lo : lo + batch_size], rows_cond[lo : lo + batch_size])
        if not isinstance(out, torch.Tensor) or out.shape != batch.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise DenoiserOutputError(
                f"denoiser returned {got} for noisy inputs of shape {tuple(batch.shape)}"
            )
        if not torch.isfinite(out).all():
            bad = rows_alpha[lo : lo + batch_size][~torch.isfinite(out).flatten(1).all(1)]
            raise DenoiserOutputError(
                f"denoiser returned NaN or inf at log-SNR {bad[0].item():.3g} "
                f"({bad.numel()} of {batch.shape[0]} rows in the batch)"
            )
        outputs.append(out)
    return torch.cat(outputs)


def _check_inputs(
    x: torch.Tensor, sum_channels: bool, keys: Sequence[Any] | None = None
) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.is_complex():
        raise ValueError("x is complex: give real data")
    if x.ndim < 2:
        raise ValueError(f"x must have a batch axis: shape (n, *data_shape), got {tuple(x.shape)}")
    if x.shape[0] == 0 or x[0].numel() == 0:
        raise ValueError(f"x is empty: shape {tuple(x.shape)}")
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or inf")
    if sum_channels and x.ndim < 3:
        raise ValueError("sum_channels needs data with a channel axis: shape (n, channels, ...)")
    if keys is not None and len(keys) != x.shape[0]:
        raise ValueError(f"got {len(keys)} keys for {x.shape[0]} rows of x: give one per row")
    return x


def _broadcast_pairs(cond: Any, context: Any) -> tuple[list[Any], list[Any]]:
    conds = cond if isinstance(cond, list) else None
    contexts = context if isinstance(context, list) else None
    if conds is not None and contexts is not None and len(conds) != len(contexts):
        raise ValueError(
            f"cond and context lists differ in length ({len(conds)} and {len(contexts)})"
        )
    n = len(conds if conds is not None else contexts if contexts is not None else [None])
    if n == 0:
        raise ValueError("no conditions given (empty list)")
    return (conds or [cond] * n), (contexts or [context] * n)


def _index(items: list[Any], item: Any) -> int:
    return next(i for i, u in enumerate(items) if u == item)


def _jsonable(c: Any) -> Any:
    if c is None or isinstance(c, (str, int, float, bool)):
        return c
    if isinstance(c, dict):
        return {str(k): _jsonable(v) for k, v in c.items()}
    if isinstance(c, (tuple, list)):
        return [_jsonable(v) for v in c]
    return repr(c)
