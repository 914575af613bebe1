"""Speed, memory and low-precision agreement at real SD 1.5, SDXL, SD3 and Flux sizes, on a GPU.

Builds random-weight pipelines of SD 1.5 (512 px), SDXL, SD3-medium and Flux-dev (1024 px) from
configs written here (nothing is downloaded; the numbers of compute and memory are those of the
real models, the weights are not; the T5 of SD3 and Flux is as wide as T5-XXL but has 2 of its 24
layers: text embeddings are cached, their cost is not the one measured). For each pipeline and
dtype (float16, bfloat16) prints one row: denoiser rows per second, the automatic batch size
(``DiffusersModel.default_batch_size``), the wall time of one word's heat map
(``infodecomp.explain`` for one word of a 6-word prompt on a random image, at ``infodecomp
heatmap``'s default draws, attention maps included, as the command does) and peak GPU memory.
Then one row per pipeline of ``infodecomp.trace`` around a 4-step generation, and for SD 1.5 one
of ``explain`` under ``enable_model_cpu_offload()``. Last, float16 (and bfloat16) against float32
on the same weights, latent and seed: one CMI in each dtype and their difference in standard
errors (bfloat16 against float16 where the float32 weights do not fit the GPU).

    python benchmarks/gpu_check.py [--only sd15,sdxl,sd3,flux] [--device cuda] [--draws 256]
        [--budget 300] [--cap 60] [--small]

``--small`` runs tiny configs on any device (CPU here) with few draws: a test of the script.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import inspect
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from infodecomp.estimators import (
    MIN_ADAPTIVE_SAMPLES,
    PILOT_FRACTION,
    _stage_sizes,
    conditional_mutual_info,
)
from infodecomp.explanation import explain
from infodecomp.models.diffusers import DiffusersModel
from infodecomp.sampling import DEFAULT_DRAWS, Sampling
from infodecomp.tracing import trace
from infodecomp.world.train import build_tokenizer

PIPELINES = ("sd15", "sdxl", "sd3", "flux")
FLOW_TOKENS = {"sd3": 256, "flux": 512}  # T5 tokens: the pipelines' defaults (attention grows)
T5_LAYERS = 2  # of T5-XXL's 24: as wide (4096, the transformers' joint_attention_dim), cheap
LOW_DTYPES = (torch.float16, torch.bfloat16)
PROMPT = "a photo of a red dog"  # 6 words
WORD = "dog"
CONTEXT = "a photo of a red"  # the prompt without WORD: i(x; dog | a photo of a red)
WORDS = ("a", "photo", "of", "red", "dog", "blue", "cat", "square", "left", "above")
# `infodecomp heatmap --samples` defaults to the one default of draws (256), with attention maps.
HEATMAP_DRAWS: int = DEFAULT_DRAWS
SMALL_DRAWS = 16
SMALL_BATCH = 32  # --small: the automatic batch capped (CPU time), still 2+ calls a heat map
SMALL_SIZE, SMALL_TOKENS = 16, 16  # --small: image side of the flow models and their T5 tokens
CLIP_VOCAB = 49408  # CLIP's vocabulary: the embedding table's real size (our ids stay below)
T5_VOCAB = 32128  # T5's
TRANSFORMER_RATE_ROWS = 8  # a transformer's rows/s is timed at this many rows a call (see below)
MIN_SHARE = 10.0  # seconds: the least a heat map or float32 CMI is given (see --budget)
LATE_START = 90.0  # seconds past --budget after which no pipeline starts
TRACE_STEPS = 4
OFFLOAD_DRAWS, OFFLOAD_BATCH = 8, 24


# --- pipelines from configs ------------------------------------------------------------------
def _clip(tokenizer: Any, small: bool, width: int = 768, **real: Any) -> Any:
    """A CLIP text config: tiny, or ``width`` wide with the ``real`` sizes (CLIP-L by default)."""
    from transformers import CLIPTextConfig

    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "max_position_embeddings": tokenizer.model_max_length,
    }
    if small:
        sizes = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4}
        sizes |= {"num_hidden_layers": 2, "projection_dim": 32, "vocab_size": len(tokenizer)}
    else:
        sizes = {"hidden_size": width, "intermediate_size": 4 * width, "projection_dim": width}
        sizes |= {"num_attention_heads": 12, "num_hidden_layers": 12, "vocab_size": CLIP_VOCAB}
        sizes |= {"hidden_act": "quick_gelu", **real}
    return CLIPTextConfig(**sizes, **ids)


# OpenCLIP ViT-bigG/14's text tower (SDXL's and SD3's second encoder), with its projection.
CLIP_G = {"num_attention_heads": 20, "num_hidden_layers": 32, "hidden_act": "gelu"}


def _t5_tokenizer() -> Any:
    """A T5 (Unigram) tokenizer holding WORDS as single pieces; other words spelled out."""
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(f"▁{w}", -1.0) for w in WORDS] + [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    return T5TokenizerFast(vocab=vocab, extra_ids=0)


def _t5(tokenizer: Any, small: bool) -> Any:
    """A T5 encoder: tiny, or T5-XXL (v1.1) wide with T5_LAYERS layers."""
    from transformers import T5Config, T5EncoderModel

    ids = {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
    if small:
        sizes = {"vocab_size": len(tokenizer), "d_model": 32, "d_kv": 8, "d_ff": 37}
        sizes |= {"num_heads": 4, "relative_attention_num_buckets": 8}
    else:
        sizes = {"vocab_size": T5_VOCAB, "d_model": 4096, "d_kv": 64, "d_ff": 10240}
        sizes |= {"num_heads": 64, "feed_forward_proj": "gated-gelu"}
    return T5EncoderModel(T5Config(num_layers=2 if small else T5_LAYERS, **sizes, **ids))


def _unet_config(name: str, small: bool) -> dict[str, Any]:
    """UNet2DConditionModel configs of SD 1.5 and SDXL base (their unet/config.json sizes)."""
    if small:
        tiny = {"sample_size": 8, "layers_per_block": 1, "block_out_channels": (8, 16)}
        tiny |= {"down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D")}
        tiny |= {"up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D")}
        tiny |= {"norm_num_groups": 4, "attention_head_dim": 4, "cross_attention_dim": 32}
        if name == "sdxl":
            tiny |= {"cross_attention_dim": 64, "addition_embed_type": "text_time"}
            tiny |= {"addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 80}
        return tiny
    if name == "sd15":
        return {
            "sample_size": 64,  # 512 px
            "layers_per_block": 2,
            "block_out_channels": (320, 640, 1280, 1280),
            "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            "cross_attention_dim": 768,
            "attention_head_dim": 8,
            "norm_num_groups": 32,
        }
    return {
        "sample_size": 128,  # 1024 px
        "layers_per_block": 2,
        "block_out_channels": (320, 640, 1280),
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "transformer_layers_per_block": (1, 2, 10),
        "attention_head_dim": (5, 10, 20),  # diffusers' name for SDXL's head counts
        "use_linear_projection": True,
        "cross_attention_dim": 2048,  # 768 (CLIP-L) + 1280 (OpenCLIP bigG)
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 2816,  # 6 time ids * 256 + 1280 pooled
        "norm_num_groups": 32,
    }


def _transformer_config(name: str, small: bool) -> dict[str, Any]:
    """SD3Transformer2DModel (SD3-medium) and FluxTransformer2DModel (Flux-dev) configs."""
    if name == "sd3":
        if small:
            return {
                "sample_size": 8,
                "patch_size": 2,
                "in_channels": 4,
                "out_channels": 4,
                "num_layers": 2,
                "attention_head_dim": 8,
                "num_attention_heads": 4,
                "joint_attention_dim": 32,
                "caption_projection_dim": 32,
                "pooled_projection_dim": 64,
                "pos_embed_max_size": 8,
            }
        return {
            "sample_size": 128,  # 1024 px
            "patch_size": 2,
            "in_channels": 16,
            "out_channels": 16,
            "num_layers": 24,
            "attention_head_dim": 64,
            "num_attention_heads": 24,
            "joint_attention_dim": 4096,  # T5-XXL's width
            "caption_projection_dim": 1536,
            "pooled_projection_dim": 2048,  # 768 (CLIP-L) + 1280 (OpenCLIP bigG)
            "pos_embed_max_size": 192,
        }
    if small:
        return {
            "patch_size": 1,
            "in_channels": 16,  # 4 latent channels packed 2x2
            "num_layers": 1,
            "num_single_layers": 1,
            "attention_head_dim": 8,
            "num_attention_heads": 2,
            "joint_attention_dim": 32,
            "pooled_projection_dim": 32,
            "guidance_embeds": True,
            "axes_dims_rope": (4, 2, 2),
        }
    return {
        "patch_size": 1,
        "in_channels": 64,  # 16 latent channels packed 2x2
        "num_layers": 19,
        "num_single_layers": 38,
        "attention_head_dim": 128,
        "num_attention_heads": 24,
        "joint_attention_dim": 4096,  # T5-XXL's width
        "pooled_projection_dim": 768,  # CLIP-L
        "guidance_embeds": True,  # guidance-distilled, as Flux-dev
        "axes_dims_rope": (16, 56, 56),
    }


def _vae_config(name: str, small: bool) -> dict[str, Any]:
    """The AutoencoderKL configs: SD / SDXL (4 latent channels), SD3 / Flux (16; no quant convs,
    a shift). 8x downsampling at real sizes."""
    if small:
        blocks, groups, size = (8, 8), 4, 16
    else:
        blocks, groups, size = (128, 256, 512, 512), 32, 512 if name == "sd15" else 1024
    config = {
        "block_out_channels": blocks,
        "down_block_types": ("DownEncoderBlock2D",) * len(blocks),
        "up_block_types": ("UpDecoderBlock2D",) * len(blocks),
        "layers_per_block": 1 if small else 2,
        "latent_channels": 4,
        "norm_num_groups": groups,
        "sample_size": size,
        "scaling_factor": 0.18215 if name == "sd15" else 0.13025,
    }
    if name in FLOW_TOKENS:
        shift, scale = {"sd3": (0.0609, 1.5305), "flux": (0.1159, 0.3611)}[name]
        config |= {"latent_channels": 4 if small else 16, "use_quant_conv": False}
        config |= {"use_post_quant_conv": False, "shift_factor": shift, "scaling_factor": scale}
    return config


def _modules(name: str, small: bool, tokenizer: Any, t5_tokenizer: Any) -> dict[str, Any]:
    """The pipeline's networks, random (seeded by the caller), on the current default device."""
    from diffusers import (
        AutoencoderKL,
        FluxTransformer2DModel,
        SD3Transformer2DModel,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    parts = {"vae": AutoencoderKL(in_channels=3, out_channels=3, **_vae_config(name, small))}
    if name in ("sd15", "sdxl"):
        unet_config = _unet_config(name, small)
        parts["unet"] = UNet2DConditionModel(in_channels=4, out_channels=4, **unet_config)
        parts["text_encoder"] = CLIPTextModel(_clip(tokenizer, small))
        if name == "sdxl":
            big = _clip(tokenizer, small, 1280, **CLIP_G)
            parts["text_encoder_2"] = CLIPTextModelWithProjection(big)
    elif name == "sd3":  # CLIP-L and bigG (penultimate layers, pooled projections), then T5
        parts["transformer"] = SD3Transformer2DModel(**_transformer_config(name, small))
        parts["text_encoder"] = CLIPTextModelWithProjection(_clip(tokenizer, small))
        big = _clip(tokenizer, small, 1280, **CLIP_G)
        parts["text_encoder_2"] = CLIPTextModelWithProjection(big)
        parts["text_encoder_3"] = _t5(t5_tokenizer, small)
    else:  # flux: CLIP-L gives the pooled vector, T5 the tokens
        parts["transformer"] = FluxTransformer2DModel(**_transformer_config(name, small))
        parts["text_encoder"] = CLIPTextModel(_clip(tokenizer, small))
        parts["text_encoder_2"] = _t5(t5_tokenizer, small)
    return parts


def build(name: str, small: bool, device: str, dtype: torch.dtype = torch.float32) -> Any:
    """A seeded random-weight pipeline ``name``, its weights made on ``device`` in ``dtype``
    (``device="meta"``: shapes only, for counting)."""
    from diffusers import (
        DDPMScheduler,
        EulerDiscreteScheduler,
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        StableDiffusion3Pipeline,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
    )

    length = 16 if small else 77
    tokenizer, t5_tokenizer = build_tokenizer(WORDS, length), _t5_tokenizer()
    saved = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # weights made in dtype: no float32 copy first
    try:
        with torch.device(device):  # random init on the GPU: seconds, not minutes on the CPU
            torch.manual_seed(0)
            parts = _modules(name, small, tokenizer, t5_tokenizer)
    finally:
        torch.set_default_dtype(saved)
    # Buffers some constructors make on the CPU whatever the default device (SD3's positions).
    parts = {k: m.to(device).eval() for k, m in parts.items()}
    parts["tokenizer"] = tokenizer
    betas = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
    if name == "sd15":
        return StableDiffusionPipeline(
            **parts,
            scheduler=DDPMScheduler(
                prediction_type="epsilon", clip_sample=False, steps_offset=1, **betas
            ),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    if name == "sdxl":
        return StableDiffusionXLPipeline(
            **parts,
            tokenizer_2=build_tokenizer(WORDS, length),
            scheduler=EulerDiscreteScheduler(steps_offset=1, **betas),
        )
    if name == "sd3":
        return StableDiffusion3Pipeline(
            **parts,
            tokenizer_2=build_tokenizer(WORDS, length),
            tokenizer_3=t5_tokenizer,
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        )
    return FluxPipeline(  # Flux-dev's scheduler: the shift grows with the image's token count
        **parts,
        tokenizer_2=t5_tokenizer,
        scheduler=FlowMatchEulerDiscreteScheduler(
            shift=3.0,
            use_dynamic_shifting=True,
            base_shift=0.5,
            max_shift=1.15,
            base_image_seq_len=256,
            max_image_seq_len=4096,
        ),
    )


def model_settings(name: str, small: bool) -> dict[str, Any]:
    """``DiffusersModel`` arguments: the flow models' image size and T5 tokens (the pipelines'
    defaults at real sizes; tiny with --small), nothing for the UNets (their config says)."""
    if name not in FLOW_TOKENS:
        return {}
    if small:
        return {"image_size": SMALL_SIZE, "max_sequence_length": SMALL_TOKENS}
    return {"image_size": 1024, "max_sequence_length": FLOW_TOKENS[name]}


def networks(pipe: Any) -> list[Any]:
    """The pipeline's torch modules."""
    return [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]


def float32_unfit(name: str, small: bool, dev: Device) -> str | None:
    """Why ``name``'s float32 weights do not fit the GPU's free memory (with room for a few rows),
    or None where they do (or off CUDA). Counted on the meta device: nothing is allocated."""
    if not dev.cuda:
        return None
    gib = sum(p.numel() for m in networks(build(name, small, "meta")) for p in m.parameters())
    gib *= 4 / 2**30
    free = torch.cuda.mem_get_info(dev.device)[0] / 2**30
    if 1.1 * gib + 4 <= free:
        return None
    return f"float32 weights ({gib:.1f} GiB) do not fit in {free:.1f} GiB free"


def describe(name: str, model: DiffusersModel, seconds: float) -> str:
    """One line: the built pipeline's parameter counts and input size."""

    def millions(*modules: Any) -> str:
        return f"{sum(p.numel() for m in modules for p in m.parameters()) / 1e6:.1f}M"

    pipe = model.pipeline
    texts = [pipe.text_encoder, getattr(pipe, "text_encoder_2", None)]
    texts = [m for m in [*texts, getattr(pipe, "text_encoder_3", None)] if m is not None]
    unet = getattr(pipe, "unet", None)
    kind, net = ("UNet", unet) if unet is not None else ("transformer", pipe.transformer)
    c, h, w = model.data_shape
    extra = ""
    if model.family in ("sd3", "flux"):
        t5 = texts[-1].config
        layers = f"{t5.num_layers} of T5-XXL's 24" if t5.d_model == 4096 else t5.num_layers
        extra = f", {model.network.text.max_sequence_length} T5 tokens (T5 {t5.d_model} wide, "
        extra += f"{layers} layers)"
    if model.guidance_scale is not None:
        extra += f"; guidance-distilled as Flux-dev: guidance {model.guidance_scale:g} fed"
    return (
        f"  ({name} built in {seconds:.1f} s: {kind} {millions(net)}, text encoders "
        f"{millions(*texts)}, VAE {millions(pipe.vae)} parameters; latents {c}x{h}x{w}, "
        f"{model.image_size} px{extra})"
    )


# --- measurements ----------------------------------------------------------------------------
class Device:
    """Synchronisation and memory statistics of one torch device (no-ops off CUDA)."""

    def __init__(self, name: str) -> None:
        self.device = torch.device(name)
        self.cuda = self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gib(self) -> float | None:
        return torch.cuda.max_memory_allocated(self.device) / 2**30 if self.cuda else None

    def timed(self, function: Callable[[], Any]) -> tuple[Any, float]:
        self.sync()
        start = time.perf_counter()
        out = function()
        self.sync()
        return out, time.perf_counter() - start

    def label(self) -> str:
        if self.cuda:
            props = torch.cuda.get_device_properties(self.device)
            return f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
        return f"{self.device.type} ({platform.machine()}, threads: {torch.get_num_threads()})"


class Clock:
    """The run's time: each heat map and float32 CMI gets an equal share of what is left of
    --budget among those left (at most --cap, at least MIN_SHARE seconds)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.start = time.perf_counter()
        self.budget, self.cap = args.budget, args.cap
        self.left = 0  # heat maps and float32 CMIs still to come, this one included

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def share(self) -> float:
        """Seconds for the next heat map or float32 CMI (then counted as done)."""
        seconds = (self.budget - self.elapsed()) / max(self.left, 1)
        self.left = max(self.left - 1, 0)
        return min(self.cap, max(MIN_SHARE, seconds))


@contextlib.contextmanager
def ieee_float32() -> Iterator[None]:
    """True float32 matrix products and convolutions (no TF32) within the block."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def random_image(size: int) -> torch.Tensor:
    return torch.rand(3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


def rows_per_second(
    model: DiffusersModel, dev: Device, batch: int, calls: int, max_seconds: float = 10.0
) -> float:
    """Denoiser rows per second at ``batch`` rows per call: one warm-up call, then ``calls``
    timed calls (fewer once ``max_seconds`` have passed; at least one)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *model.data_shape, generator=g).to(dev.device)
    logsnr = torch.linspace(-6.0, 6.0, batch)
    conds = [(PROMPT, None, CONTEXT)[i % 3] for i in range(batch)]  # as explain's batches
    model(x, logsnr, conds)
    dev.sync()
    done, start = 0, time.perf_counter()
    while done < calls and (done == 0 or time.perf_counter() - start < max_seconds):
        model(x, logsnr, conds)
        dev.sync()
        done += 1
    return done * batch / (time.perf_counter() - start)


def rate_rows(model: DiffusersModel, batch: int) -> int:
    """Rows a call at which rows/s is timed: the batch for a UNet; for a transformer at most
    TRANSFORMER_RATE_ROWS: its thousands of tokens a row make every product large already at a
    few rows, and its full-batch calls take tens of seconds each."""
    if getattr(model.pipeline, "unet", None) is not None:
        return batch
    return min(batch, TRANSFORMER_RATE_ROWS)


def draw_units(draws: int) -> int:
    """Draws an estimate evaluates for ``draws`` asked for: the estimator adds
    ``Sampling.edge_draws`` at each end of the log-SNR range."""
    return Sampling(draws=draws).rows(1)


def fitted_draws(draws: int, rows_per_draw: int, rate: float, cap: float) -> int:
    """``draws``, or fewer (even, at least 4) if they would take longer than ``cap`` seconds at
    ``rate`` rows per second (the draws at the range's ends counted)."""
    fitted = min(draws, int(cap * rate / rows_per_draw))
    while fitted > 4 and draw_units(fitted) * rows_per_draw / rate > cap:
        fitted -= 1
    return draws if fitted >= draws else max(4, fitted // 2 * 2)


def full_batch_draws(draws: int, batch: int) -> int:
    """The fewest draws (even, at least 4, at most ``draws``) whose heat map makes one call of a
    full ``batch``: its peak memory is that of the automatic batch (attention maps included)."""
    fewest = 4
    while fewest < draws and 3 * largest_stage(fewest) < batch:  # prompt, null, context
        fewest += 2
    return min(draws, fewest)


def largest_stage(draws: int) -> int:
    """The most draws the estimator evaluates together (in calls of the batch size) for
    ``draws`` asked for: all of them, or past a pilot, its adaptive stages' largest."""
    if draws < MIN_ADAPTIVE_SAMPLES:
        return draws
    return max(_stage_sizes(draws - max(8, draws // PILOT_FRACTION), True))


@dataclass
class Row:
    pipeline: str
    dtype: str
    rate: float = math.nan
    batch: int = 0
    heat_s: float = math.nan
    heat_draws: int = 0
    extrapolated_from: int | None = None
    peak: float | None = None
    cmi: tuple[float, float] = (math.nan, math.nan)
    note: str = ""

    def __str__(self) -> str:
        if self.note and not self.batch:
            return f"{self.pipeline:<9}{self.dtype:<10}{self.note}"
        heat = f"{self.heat_s:.2f} ({self.heat_draws})"
        if self.extrapolated_from is not None:
            heat = f"~{self.heat_s:.2f}* ({self.heat_draws})"
        peak = "n/a" if self.peak is None else f"{self.peak:.2f}"
        return (
            f"{self.pipeline:<9}{self.dtype:<10}{self.rate:>10.1f}{self.batch:>7}{heat:>20}"
            f"{peak:>10}{self.cmi[0]:>12.4f} ± {self.cmi[1]:.4f}"
            + (f"   {self.note}" if self.note else "")
        )


HEADER = (
    f"{'pipeline':<9}{'dtype':<10}{'rows/s':>10}{'batch':>7}{'heat map s (draws)':>20}"
    f"{'peak GiB':>10}{'heat-map CMI nats ± SE':>25}"
)


def measure_row(
    name: str, model: DiffusersModel, dev: Device, args: argparse.Namespace, clock: Clock
) -> Row:
    """One table row: throughput, automatic batch size, heat-map time and peak memory."""
    dtype = _label(model.dtype)
    row = Row(name, dtype)
    dev.free()
    row.batch = model.default_batch_size(limit=batch_limit(args))
    timed_rows = rate_rows(model, row.batch)
    row.rate = rows_per_second(model, dev, timed_rows, args.calls)
    image = random_image(model.image_size)
    notes = [] if timed_rows == row.batch else [f"rows/s timed at {timed_rows} rows a call"]
    draws = fitted_draws(args.draws, 3, row.rate, clock.share())  # prompt, null and context
    # At least one call of the full batch, for its peak memory, unless that takes over --cap.
    full = full_batch_draws(args.draws, row.batch)
    if draw_units(full) * 3 / row.rate <= args.cap:
        draws = max(draws, full)
    elif 3 * largest_stage(draws) < row.batch:
        notes.append(f"calls of at most {3 * largest_stage(draws)} rows: peak below the batch's")
    batch = row.batch

    def heat_map() -> Any:
        return explain(
            model,
            image,
            PROMPT,
            [WORD],
            progress=False,
            sampling=Sampling(draws=draws, seed=0, batch_size=batch),
        )

    while True:  # out of memory: the command would fail alike; say so, then halve the batch
        try:
            result, seconds = dev.timed(heat_map)
            break
        except torch.cuda.OutOfMemoryError:
            if batch == 1:
                raise
        dev.free()  # past the except block: its traceback no longer holds the call's tensors
        batch = max(1, batch // 2)
    if batch != row.batch:
        notes.append(f"heat map out of memory at batch {row.batch}; timed at {batch}")
    # Linear in denoiser rows, the range's end draws included.
    row.heat_draws = args.draws
    row.heat_s = seconds * draw_units(args.draws) / draw_units(draws)
    row.extrapolated_from = None if draws == args.draws else draws
    if row.extrapolated_from is not None:
        notes.append(f"* measured with {draws} draws")
    row.note = "; ".join(notes)
    row.cmi = result.cmi(WORD)
    row.peak = dev.peak_gib()
    return row


@dataclass
class Ratio:
    """Rows/s inside the estimator over rows/s of a bare loop of the same network calls (same
    batch, dtype and network: plain, or compiled), measured in one run."""

    pipeline: str
    dtype: str
    network: str  # "plain", or "compiled (backend)"
    batch: int
    draws: int
    estimator_rate: float
    bare_rate: float
    fill: float  # rows per network call / batch, inside the estimator
    first_call_s: float  # the bare loop's first call (the compile, when compiled)

    def __str__(self) -> str:
        return (
            f"{self.pipeline:<9}{'ratio':<10}{self.dtype:<10}{self.network:<22}batch "
            f"{self.batch:<5}draws {self.draws:<5}estimator {self.estimator_rate:.1f} rows/s, "
            f"bare {self.bare_rate:.1f} rows/s: ratio {self.estimator_rate / self.bare_rate:.3f}"
            f" (fill {self.fill:.2f}; first call {self.first_call_s:.1f} s)"
        )


def network_call(model: DiffusersModel, batch: int) -> tuple[tuple, dict[str, Any]]:
    """The arguments of one network call of ``batch`` rows as the model makes it (rows of the
    prompt, the null condition and the context, as an estimate's), captured on the way in."""
    captured: list[tuple[tuple, dict[str, Any]]] = []

    def hook(module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
        captured.append((args, dict(kwargs)))

    handle = model.network.module.register_forward_pre_hook(hook, with_kwargs=True)
    eager, model.network.eager = model.network.eager, True  # the hook sees the plain call
    try:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, *model.data_shape, generator=g)
        conds = [(PROMPT, None, CONTEXT)[i % 3] for i in range(batch)]
        model(x, torch.linspace(-6.0, 6.0, batch), conds)
    finally:
        handle.remove()
        model.network.eager = eager
    return captured[0]


def bare_rate(model: DiffusersModel, dev: Device, batch: int, calls: int) -> tuple[float, float]:
    """Rows/s of a bare loop of network calls of ``batch`` rows (inputs made once: no text
    encoding, no noise, no estimator), with the model's network (compiled if it is), and the
    seconds of its first call."""
    args, kwargs = network_call(model, batch)
    runner = model.network.runner()
    with torch.no_grad():
        _, first = dev.timed(lambda: runner(*args, **kwargs))
        runner(*args, **kwargs)
        dev.sync()
        start = time.perf_counter()
        for _ in range(calls):
            runner(*args, **kwargs)
        dev.sync()
    return calls * batch / (time.perf_counter() - start), first


def estimator_rate(
    model: DiffusersModel, dev: Device, batch: int, draws: int
) -> tuple[float, float]:
    """Rows/s inside ``conditional_mutual_info`` (i(x; WORD | CONTEXT), ``draws`` draws, calls
    of at most ``batch`` rows) and the mean fill of its calls. A first, untimed run compiles
    every shape it makes; the timed run encodes its text afresh."""
    x = model.encode_image(random_image(model.image_size))
    run = {"sampling": Sampling(draws=draws, seed=0, batch_size=batch), "progress": False}
    conditional_mutual_info(model, x, PROMPT, CONTEXT, **run)
    schedule, counts = model.schedule, [0, 0]
    denoise = schedule.denoise

    def counted(network: Any, x_noisy: torch.Tensor, *rest: Any) -> torch.Tensor:
        counts[0] += 1
        counts[1] += len(x_noisy)
        return denoise(network, x_noisy, *rest)

    schedule.denoise = counted
    model.network.text._cache.clear()
    try:
        _, seconds = dev.timed(lambda: conditional_mutual_info(model, x, PROMPT, CONTEXT, **run))
    finally:
        del schedule.denoise
    calls, rows = counts
    return rows / seconds, rows / (calls * batch)


def ratio_rows(
    name: str, model: DiffusersModel, dev: Device, args: argparse.Namespace, clock: Clock
) -> list[Ratio | str]:
    """The ratio with the plain network and (for the pipelines of --compile-on) with the
    network compiled as ``--compile`` does (channels-last for a UNet, torch.compile with
    --compile-backend), at the automatic batch size (a transformer's: at most
    TRANSFORMER_RATE_ROWS, as its rows/s)."""
    out: list[Ratio | str] = []
    dtype = _label(model.dtype)
    # A transformer's full-batch calls take tens of seconds: both sides at TRANSFORMER_RATE_ROWS.
    batch = rate_rows(model, model.default_batch_size(limit=batch_limit(args)))
    variants = [False] + ([True] if name in args.compile_on else [])
    for compile_it in variants:
        label = f"compiled ({args.compile_backend})" if compile_it else "plain"
        try:
            if compile_it:
                model.accelerate(compile=True, backend=args.compile_backend)
            bare, first = bare_rate(model, dev, batch, args.calls)
            draws = fitted_draws(args.draws, 2, bare, clock.share())  # cond and context
            rate, fill = estimator_rate(model, dev, batch, draws)
            out.append(Ratio(name, dtype, label, batch, draws, rate, bare, fill, first))
        except Exception as err:
            out.append(f"{name:<9}{'ratio':<10}{dtype:<10}{label:<22}failed: {_first_line(err)}")
        finally:
            dev.free()
    torch._dynamo.reset()
    return out


def trace_check(name: str, pipe: Any, dev: Device, settings: dict[str, Any]) -> str:
    """One line: ``infodecomp.trace`` around a TRACE_STEPS-step generation by the pipeline itself
    at the model's size, and the traced heat map of WORD (or the one-line error)."""
    tag = f"{name:<9}{'trace':<10}"
    try:
        size = DiffusersModel.from_pipeline(pipe, **settings).image_size
        extra = {"height": size, "width": size, "num_inference_steps": TRACE_STEPS}
        if "max_sequence_length" in settings:
            extra["max_sequence_length"] = settings["max_sequence_length"]
        pipe.set_progress_bar_config(disable=True)
        with trace(pipe, **settings) as tc:
            generator = torch.Generator().manual_seed(0)
            _, seconds = dev.timed(
                lambda: pipe(PROMPT, generator=generator, output_type="pt", **extra)
            )
        heat = tc.heat_map(WORD)
        dtype = _label(tc.model.dtype)
        return (
            f"{tag}{TRACE_STEPS}-step generation at {size} px ({dtype}) in {seconds:.1f} s; "
            f"latent {tuple(tc.latent.shape[1:])}, heat map of {WORD!r} {tuple(heat.shape)} "
            f"from {tc.attention.n_rows} attention rows, "
            f"{'finite' if bool(heat.isfinite().all()) else 'NOT finite'}"
        )
    except Exception as err:
        return f"{tag}failed: {_first_line(err)}"


def offload_check(name: str, pipe: Any, dev: Device, settings: dict[str, Any]) -> str:
    """One line: the prompt's MI from ``explain`` with the pipeline under
    ``enable_model_cpu_offload()`` against the same run without it (same weights, dtype, image,
    draws, seed and batch: equal up to float rounding), or the one-line error."""
    tag = f"{name:<9}{'offload':<10}"

    def mi() -> tuple[float, float]:  # a fresh model: no text embeddings cached
        model = DiffusersModel.from_pipeline(pipe, **settings)
        image = random_image(model.image_size)
        run = Sampling(draws=OFFLOAD_DRAWS, batch_size=OFFLOAD_BATCH)
        return explain(model, image, PROMPT, [WORD], progress=False, sampling=run).mi

    try:
        dtype = _label(pipe.dtype)
        plain = mi()
        pipe.enable_model_cpu_offload(device=dev.device)
        try:
            offloaded, seconds = dev.timed(mi)
        finally:
            pipe.remove_all_hooks()
        return (
            f"{tag}explain() under enable_model_cpu_offload(device={dev.device.type!r}) "
            f"({dtype}, {OFFLOAD_DRAWS} draws, batch {OFFLOAD_BATCH}): MI {offloaded[0]:.6f} vs "
            f"{plain[0]:.6f} without, diff {offloaded[0] - plain[0]:.1e} (SE {plain[1]:.4f}); "
            f"{seconds:.1f} s"
        )
    except Exception as err:
        return f"{tag}failed: {_first_line(err)}"


@dataclass
class Agreement:
    pipeline: str
    high_dtype: str
    low: str
    draws: int
    high: tuple[float, float]
    value: tuple[float, float]

    def __str__(self) -> str:
        (v32, s32), (v, s) = self.high, self.value
        diff = v - v32
        in_se = diff / s32 if s32 > 0 else math.nan
        return (
            f"{self.pipeline:<9}{f'{self.high_dtype} vs {self.low}':<20}{self.draws:>6}"
            f"{v32:>12.4f} ± {s32:<8.4f}{v:>10.4f} ± {s:<8.4f}{diff:>11.2e}{in_se:>9.2f}"
        )


AGREEMENT_HEADER = (
    f"{'pipeline':<9}{'dtypes':<20}{'draws':>6}{'reference CMI ± SE':>23}{'low CMI ± SE':>21}"
    f"{'diff':>11}{'diff/SE':>9}"
)


@dataclass
class Reference:
    """The high-precision side of the agreement: its dtype (float32 unless it does not fit), the
    latent, the estimator's settings, the CMI."""

    dtype: torch.dtype
    x: torch.Tensor
    run: dict[str, Any]
    value: tuple[float, float]


def reference(
    pipe: Any,
    dev: Device,
    args: argparse.Namespace,
    cap: float,
    dtype: torch.dtype = torch.float32,
    settings: dict[str, Any] | None = None,
) -> Reference:
    """i(x; WORD | CONTEXT) with ``pipe`` in ``dtype`` (float32: no TF32) for a random image's
    latent (encoded in that dtype), at the heat-map draws (fewer if over ``cap`` seconds) and
    seed 0."""
    with ieee_float32():
        high = DiffusersModel.from_pipeline(pipe, device=dev.device, dtype=dtype, **settings or {})
        x = high.encode_image(random_image(high.image_size))
        batch = high.default_batch_size(limit=batch_limit(args))
        # A few rows suffice to size the draws (a float32 transformer row takes seconds).
        probe = min(batch, 8 if getattr(pipe, "unet", None) is not None else 2)
        rate = rows_per_second(high, dev, probe, 1)
        draws = fitted_draws(args.draws, 2, rate, cap)  # cond and context per draw
        # A fixed proposal: an adaptive one would be fitted to each dtype's own integrand, and the
        # difference would no longer be a paired one.
        run = {
            "sampling": Sampling(draws=draws, batch_size=batch, adaptive=False),
            "progress": False,
        }
        value = _pair(conditional_mutual_info(high, x, PROMPT, CONTEXT, **run))
    return Reference(dtype, x, run, value)


def compare(name: str, model: DiffusersModel, ref: Reference) -> Agreement | str:
    """The reference's CMI with ``model`` (the same weights in a lower precision): same latent,
    draws, seed and batch size."""
    label = _label(model.dtype)
    high = _label(ref.dtype)
    try:
        value = _pair(conditional_mutual_info(model, ref.x, PROMPT, CONTEXT, **ref.run))
    except Exception as err:  # e.g. a kernel this device lacks in float16
        return f"{name:<9}{f'{high} vs {label}':<20}failed: {_first_line(err)}"
    return Agreement(name, high, label, ref.run["sampling"].draws, ref.value, value)


def _pair(estimate: Any) -> tuple[float, float]:
    return estimate.value.flatten()[0].item(), estimate.stderr.flatten()[0].item()


def _label(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"[:160]


def batch_limit(args: argparse.Namespace) -> int:
    """The cap on the automatic batch size: the library's default, or 32 rows with --small."""
    return (
        SMALL_BATCH
        if args.small
        else inspect.signature(DiffusersModel.default_batch_size).parameters["limit"].default
    )


# --- the script ------------------------------------------------------------------------------
def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny configs, few draws (a test)")
    parser.add_argument("--device", help="torch device (default cuda if available, else cpu)")
    parser.add_argument("--draws", type=int, help=f"draws (default {HEATMAP_DRAWS}, --small 16)")
    parser.add_argument("--only", default=",".join(PIPELINES), help="e.g. sd3,flux (default all)")
    parser.add_argument("--calls", type=int, help="timed denoiser calls per row (default 3)")
    parser.add_argument(
        "--cap",
        type=float,
        default=60.0,
        help="seconds per heat map or float32 CMI before "
        "fewer draws are run (heat-map time then extrapolated, marked *; default 60)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=300.0,
        help="seconds (default 300) the heat maps and float32 CMIs are fitted to: each gets an "
        f"equal share of what is left of it (at most --cap, at least {MIN_SHARE:.0f} s); no "
        f"pipeline starts {LATE_START:.0f} s past it. Builds, rows/s, the low-precision CMIs and "
        "the trace rows come on top: a full run on an H100 / H200, estimated at 6 to 8 minutes",
    )
    parser.add_argument(
        "--compile-on",
        default="sd15",
        help="pipelines whose estimator/bare-loop ratio is also measured compiled (default "
        "sd15: compiling a network takes minutes at real size; 'none' for none)",
    )
    parser.add_argument(
        "--compile-backend",
        help="torch.compile backend of the compiled ratio (default inductor; eager with --small: "
        "inductor takes a minute a shape on a CPU)",
    )
    parser.add_argument(
        "--ratio-only",
        action="store_true",
        help="only the estimator/bare-loop ratio rows (in float16 on a GPU), nothing else",
    )
    args = parser.parse_args(argv)
    args.compile_on = [p.strip() for p in args.compile_on.split(",") if p.strip() != "none"]
    if args.compile_backend is None:
        args.compile_backend = "eager" if args.small else "inductor"
    args.only = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in args.only if p not in PIPELINES]
    if unknown:
        parser.error(f"--only: unknown {unknown}; choose from {','.join(PIPELINES)}")
    if args.draws is None:
        args.draws = SMALL_DRAWS if args.small else HEATMAP_DRAWS
    if args.calls is None:
        args.calls = 1 if args.small else 3
    if args.draws < 4:
        parser.error("--draws must be at least 4")
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return args


def check_pipeline(
    name: str, dev: Device, args: argparse.Namespace, clock: Clock, agreements: list[Any]
) -> None:
    """The rows of one pipeline: per dtype, its row (and the agreement with the reference);
    after the last, the trace row (and for SD 1.5 the offload row)."""
    settings = model_settings(name, args.small)
    ratio_dtype = torch.float16 if dev.cuda else torch.bfloat16  # bfloat16 runs on any CPU
    if args.ratio_only:
        pipe, seconds = dev.timed(lambda: build(name, args.small, args.device, ratio_dtype))
        model = DiffusersModel.from_pipeline(pipe, **settings)
        print(describe(name, model, seconds))
        for line in ratio_rows(name, model, dev, args, clock):
            print(line, flush=True)
        pipe = model = None
        dev.free()
        return
    unfit = float32_unfit(name, args.small, dev)
    high = torch.float32 if unfit is None else torch.bfloat16  # the reference's dtype
    if unfit is not None:
        print(f"  ({name}: {unfit}: the reference CMI is bfloat16's, compared with float16)")
    ref: Reference | None = None
    for i, dtype in enumerate(LOW_DTYPES):
        label = _label(dtype)
        pipe = model = None
        try:
            dev.free()
            # The seeded build gives the same weights each time (float32 unless they do not fit).
            pipe, seconds = dev.timed(lambda: build(name, args.small, args.device, high))
            if i == 0:
                print(describe(name, DiffusersModel.from_pipeline(pipe, **settings), seconds))
                try:
                    ref = reference(pipe, dev, args, clock.share(), high, settings)
                except Exception as err:
                    agreements.append(f"{name:<9}{_label(high)} CMI failed: {_first_line(err)}")
            model = DiffusersModel.from_pipeline(pipe, dtype=dtype, **settings)  # cast in place
            if ref is not None and dtype != ref.dtype:
                agreements.append(compare(name, model, ref))
            print(measure_row(name, model, dev, args, clock), flush=True)
            if dtype == ratio_dtype:  # last: it may compile the network and make it channels-last
                for line in ratio_rows(name, model, dev, args, clock):
                    print(line, flush=True)
        except Exception as err:  # e.g. float16 kernels missing on this CPU: say why
            print(f"{name:<9}{label:<10}skipped: {_first_line(err)}", flush=True)
        if i == len(LOW_DTYPES) - 1 and pipe is not None:
            model = None
            dev.free()
            print(trace_check(name, pipe, dev, settings), flush=True)
            if name == "sd15":
                print(offload_check(name, pipe, dev, settings), flush=True)
        pipe = model = None
        dev.free()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    clock = Clock(args)
    dev = Device(args.device)
    if dev.device.type == "cpu" and not args.small:
        print(
            "gpu_check: refusing real Stable Diffusion sizes on the CPU (hours); run it on a "
            "GPU, or add --small for tiny configs",
            file=sys.stderr,
        )
        return 2
    if dev.cuda and not torch.cuda.is_available():
        print(f"gpu_check: device {args.device!r} but this torch has no CUDA", file=sys.stderr)
        return 2
    if args.small and not dev.cuda:
        torch.set_num_threads(1)  # tiny models: one thread is as fast, and robust to a busy CPU
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Flux-dev's config is guidance-distilled, said once in its description line.
    warnings.filterwarnings("ignore", message=".*not exact information")
    sizes = f"real sizes, random weights (T5: {T5_LAYERS} layers)"
    if args.small:
        sizes = f"tiny configs (--small), batch at most {SMALL_BATCH}"
    print(
        f"gpu_check: torch {torch.__version__}, diffusers {diffusers.__version__}, transformers "
        f"{transformers.__version__}; device {dev.label()}; {sizes}; heat map: 1 word of "
        f"{PROMPT!r}, {args.draws} draws, attention on; budget {args.budget:.0f} s, cap "
        f"{args.cap:.0f} s; compiled ratio: {','.join(args.compile_on) or 'none'} "
        f"({args.compile_backend})",
        flush=True,
    )
    print(HEADER)
    agreements: list[Agreement | str] = []
    for k, name in enumerate(args.only):
        if clock.elapsed() > args.budget + LATE_START:
            print(f"{name:<9}{'-':<10}skipped: {clock.elapsed():.0f} s, over the --budget")
            continue
        # Each: a reference CMI, two heat maps and its ratios (plain, and compiled).
        clock.left = sum(
            (0 if args.ratio_only else 3) + 1 + (p in args.compile_on) for p in args.only[k:]
        )
        check_pipeline(name, dev, args, clock, agreements)
    print(
        "rows/s: denoiser rows (UNet or transformer, text embeddings cached) per second at the "
        f"automatic batch (transformers: timed at {TRANSFORMER_RATE_ROWS} rows a call); heat "
        "map: explain() wall time incl. VAE encoding and attention maps, at least one call of "
        "the full batch unless over --cap; * = extrapolated linearly in denoiser rows from a "
        "run with fewer draws (see --budget, --cap)"
    )
    print(
        "ratio: rows/s inside the estimator (conditional_mutual_info of one word, its text "
        "encoded afresh, noise drawn, partial calls included; after an untimed run that "
        "compiles its shapes) / rows/s of a bare loop of the network's own calls at the same "
        "batch and dtype (inputs made once); goal >= 0.9. fill: rows per call / batch inside "
        "the estimator. compiled: as --compile (torch.compile; channels-last for a UNet)"
    )
    if agreements:
        print()
        print(AGREEMENT_HEADER)
        for line in agreements:
            print(line)
        print(
            "one CMI i(x; dog | rest) on the same (seeded) weights, latent (encoded in the "
            "reference dtype), draws and seed; diff = low - reference; diff/SE in units of the "
            "reference estimate's SE"
        )
    print(f"wall time {clock.elapsed():.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
