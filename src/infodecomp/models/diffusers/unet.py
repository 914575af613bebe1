"""UNet families: Stable Diffusion 1.x / 2.x, SDXL and pixel-space UNets (discrete VP time)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .schedules import VPSchedule
from .speed import Compilable
from .text import PromptEncoder, execution_device


class UNetNetwork(Compilable):
    """The UNet call of an SD-style pipeline: ``(x_in, timestep, conds) -> output``.

    Attributes:
        family: ``"sd"`` or ``"sdxl"`` (two text encoders, pooled embeddings, added time ids).
        data_shape: one network input, ``(C, h, w)``.
        image_size: side of the RGB images it takes, in pixels.
        schedule: the pipeline scheduler's discrete VP timesteps and prediction type.
        text: the prompt encoder.
    """

    def __init__(self, pipeline: Any, image_size: int | None = None) -> None:
        self.pipeline, self.module = pipeline, pipeline.unet
        cfg = self.module.config
        self.family = "sdxl" if getattr(cfg, "addition_embed_type", None) == "text_time" else "sd"
        side = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
        vae = getattr(pipeline, "vae", None)
        down = 2 ** (len(vae.config.block_out_channels) - 1) if vae else 1  # pixels per input
        if image_size is not None:  # convolutional: any size its down-sampling divides
            unit = down * 2 ** (len(cfg.block_out_channels) - 1)
            if image_size % unit:
                raise ValueError(f"image size {image_size} must be a multiple of {unit}")
            side = image_size // down
        self.data_shape = (cfg.in_channels, side, side)
        self.image_size = side * down
        scheduler = pipeline.scheduler
        self.schedule = VPSchedule(scheduler.alphas_cumprod, scheduler.config.prediction_type)
        self.text = PromptEncoder(pipeline, self.family)

    def __call__(
        self, x: torch.Tensor, timestep: torch.Tensor, conds: Sequence[Any]
    ) -> torch.Tensor:
        device, dtype = execution_device(self.pipeline), self.module.dtype
        text = self.text(conds, device, dtype)
        added = None
        if self.family == "sdxl":
            size = float(self.image_size)
            time_ids = torch.tensor([size, size, 0.0, 0.0, size, size], device=device)
            added = {"text_embeds": text["pooled"], "time_ids": time_ids.expand(len(conds), 6)}
            added["time_ids"] = added["time_ids"].to(dtype)
        with torch.no_grad():
            out = self.runner()(
                x.to(device, dtype),
                timestep.to(device),
                encoder_hidden_states=text["hidden"],
                added_cond_kwargs=added,
                return_dict=False,
            )[0]
        return out[:, : self.data_shape[0]]  # drop learned-variance channels

    @staticmethod
    def is_text_attention(name: str) -> bool:
        """Whether the processor ``name`` is a cross-attention to the text."""
        return name.endswith("attn2.processor")

    @staticmethod
    def text_attention(
        attn: Any, hidden: torch.Tensor, context: torch.Tensor, args: tuple, kwargs: dict
    ) -> torch.Tensor:
        """Cross-attention probabilities softmax(q k^T * scale) of image queries over the text
        tokens, summed over heads, ``(B, n_image_tokens, L)``."""
        if hidden.ndim == 4:
            hidden = hidden.flatten(2).transpose(1, 2)
        if attn.group_norm is not None:
            hidden = attn.group_norm(hidden.transpose(1, 2)).transpose(1, 2)
        if attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        query = attn.head_to_batch_dim(attn.to_q(hidden))
        key = attn.head_to_batch_dim(attn.to_k(context))
        probs = attn.get_attention_scores(query, key, None)  # (B * heads, n, L)
        return probs.view(hidden.shape[0], -1, *probs.shape[1:]).sum(1)
