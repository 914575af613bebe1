"""Speed, memory and float16 agreement at real Stable Diffusion sizes, on a GPU.

Builds random-weight pipelines of SD 1.5 (512 px) and SDXL (1024 px) from configs written here
(nothing is downloaded; the numbers of compute and memory are those of the real models, the
weights are not). For each pipeline and dtype (float16, bfloat16) prints one row: denoiser rows
per second at the automatic batch size (``DiffusersModel.default_batch_size``), that batch size,
the wall time of one word's heat map (``infodecomp.explain`` for one word of a 6-word prompt on a
random image, at ``infodecomp heatmap``'s default draws, attention maps included, as the command
does) and peak GPU memory. Then float16 (and bfloat16) against float32 on the same weights, latent
and seed: one CMI in each dtype and their difference in standard errors. SD3 is listed as not
supported yet.

    python benchmarks/gpu_check.py [--only sd15,sdxl] [--device cuda] [--draws 256] [--small]

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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from infodecomp.estimators import conditional_mutual_info
from infodecomp.explanation import explain
from infodecomp.models.diffusers import DiffusersModel
from infodecomp.world.train import build_tokenizer

PIPELINES = ("sd15", "sdxl", "sd3")
LOW_DTYPES = (torch.float16, torch.bfloat16)
PROMPT = "a photo of a red dog"  # 6 words
WORD = "dog"
CONTEXT = "a photo of a red"  # the prompt without WORD: i(x; dog | a photo of a red)
WORDS = ("a", "photo", "of", "red", "dog", "blue", "cat", "square", "left", "above")
# `infodecomp heatmap --samples` defaults to explain's n_samples (256), with attention maps.
HEATMAP_DRAWS: int = inspect.signature(explain).parameters["n_samples"].default
SMALL_DRAWS = 16
SMALL_BATCH = 32  # --small: the automatic batch capped (CPU time), still 2+ calls a heat map
CLIP_VOCAB = 49408  # CLIP's vocabulary: the embedding table's real size (our ids stay below)


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


def _vae_config(name: str, small: bool) -> dict[str, Any]:
    """The SD / SDXL AutoencoderKL config (8x downsampling, 4 latent channels)."""
    if small:
        blocks, groups, size = (8, 8), 4, 16
    else:
        blocks, groups, size = (128, 256, 512, 512), 32, 512 if name == "sd15" else 1024
    return {
        "block_out_channels": blocks,
        "down_block_types": ("DownEncoderBlock2D",) * len(blocks),
        "up_block_types": ("UpDecoderBlock2D",) * len(blocks),
        "layers_per_block": 1 if small else 2,
        "latent_channels": 4,
        "norm_num_groups": groups,
        "sample_size": size,
        "scaling_factor": 0.18215 if name == "sd15" else 0.13025,
    }


def build(name: str, small: bool, device: str) -> Any:
    """A seeded random-weight pipeline ``name`` in float32, its weights made on ``device``."""
    from diffusers import (
        AutoencoderKL,
        DDPMScheduler,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    length = 16 if small else 77
    tokenizer = build_tokenizer(WORDS, length)
    betas = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
    with torch.device(device):  # random init on the GPU: seconds, not minutes on the CPU
        torch.manual_seed(0)
        unet = UNet2DConditionModel(in_channels=4, out_channels=4, **_unet_config(name, small))
        vae = AutoencoderKL(in_channels=3, out_channels=3, **_vae_config(name, small))
        text_encoder = CLIPTextModel(_clip(tokenizer, small))
        if name == "sdxl":  # OpenCLIP ViT-bigG/14's text tower, with its projection
            big = {"num_attention_heads": 20, "num_hidden_layers": 32, "hidden_act": "gelu"}
            text_encoder_2 = CLIPTextModelWithProjection(_clip(tokenizer, small, 1280, **big))
    parts = {"vae": vae.eval(), "text_encoder": text_encoder.eval(), "tokenizer": tokenizer}
    if name == "sd15":
        return StableDiffusionPipeline(
            **parts,
            unet=unet.eval(),
            scheduler=DDPMScheduler(
                prediction_type="epsilon", clip_sample=False, steps_offset=1, **betas
            ),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    return StableDiffusionXLPipeline(
        **parts,
        text_encoder_2=text_encoder_2.eval(),
        tokenizer_2=build_tokenizer(WORDS, length),
        unet=unet.eval(),
        scheduler=EulerDiscreteScheduler(steps_offset=1, **betas),
    )


def describe(name: str, pipe: Any, seconds: float) -> str:
    """One line: the built pipeline's parameter counts and input size."""

    def millions(*modules: Any) -> str:
        return f"{sum(p.numel() for m in modules for p in m.parameters()) / 1e6:.1f}M"

    texts = [pipe.text_encoder] + ([pipe.text_encoder_2] if name == "sdxl" else [])
    c, s = pipe.unet.config.in_channels, pipe.unet.config.sample_size
    px = s * 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    return (
        f"  ({name} built in {seconds:.1f} s: UNet {millions(pipe.unet)}, text encoders "
        f"{millions(*texts)}, VAE {millions(pipe.vae)} parameters; latents {c}x{s}x{s}, {px} px)"
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


def fitted_draws(draws: int, rows_per_draw: int, rate: float, cap: float) -> int:
    """``draws``, or fewer (even, at least 4) if they would take longer than ``cap`` seconds at
    ``rate`` rows per second."""
    if draws * rows_per_draw / rate <= cap:
        return draws
    return max(4, min(draws, int(cap * rate / rows_per_draw)) // 2 * 2)


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
    name: str, model: DiffusersModel, dev: Device, args: argparse.Namespace, cap: float
) -> Row:
    """One table row: throughput, automatic batch size, heat-map time and peak memory."""
    dtype = str(model.dtype).removeprefix("torch.")
    row = Row(name, dtype)
    dev.free()
    row.batch = model.default_batch_size(limit=batch_limit(args))
    row.rate = rows_per_second(model, dev, row.batch, args.calls)
    image = random_image(model.image_size)
    draws = fitted_draws(args.draws, 3, row.rate, cap)  # prompt, null and context per draw
    batch = row.batch

    def heat_map() -> Any:
        return explain(
            model, image, PROMPT, [WORD], n_samples=draws, seed=0, batch_size=batch, progress=False
        )

    try:
        result, seconds = dev.timed(heat_map)
    except torch.cuda.OutOfMemoryError:  # the command would fail the same way: say so, then halve
        dev.free()
        batch = max(1, batch // 2)
        result, seconds = dev.timed(heat_map)
        row.note = f"heat map out of memory at batch {row.batch}; timed at {batch}"
    row.heat_draws, row.heat_s = args.draws, seconds * args.draws / draws
    row.extrapolated_from = None if draws == args.draws else draws
    if row.extrapolated_from is not None:
        row.note = (row.note + "; " if row.note else "") + f"* measured with {draws} draws"
    row.cmi = result.cmi(WORD)
    row.peak = dev.peak_gib()
    return row


@dataclass
class Agreement:
    pipeline: str
    low: str
    draws: int
    high: tuple[float, float]
    value: tuple[float, float]

    def __str__(self) -> str:
        (v32, s32), (v, s) = self.high, self.value
        diff = v - v32
        in_se = diff / s32 if s32 > 0 else math.nan
        return (
            f"{self.pipeline:<9}{'float32 vs ' + self.low:<20}{self.draws:>6}"
            f"{v32:>12.4f} ± {s32:<8.4f}{v:>10.4f} ± {s:<8.4f}{diff:>11.2e}{in_se:>9.2f}"
        )


AGREEMENT_HEADER = (
    f"{'pipeline':<9}{'dtypes':<20}{'draws':>6}{'float32 CMI ± SE':>23}{'low CMI ± SE':>21}"
    f"{'diff':>11}{'diff/SE':>9}"
)


@dataclass
class Reference:
    """The float32 side of the agreement: the latent, the estimator's settings, the CMI."""

    x: torch.Tensor
    run: dict[str, Any]
    value: tuple[float, float]


def reference(pipe: Any, dev: Device, args: argparse.Namespace, cap: float) -> Reference:
    """i(x; WORD | CONTEXT) with ``pipe`` in float32 (no TF32) for a random image's latent
    (encoded in float32), at the heat-map draws (fewer if over ``cap`` seconds) and seed 0."""
    with ieee_float32():
        m32 = DiffusersModel.from_pipeline(pipe, device=dev.device, dtype=torch.float32)
        x = m32.encode_image(random_image(m32.image_size))
        batch = m32.default_batch_size(limit=batch_limit(args))
        rate = rows_per_second(m32, dev, min(batch, 8), 1)
        draws = fitted_draws(args.draws, 2, rate, cap)  # cond and context per draw
        # A fixed proposal: an adaptive one would be fitted to each dtype's own integrand, and the
        # difference would no longer be a paired one.
        run = {
            "n_samples": draws,
            "seed": 0,
            "batch_size": batch,
            "progress": False,
            "adaptive": False,
        }
        value = _pair(conditional_mutual_info(m32, x, PROMPT, CONTEXT, **run))
    return Reference(x, run, value)


def compare(name: str, model: DiffusersModel, ref: Reference) -> Agreement | str:
    """The reference's CMI with ``model`` (the same weights in a lower precision): same latent,
    draws, seed and batch size."""
    label = str(model.dtype).removeprefix("torch.")
    try:
        value = _pair(conditional_mutual_info(model, ref.x, PROMPT, CONTEXT, **ref.run))
    except Exception as err:  # e.g. a kernel this device lacks in float16
        return f"{name:<9}{'float32 vs ' + label:<20}failed: {_first_line(err)}"
    return Agreement(name, label, ref.run["n_samples"], ref.value, value)


def _pair(estimate: Any) -> tuple[float, float]:
    return estimate.value.flatten()[0].item(), estimate.stderr.flatten()[0].item()


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
    parser.add_argument("--only", default=",".join(PIPELINES), help="e.g. sd15,sdxl")
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
        default=360.0,
        help="seconds (default 360): no row starts after it, and heat maps and float32 CMIs "
        "near it run fewer draws; the whole run ends within about a minute and a half of it",
    )
    args = parser.parse_args(argv)
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


def cap(args: argparse.Namespace, start: float) -> float:
    """Seconds allowed for the next heat map or float32 CMI: --cap, less near the --budget."""
    return min(args.cap, max(10.0, args.budget - (time.perf_counter() - start)))


def main(argv: Sequence[str] | None = None) -> int:
    start = time.perf_counter()
    args = parse(argv)
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
    sizes = "real sizes, random weights"
    if args.small:
        sizes = f"tiny configs (--small), batch at most {SMALL_BATCH}"
    print(
        f"gpu_check: torch {torch.__version__}, diffusers {diffusers.__version__}, transformers "
        f"{transformers.__version__}; device {dev.label()}; {sizes}; heat map: 1 word of "
        f"{PROMPT!r}, {args.draws} draws, attention on"
    )
    print(HEADER)
    agreements: list[Agreement | str] = []
    for name in args.only:
        if name == "sd3":
            print(
                f"{'sd3':<9}{'-':<10}SD3-medium (2B MMDiT transformer, 1024 px): not supported "
                "yet (infodecomp's DiffusersModel takes UNet pipelines)"
            )
            continue
        ref: Reference | None = None
        for i, dtype in enumerate(LOW_DTYPES):
            label = str(dtype).removeprefix("torch.")
            if time.perf_counter() - start > args.budget:
                print(f"{name:<9}{label:<10}skipped: over the --budget of {args.budget:.0f} s")
                continue
            pipe = model = None
            try:
                dev.free()
                # The seeded build gives the same float32 weights each time.
                pipe, seconds = dev.timed(lambda n=name: build(n, args.small, args.device))
                if i == 0:
                    print(describe(name, pipe, seconds))
                    try:
                        ref = reference(pipe, dev, args, cap(args, start))
                    except Exception as err:
                        agreements.append(f"{name:<9}float32 CMI failed: {_first_line(err)}")
                model = DiffusersModel.from_pipeline(pipe, dtype=dtype)  # cast in place
                if ref is not None:
                    agreements.append(compare(name, model, ref))
                print(measure_row(name, model, dev, args, cap(args, start)), flush=True)
            except Exception as err:  # e.g. float16 kernels missing on this CPU: say why
                print(f"{name:<9}{label:<10}skipped: {_first_line(err)}", flush=True)
            pipe = model = None
            dev.free()
    print(
        "rows/s: denoiser rows (UNet with text embeddings cached) per second at the automatic "
        "batch; heat map: explain() wall time incl. VAE encoding and attention maps; * = "
        "extrapolated linearly from a run with fewer draws (see --cap)"
    )
    if agreements:
        print()
        print(AGREEMENT_HEADER)
        for line in agreements:
            print(line)
        print(
            "one CMI i(x; dog | rest) on the same (seeded) weights, latent (encoded in float32), "
            "draws and seed; diff = low - float32; diff/SE in units of the float32 estimate's SE"
        )
    print(f"wall time {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
