"""What every evaluation shares: the models by name, model inputs, and the run's settings."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..estimators import TruncatedLogistic
from ..explanation import Explanation, explain
from ..results import Estimate, versions
from ..world.model import WorldModel

# Draws per item unless told (the demo's count; the cost of an evaluation grows with it): with
# several pairs per item the 95% intervals cover 93-97% here (benchmarks/coverage.py).
DEFAULT_SAMPLES = 256


@dataclass
class EvalModel:
    """A model under evaluation: the denoiser and how it was made.

    Attributes:
        denoiser: a :class:`~infodecomp.models.DiffusersModel` or the exact :class:`WorldModel`.
        name: ``"bundled"``, ``"exact"`` or the diffusers path / id given.
        label: how tables name it.
        revision: weights revision (a hash for the bundled model, the package version for the
            exact model, the cached commit for a hub id), or ``None``.
        image_size: side of the square images it takes, in pixels.
        logsnr: the integration distribution of its estimates.
        schedule: whose DDIM grid its inversions follow (:func:`infodecomp.ddim.logsnr_grid`):
            the model itself, or for the exact world model the bundled model's schedule, so
            that both world models are inverted the same way.
    """

    denoiser: Any
    name: str
    label: str
    revision: str | None
    image_size: int
    logsnr: TruncatedLogistic
    schedule: Any

    @property
    def is_exact(self) -> bool:
        return isinstance(self.denoiser, WorldModel)

    def input(self, image: Any) -> torch.Tensor:
        """The model's input for an image, ``(1, *data_shape)``: the image as given for the exact
        model (float64, never clamped), VAE latents or pixels for a diffusers model."""
        return self.denoiser.encode_image(image)

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "model_label": self.label, "model_revision": self.revision}

    def explain(
        self,
        key: str,
        image: Any,
        caption: str,
        words: list[str],
        settings: dict[str, Any],
        attention: bool = True,
    ) -> Explanation:
        """:func:`~infodecomp.explain` of the item (its MI, each word's CMI, maps and, for
        diffusers models, attention) on the item's draws and this evaluation's settings."""
        return explain(
            self.denoiser,
            image,
            caption,
            words,
            n_samples=settings["samples"],
            seed=settings["seed"],
            logsnr=self.logsnr,
            batch_size=settings["batch_size"],
            attention=attention,
            key=key,
            progress=False,
        )

    def word_information(
        self, key: str, image: Any, caption: str, words: list[str], settings: dict[str, Any]
    ) -> Estimate:
        """i(x; caption) (pair 0) and each word's i(x; word | rest) (pair k) with their maps
        (channels summed), on the item's draws: :meth:`explain` without attention."""
        return self.explain(key, image, caption, words, settings, attention=False).estimate


@dataclass
class Schedule:
    """A diffusers noise schedule without its network (enough for a DDIM grid and the trained
    log-SNR range): ``scheduler`` and the log-SNR of each training timestep."""

    scheduler: Any
    timestep_logsnr: torch.Tensor

    @classmethod
    def from_folder(cls, path: Path) -> Schedule:
        from diffusers import DDPMScheduler

        scheduler = DDPMScheduler.from_pretrained(path)
        abar = scheduler.alphas_cumprod.to(torch.float64)
        return cls(scheduler, abar.log() - (1 - abar).log())

    @property
    def logsnr_range(self) -> tuple[float, float]:
        return self.timestep_logsnr.min().item(), self.timestep_logsnr.max().item()


def load_model(name: str, device: str | None = None, dtype: torch.dtype | None = None) -> EvalModel:
    """``"bundled"`` (the shipped shapes-world model), ``"exact"`` (the world's exact model) or
    a diffusers folder / cached hub id. The world's two models integrate over the bundled model's
    trained log-SNR range and invert on its DDIM grid, so their numbers compare like for like."""
    from ..models.diffusers import DiffusersModel
    from ..world.demo import BUNDLED, load_bundled

    if name == "exact":
        if dtype not in (None, torch.float64):
            raise ValueError("the exact world model computes in float64: give no --dtype")
        schedule = Schedule.from_folder(BUNDLED / "scheduler")
        logsnr = TruncatedLogistic.from_range(*schedule.logsnr_range)
        version = versions()["infodecomp"]
        return EvalModel(WorldModel(), "exact", "exact world model", version, 16, logsnr, schedule)
    if name == "bundled":
        bundled = load_bundled(device=device, dtype=dtype)
        weights = BUNDLED / "unet" / "diffusion_pytorch_model.safetensors"
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
        logsnr = TruncatedLogistic.from_range(*bundled.logsnr_range)
        size = bundled.image_size
        return EvalModel(bundled, "bundled", "bundled model", digest, size, logsnr, bundled)
    model = DiffusersModel.from_pretrained(name, dtype=dtype, device=device)
    logsnr = TruncatedLogistic.from_range(*model.logsnr_range)
    return EvalModel(model, name, name, model.revision, model.image_size, logsnr, model)
