"""infodecomp: interpretable diffusion models through information theory.

Exact log-likelihoods, pointwise (conditional) mutual information and their per-coordinate maps,
in nats, from any denoiser, via the I-MMSE relation (Kong et al., ICLR 2024).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__ as __version__

# Loaded on first use (PEP 562): `import infodecomp` is instant, and the command line can catch
# a Ctrl-C that comes while torch is still loading.
_EXPORTS = {
    "Denoiser": "estimators",
    "DenoiserOutputError": "estimators",
    "TruncatedLogistic": "logsnr",
    "conditional_mutual_info": "estimators",
    "log_likelihood": "estimators",
    "mutual_info": "estimators",
    "Explanation": "explanation",
    "explain": "explanation",
    "Interaction": "interactions",
    "interaction": "interactions",
    "interaction_information": "interactions",
    "Estimate": "results",
    "Sampling": "sampling",
    "load_model": "loading",
    "trace": "tracing",
    "Trace": "tracing",
}

__all__ = [
    "Denoiser",
    "DenoiserOutputError",
    "Estimate",
    "Explanation",
    "Interaction",
    "Sampling",
    "Trace",
    "TruncatedLogistic",
    "conditional_mutual_info",
    "explain",
    "interaction",
    "interaction_information",
    "load_model",
    "log_likelihood",
    "models",
    "mutual_info",
    "trace",
]

if TYPE_CHECKING:
    from . import models
    from .estimators import (
        Denoiser,
        DenoiserOutputError,
        conditional_mutual_info,
        log_likelihood,
        mutual_info,
    )
    from .explanation import Explanation, explain
    from .interactions import Interaction, interaction, interaction_information
    from .loading import load_model
    from .logsnr import TruncatedLogistic
    from .results import Estimate
    from .sampling import Sampling
    from .tracing import Trace, trace


def __getattr__(name: str) -> Any:
    if name == "models":
        return importlib.import_module(".models", __name__)
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        # Cached: later look-ups skip this function.
        globals()[name] = value
        return value
    raise AttributeError(f"module 'infodecomp' has no attribute {name!r}")
