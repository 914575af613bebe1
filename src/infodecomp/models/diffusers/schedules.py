"""Noise schedules: how a network trained on its own time variable becomes the variance-preserving
denoiser eps_hat(x_a, a) of the estimators, at log-SNR a.

The estimators hand a model x_a = sqrt(sigmoid(a)) x + sqrt(sigmoid(-a)) eps. A schedule turns
x_a and a into the network's input and time, and the network's output back into eps_hat:
:meth:`denoise` is the one place this happens, for every model family.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

# network(x_in, timestep, conds) -> raw output, shape of x_in.
Network = Callable[[torch.Tensor, torch.Tensor, Sequence[Any]], torch.Tensor]


class VPSchedule:
    """Discrete variance-preserving timesteps (DDPM: SD 1.x / 2.x / XL).

    The network is called at the training timestep whose log-SNR log(abar_t / (1 - abar_t)) is
    nearest to a; the noise itself is at the exact a (added by the estimators), and the output is
    converted to eps_hat with that timestep's abar_t, the frame the network predicts in.

    Args:
        alphas_cumprod: abar_t of the training timesteps, shape ``(T,)``.
        prediction_type: ``"epsilon"``, ``"v_prediction"`` or ``"sample"``.
    """

    def __init__(self, alphas_cumprod: torch.Tensor, prediction_type: str) -> None:
        if prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"unsupported prediction type {prediction_type!r}")
        self.prediction_type = prediction_type
        self.alphas_cumprod = alphas_cumprod.detach().to("cpu", torch.float64)
        abar = self.alphas_cumprod
        self.timestep_logsnr = abar.log() - (1 - abar).log()  # decreasing in t
        self.logsnr_range = (self.timestep_logsnr.min().item(), self.timestep_logsnr.max().item())

    def timesteps(self, logsnr: torch.Tensor) -> torch.Tensor:
        """The training timestep with the nearest log-SNR for each entry of ``logsnr``."""
        grid = self.timestep_logsnr
        return (grid[None, :] - logsnr.detach().to("cpu", torch.float64)[:, None]).abs().argmin(1)

    def denoise(
        self, network: Network, x: torch.Tensor, logsnr: torch.Tensor, conds: Sequence[Any]
    ) -> torch.Tensor:
        """eps_hat for noisy inputs ``x`` ``(B, ...)`` at ``logsnr`` ``(B,)``, in ``x``'s dtype."""
        t = self.timesteps(logsnr)
        out = network(x, t, conds).to(x.device, torch.float64)
        x64 = x.to(torch.float64)
        abar = self.alphas_cumprod[t].to(x.device).view(-1, *[1] * (x.ndim - 1))
        if self.prediction_type == "v_prediction":  # v = sqrt(abar) eps - sqrt(1 - abar) x0
            out = abar.sqrt() * out + (1 - abar).sqrt() * x64
        elif self.prediction_type == "sample":
            out = (x64 - abar.sqrt() * out) / (1 - abar).sqrt()
        return out.to(x.dtype)


class FlowSchedule:
    """Rectified flow (flow matching: SD3, Flux): x_t = (1 - t) x + t eps, network predicts the
    velocity v = eps - x.

    The flow channel is the variance-preserving channel in disguise. Write s = sqrt((1-t)^2 + t^2).
    Then x_t / s = ((1-t)/s) x + (t/s) eps, whose signal-to-noise ratio is ((1-t)/t)^2, so its
    log-SNR is a = 2 log((1-t)/t); and ((1-t)/s)^2 = sigmoid(a), (t/s)^2 = sigmoid(-a): x_t / s
    *is* x_a. Conversely t = sigmoid(-a/2), the network's input is x_t = s x_a, and since
    x_t + (1-t) v = (1-t) x + t eps + (1-t)(eps - x) = eps, the MMSE noise estimate is
    eps_hat = x_t + (1-t) v_hat (linear in v_hat, so the MMSE velocity gives the MMSE noise).
    Time is continuous: a maps to t exactly, with no nearest timestep.

    Args:
        time_scale: the network's time input is ``time_scale * t`` (SD3: 1000, Flux: 1).
        num_train_timesteps: the scheduler's training grid, t in [1/N, 1]; the log-SNR range is
            that of t in [1/N, 1 - 1/N] (the ends nearest the pure-noise and clean ends).
    """

    def __init__(self, time_scale: float = 1.0, num_train_timesteps: int = 1000) -> None:
        if not time_scale > 0 or num_train_timesteps < 2:
            raise ValueError("time_scale must be > 0 and num_train_timesteps >= 2")
        self.time_scale = float(time_scale)
        end = 2 * math.log(num_train_timesteps - 1)
        self.logsnr_range = (-end, end)

    @staticmethod
    def time(logsnr: torch.Tensor) -> torch.Tensor:
        """Flow time t = sigmoid(-a/2) of log-SNR a, float64."""
        return torch.sigmoid(-logsnr.detach().to(torch.float64) / 2)

    def denoise(
        self, network: Network, x: torch.Tensor, logsnr: torch.Tensor, conds: Sequence[Any]
    ) -> torch.Tensor:
        """eps_hat for noisy inputs ``x`` ``(B, ...)`` at ``logsnr`` ``(B,)``, in ``x``'s dtype."""
        t = self.time(logsnr).to(x.device).view(-1, *[1] * (x.ndim - 1))
        x_t = x.to(torch.float64) * ((1 - t) ** 2 + t**2).sqrt()
        v = network(x_t.to(x.dtype), self.time_scale * t.flatten(), conds)
        return (x_t + (1 - t) * v.to(x.device, torch.float64)).to(x.dtype)
