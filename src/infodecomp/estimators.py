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
import dataclasses
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
from .sampling import (
    MIN_COUNTED,
    TARGET_PILOT,
    TARGET_PROBE,
    Sampling,
    check_sampling,
    precision_target,
)
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
# With a precision target, the plan is this many times the draws the spent ones say it needs
# (measured by benchmarks/coverage.py --target-se: the share of values that meet their target).
PLAN_MARGIN = 2.0
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
    combine: torch.Tensor | None = None,
    contrasts: Sequence[bool] = (),
) -> dict[str, Estimate]:
    """The estimates of ``quantity`` (one per name in ``estimators`` for information, keyed by
    name; keyed by ``quantity`` for the log-likelihood), all from one pass of denoiser calls:
    draws -> stages -> integrals -> tails -> flags.

    ``combine`` (shape ``(n_combined, n_pairs)``) appends linear combinations of the pairs'
    integrands, draw by draw and coordinate by coordinate, as further pairs: their values, maps
    (which sum to them), standard errors and intervals come from the combined draws, so they
    account for the pairs' correlation on shared draws. ``contrasts`` marks the combinations that
    are contrasts rather than informations (e.g. i1 + i2 - i12): their intervals are symmetric
    (the skew of their terms largely cancels; measured on the exact world: 95-96% coverage
    symmetric, 87-90% with the row's skew), and no other pair borrows their skew."""
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
    plan = _Plan(sampling)
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
        at_most=sampling.targeted,
        progress=progress,
        combine=combine,
    )
    alpha_rngs = [np.random.default_rng([sampling.seed, k, 0]) for k in streams]
    # The integrand at each end of the range (for the tails beyond it); only the log-likelihood
    # adds the tails to its maps.
    logsnr = sampling.logsnr
    ends = {
        end: draws.integrands(
            [np.full(plan.n_edge, at)] * n_x, [np.ones(plan.n_edge)] * n_x, per_dim
        )
        for end, at in (("low", logsnr.low), ("high", logsnr.high))
    }
    # Each kind's tails from its own integrand at the ends: pointwise, the standard and
    # orthogonal integrands have different means (equal only on average over the data).
    tails = {}
    for kind in kinds:
        at_low, at_high = (_stack(ends[end][0][kind]) for end in ends)
        if likelihood:
            tails[kind] = likelihood_tails(at_low, at_high, logsnr.high, x)
        else:
            tails[kind] = exponential_tails(at_low, at_high)
    # What each reported kind adds to its sampled integral (value, SE; shape (n_x, n_pairs)):
    # a precision target is planned for the value as reported.
    reported = [quantity] if likelihood else list(estimators)
    offsets = {kind: (tails[kind].total, tails[kind].total_stderr) for kind in reported}
    if likelihood:
        reference = 0.5 * (math.log(2 * math.pi) + x.double().cpu() ** 2).flatten(1).sum(-1)
        offsets[quantity] = (offsets[quantity][0] + reference[:, None], offsets[quantity][1])
    stages, maps, counted = _run_stages(
        draws, plan, sampling, alpha_rngs, ends, fit_kind, offsets, per_dim
    )
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
        "model": _model_name(model),
        "stream_keys": "row content" if keys is None else [_jsonable(k) for k in keys],
        "profile_edges": profile_edges.tolist(),
    }
    # Pairs whose intervals ignore skew: the contrasts among the combinations.
    n_base, n_combined = len(conds), 0 if combine is None else len(combine)
    symmetric = torch.zeros(n_base + n_combined, dtype=torch.bool)
    if contrasts:
        if len(contrasts) != n_combined:
            raise ValueError(f"got {len(contrasts)} contrast flags for {n_combined} combinations")
        symmetric[n_base:] = torch.tensor(list(contrasts), dtype=torch.bool)
    # Rows that took the same number of draws are integrated together.
    groups = [np.flatnonzero(counted == n) for n in np.unique(counted)]
    out = {}
    for kind in [quantity] if likelihood else estimators:
        parts = []
        for rows in groups:
            index, end_maps = torch.from_numpy(rows), None
            if per_dim:
                end_maps = {end: [m[index] for m in ends[end][1][kind]] for end in ends}
            offset = _Offset(
                x[index.to(x.device)] if likelihood else None,
                sum_channels,
                _take_rows(tails[kind], rows),
                end_maps,
                plan.n_edge,
            )
            group_maps = None if kind not in maps else [m[index] for m in maps[kind]]
            group_stages = [_take_stage(stage, kind, rows) for stage in stages]
            result = _integral(
                kind,
                group_stages,
                group_maps,
                sampling.stratified,
                profile_edges,
                offset,
                symmetric,
                n_base,
            )
            parts.append((rows, result))
        result = _merge_rows(parts)
        if not many:
            result = _first_condition(result)
        out[kind] = Estimate(
            quantity=quantity,
            n_evaluations=int((plan.spent + counted).sum()) * len(unique),
            seed=sampling.seed,
            settings=settings | {"estimator": None if likelihood else kind},
            **result,
        )
    return out


