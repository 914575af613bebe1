"""Any diffusers text-to-image pipeline as a :class:`infodecomp.Denoiser`.

Supported families, each a thin adapter (``unet.py``, ``transformer.py``) over shared parts
(``schedules.py``: time; ``text.py``: prompts; ``attention.py``: the attention baseline):

* Stable Diffusion 1.x / 2.x (epsilon-, v- or sample-prediction, read from the scheduler config)
  and pixel-space UNets without a VAE; SDXL (two text encoders, pooled embeddings, time ids).
  Discrete variance-preserving timesteps: the network runs at the nearest training timestep.
* Stable Diffusion 3 / 3.5 and Flux: flow-matching transformers, continuous time, mapped exactly.

Conditions are prompt strings, :class:`PaddedPrompt` or ``None`` (the null condition).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from ...images import load_image
from ..checks import check_batch, check_device, check_finite, check_seed
from . import speed as fast
from .attention import AttentionCollector, capture
from .load import ModelNotFoundError, check_dtype, load_pipeline
from .text import PaddedPrompt, execution_device
from .transformer import FLUX_GUIDANCE, FluxNetwork, SD3Network
from .unet import UNetNetwork

__all__ = ["DiffusersModel", "ModelNotFoundError", "PaddedPrompt"]


class DiffusersModel:
    """A diffusers text-to-image pipeline exposed as a denoiser eps_hat(x_a, a | prompt).

    Build it with :meth:`from_pretrained` (offline: a local folder or the local Hugging Face
    cache) or :meth:`from_pipeline` (an already loaded pipeline).

    Attributes:
        family: ``"sd"``, ``"sdxl"``, ``"sd3"`` or ``"flux"``.
        data_shape: shape of one model input (latent or pixel), ``(C, h, w)``.
        image_size: side of the square RGB images the model takes, in pixels.
        logsnr_range: the log-SNR range of its training time.
        distilled: why the model is not an MMSE denoiser at every noise level (guidance- or
            timestep-distilled), or None. Its numbers are then not exact information.
        guidance_scale: the guidance value fed to a guidance-distilled model, else None.
    """

    def __init__(
        self,
        pipeline: Any,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        name: str | None = None,
        image_size: int | None = None,
        guidance_scale: float = FLUX_GUIDANCE,
        max_sequence_length: int | None = None,
    ) -> None:
        self.pipeline = pipeline
        check_device(device)
        guidance_scale = check_finite(guidance_scale, "guidance_scale")
        if device is not None or dtype is not None:
            pipeline.to(device=device, dtype=check_dtype(dtype))
        self.vae = getattr(pipeline, "vae", None)
        if getattr(pipeline, "transformer", None) is not None:
            from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

            transformer = pipeline.transformer
            if isinstance(transformer, SD3Transformer2DModel):
                self.network = SD3Network(pipeline, image_size, max_sequence_length)
            elif isinstance(transformer, FluxTransformer2DModel):
                self.network = FluxNetwork(
                    pipeline, image_size, max_sequence_length, guidance_scale
                )
            else:
                raise ValueError(
                    f"unsupported transformer {type(transformer).__name__} (supported: "
                    "SD3Transformer2DModel, FluxTransformer2DModel, and UNet pipelines)"
                )
        elif getattr(pipeline, "unet", None) is not None:
            self.network = UNetNetwork(pipeline, image_size)
        else:
            raise ValueError(
                f"{type(pipeline).__name__} has no unet or transformer: not a supported "
                "text-to-image pipeline"
            )
        self.family = self.network.family
        self.schedule = self.network.schedule
        self.logsnr_range = self.schedule.logsnr_range
        self.data_shape = self.network.data_shape
        self.image_size = self.network.image_size
        self.name = (
            name or getattr(pipeline.config, "_name_or_path", None) or type(pipeline).__name__
        )
        self.guidance_scale = getattr(self.network, "guidance_scale", None)
        self.distilled = distillation(self.name, self.family, self.guidance_scale)
        if self.distilled:
            warnings.warn(
                f"{self.name}: {self.distilled}; its numbers are not exact information",
                stacklevel=2,
            )
        if self.dtype == torch.bfloat16:
            warnings.warn(BFLOAT16_WARNING, stacklevel=2)
        self._collector: AttentionCollector | None = None
        self._collect_prompt: Any = None
        self.revision: str | None = None
        self.variant: str | None = None
        self.speed: dict[str, Any] = {"attention": None, "channels_last": False, "compile": None}

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | Path,
        *,
        torch_dtype: torch.dtype | str | None = None,
        dtype: torch.dtype | str | None = None,
        device: str | torch.device | None = None,
        variant: str | None = None,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        use_safetensors: bool | None = None,
        **kwargs: Any,
    ) -> DiffusersModel:
        """Load a diffusers pipeline from a local folder or the local Hugging Face cache (never
        downloads), in ``torch_dtype`` from the start (``dtype`` is the same), then wrap it.

        ``variant``: the weights' variant ("fp16"); found by itself when a folder holds only
        one. Other keyword arguments go to the constructor (``image_size``,
        ``guidance_scale``, ``max_sequence_length``). Raises :class:`ModelNotFoundError` if the
        model is not there and ``ValueError`` naming what is missing or broken.
        """
        if torch_dtype is not None and dtype is not None and torch_dtype != dtype:
            raise ValueError(f"torch_dtype={torch_dtype} and dtype={dtype} disagree: give one")
        check_device(device)  # before the (slow) load
        pipe, provenance = load_pipeline(
            path_or_id,
            torch_dtype=check_dtype(torch_dtype or dtype),
            variant=variant,
            revision=revision,
            cache_dir=cache_dir,
            use_safetensors=use_safetensors,
        )
        model = cls(pipe, device=device, name=str(path_or_id), **kwargs)
        model.revision, model.variant = provenance["revision"], provenance["variant"]
        return model

    @classmethod
    def from_pipeline(cls, pipeline: Any, **kwargs: Any) -> DiffusersModel:
        """Wrap an already loaded pipeline (keyword arguments as in the constructor)."""
        return cls(pipeline, **kwargs)

    def describe(self) -> dict[str, Any]:
        """What made this model's numbers: name, revision, variant, dtype, family, image size,
        and (where they apply) T5 tokens, the guidance value and why it is distilled."""
        return {
            "model": self.name,
            "model_revision": self.revision,
            "variant": self.variant,
            "dtype": str(self.dtype).removeprefix("torch."),
            "family": self.family,
            "image_size": self.image_size,
            "max_sequence_length": self.network.text.max_sequence_length or None,
            "guidance_scale": self.guidance_scale,
            "distilled": self.distilled,
        }

    @property
    def device(self) -> torch.device:
        """Where the network runs (the execution device under CPU offload)."""
        return execution_device(self.pipeline)

    @property
    def dtype(self) -> torch.dtype:
        return self.network.module.dtype

    @property
    def timestep_logsnr(self) -> torch.Tensor | None:
        """Log-SNR of each discrete training timestep (VP models), else None."""
        return getattr(self.schedule, "timestep_logsnr", None)

    @property
    def scheduler(self) -> Any:
        return self.pipeline.scheduler

    # --- the denoiser -------------------------------------------------------------------------
    def __call__(
        self, x_noisy: torch.Tensor, logsnr: torch.Tensor, conds: Sequence[Any]
    ) -> torch.Tensor:
        """eps_hat for noisy inputs ``(B, *data_shape)`` at log-SNRs ``(B,)``, conditioned on
        ``conds`` (one per row), in the dtype and device of ``x_noisy``."""
        check_batch(x_noisy, logsnr, conds, self.data_shape)
        if self._collector is not None:
            self._collector.rows = torch.tensor([c == self._collect_prompt for c in conds])
            self._collector.n_rows += int(self._collector.rows.sum())
        return self.schedule.denoise(self.network, x_noisy, logsnr, conds)

    # --- text ---------------------------------------------------------------------------------
    def check_prompt(self, prompt: str) -> None:
        """``ValueError`` with one line if the model cannot take ``prompt`` whole."""
        self.network.text.check(prompt)

    def token_positions(self, prompt: str, span: tuple[int, int]) -> list[int]:
        """Positions in the network's text sequence of the tokens of the characters ``span``."""
        return self.network.text.token_positions(prompt, span)

    # --- images -------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_image(self, image: Any, fit: str = "crop") -> torch.Tensor:
        """An image (path, PIL image, or tensor ``(3, H, W)`` in [-1, 1]) as model input
        ``(1, *data_shape)``: resized and centre-cropped to :attr:`image_size` (or squashed to it,
        ``fit="squash"``; see :func:`~infodecomp.images.prepare_image`), then encoded with the
        VAE's posterior mean, shifted and scaled as the pipeline does (pixel models take it as
        is)."""
        pixels = load_image(image, self.image_size, fit).to(self.device)
        if self.vae is None:
            return pixels[None].to(torch.float32)
        with self._vae_upcast() as dtype:
            latent = self.vae.encode(pixels[None].to(dtype)).latent_dist.mean
        shift = self.vae.config.get("shift_factor") or 0.0
        return ((latent - shift) * self.vae.config.scaling_factor).to(torch.float32)

    @torch.no_grad()
    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Model inputs ``(n, *data_shape)`` as images ``(n, 3, H, W)`` in [-1, 1] (through the
        VAE for latent models)."""
        if self.vae is not None:
            shift = self.vae.config.get("shift_factor") or 0.0
            with self._vae_upcast() as dtype:
                x = x.to(self.device, dtype) / self.vae.config.scaling_factor + shift
                x = self.vae.decode(x).sample
        return x.float().clamp(-1, 1).cpu()

    @contextlib.contextmanager
    def _vae_upcast(self) -> Iterator[torch.dtype]:
        """The VAE in float32 for the block where its config asks (``force_upcast``: SDXL's VAE
        overflows in float16), as diffusers' pipelines do; yields the dtype it runs in."""
        vae = self.vae
        if not (vae.dtype == torch.float16 and vae.config.get("force_upcast", False)):
            yield vae.dtype
            return
        vae.to(torch.float32)
        try:
            yield torch.float32
        finally:
            vae.to(torch.float16)

    @torch.no_grad()
    def generate(
        self, prompts: list[str], seed: int = 0, steps: int = 50, guidance_scale: float = 3.0
    ) -> torch.Tensor:
        """Images for ``prompts`` with DDIM in log-SNR and classifier-free guidance (the
        denoiser itself, any family), ``(n, 3, H, W)`` in [-1, 1]. Deterministic by ``seed``.
        For the pipeline's own sampler use :meth:`generate_with_pipeline`."""
        from ...ddim import guided, sample

        check_finite(guidance_scale, "guidance_scale")
        g = torch.Generator().manual_seed(check_seed(seed))
        noise = torch.randn(len(prompts), *self.data_shape, generator=g)
        x0 = sample(guided(self, guidance_scale), noise, prompts, steps)
        return self.decode(x0.to(torch.float32))

    def generate_with_pipeline(
        self,
        prompt: str,
        seed: int = 0,
        steps: int | None = None,
        guidance_scale: float | None = None,
    ) -> torch.Tensor:
        """One image through the pipeline's own ``__call__`` (its sampler and defaults; ``steps``
        and ``guidance_scale`` as given, else the pipeline's), ``(3, H, W)`` in [-1, 1], at
        :attr:`image_size`. Deterministic by ``seed`` (a CPU generator). A pixel-space pipeline
        without a VAE, which diffusers' ``__call__`` cannot run, goes through :meth:`generate`
        (50 DDIM steps, guidance 3 unless given)."""
        check_seed(seed)
        self.check_prompt(prompt)
        used = self.sampling_settings(steps, guidance_scale)
        if self.vae is None:
            return self.generate([prompt], seed, used["steps"], used["guidance_scale"])[0]
        kwargs: dict[str, Any] = {"height": self.image_size, "width": self.image_size}
        kwargs["num_inference_steps"] = used["steps"]
        if used["guidance_scale"] is not None:
            kwargs["guidance_scale"] = used["guidance_scale"]
        if self.family in ("sd3", "flux"):
            kwargs["max_sequence_length"] = self.network.text.max_sequence_length
        g = torch.Generator().manual_seed(seed)
        images = self.pipeline(prompt, generator=g, output_type="pt", **kwargs).images
        return (images[0].float().cpu() * 2 - 1).clamp(-1, 1)

    def sampling_settings(
        self, steps: int | None = None, guidance_scale: float | None = None
    ) -> dict[str, Any]:
        """What :meth:`generate_with_pipeline` samples with: ``{"sampler", "steps",
        "guidance_scale"}``, given values or the pipeline's defaults (a Flux that is not
        guidance-distilled takes no guidance: None)."""
        check_finite(guidance_scale, "guidance_scale")
        if self.vae is None:
            return {
                "sampler": "DDIM (no VAE)",
                "steps": 50 if steps is None else steps,
                "guidance_scale": 3.0 if guidance_scale is None else guidance_scale,
            }
        defaults = inspect.signature(type(self.pipeline).__call__).parameters
        if guidance_scale is None:
            guidance_scale = self.guidance_scale
            if guidance_scale is None and self.family != "flux":
                guidance_scale = defaults["guidance_scale"].default
        return {
            "sampler": "the pipeline's own",
            "steps": defaults["num_inference_steps"].default if steps is None else steps,
            "guidance_scale": guidance_scale,
        }

    # --- the GPU path -------------------------------------------------------------------------
    def accelerate(
        self,
        compile: bool = False,
        *,
        channels_last: bool | None = None,
        backend: Any = "inductor",
        mode: str | None = None,
        dynamic: bool | None = None,
    ) -> dict[str, Any]:
        """The network on the fast path (in place): fused (SDPA) attention processors where
        diffusers has classic ones, channels-last weights for a UNet (``channels_last=None``:
        for a UNet, not for a transformer) and, with ``compile=True``, ``torch.compile`` of the
        network (``backend``, ``mode`` and ``dynamic`` as torch.compile takes them). The numbers
        agree with the plain network's to float rounding.

        The first call of each input shape then compiles (tens of seconds to minutes on a GPU;
        a partial last batch once more); calls inside :meth:`collect_attention` run the
        uncompiled network (see :mod:`~infodecomp.models.diffusers.speed`). Returns (and keeps
        in :attr:`speed`) what is on: ``{"attention", "channels_last", "compile"}``."""
        module = self.network.module
        fast.fused_attention(module)
        if channels_last is None:
            channels_last = fast.is_convolutional(module)
        if channels_last:
            fast.channels_last(module)
        self.network.compiled = None
        if compile:
            self.network.compiled = fast.compiled(module, backend, mode, dynamic)
        self.speed = {
            "attention": fast.attention_kind(module),
            "channels_last": bool(channels_last),
            "compile": {"backend": getattr(backend, "__name__", backend), "mode": mode}
            if compile
            else None,
        }
        return self.speed

    # --- attention baseline -------------------------------------------------------------------
    @contextlib.contextmanager
    def collect_attention(self, prompt: Any) -> Iterator[AttentionCollector]:
        """Within this block, the text attention of every row conditioned on ``prompt`` is
        summed over heads and layers (cross-attention layers of a UNet, joint blocks of an
        MM-DiT; the layers of each resolution upsampled together to the input's), as in DAAM.
        The model's outputs are unchanged. Yields the collector: ``collector.token_maps()``
        gives the mean map per text position, shape ``(L, h, w)``.

        A compiled network (:meth:`accelerate`) runs uncompiled within the block: the maps are
        recorded inside the attention processors, which a compiled graph cannot do."""
        collector = AttentionCollector(self.data_shape[1:])
        net = self.network
        with capture(net.module, net.is_text_attention, net.text_attention, collector):
            self._collector, self._collect_prompt = collector, prompt
            eager, net.eager = net.eager, True
            try:
                yield collector
            finally:
                self._collector = self._collect_prompt = None
                net.eager = eager

    def default_batch_size(self, limit: int = 256) -> int:
        """Rows per network call: on CUDA, what fits in 70% of free memory (measured with one
        row); elsewhere about 2^18 input values per call (16 rows of SD latents), at most
        ``limit``."""
        if self.device.type != "cuda":
            return max(1, min(limit, 2**18 // math.prod(self.data_shape)))
        torch.cuda.reset_peak_memory_stats(self.device)
        before = torch.cuda.memory_allocated(self.device)
        probe = torch.zeros(1, *self.data_shape, device=self.device)
        self(probe, torch.zeros(1), [None])
        per_row = max(torch.cuda.max_memory_allocated(self.device) - before, 1)
        free, _ = torch.cuda.mem_get_info(self.device)
        return max(1, min(limit, int(0.7 * free / per_row)))


# Measured by benchmarks/gpu_check.py (H200, random weights at real size, same draws).
BFLOAT16_WARNING = (
    "bfloat16 biases information estimates upwards: the rounding noise of two network outputs is "
    "squared into the orthogonal integrand (SD 1.5: CMI +2.96 nats, 102 standard errors, against "
    "float32; float16 within 1.8); prefer float16 or float32"
)

# Names of released models trained or distilled away from plain MMSE denoising.
_TIMESTEP_DISTILLED = ("schnell", "turbo", "lightning", "hyper", "lcm", "-dmd")


def distillation(name: str, family: str, guidance_scale: float | None) -> str | None:
    """Why a model is not an MMSE denoiser at every noise level, or None.

    Guidance-distilled models (Flux-dev: a guidance embedding) learned the guided prediction;
    timestep-distilled ones (Flux-schnell, SD3.5-large-turbo, SDXL-turbo / -lightning, LCM)
    learned to jump in few steps. Neither is the conditional MMSE denoiser the I-MMSE relation
    needs. Found by the guidance embedding and by the usual names of released checkpoints.
    """
    lower = str(name).lower()
    if guidance_scale is not None:
        return f"guidance-distilled (a guidance embedding; guidance {guidance_scale:g} is used)"
    hit = next((k for k in _TIMESTEP_DISTILLED if k in lower), None)
    if hit:
        return f"looks timestep-distilled ({hit!r} in its name)"
    if family == "flux":
        return "a Flux model: the released Flux models are distilled, not flow-matching bases"
    return None
