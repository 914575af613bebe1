"""infodecomp: interpretable diffusion models through information theory.

Exact log-likelihoods, pointwise (conditional) mutual information and their per-coordinate maps,
in nats, from any denoiser, via the I-MMSE relation (Kong et al., ICLR 2024).
"""

from . import models
from .estimators import (
    Denoiser,
    DenoiserOutputError,
    TruncatedLogistic,
    conditional_mutual_info,
    log_likelihood,
    mutual_info,
)
from .explain import Explanation, explain
from .results import Estimate

__version__ = "0.1.0"

__all__ = [
    "Denoiser",
    "DenoiserOutputError",
    "Estimate",
    "Explanation",
    "TruncatedLogistic",
    "conditional_mutual_info",
    "explain",
    "log_likelihood",
    "models",
    "mutual_info",
]
