"""Any diffusers text-to-image model as a :class:`infodecomp.Denoiser`.

Supported: Stable Diffusion 1.x / 2.x (latents through the VAE; epsilon-, v- or sample-prediction
read from the scheduler config), SDXL (two text encoders, pooled embeddings, added time ids) and
pixel-space UNets without a VAE. Conditions are prompt strings, :class:`PaddedPrompt` (a prompt
with some words' tokens replaced by padding), or ``None`` for the null condition (the empty prompt,
or zero embeddings where the pipeline sets ``force_zeros_for_empty_prompt``, as SDXL does).

Continuous log-SNR a maps to the training timestep t whose log-SNR log(abar_t / (1 - abar_t)) is
nearest; the noise is added at the exact a (by the estimators) and the model's output is turned
into eps_hat with the timestep's abar_t, the frame the model predicts in.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..images import load_image


class ModelNotFoundError(ValueError):
    """The model is neither a local folder nor in the local Hugging Face cache."""


@dataclass(frozen=True)
class PaddedPrompt:
    """A prompt whose tokens inside the character ``spans`` are replaced by the padding token
    (the alternative to deleting a word: the sentence keeps its length and positions)."""

    text: str
    spans: tuple[tuple[int, int], ...]


class DiffusersModel:
    """A diffusers UNet text-to-image model exposed as a denoiser.

    Build it with :meth:`from_pretrained` (offline: a local folder or the local Hugging Face
    cache) or :meth:`from_pipeline` (an already loaded pipeline).

    Attributes:
        data_shape: shape of one model input (latent or pixel), ``(C, h, w)``.
        image_size: side of the square RGB images the model takes, in pixels.
        logsnr_range: the log-SNR range of its training timesteps.
    """

    def __init__(
        self,
        pipeline: Any,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        name: str | None = None,
    ) -> None:
        self.pipeline = pipeline
        if device is not None or dtype is not None:
            pipeline.to(device=device, dtype=dtype)
        self.unet = pipeline.unet
        self.vae = getattr(pipeline, "vae", None)
        self.scheduler = pipeline.scheduler
        self.tokenizers = [
            t for t in (pipeline.tokenizer, getattr(pipeline, "tokenizer_2", None)) if t is not None
        ]
        self.text_encoders = [
            e
            for e in (pipeline.text_encoder, getattr(pipeline, "text_encoder_2", None))
            if e is not None
        ]
        self.is_sdxl = getattr(self.unet.config, "addition_embed_type", None) == "text_time"
        self.zeros_for_null = bool(getattr(pipeline.config, "force_zeros_for_empty_prompt", False))
        self.name = (
            name or getattr(pipeline.config, "_name_or_path", None) or type(pipeline).__name__
        )
        self.prediction_type = self.scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"unsupported prediction type {self.prediction_type!r}")

        abar = self.scheduler.alphas_cumprod.to(torch.float64)
        self.alphas_cumprod = abar
        self.timestep_logsnr = abar.log() - (1 - abar).log()  # decreasing in t
        self.logsnr_range = (self.timestep_logsnr.min().item(), self.timestep_logsnr.max().item())

        cfg = self.unet.config
        side = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
        self.data_shape = (cfg.in_channels, side, side)
        self.image_size = side * (
            2 ** (len(self.vae.config.block_out_channels) - 1) if self.vae else 1
        )
        self._embedding_cache: dict[Any, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._collector: _CrossAttentionCollector | None = None
        self.revision: str | None = None

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | Path,
        *,
        dtype: torch.dtype | None = None,
        torch_dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        revision: str | None = None,
    ) -> DiffusersModel:
        """Load a diffusers pipeline from a local folder or the local Hugging Face cache.

        Never downloads. ``dtype`` (or the older ``torch_dtype``) sets the weights' dtype.
        Raises :class:`ModelNotFoundError` with one clear line if the model is not there.
        """
        from diffusers import DiffusionPipeline

        dtype = _dtype(dtype or torch_dtype)
        source = str(path_or_id)
        try:
            index = DiffusionPipeline.load_config(source, local_files_only=True, revision=revision)
        except Exception as err:  # diffusers raises several kinds for "not there"
            raise ModelNotFoundError(
                f"model {source!r} not found: not a diffusers folder nor in the local Hugging Face "
                f"cache (infodecomp never downloads) [{type(err).__name__}]"
            ) from None
        # Components saved as null (e.g. no VAE for a pixel-space model) are passed as None.
        absent = {
            k: None
            for k, v in index.items()
            if not k.startswith("_") and isinstance(v, list) and v[0] is None
        }
        # Loaded in float32 and cast by the constructor: no dtype keyword, whose name differs
        # between diffusers versions (torch_dtype / dtype).
        if revision is not None and Path(source).is_dir():
            raise ValueError(
                f"revision {revision!r} given for the local folder {source!r}: a folder has no "
                "revisions (give a cached hub id, or no revision)"
            )
        try:
            pipe = DiffusionPipeline.from_pretrained(
                source, local_files_only=True, revision=revision, **absent
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError, ImportError) as err:
            raise ValueError(f"cannot load the diffusers model {source!r}: {_first(err)}") from None
        except RuntimeError as err:  # e.g. weights that do not fit the config
            raise ValueError(f"cannot load the diffusers model {source!r}: {_first(err)}") from None
        try:
            model = cls(pipe, device=device, dtype=dtype, name=source)
        except AttributeError as err:
            raise ValueError(
                f"{source!r} is not a supported text-to-image pipeline (a UNet with a text "
                f"encoder, tokenizer and scheduler): {_first(err)}"
            ) from None
        model.revision = None if Path(source).is_dir() else _cached_commit(source, revision)
        return model

    @classmethod
    def from_pipeline(cls, pipeline: Any, **kwargs: Any) -> DiffusersModel:
        """Wrap an already loaded pipeline (keyword arguments as in the constructor)."""
        return cls(pipeline, **kwargs)

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    # --- the denoiser -------------------------------------------------------------------------
    def __call__(self, x_noisy: torch.Tensor, logsnr: torch.Tensor, conds: Sequence[Any]):
        if tuple(x_noisy.shape[1:]) != self.data_shape:
            raise ValueError(
                f"inputs have shape {tuple(x_noisy.shape[1:])}, the model takes {self.data_shape}"
            )
        return self._eps(x_noisy, self.timesteps(logsnr), conds)

    def _eps(self, x_noisy: torch.Tensor, t: torch.Tensor, conds: Sequence[Any]) -> torch.Tensor:
        """eps_hat at integer training timesteps ``t``, in the dtype and device of ``x_noisy``."""
        hidden, pooled = self._embed(conds)
        added = None
        if self.is_sdxl:
            size = float(self.image_size)
            time_ids = torch.tensor([size, size, 0.0, 0.0, size, size], device=self.device)
            added = {
                "text_embeds": pooled,
                "time_ids": time_ids.expand(len(conds), 6).to(self.dtype),
            }
        if self._collector is not None:
            self._collector.rows = torch.tensor([c == self._collector.prompt for c in conds])
            self._collector.n_rows += int(self._collector.rows.sum())
        with torch.no_grad():
            out = self.unet(
                x_noisy.to(self.device, self.dtype),
                t.to(self.device),
                encoder_hidden_states=hidden,
                added_cond_kwargs=added,
                return_dict=False,
            )[0]
        out = out[:, : self.data_shape[0]].to(torch.float64)  # drop learned-variance channels
        x = x_noisy.to(self.device, torch.float64)
        abar = self.alphas_cumprod.to(self.device)[t.to(self.device)].view(-1, 1, 1, 1)
        if self.prediction_type == "v_prediction":  # v = sqrt(abar) eps - sqrt(1-abar) x0
            out = abar.sqrt() * out + (1 - abar).sqrt() * x
        elif self.prediction_type == "sample":
            out = (x - abar.sqrt() * out) / (1 - abar).sqrt()
        return out.to(x_noisy.device, x_noisy.dtype)

    @torch.no_grad()
    def generate(
        self, prompts: list[str], seed: int = 0, steps: int = 50, guidance_scale: float = 3.0
    ) -> torch.Tensor:
        """Images for ``prompts`` with DDIM and classifier-free guidance, ``(n, 3, H, W)`` in
        [-1, 1] (decoded by the VAE for latent models). Deterministic by ``seed``."""
        from diffusers import DDIMScheduler

        scheduler = DDIMScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(steps)
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(len(prompts), *self.data_shape, generator=g).to(self.device)
        null = [None] * len(prompts)
        for t in scheduler.timesteps:
            ts = torch.full((2 * len(prompts),), int(t))
            eps = self._eps(torch.cat([x, x]), ts, [*prompts, *null])
            cond, uncond = eps.chunk(2)
            x = scheduler.step(uncond + guidance_scale * (cond - uncond), t, x).prev_sample
        return self.decode(x)

    @torch.no_grad()
    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Model inputs ``(n, *data_shape)`` as images ``(n, 3, H, W)`` in [-1, 1] (through the
        VAE for latent models)."""
        if self.vae is not None:
            x = x.to(self.device, self.vae.dtype) / self.vae.config.scaling_factor
            x = self.vae.decode(x).sample
        return x.float().clamp(-1, 1).cpu()

    def timesteps(self, logsnr: torch.Tensor) -> torch.Tensor:
        """The training timestep with the nearest log-SNR for each entry of ``logsnr``."""
        grid = self.timestep_logsnr
        return (grid[None, :] - logsnr.detach().to("cpu", torch.float64)[:, None]).abs().argmin(1)

    # --- text ---------------------------------------------------------------------------------
    def token_ids(self, cond: Any, tokenizer_index: int = 0) -> torch.Tensor:
        """Token ids of a condition, padded to the tokenizer's length, shape ``(L,)``."""
        tok = self.tokenizers[tokenizer_index]
        text = "" if cond is None else cond.text if isinstance(cond, PaddedPrompt) else cond
        if not isinstance(text, str):
            raise ValueError(f"conditions of a diffusers model are prompts, got {cond!r}")
        enc = tok(
            text, padding="max_length", max_length=tok.model_max_length, return_offsets_mapping=True
        )
        ids = torch.tensor(enc.input_ids)
        if len(ids) > tok.model_max_length:
            raise ValueError(
                f"prompt is {len(ids)} tokens long, the model takes at most "
                f"{tok.model_max_length}: {text!r}"
            )
        if isinstance(cond, PaddedPrompt):
            for i, (start, end) in enumerate(enc.offset_mapping):
                if any(start < b and end > a for a, b in cond.spans):
                    ids[i] = tok.pad_token_id
        return ids

    def token_positions(self, prompt: str, span: tuple[int, int]) -> list[int]:
        """Positions (in :meth:`token_ids` of the first tokenizer) of the tokens that make up the
        characters ``span`` of ``prompt``."""
        tok = self.tokenizers[0]
        enc = tok(prompt, return_offsets_mapping=True)
        return [i for i, (s, e) in enumerate(enc.offset_mapping) if s < span[1] and e > span[0]]

    def _embed(self, conds: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Text embeddings (and SDXL pooled embeddings) for each condition, cached by condition."""
        for c in conds:
            if not (c is None or isinstance(c, (str, PaddedPrompt))):
                raise ValueError(f"conditions of a diffusers model are prompts, got {c!r}")
            if c not in self._embedding_cache:
                self._embedding_cache[c] = self._encode(c)
        hidden = torch.stack([self._embedding_cache[c][0] for c in conds])
        pooled = torch.stack([self._embedding_cache[c][1] for c in conds]) if self.is_sdxl else None
        return hidden, pooled

    @torch.no_grad()
    def _encode(self, cond: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        hidden, pooled = [], None
        for i, encoder in enumerate(self.text_encoders):
            ids = self.token_ids(cond, i).to(self.device)[None]
            mask = None
            if getattr(encoder.config, "use_attention_mask", False):
                mask = (ids != self.tokenizers[i].pad_token_id).long()
            out = encoder(ids, attention_mask=mask, output_hidden_states=self.is_sdxl)
            # SD 1.x/2.x condition on the last layer; SDXL on the penultimate of both encoders,
            # plus the pooled projection of the last encoder.
            hidden.append(out.hidden_states[-2] if self.is_sdxl else out[0])
            if self.is_sdxl:
                pooled = out[0]
        emb = torch.cat(hidden, dim=-1)[0].to(self.dtype)
        pooled = None if pooled is None else pooled[0].to(self.dtype)
        if cond is None and self.zeros_for_null:
            emb = torch.zeros_like(emb)
            pooled = None if pooled is None else torch.zeros_like(pooled)
        return emb, pooled

    # --- images -------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_image(self, image: Any) -> torch.Tensor:
        """An image (path, PIL image, or tensor ``(3, H, W)`` in [-1, 1]) as model input
        ``(1, *data_shape)``: resized and centre-cropped to :attr:`image_size`, then encoded with
        the VAE's posterior mean times its scaling factor (pixel models take it as is)."""
        pixels = load_image(image, self.image_size).to(self.device)
        if self.vae is None:
            return pixels[None].to(torch.float32)
        latent = self.vae.encode(pixels[None].to(self.vae.dtype)).latent_dist.mean
        return (latent * self.vae.config.scaling_factor).to(torch.float32)

    # --- attention baseline -------------------------------------------------------------------
    @contextlib.contextmanager
    def collect_attention(self, prompt: str) -> Iterator[_CrossAttentionCollector]:
        """Within this block, cross-attention probabilities of every row conditioned on ``prompt``
        are summed over heads and layers (each layer upsampled to the input resolution), as in
        DAAM. The model's outputs are unchanged. Yields the collector: ``collector.token_maps()``
        gives the mean map per token, shape ``(L, h, w)``."""
        collector = _CrossAttentionCollector(prompt, self.data_shape[1:])
        original = self.unet.attn_processors
        wrapped = {
            name: _CollectingProcessor(proc, collector)
            if name.endswith("attn2.processor")
            else proc
            for name, proc in original.items()
        }
        self.unet.set_attn_processor(wrapped)
        self._collector = collector
        try:
            yield collector
        finally:
            self.unet.set_attn_processor(original)
            self._collector = None

    def default_batch_size(self, limit: int = 256) -> int:
        """Rows per UNet call: on CUDA, what fits in 70% of free memory (measured with one row);
        elsewhere about 2^18 input values per call (16 rows of SD latents), at most ``limit``."""
        if self.device.type != "cuda":
            return max(1, min(limit, 2**18 // math.prod(self.data_shape)))
        torch.cuda.reset_peak_memory_stats(self.device)
        before = torch.cuda.memory_allocated(self.device)
        probe = torch.zeros(1, *self.data_shape, device=self.device)
        self(probe, torch.zeros(1), [None])
        per_row = max(torch.cuda.max_memory_allocated(self.device) - before, 1)
        free, _ = torch.cuda.mem_get_info(self.device)
        return max(1, min(limit, int(0.7 * free / per_row)))


def _first(err: BaseException) -> str:
    """The error's kind and the first line of its message (diffusers' can run to pages)."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def _dtype(dtype: Any) -> torch.dtype | None:
    """A torch dtype from a dtype or its name ("float16", "torch.bfloat16"); ``TypeError``
    otherwise."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    found = (
        getattr(torch, str(dtype).removeprefix("torch."), None) if isinstance(dtype, str) else None
    )
    if not isinstance(found, torch.dtype) or not found.is_floating_point:
        raise TypeError(
            f"dtype must be a floating torch dtype such as torch.float16, got {dtype!r}"
        )
    return found


def _cached_commit(repo_id: str, revision: str | None) -> str | None:
    """The commit hash of the cached snapshot a hub id resolves to (its folder name)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True)).name
    except Exception:  # a cache layout we cannot read: the revision stays unknown
        return revision


class _CrossAttentionCollector:
    def __init__(self, prompt: str, size: tuple[int, int]) -> None:
        self.prompt, self.size = prompt, size
        self.rows: torch.Tensor | None = None
        self.total: torch.Tensor | None = None  # (L, h, w), summed over rows, heads, layers
        self.n_rows = 0

    def add(self, probs: torch.Tensor, batch: int) -> None:
        """``probs``: (batch * heads, h_l * w_l, L) attention of one layer for the ``batch``
        collected rows."""
        heads = probs.shape[0] // batch
        h, w = self.size
        scale = math.isqrt(h * w // probs.shape[1])
        maps = probs.view(batch, heads, h // scale, w // scale, -1)
        maps = maps.sum(1).permute(0, 3, 1, 2).float()  # (rows, L, h_l, w_l)
        maps = F.interpolate(maps, size=(h, w), mode="bicubic", align_corners=False).clamp(min=0)
        summed = maps.sum(0).cpu().double()
        self.total = summed if self.total is None else self.total + summed

    def token_maps(self) -> torch.Tensor:
        """Mean over the collected rows of the per-token maps, shape ``(L, h, w)``."""
        if self.total is None:
            raise ValueError(f"no attention was collected for {self.prompt!r}")
        return self.total / self.n_rows


class _CollectingProcessor:
    """Runs the original attention processor and, on the side, records the attention
    probabilities softmax(q k^T * scale) of the rows being collected."""

    def __init__(self, processor: Any, collector: _CrossAttentionCollector) -> None:
        self.processor, self.collector = processor, collector

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ):
        rows = self.collector.rows
        if encoder_hidden_states is not None and rows is not None and rows.any():
            # Only the rows being collected (the full prompt's), not the whole batch.
            keep = rows.to(hidden_states.device)
            h = hidden_states[keep]
            if h.ndim == 4:
                h = h.flatten(2).transpose(1, 2)
            if attn.group_norm is not None:
                h = attn.group_norm(h.transpose(1, 2)).transpose(1, 2)
            context = encoder_hidden_states[keep]
            if attn.norm_cross:
                context = attn.norm_encoder_hidden_states(context)
            query = attn.head_to_batch_dim(attn.to_q(h))
            key = attn.head_to_batch_dim(attn.to_k(context))
            self.collector.add(attn.get_attention_scores(query, key, None), h.shape[0])
        return self.processor(attn, hidden_states, encoder_hidden_states, *args, **kwargs)
