"""What a model can take, checked before the slow part with one-line errors: a device, a seed, a
finite setting, and a denoiser call's batch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real
from typing import Any

import torch

from ..sampling import MAX_SEED as MAX_SEED
from ..sampling import check_seed as check_seed


def check_device(device: str | torch.device | None) -> str | torch.device | None:
    """``device`` if this torch can run on it (``None`` passes), else ``ValueError`` with one
    line."""
    if device is None:
        return None
    try:
        found = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"unknown device {device!r} (e.g. cpu, cuda, cuda:1)") from None
    if found.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r}: this torch build sees no CUDA GPU")
        if found.index is not None and found.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {str(device)!r}: only {torch.cuda.device_count()} GPU(s) visible"
            )
    elif found.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {str(device)!r}: MPS is not available here")
    elif found.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {str(device)!r} is not supported (cpu, cuda or mps)")
    return device


def check_finite(value: Any, name: str) -> float | None:
    """``value`` as a float if it is a finite number (``None`` passes), else ``ValueError`` with
    one line (an infinite guidance scale gives a black image, NaN an unguided one, and neither
    is JSON)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def check_batch(
    x_noisy: torch.Tensor, logsnr: torch.Tensor, conds: Sequence[Any], data_shape: tuple[int, ...]
) -> None:
    """``ValueError`` with one line unless a denoiser call's inputs agree: ``x_noisy`` of shape
    ``(B, *data_shape)``, ``B`` log-SNRs and ``B`` conditions (one per row)."""
    if tuple(x_noisy.shape[1:]) != tuple(data_shape):
        raise ValueError(
            f"inputs have data shape {tuple(x_noisy.shape[1:])}, the model expects "
            f"{tuple(data_shape)}"
        )
    rows = x_noisy.shape[0]
    n_logsnr = logsnr.numel() if isinstance(logsnr, torch.Tensor) else len(logsnr)
    if isinstance(conds, (str, bytes)) or not isinstance(conds, Sequence):
        raise TypeError(f"conds must be a list of conditions, one per row, got {conds!r}")
    if len(conds) != rows or n_logsnr != rows:
        raise ValueError(
            f"the lengths must match: {rows} input row(s), {n_logsnr} log-SNR(s) and "
            f"{len(conds)} condition(s) (one condition and one log-SNR per row)"
        )
