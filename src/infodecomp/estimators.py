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
The integral is estimated by importance sampling from a truncated logistic over a; every
condition of one call sees the same (a, eps) draws.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, overload

import numpy as np
import torch
from tqdm.auto import tqdm

from .results import Estimate

ESTIMATORS = ("orthogonal", "standard")
SAMPLINGS = ("stratified", "iid")


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
        u = (np.arange(n) + rng.random(n)) / n if stratified else rng.random(n)
        lo, hi = _sigmoid(-self.clip), _sigmoid(self.clip)
        p = lo + (hi - lo) * u
        return self.loc + self.scale * np.log(p / (1 - p))

    def weight(self, logsnr: np.ndarray) -> np.ndarray:
        """Importance weights 1/q(a), so that mean(weight * f) estimates the integral of f."""
        z = (logsnr - self.loc) / self.scale
        return self.scale * math.tanh(self.clip / 2) / (_sigmoid(z) * _sigmoid(-z))


def log_likelihood(
    model: Denoiser,
    x: torch.Tensor,
    cond: Any = None,
    *,
    n_samples: int = 1000,
    seed: int = 0,
    logsnr: TruncatedLogistic | None = None,
    sampling: Literal["stratified", "iid"] = "stratified",
    batch_size: int = 256,
    per_dim: bool = False,
    sum_channels: bool = False,
    keys: Sequence[Any] | None = None,
    progress: bool = True,
) -> Estimate:
    """Negative log-likelihood -log p(x | cond) in nats, one per row of ``x``.

    Uses a standard-Gaussian reference, so the value is exact up to Monte Carlo error and the
    truncation of the log-SNR integral to the range of ``logsnr``. ``Estimate.bits_per_dim`` gives
    the same in bits per dimension.

    Args:
        model: any :class:`Denoiser`.
        x: data, shape ``(n_x, *data_shape)``.
        cond: one condition, or a list of conditions measured on shared noise (the result then
            has a trailing axis of that length). ``None`` is the unconditional model.
        n_samples: (log-SNR, noise) draws per row of ``x``; at least 2.
        seed: makes the draws reproducible; results do not depend on ``batch_size``.
        logsnr: importance distribution; defaults to the model's ``logsnr_range`` if declared,
            else ``TruncatedLogistic()``.
        sampling: ``"stratified"`` (one draw per quantile of ``logsnr``) or ``"iid"``.
        batch_size: rows per denoiser call.
        per_dim: also return ``Estimate.map``, the exact split of the value over coordinates.
        sum_channels: sum the map over the channel axis (axis 1 of ``x``).
        keys: one stable key per row of ``x`` (an item id: str or int) naming its random
            stream: a row's draws depend only on ``(seed, key)``, never on the other rows, the
            batch size or sharding. Default: a hash of the row's content, so the same data gives
            the same numbers wherever it sits (two equal rows share their draws).
        progress: show a progress bar (only on a terminal).
    """
    conds = cond if isinstance(cond, list) else [cond]
    return _estimate(
        "negative_log_likelihood",
        model,
        x,
        conds,
        None,
        many=isinstance(cond, list),
        n_samples=n_samples,
        seed=seed,
        logsnr=logsnr,
        sampling=sampling,
        batch_size=batch_size,
        per_dim=per_dim,
        sum_channels=sum_channels,
        keys=keys,
        progress=progress,
    )["negative_log_likelihood"]


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
    n_samples: int = 1000,
    seed: int = 0,
    logsnr: TruncatedLogistic | None = None,
    sampling: Literal["stratified", "iid"] = "stratified",
    batch_size: int = 256,
    per_dim: bool = False,
    sum_channels: bool = False,
    keys: Sequence[Any] | None = None,
    progress: bool = True,
) -> Estimate | dict[str, Estimate]:
    """Pointwise mutual information i(x; cond) in nats, against the null condition ``None``.

    ``estimator="standard"`` estimates log p(x|cond) - log p(x) exactly in expectation;
    ``"orthogonal"`` (default) drops a zero-mean term: same mean over the data, lower variance,
    never negative. A tuple such as ``("standard", "orthogonal")`` computes each from the same
    denoiser calls and returns ``{name: Estimate}``. Arguments as in :func:`log_likelihood`.
    """
    return conditional_mutual_info(
        model,
        x,
        cond,
        None,
        estimator=estimator,
        n_samples=n_samples,
        seed=seed,
        logsnr=logsnr,
        sampling=sampling,
        batch_size=batch_size,
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
    n_samples: int = 1000,
    seed: int = 0,
    logsnr: TruncatedLogistic | None = None,
    sampling: Literal["stratified", "iid"] = "stratified",
    batch_size: int = 256,
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
    names returns ``{name: Estimate}``, all from one pass of denoiser calls). Other arguments as
    in :func:`log_likelihood`.
    """
    names = (estimator,) if isinstance(estimator, str) else tuple(dict.fromkeys(estimator))
    if not names or any(e not in ESTIMATORS for e in names):
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {ESTIMATORS}")
    many = isinstance(cond, list) or isinstance(context, list)
    conds, contexts = _broadcast_pairs(cond, context)
    quantity = "mutual_info" if all(c is None for c in contexts) else "conditional_mutual_info"
    out = _estimate(
        quantity,
        model,
        x,
        conds,
        contexts,
        estimators=names,
        many=many,
        n_samples=n_samples,
        seed=seed,
        logsnr=logsnr,
        sampling=sampling,
        batch_size=batch_size,
        per_dim=per_dim,
        sum_channels=sum_channels,
        keys=keys,
        progress=progress,
    )
    return out[estimator] if isinstance(estimator, str) else out


def _estimate(
    quantity: str,
    model: Denoiser,
    x: torch.Tensor,
    conds: list[Any],
    contexts: list[Any] | None,
    *,
    estimators: Sequence[str] = (),
    many: bool,
    n_samples: int,
    seed: int,
    logsnr: TruncatedLogistic | None,
    sampling: str,
    batch_size: int,
    per_dim: bool,
    sum_channels: bool,
    keys: Sequence[Any] | None,
    progress: bool,
) -> dict[str, Estimate]:
    """The estimates of ``quantity`` (one per name in ``estimators`` for information, keyed by
    name; keyed by ``quantity`` for the log-likelihood), all from one pass of denoiser calls."""
    if not callable(model):
        raise TypeError(
            f"model must be a denoiser, model(x_noisy, logsnr, conds) -> eps_hat; got "
            f"{type(model).__name__}"
        )
    x = _check_inputs(x, n_samples, seed, sampling, batch_size, sum_channels)
    if keys is not None and len(keys) != x.shape[0]:
        raise ValueError(f"got {len(keys)} keys for {x.shape[0]} rows of x: give one per row")
    if logsnr is None:
        model_range = getattr(model, "logsnr_range", None)
        logsnr = TruncatedLogistic.from_range(*model_range) if model_range else TruncatedLogistic()
    stratified = sampling == "stratified"

    # Each distinct condition is evaluated once per draw; pairs index into this list.
    unique: list[Any] = []
    for c in conds + (contexts or []):
        if not any(c == u for u in unique):
            unique.append(c)
    cond_idx = [_index(unique, c) for c in conds]
    ctx_idx = [_index(unique, c) for c in contexts] if contexts is not None else None

    n_x, data_shape = x.shape[0], tuple(x.shape[1:])
    n_u, n_q = len(unique), len(conds)
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    map_shape = data_shape[1:] if sum_channels else data_shape

    # Random streams keyed by (seed, row key): a row's numbers do not depend on the other rows,
    # on batch_size or on how rows are grouped, sharded or resumed.
    streams = [row_stream_key(x[i], None if keys is None else keys[i]) for i in range(n_x)]
    alpha_rngs = [np.random.default_rng([seed, k, 0]) for k in streams]
    eps_rngs = [np.random.default_rng([seed, k, 1]) for k in streams]
    alphas = np.stack([logsnr.sample(n_samples, rng, stratified) for rng in alpha_rngs])
    weights = logsnr.weight(alphas)

    # One integrand per requested estimator, all from the same denoiser outputs.
    kinds = [quantity] if quantity == "negative_log_likelihood" else list(estimators)
    totals = {k: torch.zeros(n_x, n_q, n_samples, dtype=torch.float64) for k in kinds}
    if per_dim:
        map_sum = {k: torch.zeros(n_x, n_q, *map_shape, dtype=torch.float64) for k in kinds}
        map_sumsq = {k: torch.zeros_like(map_sum[k]) for k in kinds}

    # Draws per step: enough that their rows (n_u per draw) fill whole calls of batch_size.
    draws_per_step = batch_size // math.gcd(batch_size, n_u)
    n_units = n_x * n_samples
    bar = tqdm(total=n_units, unit="draw", disable=None if progress else True, leave=False)
    clock = _ProgressLog(n_units, n_u) if progress else None
    for start in range(0, n_units, draws_per_step):
        units = np.arange(start, min(start + draws_per_step, n_units))
        xi, si = units // n_samples, units % n_samples
        eps = _draw_noise(eps_rngs, xi, data_shape).to(device=x.device, dtype=work)
        alpha = torch.from_numpy(alphas[xi, si]).to(device=x.device, dtype=work)
        sig = torch.sigmoid(alpha).view(-1, *[1] * len(data_shape))
        x_rows = x[torch.from_numpy(xi).to(x.device)].to(work)
        x_noisy = sig.sqrt() * x_rows + (1 - sig).sqrt() * eps
        eps_hat = _denoise(model, x_noisy.to(x.dtype), alpha.to(x.dtype), unique, batch_size)
        eps_hat = eps_hat.to(work).view(len(units), n_u, *data_shape)
        w = torch.from_numpy(weights[xi, si]).to(device=x.device, dtype=work)
        w = w.view(-1, 1, *[1] * len(data_shape))

        # Per-coordinate integrand of every requested pair, shape (U, n_q, *data_shape).
        e, fuller = eps.unsqueeze(1), eps_hat[:, cond_idx]
        for kind in kinds:
            if kind == "negative_log_likelihood":
                # Control variate: the standard-Gaussian reference's error on the same eps, whose
                # integral is known in closed form (-log N(x; 0, I)); it cancels the tails' noise.
                reference = ((1 - sig).sqrt() * x_noisy).unsqueeze(1)
                integrand = (e - fuller) ** 2 - (e - reference) ** 2
                contrib = 0.5 * w * integrand
                contrib = contrib + 0.5 * (math.log(2 * math.pi) + x_rows.unsqueeze(1) ** 2)
            elif kind == "orthogonal":
                contrib = 0.5 * w * (eps_hat[:, ctx_idx] - fuller) ** 2
            else:
                contrib = 0.5 * w * ((e - eps_hat[:, ctx_idx]) ** 2 - (e - fuller) ** 2)
            if sum_channels:
                contrib = contrib.sum(dim=2)
            totals[kind][xi, :, si] = contrib.flatten(2).sum(-1).double().cpu()
            if per_dim:
                rows = torch.from_numpy(xi)
                contrib = contrib.double().cpu()
                map_sum[kind].index_add_(0, rows, contrib)
                map_sumsq[kind].index_add_(0, rows, contrib**2)
        bar.update(len(units))
        if clock is not None:
            clock.update(units[-1] + 1)
    bar.close()

    settings = {
        "estimator": None,
        "sampling": sampling,
        "n_samples": n_samples,
        "batch_size": batch_size,
        "logsnr": {
            "distribution": "truncated_logistic",
            "loc": logsnr.loc,
            "scale": logsnr.scale,
            "clip": logsnr.clip,
            "low": logsnr.low,
            "high": logsnr.high,
        },
        "conditions": [_jsonable(c) for c in conds],
        "contexts": None if contexts is None else [_jsonable(c) for c in contexts],
        "n_x": n_x,
        "data_shape": list(data_shape),
        "data_dims": math.prod(data_shape),
        "per_dim": per_dim,
        "sum_channels": sum_channels,
        "model": type(model).__name__,
        "stream_keys": "row content" if keys is None else [_jsonable(k) for k in keys],
    }
    out = {}
    for kind in kinds:
        value, stderr = totals[kind].mean(-1), _stderr(totals[kind], stratified)
        est_map = est_map_se = None
        if per_dim:
            est_map = map_sum[kind] / n_samples
            var = (map_sumsq[kind] / n_samples - est_map**2).clamp(min=0) / (n_samples - 1)
            est_map_se = var.sqrt()
        if not many:
            value, stderr = value[:, 0], stderr[:, 0]
            if per_dim:
                est_map, est_map_se = est_map[:, 0], est_map_se[:, 0]
        out[kind] = Estimate(
            quantity=quantity,
            value=value,
            stderr=stderr,
            n_evaluations=n_units * n_u,
            seed=seed,
            settings=settings | {"estimator": None if kind == quantity else kind},
            map=est_map,
            map_stderr=est_map_se,
        )
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


def _stderr(samples: torch.Tensor, stratified: bool) -> torch.Tensor:
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


def _check_inputs(
    x: torch.Tensor, n_samples: int, seed: int, sampling: str, batch_size: int, sum_channels: bool
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
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 2:
        raise ValueError(
            f"n_samples must be an integer >= 2 (a standard error needs two draws), "
            f"got {n_samples!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}; choose one of {SAMPLINGS}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
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


def _sigmoid(z: Any) -> Any:
    return 1 / (1 + np.exp(-z))
