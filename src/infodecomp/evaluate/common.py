"""What every evaluation shares: the models by name, model inputs, and the run's settings."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from ..batching import BatchedDenoiser, batched, unwrap
from ..explanation import Explanation, explain
from ..images import check_fit
from ..loading import load_model
from ..results import Estimate
from ..sampling import Sampling
from ..world.model import WorldModel


@dataclass
class EvalModel:
    """A model under evaluation: the denoiser and how it was made.

    Attributes:
        denoiser: a :class:`~infodecomp.models.DiffusersModel` or the exact :class:`WorldModel`.
        name: ``"bundled"``, ``"exact"``, ``"exact-correlated"`` or the diffusers path / id given.
        label: how tables name it.
        revision: weights revision (a hash for the bundled model, the package version for the
            exact model, the cached commit for a hub id), or ``None``.
        image_size: side of the square images it takes, in pixels.
    """

    denoiser: Any
    name: str
    label: str
    revision: str | None
    image_size: int

    @property
    def is_exact(self) -> bool:
        return isinstance(unwrap(self.denoiser), WorldModel)

    def input(self, image: Any, fit: str = "crop") -> torch.Tensor:
        """The model's input for an image, ``(1, *data_shape)``: the image as given for the exact
        model (float64, never clamped), VAE latents or pixels for a diffusers model. ``fit``:
        how an image of another size is brought to the model's (``"crop"`` or ``"squash"``, see
        :func:`~infodecomp.images.prepare_image`)."""
        if fit == "crop":  # every denoiser's default
            return self.denoiser.encode_image(image)
        return self.denoiser.encode_image(image, fit=check_fit(fit))

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "model_label": self.label, "model_revision": self.revision}

    def explain(
        self,
        key: str,
        image: Any,
        caption: str,
        words: list[str],
        sampling: Sampling,
        attention: bool = True,
    ) -> Explanation:
        """:func:`~infodecomp.explain` of the item (its MI, each word's CMI, maps and, for
        diffusers models, attention) on the item's draws (keyed by ``key``)."""
        return explain(
            self.denoiser,
            image,
            caption,
            words,
            sampling=sampling,
            attention=attention,
            key=key,
            progress=False,
        )

    def word_information(
        self, key: str, image: Any, caption: str, words: list[str], sampling: Sampling
    ) -> Estimate:
        """i(x; caption) (pair 0) and each word's i(x; word | rest) (pair k) with their maps
        (channels summed), on the item's draws: :meth:`explain` without attention."""
        return self.explain(key, image, caption, words, sampling, attention=False).estimate


def load_evaluated(
    name: str,
    device: str | None = "auto",
    dtype: torch.dtype | None = None,
    compile: bool = False,
) -> EvalModel:
    """The model called ``name`` (:func:`infodecomp.loading.load_model`) with how tables name
    it."""
    model = load_model(name, device=device, dtype=dtype, compile=compile)
    label = {
        "bundled": "bundled model",
        "exact": "exact world model",
        "exact-correlated": "exact correlated-world model",
    }.get(name, name)
    return EvalModel(model, name, label, model.revision, model.image_size)


def in_batches(model: Any) -> Any:
    """``model`` (an :class:`EvalModel`) with its denoiser wrapped so that the runner merges its
    calls across the items in flight (:mod:`infodecomp.batching`). Anything else (``None``, a
    test's stand-in that measures in its own way) is returned as it is: its items run one at a
    time."""
    if type(model) is EvalModel:
        return dataclasses.replace(model, denoiser=batched(model.denoiser))
    return model


def shared_denoisers(model: Any, reference: Any) -> dict[str, BatchedDenoiser]:
    """The batched denoisers of a task's models, by name, for :class:`~.runner.Task`."""
    named = {"model": model, "reference": reference}
    return {
        name: m.denoiser
        for name, m in named.items()
        if isinstance(getattr(m, "denoiser", None), BatchedDenoiser)
    }


def sampling_line(settings: dict[str, Any]) -> str:
    """The draws of a run's ``settings.json``, as its tables state them."""
    sampling = settings["sampling"]
    at_most = "at most " if settings.get("ranking") == "sequential" else ""
    return f"{at_most}{sampling['draws']} draws per item, seed {sampling['seed']}"
