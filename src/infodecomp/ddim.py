"""Deterministic DDIM sampling and inversion for any denoiser, written in log-SNR.

On the channel x_a = sqrt(sigmoid(a)) x + sqrt(sigmoid(-a)) eps, one DDIM step from log-SNR a to
a' keeps the predicted noise and moves the predicted data:

    x0_hat = (x_a - sqrt(sigmoid(-a)) eps_hat) / sqrt(sigmoid(a))
    x_a'   = sqrt(sigmoid(a')) x0_hat + sqrt(sigmoid(-a')) eps_hat

Sampling runs a from the lowest log-SNR of the grid (almost pure noise) up to the highest and
returns the last x0_hat; inversion runs the same grid down from the data (Song et al.'s DDIM
inversion: eps_hat is taken at the current point), so inverting and regenerating under one
condition reconstructs the image up to the discretisation error. No guidance: the conditional
denoiser itself, as the information estimates use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

DEFAULT_STEPS = 50


def logsnr_grid(model: Any, steps: int = DEFAULT_STEPS) -> torch.Tensor:
    """``steps`` log-SNRs, increasing (noise to data): for a diffusers model, the timesteps that
    diffusers' DDIMScheduler takes from its scheduler config (which keep away from the last,
    near-zero-SNR training steps where an eps-model's x0 prediction is ill-conditioned); else
    evenly spaced over the model's ``logsnr_range``."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an integer >= 2, got {steps!r}")
    table = getattr(model, "timestep_logsnr", None)
    if table is not None:
        from diffusers import DDIMScheduler

        scheduler = DDIMScheduler.from_config(model.scheduler.config)
        scheduler.set_timesteps(steps)
        return table[scheduler.timesteps.long()].to(torch.float64).sort().values
    low, high = getattr(model, "logsnr_range", (-10.0, 10.0))
    return torch.linspace(low, high, steps, dtype=torch.float64)


def sample(
    model: Any, noise: torch.Tensor, conds: Sequence[Any], steps: int = DEFAULT_STEPS
) -> torch.Tensor:
    """Data from ``noise`` ``(n, *data_shape)`` under the ``n`` conditions ``conds`` (batched in
    one call per step), ``(n, *data_shape)`` in the model's input space."""
    grid = logsnr_grid(model, steps)
    x = noise.to(torch.float64) * torch.sigmoid(-grid[0]).sqrt()
    return _run(model, x, list(conds), grid)


def invert(model: Any, x: torch.Tensor, cond: Any, steps: int = DEFAULT_STEPS) -> torch.Tensor:
    """The noise from which :func:`sample` under ``cond`` regenerates ``x`` ``(n, *data_shape)``:
    the point of the DDIM path at the grid's lowest log-SNR, rescaled to unit variance."""
    grid = logsnr_grid(model, steps).flip(0)
    start = x.to(torch.float64) * torch.sigmoid(grid[0]).sqrt()
    out = _run(model, start, [cond] * len(x), grid, return_x0=False)
    return out / torch.sigmoid(-grid[-1]).sqrt()


def _run(
    model: Any, x: torch.Tensor, conds: list[Any], grid: torch.Tensor, return_x0: bool = True
) -> torch.Tensor:
    dtype = torch.float64
    x0 = x
    for i, a in enumerate(grid.tolist()):
        alpha = torch.full((len(x),), a, dtype=dtype, device=x.device)
        with torch.no_grad():
            eps = model(x.to(dtype), alpha, conds).to(dtype)
        if not torch.isfinite(eps).all():
            raise ValueError(f"the denoiser returned NaN or inf at log-SNR {a:.3g}")
        sig = torch.sigmoid(torch.tensor(a, dtype=dtype))
        x0 = (x - (1 - sig).sqrt() * eps) / sig.sqrt()
        if i + 1 < len(grid):
            nxt = torch.sigmoid(grid[i + 1])
            x = nxt.sqrt() * x0 + (1 - nxt).sqrt() * eps
    return x0 if return_x0 else x
