"""How an estimate samples its log-SNR integral: one settings object for every entry point.

The estimators, :func:`~infodecomp.explain`, :meth:`~infodecomp.Trace.explain`, the evaluations
and the demo all take a :class:`Sampling`; the command line builds it from one argument group. It
is validated when made, resolved against a model in one place (:meth:`Sampling.resolve`: the
log-SNR range the model was trained on, its batch size) and written the same way into every
``result.json`` and ``settings.json`` (:meth:`Sampling.describe`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from .logsnr import TruncatedLogistic

# Draws of (log-SNR, noise) per estimate unless told, everywhere (Python and command line): with
# several pairs per item the 95% intervals cover 93-97% (benchmarks/coverage.py), and the demo's
# eight conditions take about 20 s on two CPU cores.
DEFAULT_DRAWS = 256
# Rows per denoiser call for a model that does not size its own (``default_batch_size()``).
DEFAULT_BATCH_SIZE = 256
# Largest seed: numpy takes any non-negative integer, torch.Generator.manual_seed below 2**64.
MAX_SEED = 2**64 - 1
# With a precision target: a pilot (fits the proposal) and a probe (plans the number of counted
# draws), both spent, then at least 64 counted draws (see estimators._planned_draws).
TARGET_PILOT = 16
TARGET_PROBE = 16
MIN_COUNTED = 64
MIN_TARGETED_DRAWS = TARGET_PILOT + TARGET_PROBE + MIN_COUNTED


@dataclass(frozen=True)
class Sampling:
    """The draws an estimate takes and how it batches them.

    Attributes:
        draws: (log-SNR, noise) draws per row of data, at least 2 (the ranges' ends and an
            adaptive pilot included in the count of denoiser rows, see :meth:`rows`).
        seed: with each row's key, names its random streams; results depend only on (row, seed,
            these settings), never on the batch size, the other rows or sharding.
        logsnr: the importance distribution over log-SNR; ``None`` takes the model's trained
            range (``model.logsnr_range``), else :class:`TruncatedLogistic` ``()`` (the paper's).
        stratified: one draw per quantile of the proposal (lower variance) instead of i.i.d.
        adaptive: fit the proposal to the integrand in stages (at 64 draws or more).
        batch_size: rows per denoiser call; ``None`` takes the model's ``default_batch_size()``,
            else 256. Changes speed and memory, never the numbers (beyond float rounding).
        target_se: a precision target in nats: each row's draws are planned for standard
            errors of at most ``target_se + target_rel * |value|`` (as
            ``numpy.isclose`` combines tolerances), ``draws`` being the most it may take. The
            number is planned from draws that are then spent, so the value stays unbiased
            (estimators.py, ``_planned_draws``; a plan can fall short: the value says so).
        target_rel: a relative precision target (a share of each value); see ``target_se``.
    """

    draws: int = DEFAULT_DRAWS
    seed: int = 0
    logsnr: TruncatedLogistic | None = None
    stratified: bool = True
    adaptive: bool = True
    batch_size: int | None = None
    target_se: float | None = None
    target_rel: float | None = None

    def __post_init__(self) -> None:
        if not _is_int(self.draws) or self.draws < 2:
            raise ValueError(
                f"draws must be an integer >= 2 (a standard error needs two), got {self.draws!r}"
            )
        check_seed(self.seed)
        if self.logsnr is not None and not isinstance(self.logsnr, TruncatedLogistic):
            raise TypeError(f"logsnr must be a TruncatedLogistic or None, got {self.logsnr!r}")
        for name in ("stratified", "adaptive"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.batch_size is not None and (not _is_int(self.batch_size) or self.batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        for name in ("target_se", "target_rel"):
            value = getattr(self, name)
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if value is not None and not (ok and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number or None, got {value!r}")
        if self.targeted and self.draws < MIN_TARGETED_DRAWS:
            raise ValueError(
                f"with a precision target, draws is the most a row may take: at least "
                f"{MIN_TARGETED_DRAWS} (a pilot, a probe and the fewest counted draws), "
                f"got {self.draws}"
            )

    def replace(self, **changes: Any) -> Sampling:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    def resolve(self, model: Any) -> Sampling:
        """These settings with every ``None`` decided for ``model``: its trained log-SNR range
        and its batch size."""
        logsnr, batch_size = self.logsnr, self.batch_size
        if logsnr is None:
            trained = getattr(model, "logsnr_range", None)
            logsnr = TruncatedLogistic.from_range(*trained) if trained else TruncatedLogistic()
        if batch_size is None:
            sizing = getattr(model, "default_batch_size", None)
            batch_size = sizing() if callable(sizing) else DEFAULT_BATCH_SIZE
        return self.replace(logsnr=logsnr, batch_size=batch_size)

    @property
    def targeted(self) -> bool:
        """Whether each row's number of draws follows a precision target (else ``draws``)."""
        return self.target_se is not None or self.target_rel is not None

    @property
    def edge_draws(self) -> int:
        """Draws at each end of the log-SNR range (for the tails beyond it): at least 4, fewer
        make the truncation flag a coin toss."""
        return max(4, self.draws // 128)

    def rows(self, n_conditions: int) -> int:
        """Denoiser rows (network evaluations) per row of data measured under ``n_conditions``
        distinct conditions: every draw, those at the range's ends included, evaluates each
        (with a precision target, the most it may take)."""
        return (self.draws + 2 * self.edge_draws) * n_conditions

    def describe(self) -> dict[str, Any]:
        """JSON-ready settings, as written into results (the log-SNR range once resolved)."""
        return {
            "draws": self.draws,
            "seed": self.seed,
            "logsnr": None if self.logsnr is None else self.logsnr.describe(),
            "stratified": self.stratified,
            "adaptive": self.adaptive,
            "batch_size": self.batch_size,
            # Only when set: runs without a target describe themselves as before (and resume).
            **(
                {"target_se": self.target_se, "target_rel": self.target_rel}
                if self.targeted
                else {}
            ),
        }

    @classmethod
    def from_description(cls, described: dict[str, Any]) -> Sampling:
        """The settings :meth:`describe` wrote."""
        logsnr = described.get("logsnr")
        if logsnr is not None:
            logsnr = TruncatedLogistic(logsnr["loc"], logsnr["scale"], logsnr["clip"])
        fields = {f.name for f in dataclasses.fields(cls)} - {"logsnr"}
        return cls(logsnr=logsnr, **{k: v for k, v in described.items() if k in fields})


def precision_target(target_se: float | None, target_rel: float | None, value: Any) -> Any:
    """The standard error a value of size ``value`` (a float or a tensor, nats) is planned for
    under a precision target: ``target_se + target_rel * |value|``, a missing part as 0."""
    return (target_se or 0.0) + (target_rel or 0.0) * abs(value)


def check_sampling(sampling: Any) -> Sampling:
    """``sampling`` itself, ``Sampling()`` for ``None``, else ``TypeError`` with one line (what
    every function taking ``sampling=`` does first)."""
    if sampling is None:
        return Sampling()
    if not isinstance(sampling, Sampling):
        raise TypeError(
            f"sampling must be an infodecomp.Sampling, e.g. Sampling(draws=256, seed=0), got "
            f"{type(sampling).__name__}"
        )
    return sampling


def check_seed(seed: Any) -> int:
    """``seed`` if it is an integer in ``[0, 2**64)`` (what every random generator here takes),
    else ``ValueError``."""
    if not _is_int(seed) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an integer from 0 to 2**64 - 1, got {seed!r}")
    return seed


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
