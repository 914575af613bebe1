"""One loader for every model a command can name: a diffusers folder, a Hugging Face id in the
local cache, ``"bundled"`` (the shapes-world model shipped with the package), ``"exact"`` (the
world's exact model) or ``"exact-correlated"`` (the exact model of the world whose colours depend
on shapes); and the device it runs on."""

from __future__ import annotations

import hashlib
import warnings
from typing import Any

import torch

from .models.checks import check_device
from .models.diffusers import DiffusersModel
from .models.diffusers.load import check_dtype
from .models.diffusers.transformer import FLUX_GUIDANCE
from .results import versions
from .world.bundled_model import BUNDLED, BUNDLED_NAME
from .world.model import WorldModel

# The exact world models by name, and the prior over scenes of each.
EXACT_MODELS = {"exact": "plain", "exact-correlated": "correlated"}
# Every name load_model knows without a folder, with what it is (the CLI's help is built from it).
MODEL_NAMES = {
    "bundled": "the shapes-world model shipped with infodecomp",
    "exact": "the world's exact model",
    "exact-correlated": "the exact model of the world whose colours follow shapes",
}


def load_model(
    name: str,
    *,
    device: str | torch.device | None = "auto",
    dtype: torch.dtype | str | None = None,
    variant: str | None = None,
    image_size: int | None = None,
    guidance_scale: float = FLUX_GUIDANCE,
    compile: bool = False,
) -> DiffusersModel | WorldModel:
    """The model called ``name``, ready to measure.

    Args:
        name: ``"bundled"``, ``"exact"``, ``"exact-correlated"``, a diffusers pipeline folder or
            a Hugging Face id already in the local cache (nothing is downloaded; see the README
            for how weights get into a folder or the cache).
        device: ``"auto"`` (CUDA when torch sees a GPU, else the CPU), or a torch device.
        dtype: weights dtype (default float32; the exact model computes in float64 and takes
            none).
        variant: weights variant, e.g. ``"fp16"`` (default: found when it is the only one).
        image_size: image side in pixels (default: the model's own).
        guidance_scale: the guidance value fed to a guidance-distilled model such as Flux-dev.
        compile: the GPU path (:meth:`~infodecomp.models.DiffusersModel.accelerate`): fused
            attention, channels-last weights for a UNet and ``torch.compile`` of the network.
            Numbers agree to float rounding; the first calls compile (minutes), and calls
            that collect attention maps run uncompiled. The exact model has no network: a
            warning says it is ignored.

    Returns a :class:`~infodecomp.models.DiffusersModel`, or for ``"exact"`` the
    :class:`~infodecomp.world.model.WorldModel` on the bundled model's training schedule (its
    log-SNR range and DDIM grid), so that the world's two models compare like for like
    (``"exact-correlated"``: the same on the world's correlated prior, where each shape has a
    colour of its own 90% of the time: :func:`~infodecomp.world.scenes.scene_weights`). Raises
    ``ValueError`` (or :class:`~infodecomp.models.ModelNotFoundError`) with one line naming what
    is wrong.
    """
    if not isinstance(name, str) or not name.strip():
        named = ", ".join(repr(n) for n in MODEL_NAMES)
        raise ValueError(f"model must be {named}, a diffusers folder or a cached id, got {name!r}")
    device = resolve_device(device)
    if name in EXACT_MODELS:
        if check_dtype(dtype) not in (None, torch.float64):
            raise ValueError("the exact world model computes in float64: give no dtype")
        from diffusers import DDPMScheduler

        model = WorldModel(
            scheduler=DDPMScheduler.from_pretrained(BUNDLED / "scheduler"), prior=EXACT_MODELS[name]
        )
        model.revision = versions()["infodecomp"]
        if compile:
            warnings.warn(
                "compile: the exact world model is closed-form (no network): ignored",
                stacklevel=2,
            )
        return model
    bundled = name == "bundled"
    if bundled and not (BUNDLED / "model_index.json").exists():
        raise ValueError(f"the bundled model is missing from {BUNDLED}: reinstall infodecomp")
    model = DiffusersModel.from_pretrained(
        BUNDLED if bundled else name,
        torch_dtype=dtype or torch.float32,
        device=device,
        variant=variant,
        image_size=image_size,
        guidance_scale=guidance_scale,
    )
    if bundled:
        weights = BUNDLED / "unet" / "diffusion_pytorch_model.safetensors"
        model.name = BUNDLED_NAME
        model.revision = hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
    if compile:
        model.accelerate(compile=True)
    return model


def resolve_device(device: Any) -> str:
    """The torch device to run on: ``"auto"`` or ``None`` gives ``"cuda"`` when torch sees a
    GPU, else ``"cpu"``; any other name is checked here, before slow loading (``ValueError``
    with one line if this torch cannot run on it)."""
    if device is None or device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    check_device(device)  # one line if this torch cannot run on it
    return str(device)
