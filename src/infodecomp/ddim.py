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
    model: Any,
    noise: torch.Tensor,
    conds: Sequence[Any],
    steps: int = DEFAULT_STEPS,
    schedule: Any = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Data from ``noise`` ``(n, *data_shape)`` under the ``n`` conditions ``conds``,
    ``(n, *data_shape)`` in the model's input space. Each step is one denoiser call of all rows
    (or calls of ``batch_size`` rows). ``schedule``: whose :func:`logsnr_grid` to follow
    (default the model's own)."""
    grid = logsnr_grid(model if schedule is None else schedule, steps)
    x = noise.to(torch.float64) * torch.sigmoid(-grid[0]).sqrt()
    return _run(model, x, list(conds), grid, batch_size)


def guided(model: Any, guidance_scale: float) -> Any:
    """``model`` with classifier-free guidance: eps_null + w (eps_cond - eps_null), the
    conditional and null rows in one call."""

    def denoise(x: torch.Tensor, logsnr: torch.Tensor, conds: Sequence[Any]) -> torch.Tensor:
        rows = torch.cat([x, x]).to(torch.float32)
        eps = model(rows, torch.cat([logsnr, logsnr]), [*conds, *[None] * len(conds)])
        cond, null = eps.to(torch.float64).chunk(2)
        return null + guidance_scale * (cond - null)

    return denoise


def invert(
    model: Any,
    x: torch.Tensor,
    cond: Any,
    steps: int = DEFAULT_STEPS,
    schedule: Any = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """The noise from which :func:`sample` under ``cond`` regenerates ``x`` ``(n, *data_shape)``:
    the point of the DDIM path at the grid's lowest log-SNR, rescaled to unit variance
    (``steps - 1`` denoiser calls)."""
    grid = logsnr_grid(model if schedule is None else schedule, steps).flip(0)
    start = x.to(torch.float64) * torch.sigmoid(grid[0]).sqrt()
    out = _run(model, start, [cond] * len(x), grid, batch_size, to_data=False)
    return out / torch.sigmoid(-grid[-1]).sqrt()


def _run(
    model: Any,
    x: torch.Tensor,
    conds: list[Any],
    grid: torch.Tensor,
    batch_size: int | None,
    to_data: bool = True,
) -> torch.Tensor:
    """Follow ``grid``; return the last x0_hat (``to_data``) or the point at the grid's end
    (which needs no denoiser call at that point)."""
    dtype = torch.float64
    rows = batch_size or len(x)
    calls = len(grid) if to_data else len(grid) - 1
    for i in range(calls):
        a = grid[i].item()
        alpha = torch.full((rows,), a, dtype=dtype, device=x.device)
        with torch.no_grad():
            eps = torch.cat(
                [
                    model(x[k : k + rows], alpha[: len(x[k : k + rows])], conds[k : k + rows])
                    for k in range(0, len(x), rows)
                ]
            ).to(dtype)
        if not torch.isfinite(eps).all():
            raise ValueError(f"the denoiser returned NaN or inf at log-SNR {a:.3g}")
        sig = torch.sigmoid(torch.tensor(a, dtype=dtype))
        x0 = (x - (1 - sig).sqrt() * eps) / sig.sqrt()
        if i + 1 == len(grid):
            return x0
        nxt = torch.sigmoid(grid[i + 1])
        x = nxt.sqrt() * x0 + (1 - nxt).sqrt() * eps
    return x
