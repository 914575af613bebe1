"""Sequential caption ranking: draws in stages until the question is answered.

Ranking captions needs neither the unconditional denoiser nor a fixed number of draws. The
standard estimator's difference between two captions is log p(x|c_i) - log p(x|c_j) (its part
over the model's log-SNR range: unlike the estimators' values, no tails are added), estimated
directly from the two captions' denoiser outputs on shared draws (``1/2 w(a) (||e - eps_hat_j||^2
- ||e - eps_hat_i||^2)`` per draw). Draws are i.i.d. from one proposal over log-SNR (no
stratification, no refitting: every draw is one i.i.d. observation of every pair's
margin; a pilot of 8 draws fits the proposal first), taken in blocks; after each block every
pair's margin gets an asymptotic confidence sequence (Waudby-Smith, Arnold, Wu, Wang and Ramdas,
"Time-uniform central limit theory and asymptotic confidence sequences", Ann. Statist. 2024: the
normal-mixture boundary with the running variance), laid on skew-aware arms
(:func:`confidence_sequence`), Bonferroni over the pairs. A confidence sequence holds at every
look at once, so stopping when it excludes 0 keeps its coverage: that is how optional stopping is
handled. The
reported margin is the running mean at the stop (biased by the stopping, slightly; its interval
is the confidence sequence, which covers; both measured in ``benchmarks/eval_cost.py``).

An item stops when its leader is decided (its margin over every other caption excludes 0), when
(with a true caption) a false caption is decided to beat the true one, when the decision is
futile (for every undecided margin, the predictive probability of a decision at the maximum
draws is under 20%: a standard futility rule, which never adds a wrong decision), or at the maximum
(``Sampling.draws``). Captions that no other significantly beats are the plausible leaders; an
item's credit is 1/(their number) if the true caption is among them, else 0: an undecided
two-caption item counts as a tie.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import closing
from itertools import combinations
from statistics import NormalDist
from typing import Any

import numpy as np
import torch

from .estimators import (
    DEFENSIVE,
    INTEGRANDS,
    PROPOSAL_BINS,
    WIDEN_BY,
    WIDENED,
    _Draws,
    conditional_mutual_info,
    row_stream_key,
)
from .intervals import skew_interval, skewness_of_mean
from .logsnr import fit_proposal
from .results import Z95
from .sampling import Sampling

PILOT = 8  # stratified draws from the model's range that fit the proposal (spent, not counted)
BLOCK = 16  # draws per stage
FIRST_LOOK = 16  # draws before the first look (the boundary is asymptotic: measured)
TIGHTEST_AT = 64  # draws at which the boundary is tuned to be tightest
ALPHA = 0.05
SKEW_FACTOR = 2.0  # the sample skewness of a few heavy-tailed draws is low: measured
FUTILE_BELOW = 0.2  # futile when a decision by the maximum is less likely than this
# What decides, as recorded in an evaluation's settings (a resume must not mix rules).
RULE = {"skew_factor": SKEW_FACTOR, "futile_below": FUTILE_BELOW}


def boundary(t: int, stderr_scale: np.ndarray, alpha: float) -> np.ndarray:
    """Half-width of the two-sided asymptotic confidence sequence for a mean after ``t`` i.i.d.
    observations of standard deviation ``stderr_scale`` (Waudby-Smith et al. 2024, Theorem 2.2:
    ``sigma * sqrt(2 (t rho^2 + 1) / (t^2 rho^2) * log(sqrt(t rho^2 + 1) / alpha))``, ``rho``
    tuned for :data:`TIGHTEST_AT` observations)."""
    rho2 = (-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / TIGHTEST_AT
    v = t * rho2 + 1
    return stderr_scale * math.sqrt(2 * v / (t**2 * rho2) * math.log(math.sqrt(v) / alpha))


def rank_sequentially(
    model: Any,
    x: torch.Tensor,
    captions: list[str],
    *,
    sampling: Sampling,
    key: str,
    true_index: int | None = None,
    alpha: float = ALPHA,
) -> dict[str, Any]:
    """Rank ``captions`` of the model input ``x`` ``(1, *data_shape)`` by log p(x|caption) with
    as few draws as decide it (at most ``sampling.draws``; seed ``sampling.seed``, draws keyed by
    ``key``).

    Returns a JSON-ready dict: ``decision`` (``"decided"``, ``"futile"`` or ``"maximum"``),
    ``draws`` (counted), ``n_evaluations`` (denoiser rows: (pilot + draws) x distinct captions),
    ``plausible`` (the captions no other significantly beats), ``leader`` (the decided leader or
    ``None``), ``margins`` (every pair ``(i, j)``, ``i < j``: log p(x|c_i) - log p(x|c_j) in
    nats with its standard error and the confidence sequence's 95% interval at the stop) and,
    with ``true_index``, ``scores`` (each caption's log p(x|c) - log p(x|c_true), nats) and
    ``credit``.
    """
    sampling = sampling.resolve(model)
    n = len(captions)
    obs = np.empty((n * (n - 1) // 2, 0))
    with closing(margin_blocks(model, x, captions, sampling=sampling, key=key)) as blocks:
        for block in blocks:
            obs = np.concatenate([obs, block], 1)
            look = decide(obs, captions, true_index, alpha=alpha, most=sampling.draws)
            if look["decision"] != "maximum":
                break
    return ranking_result(look, captions, true_index)


def margin_blocks(
    model: Any, x: torch.Tensor, captions: list[str], *, sampling: Sampling, key: str
) -> Iterator[np.ndarray]:
    """The ranking's draws, block by block: each pair ``(i, j)``, ``i < j``, of captions'
    importance-weighted margin ``log p(x|c_i) - log p(x|c_j)`` per counted draw, shape
    ``(n_pairs, block)``, until ``sampling.draws`` (a resolved sampling). A pilot of
    :data:`PILOT` draws (spent) fits the proposal first. Close it to stop early."""
    if sampling.draws < FIRST_LOOK:
        raise ValueError(
            f"sequential ranking needs at least {FIRST_LOOK} draws, got {sampling.draws} (its "
            "first look: fewer under-cover)"
        )
    if sampling.targeted:
        raise ValueError(
            "sequential ranking draws until the ranking is decided: it takes no precision "
            "target (target_se, target_rel)"
        )
    n = len(captions)
    if n < 2:
        raise ValueError(f"ranking needs two or more captions, got {n}")
    pairs = list(combinations(range(n), 2))
    stream = row_stream_key(x[0], key)
    draws = _Draws(
        model,
        x,
        list(captions),
        [i for i, _ in pairs],
        [j for _, j in pairs],
        {"standard": INTEGRANDS["standard"]},
        sampling.batch_size,
        False,
        eps_rngs=[np.random.default_rng([sampling.seed, stream, 1])],
        n_units=PILOT + sampling.draws,
        progress=False,
    )
    try:
        alpha_rng = np.random.default_rng([sampling.seed, stream, 0])
        # A pilot fits the proposal to the margins (as the estimators' adaptive stages do); the
        # proposal then stays fixed, so the counted draws are i.i.d., as the boundary needs.
        pilot = sampling.logsnr.sample(PILOT, alpha_rng, stratified=True)
        f_pilot, _ = draws.integrands([pilot], [np.ones_like(pilot)], per_dim=False)
        logsnr = fit_proposal(
            sampling.logsnr,
            pilot,
            f_pilot["standard"][0].numpy(),
            n_bins=PROPOSAL_BINS,
            defensive=DEFENSIVE,
            widened=WIDENED,
            widen_by=WIDEN_BY,
        )
        t = 0
        while t < sampling.draws:
            size = min(max(BLOCK, FIRST_LOOK - t), sampling.draws - t)
            a = logsnr.sample(size, alpha_rng, stratified=False)
            f, _ = draws.integrands([a], [np.ones_like(a)], per_dim=False)
            t += size
            yield (f["standard"][0] * torch.from_numpy(logsnr.weight(a))).numpy()
    finally:
        draws.close()


def decide(
    obs: np.ndarray,
    captions: list[str],
    true_index: int | None = None,
    *,
    alpha: float = ALPHA,
    most: int,
    futile_below: float = FUTILE_BELOW,
    skew_factor: float = SKEW_FACTOR,
) -> dict[str, Any]:
    """One look at the draws so far, ``obs`` (each pair's margin per draw, ``(n_pairs, t)``):
    ``decision`` (``"decided"``, ``"futile"``, or ``"maximum"`` while draws remain or at
    ``most``), ``plausible``, ``leader``, and each pair's running ``mean``, ``var`` (per draw)
    and confidence sequence (``lower``, ``upper``).

    Futile: for every undecided margin (two plausible leaders with different texts), the
    predictive probability that the margin at ``most`` draws lies outside the symmetric
    :func:`boundary` there (not the skew-aware sequence: an approximation) is below
    ``futile_below`` (the margin's mean at ``most`` given the draws so far, under a
    flat prior on the true margin: normal, mean the running mean, variance
    ``var (most - t) / (most t)``). A futile stop never decides, so it cannot add a wrong
    decision; it may only lose one that more draws would have made (measured:
    ``benchmarks/futility.py``)."""
    n, t = len(captions), obs.shape[1]
    pairs = list(combinations(range(n), 2))
    level = alpha / len(pairs)
    mean, var = obs.mean(1), obs.var(1, ddof=1)
    lower, upper = confidence_sequence(obs, level, skew_factor)
    beats = _beats(pairs, n, lower > 0, upper < 0)
    plausible = [i for i in range(n) if not beats[:, i].any()]
    look: dict[str, Any] = {
        "decision": "maximum",
        "draws": t,
        "plausible": plausible,
        "leader": None,
        "mean": mean,
        "var": var,
        "lower": lower,
        "upper": upper,
    }
    if len({captions[i] for i in plausible}) == 1:  # copies of one caption are one leader
        return look | {"decision": "decided", "leader": plausible[0]}
    if true_index is not None and true_index not in plausible:
        return look | {"decision": "decided"}
    undecided = [
        k
        for k, (i, j) in enumerate(pairs)
        if i in plausible and j in plausible and captions[i] != captions[j]
    ]
    power = _power_at(most, t, mean[undecided], var[undecided], level)
    if t < most and (power < futile_below).all():
        return look | {"decision": "futile"}
    return look


def confidence_sequence(
    obs: np.ndarray, level: float, skew_factor: float = SKEW_FACTOR
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper ends, at this look, of each row's two-sided confidence sequence of level
    ``1 - level`` for the mean of its i.i.d. draws ``obs`` (``(rows, t)``), corrected for skew:
    the symmetric :func:`boundary`'s half-width in standard errors, applied to the arms of the
    skew-aware 95% interval (``intervals.skew_interval``, scaled from 1.96 standard errors to
    that width) for ``skew_factor`` times the estimated skewness of the mean.

    Why: draws with a heavy right tail look low *and* precise until their rare large draws
    arrive, so a symmetric boundary checked after every block decides against them too often
    (lognormal draws: the true mean excluded in 14% of runs). The skew-aware arms cut that to 7%;
    the sample skewness of a few such draws is itself low, and twice it cuts it to 4% (4000 runs,
    ``tests/test_sequential.py``) at no cost where draws are symmetric; it also shortens the arm
    on the skew's other side, so skewed margins are decided sooner
    (``benchmarks/sequential_skew.py``)."""
    t, mean, var = obs.shape[1], obs.mean(1), obs.var(1, ddof=1)
    se = np.sqrt(var / t)
    half = boundary(t, np.sqrt(var), level)
    if skew_factor == 0:
        return mean - half, mean + half
    draws = torch.from_numpy(obs)
    skew = skew_factor * skewness_of_mean(draws, False, torch.from_numpy(se)).numpy()
    arms = skew_interval(torch.from_numpy(mean), torch.from_numpy(se), torch.from_numpy(skew))
    scale = np.divide(half, Z95 * se, out=np.zeros_like(se), where=se > 0)
    arms = arms.numpy()
    return mean - (mean - arms[:, 0]) * scale, mean + (arms[:, 1] - mean) * scale


def _power_at(most: int, t: int, mean: np.ndarray, var: np.ndarray, level: float) -> np.ndarray:
    """Predictive probability that each margin lies outside the boundary at ``most`` draws."""
    edge = boundary(most, np.sqrt(var), level)
    spread = np.sqrt(var * (most - t) / (most * t))
    normal = NormalDist()
    return np.array(
        [
            normal.cdf((m - e) / s) + normal.cdf((-e - m) / s) if s > 0 else float(abs(m) > e)
            for m, e, s in zip(mean, edge, spread, strict=True)
        ]
    )


def ranking_result(
    look: dict[str, Any], captions: list[str], true_index: int | None
) -> dict[str, Any]:
    """The JSON-ready result of :func:`rank_sequentially` from its last look."""
    n, t = len(captions), look["draws"]
    pairs = list(combinations(range(n), 2))
    mean, var, plausible = look["mean"], look["var"], look["plausible"]
    out: dict[str, Any] = {
        "decision": look["decision"],
        "draws": t,
        "n_evaluations": (PILOT + t) * len(set(captions)),  # each distinct caption once
        "plausible": plausible,
        "leader": look["leader"],
        "margins": [
            {
                "pair": [i, j],
                "value": float(mean[k]),
                "stderr": float(math.sqrt(var[k] / t)),
                "ci95": [float(look["lower"][k]), float(look["upper"][k])],
            }
            for k, (i, j) in enumerate(pairs)
        ],
    }
    if true_index is not None:
        out["scores"] = [
            0.0 if c == true_index else margin_of(out["margins"], c, true_index)["value"]
            for c in range(n)
        ]
        out["credit"] = 1 / len(plausible) if true_index in plausible else 0.0
    return out


def caption_mi(
    model: Any,
    x: torch.Tensor,
    captions: list[str],
    ranked: dict[str, Any],
    *,
    sampling: Sampling,
    key: str,
    anchor: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """Each caption's own pointwise MI i(x; c) = log p(x|c) - log p(x) (nats) after a
    sequential ranking, for two conditions' draws instead of one per caption: the ``anchor``
    caption's MI from a fixed standard estimate (``sampling.draws``, its own stream keyed
    ``key + "/mi"``), plus the ranking's margin of each caption over it. The two come from
    independent draws, so their variances add; intervals are normal (the margin's is its
    plain standard error at the stop, not the confidence sequence). Two approximations: the
    anchor's MI includes the tails beyond the log-SNR range, the margins do not (they differ
    between captions only by the captions' tail differences); and a margin is the mean at a
    data-dependent stop, so it carries the optional-stopping bias the ranking's anytime-valid
    intervals guard against, which these normal intervals do not. Returns the entries
    (``value``, ``stderr``, ``ci95``) in caption order and the denoiser rows the MI took."""
    est = conditional_mutual_info(
        model,
        x,
        captions[anchor],
        None,
        estimator="standard",
        sampling=sampling,
        keys=[f"{key}/mi"],
        progress=False,
    )
    base, base_se = est.value[0].item(), est.stderr[0].item()
    entries = []
    for c in range(len(captions)):
        value, se = base, base_se
        if c != anchor:
            margin = margin_of(ranked["margins"], c, anchor)
            value, se = base + margin["value"], math.hypot(base_se, margin["stderr"])
        entries.append({"value": value, "stderr": se, "ci95": [value - Z95 * se, value + Z95 * se]})
    return entries, est.n_evaluations


def margin_of(margins: list[dict[str, Any]], a: int, b: int) -> dict[str, Any]:
    """log p(x|c_a) - log p(x|c_b) from a ranking's ``margins`` (stored for pairs ``(i, j)``,
    ``i < j``, as log p(x|c_i) - log p(x|c_j)): ``value``, ``stderr`` and ``ci95`` in nats."""
    n = math.isqrt(2 * len(margins)) + 1  # n (n - 1) / 2 pairs
    margin = margins[pair_index(n, a, b)]
    sign = 1.0 if a < b else -1.0
    low, high = sorted(sign * v for v in margin["ci95"])
    return {"value": sign * margin["value"], "stderr": margin["stderr"], "ci95": [low, high]}


def pair_index(n: int, a: int, b: int) -> int:
    """Where the pair of captions ``a`` and ``b`` (either order) is among the ``margins`` of
    ``n`` captions."""
    return list(combinations(range(n), 2)).index((min(a, b), max(a, b)))


def _beats(
    pairs: list[tuple[int, int]], n: int, first_ahead: np.ndarray, second_ahead: np.ndarray
) -> np.ndarray:
    """``beats[i, j]``: caption i significantly ahead of caption j."""
    beats = np.zeros((n, n), dtype=bool)
    for k, (i, j) in enumerate(pairs):
        beats[i, j], beats[j, i] = first_ahead[k], second_ahead[k]
    return beats