class _Plan:
    """How the draws of one row are spent: ``n_edge`` at each end of the log-SNR range, an
    adaptive pilot of ``n_pilot`` (spent, not counted: the estimate stays unbiased), with a
    precision target a probe of ``n_probe`` (spent) that plans how many draws to count, then
    the counted stages (:func:`_stage_sizes`) of ``n_counted`` draws (the most, if targeted)."""

    def __init__(self, sampling: Sampling) -> None:
        self.adaptive = sampling.adaptive and sampling.draws >= MIN_ADAPTIVE_SAMPLES
        self.targeted = sampling.targeted
        self.n_edge = sampling.edge_draws
        if self.targeted:
            self.n_pilot = TARGET_PILOT if self.adaptive else 0
            self.n_probe = TARGET_PROBE
        else:
            self.n_pilot = max(8, sampling.draws // PILOT_FRACTION) if self.adaptive else 0
            self.n_probe = 0
        self.n_counted = sampling.draws - self.n_pilot - self.n_probe

    @property
    def spent(self) -> int:
        """Draws per row that are not counted in its value (the ends, pilot and probe)."""
        return 2 * self.n_edge + self.n_pilot + self.n_probe

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {"pilot": self.n_pilot}
        if self.targeted:
            described |= {"probe": self.n_probe, "counted": "planned per row (diagnostics draws)"}
            described |= {"counted_at_least": MIN_COUNTED, "counted_at_most": self.n_counted}
        else:
            described["counted"] = _stage_sizes(self.n_counted, self.adaptive)
        if self.n_pilot:
            described |= {"bins": PROPOSAL_BINS, "widened": WIDENED, "widen_by": WIDEN_BY}
            described["defensive"] = DEFENSIVE
        return described


def _planned_draws(
    f: torch.Tensor,
    weights: np.ndarray,
    weights_next: np.ndarray,
    offset: tuple[torch.Tensor, torch.Tensor],
    sampling: Sampling,
    most: int,
) -> np.ndarray:
    """Counted draws per row for its precision target, from spent draws: the integrand ``f``
    (shape ``(n_x, n_pairs, k)``) at draws from proposals whose importance weights there are
    ``weights`` (``(n_x, k)``), and ``weights_next`` those of the proposal the counted draws
    start from. The variance per draw under that proposal, int f^2 / q, is estimated by
    importance from every spent draw; the plan is PLAN_MARGIN times the i.i.d. draws that bring
    each pair's standard error, with ``offset``'s (what the reported value adds to the sampled
    integral: its value and SE), to ``target_se + target_rel * |value|``: a
    multiple of 16 from MIN_COUNTED to ``most``. (Few draws of a skewed integrand understate its
    variance; stratified draws do better than i.i.d. ones.)

    The spent draws are not counted: the number of counted draws is fixed before any of them
    is seen, so their mean stays unbiased and its interval keeps its fixed-size coverage
    (stopping when the draws seen so far look precise would bias it low: a run that missed the
    rare large draws looks both small and precise)."""
    w, w_next = torch.from_numpy(weights).unsqueeze(1), torch.from_numpy(weights_next).unsqueeze(1)
    mean = (f * w).mean(-1)
    var = ((f**2 * w * w_next).mean(-1) - mean**2).clamp(min=0)
    value = mean + offset[0]
    tolerance = precision_target(sampling.target_se, sampling.target_rel, value)
    room = tolerance**2 - offset[1] ** 2
    need = PLAN_MARGIN * torch.where(room > 0, var / room.clamp(min=1e-300), torch.inf).amax(1)
    need = np.ceil(need.clamp(max=most).numpy() / 16) * 16
    return np.clip(need, MIN_COUNTED, most).astype(int)


def _run_stages(
    draws: _Draws,
    plan: _Plan,
    sampling: Sampling,
    alpha_rngs: list[np.random.Generator],
    ends: dict[str, Any],
    fit_kind: str,
    offsets: dict[str, tuple[torch.Tensor, torch.Tensor]],
    per_dim: bool,
) -> tuple[list[_Stage], dict[str, list[torch.Tensor]], np.ndarray]:
    """A pilot from the sampling's ``logsnr`` (spent), with a precision target a probe (spent)
    that plans each row's counted draws, then the counted stages, each drawn from a proposal
    fitted to every draw before it. Each stage is unbiased given the past, so the plain mean of
    all counted draws is too. Returns each counted stage's (integrands, weights, log-SNRs) per
    row, with ``per_dim`` each kind's running map sums, and each row's counted draws."""
    logsnr, stratified = sampling.logsnr, sampling.stratified
    n_x = len(alpha_rngs)
    seen_a = [
        [np.full(plan.n_edge, logsnr.low), np.full(plan.n_edge, logsnr.high)] for _ in range(n_x)
    ]
    seen_f = [[ends["low"][0][fit_kind][i], ends["high"][0][fit_kind][i]] for i in range(n_x)]
    proposals: list[TruncatedLogistic | Piecewise] = [logsnr] * n_x

    def look(stage: _Stage) -> None:
        for i in range(n_x):
            seen_a[i].append(stage[2][i])
            seen_f[i].append(stage[0][fit_kind][i])

    def refit() -> None:
        if plan.n_pilot:
            proposals[:] = [
                fit_proposal(
                    logsnr,
                    np.concatenate(seen_a[i]),
                    torch.cat(seen_f[i], -1).numpy(),
                    n_bins=PROPOSAL_BINS,
                    defensive=DEFENSIVE,
                    widened=WIDENED,
                    widen_by=WIDEN_BY,
                )
                for i in range(n_x)
            ]

    def draw(sizes: Sequence[int], with_maps: bool) -> tuple[_Stage, dict[str, Any]]:
        alphas = [
            p.sample(n, rng, stratified)
            for p, n, rng in zip(proposals, sizes, alpha_rngs, strict=True)
        ]
        weights = [p.weight(a) for p, a in zip(proposals, alphas, strict=True)]
        f, stage_maps = draws.integrands(alphas, weights, with_maps)
        return (f, weights, alphas), stage_maps

    spent: list[_Stage] = []
    if plan.n_pilot:
        spent.append(draw([plan.n_pilot] * n_x, False)[0])
        look(spent[-1])
        refit()
    counted = np.full(n_x, plan.n_counted)
    if plan.n_probe:
        spent.append(draw([plan.n_probe] * n_x, False)[0])
        look(spent[-1])
        refit()  # the proposal the counted draws start from, whose variance is planned
        at = [np.concatenate([stage[2][i] for stage in spent]) for i in range(n_x)]
        weights = np.concatenate([np.stack(stage[1]) for stage in spent], 1)
        weights_next = np.stack([p.weight(a) for p, a in zip(proposals, at, strict=True)])
        # Every estimator reported is planned for (the fit follows the first one only).
        counted = np.max(
            [
                _planned_draws(
                    torch.cat([_stack(stage[0][kind]) for stage in spent], -1),
                    weights,
                    weights_next,
                    offsets[kind],
                    sampling,
                    plan.n_counted,
                )
                for kind in offsets
            ],
            axis=0,
        )
    stages: list[_Stage] = []
    maps: dict[str, list[torch.Tensor]] = {}
    sizes = np.array([_stage_sizes(int(n), plan.adaptive) for n in counted])
    for j in range(sizes.shape[1]):
        if plan.n_pilot and j:
            refit()
        stage, stage_maps = draw(sizes[:, j].tolist(), per_dim)
        stages.append(stage)
        look(stage)
        for kind, (total, total_sq) in stage_maps.items():
            if kind in maps:
                maps[kind][0] += total
                maps[kind][1] += total_sq
            else:
                maps[kind] = [total, total_sq]
    return stages, maps, counted


# One stage's draws: each kind's integrand per row (shape (n_pairs, k)), weights, log-SNRs.
_Stage = tuple[dict[str, list[torch.Tensor]], list[np.ndarray], list[np.ndarray]]


def _stack(rows: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-row tensors of equal shape ``(n_pairs, k)`` as one ``(n_x, n_pairs, k)``."""
    return torch.stack(list(rows))


def _take_stage(
    stage: _Stage, kind: str, rows: np.ndarray
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """One kind's draws of a stage for ``rows`` (which took equal draws), stacked."""
    f, w, a = stage
    return (
        _stack([f[kind][i] for i in rows]),
        np.stack([w[i] for i in rows]),
        np.stack([a[i] for i in rows]),
    )


def _take_rows(tails: Tails, rows: np.ndarray) -> Tails:
    index = torch.from_numpy(rows)
    return Tails(*(getattr(tails, f.name)[index] for f in dataclasses.fields(tails)))


def _merge_rows(parts: list[tuple[np.ndarray, dict[str, Any]]]) -> dict[str, Any]:
    """The results of groups of rows as one result over all their rows, in row order."""
    if len(parts) == 1:
        return parts[0][1]
    order = torch.from_numpy(np.argsort(np.concatenate([rows for rows, _ in parts])))

    def merge(values: list[Any]) -> Any:
        if isinstance(values[0], dict):
            return {k: merge([v[k] for v in values]) for k in values[0]}
        if values[0] is None:
            return None
        return torch.cat(values)[order]

    return merge([result for _, result in parts])


def _integral(
    kind: str,
    stages: list[tuple[torch.Tensor, np.ndarray, np.ndarray]],
    map_sums: list[torch.Tensor] | None,
    stratified: bool,
    profile_edges: np.ndarray,
    offset: _Offset,
    symmetric: torch.Tensor | None = None,
    n_base: int | None = None,
) -> dict[str, Any]:
    """One kind's estimate, for rows that took equal draws, from their counted draws (plus
    ``offset``, the terms outside the sampled integral: the tails, and the log-likelihood's
    reference term): value, standard error, skew-aware interval, map, profile over log-SNR and
    the reliability and truncation flags."""
    # Importance-weighted draws of each stage, shape (n_x, n_pairs, size).
    parts = [f * torch.from_numpy(w).unsqueeze(1) for f, w, _ in stages]
    contrib = torch.cat(parts, -1)
    value = contrib.mean(-1)
    stderr, skewness = intervals.stage_stderr_and_skewness(parts, stratified)
    at = torch.from_numpy(np.concatenate([a for _, _, a in stages], 1))
    profile, profile_se = information_profile(contrib, at, profile_edges)
    share = intervals.top_share(contrib, TOP_DRAWS)
    est_map = est_map_se = None
    if map_sums is not None:
        est_map, est_map_se = _map_mean(*map_sums, contrib.shape[-1])
    # Information beyond the range is invisible to the model: the tails (added below) are an
    # extrapolation of it, not a measurement. Flag the information estimates whose tails exceed
    # the standard error of the sampled part (the log-likelihood's tails are its known limit).
    truncated = offset.tails.abs() > stderr
    if offset.reference:
        truncated = torch.zeros_like(truncated)
    outside, outside_se = offset.tails, offset.tails_stderr
    value, stderr = value + offset.value, (stderr**2 + offset.stderr**2).sqrt()
    if est_map is not None:
        est_map = est_map + offset.map
        est_map_se = (est_map_se**2 + offset.map_stderr**2).sqrt()
    # A pair whose draws missed its rare large values shows little skew; the pairs of one row
    # share their draws, so each takes the largest skew (in size; its own sign) of its row
    # (measured: world word CMIs covered 91% with their own skew, 94-96% with this).
    # Contrasts (``symmetric``) neither take nor lend a skew.
    if symmetric is None:
        symmetric = torch.zeros(skewness.shape[1], dtype=torch.bool)
    largest = skewness.masked_fill(symmetric, 0).abs().amax(1, keepdim=True)
    row_skew = torch.where(symmetric, 0.0, torch.where(skewness < 0, -largest, largest))
    ci95 = intervals.skew_interval(value, stderr, row_skew)
    return {
        "value": value,
        "stderr": stderr,
        # An orthogonal value is never negative: its interval is cut at 0, which keeps its
        # coverage (the truth is inside [0, inf)). Not so a combination (``n_base`` on: e.g.
        # i1 + i2 - i12), which may be negative.
        "ci95": _cut_at_zero(ci95, n_base) if kind == "orthogonal" else ci95,
        "reliable": share <= RELIABLE_SHARE,
        "truncated": truncated,
        "diagnostics": {
            "top_share": share,
            "skewness": row_skew,
            "outside_range": outside,
            "outside_range_stderr": outside_se,
            "profile": profile,
            "profile_stderr": profile_se,
            # Counted draws behind each value (planned per row under a precision target).
            "draws": torch.full_like(value, float(contrib.shape[-1])),
        },
        "map": est_map,
        "map_stderr": est_map_se,
    }


def _cut_at_zero(ci95: torch.Tensor, n_base: int | None) -> torch.Tensor:
    """Intervals ``(n_x, n_pairs, 2)`` cut at 0 for the first ``n_base`` pairs (all if None)."""
    cut = ci95.clamp(min=0)
    if n_base is None:
        return cut
    return torch.cat([cut[:, :n_base], ci95[:, n_base:]], 1)


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
        self.value = self.tails = tails.total
        self.tails_stderr = tails.total_stderr
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
        at_most: bool = False,
        combine: torch.Tensor | None = None,
    ) -> None:
        self.model, self.x, self.unique = model, x, unique
        self.cond_idx, self.ctx_idx, self.kinds = cond_idx, ctx_idx, integrands
        # Linear combinations of the pairs, appended as pairs (weights (n_combined, n_pairs)).
        self.combine = None if combine is None else torch.as_tensor(combine, dtype=torch.float64)
        self.batch_size, self.sum_channels = batch_size, sum_channels
        self.work = torch.float64 if x.dtype == torch.float64 else torch.float32
        self.eps_rngs = eps_rngs
        self.done = 0
        self.bar = tqdm(total=n_units, unit="draw", disable=None if progress else True, leave=False)
        self.clock = _ProgressLog(n_units, len(unique), at_most) if progress else None

    def integrands(
        self, alphas: list[np.ndarray], weights: list[np.ndarray], per_dim: bool
    ) -> tuple[dict[str, list[torch.Tensor]], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """For draws at log-SNRs ``alphas`` (one array per row, any lengths; noise from each
        row's stream, in order): each kind's integrand summed over coordinates, unweighted, one
        tensor of shape ``(n_pairs, k_row)`` per row; and, with ``per_dim``, the sum and sum of
        squares over draws of its per-coordinate values times ``weights``. Pairs include the
        combinations of ``combine``."""
        x, data_shape = self.x, tuple(self.x.shape[1:])
        n_x = len(alphas)
        n_u = len(self.unique)
        n_q = len(self.cond_idx) + (0 if self.combine is None else len(self.combine))
        counts = [len(a) for a in alphas]
        row_of = np.repeat(np.arange(n_x), counts)
        all_alphas, all_weights = np.concatenate(alphas), np.concatenate(weights)
        map_shape = data_shape[1:] if self.sum_channels else data_shape
        totals = {kind: torch.zeros(len(row_of), n_q, dtype=torch.float64) for kind in self.kinds}
        maps = {}
        if per_dim:
            for kind in self.kinds:
                zero = torch.zeros(n_x, n_q, *map_shape, dtype=torch.float64)
                maps[kind] = (zero, zero.clone())
        # Draws per step: enough that their rows (n_u per draw) fill whole calls of batch_size.
        step = self.batch_size // math.gcd(self.batch_size, n_u)
        for start in range(0, len(row_of), step):
            units = np.arange(start, min(start + step, len(row_of)))
            xi = row_of[units]
            eps = _draw_noise(self.eps_rngs, xi, data_shape).to(device=x.device, dtype=self.work)
            alpha = torch.from_numpy(all_alphas[units]).to(device=x.device, dtype=self.work)
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
                if self.combine is not None:
                    combined = torch.einsum("cq,uq...->uc...", self.combine.to(f), f)
                    f = torch.cat([f, combined], 1)
                if self.sum_channels:
                    f = f.sum(dim=2)
                totals[kind][units] = f.flatten(2).sum(-1).double().cpu()
                if per_dim:
                    w = torch.from_numpy(all_weights[units]).view(-1, 1, *[1] * (f.dim() - 2))
                    contrib, rows = f.double().cpu() * w, torch.from_numpy(xi)
                    maps[kind][0].index_add_(0, rows, contrib)
                    maps[kind][1].index_add_(0, rows, contrib**2)
            self.done += len(units)
            self.bar.update(len(units))
            if self.clock is not None:
                self.clock.update(self.done)
        per_row = {kind: [t.T for t in total.split(counts)] for kind, total in totals.items()}
        return per_row, maps

    def close(self) -> None:
        self.bar.close()


def _map_mean(total: torch.Tensor, total_sq: torch.Tensor, n: int) -> tuple[torch.Tensor, ...]:
    """Mean over n draws and its (i.i.d.) standard error, from a sum and a sum of squares."""
    mean = total / n
    return mean, ((total_sq / n - mean**2).clamp(min=0) / (n - 1)).sqrt()


def _model_name(model: Any) -> str:
    """The denoiser's class name; a wrapper that only routes its calls (the evaluation runner's
    batching) names the model it routes to as ``measured_model``."""
    return type(getattr(model, "measured_model", model)).__name__


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

    def __init__(self, n_units: int, n_conditions: int, at_most: bool = False) -> None:
        self.n_units, self.start, self.last = n_units, time.monotonic(), time.monotonic()
        self.first = True
        self.bar_shown = sys.stderr.isatty()
        # With a precision target the count is a maximum, and the time left too.
        self.at_most = "at most " if at_most else ""
        self._say(
            f"{self.at_most}{n_units * n_conditions} denoiser rows ({n_units} draws x "
            f"{n_conditions} conditions)"
        )

    def update(self, done: int) -> None:
        now = time.monotonic()
        left = (now - self.start) / done * (self.n_units - done)
        if self.first and left > 10:
            self._say(f"{self.at_most or 'about '}{left:.0f} s left")
        elif not self.bar_shown and now - self.last > 60 and done < self.n_units:
            self._say(f"{done}/{self.n_units} draws, {self.at_most or 'about '}{left:.0f} s left")
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
