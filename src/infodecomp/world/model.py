"""The world's exact text-to-image diffusion model, and its own checker."""

from __future__ import annotations

from typing import Any

import torch

from ..images import load_image
from ..models.diffusers.schedules import VPSchedule
from ..models.diffusers.text import PaddedPrompt
from ..models.reference import GaussianMixture
from ..words import remove_spans
from .scenes import (
    PIXEL_NOISE,
    Parsed,
    Scene,
    all_scenes,
    assignment,
    parse,
    prior_name,
    prior_strength,
    render,
    scene_weights,
)


class WorldModel(GaussianMixture):
    """The world as a Gaussian mixture with one component per scene: its denoiser is the exact,
    Bayes-optimal text-to-image denoiser, and ``log_prob(x, caption)`` is exact.

    Conditions are captions, complete or with words removed (a removed word marginalises its
    factor); ``None`` or ``""`` is no caption. A :class:`~infodecomp.models.PaddedPrompt` is its
    caption with the padded words removed: in the world, padding a word and deleting it are one
    condition.
    """

    name = "exact world model"
    image_size = 16
    revision: str | None = None

    def __init__(self, scheduler: Any = None, prior: str | float = "plain") -> None:
        """``scheduler``: a diffusers scheduler whose training timesteps the model adopts as its
        own (``logsnr_range``, the default range of its estimates, and the grid of its DDIM
        inversions), e.g. the bundled model's, so that both world models are measured alike.
        ``prior``: the world's prior over scenes (:func:`~infodecomp.world.scenes.scene_weights`:
        ``"plain"``, ``"correlated"`` or a correlation strength); the name says which."""
        scenes = all_scenes()
        super().__init__(
            means=torch.stack([render(s) for s in scenes]),
            variances=torch.full((len(scenes),), PIXEL_NOISE**2),
            weights=torch.from_numpy(scene_weights(prior=prior)),
            labels=list(scenes),
        )
        self.prior = prior
        if prior_strength(prior) is not None:
            self.name = f"{type(self).name} ({prior_name(prior)})"
        self._cache: dict[str, torch.Tensor] = {}
        self.scheduler = scheduler
        if scheduler is not None:
            schedule = VPSchedule(scheduler.alphas_cumprod, "epsilon")
            self.timestep_logsnr, self.logsnr_range = (
                schedule.timestep_logsnr,
                schedule.logsnr_range,
            )

    def components(self, cond: Any) -> torch.Tensor:
        """Indices of the scenes that could have produced the caption ``cond`` (a
        :class:`PaddedPrompt` is its caption with the padded words removed: padding a word
        marginalises it, as removing does; the exact model reads no positions)."""
        if isinstance(cond, PaddedPrompt):
            cond = remove_spans(cond.text, list(cond.spans)) or None
        if cond is None or (isinstance(cond, str) and not cond.strip()):
            return torch.arange(len(self.labels))
        if not isinstance(cond, str):
            raise ValueError(f"conditions of the world model are captions, got {cond!r}")
        if cond not in self._cache:
            parsed = parse(cond)
            keep = [i for i, s in enumerate(self.labels) if assignment(s, parsed) is not None]
            if not keep:
                raise ValueError(f"no scene of the world fits the caption {cond!r}")
            self._cache[cond] = torch.tensor(keep)
        return self._cache[cond]

    def describe(self) -> dict[str, Any]:
        """What made this model's numbers: its name, revision, dtype and the world's prior."""
        return {
            "model": self.name,
            "model_revision": self.revision,
            "dtype": "float64",
            "world_prior": prior_name(self.prior),
        }

    def encode_image(self, image: Any, fit: str = "crop") -> torch.Tensor:
        """An image (path, PIL image or ``(3, 16, 16)`` tensor in [-1, 1]) as model input
        ``(1, 3, 16, 16)`` float64; a float64 tensor keeps its precision. Other sizes are fitted
        as ``images.load_image(image, 16, fit)`` fits them."""
        if torch.is_tensor(image) and tuple(image.shape) == (3, 16, 16):
            load_image(image, self.image_size)  # the same checks as any image
            return image.detach().to("cpu", torch.float64)[None]
        return load_image(image, self.image_size, fit).to(torch.float64)[None]

    def classify(self, images: torch.Tensor) -> list[Scene]:
        """The most probable scene for each image ``(n, 3, 16, 16)`` (the world's checker)."""
        z = images.to(torch.float64).flatten(1)
        ones = torch.ones(len(z), dtype=torch.float64)
        logpdf, _ = self._component_logpdf(z, ones, torch.zeros_like(ones), self.components(None))
        best = (logpdf + self.log_weights).argmax(1)
        return [self.labels[i] for i in best.tolist()]

    def fits(
        self, images: torch.Tensor, captions: list[str], relation: bool = True
    ) -> torch.Tensor:
        """Whether the checker's scene for each image fits its caption, ``(n,)`` bool.

        With ``relation=False`` only the objects count (how many, and the colour and shape of
        each), not where they are: "left of" drawn as "above" still fits.
        """
        out = []
        for scene, caption in zip(self.classify(images), captions, strict=True):
            parsed = parse(caption)
            if not relation:  # any layout and order of the mentioned objects
                parsed = Parsed(parsed.mentions, scene.layout, None)
            out.append(assignment(scene, parsed) is not None)
        return torch.tensor(out)
