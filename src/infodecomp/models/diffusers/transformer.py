"""Diffusion transformers trained by flow matching: Stable Diffusion 3 / 3.5 and Flux (MM-DiT).

Both predict the velocity of a rectified flow (:class:`~.schedules.FlowSchedule` turns it into
eps_hat). Their joint-attention blocks attend over image and text tokens together; the attention
baseline takes, in each joint block, the image queries' attention over the text keys (softmax over
the text tokens, summed over heads), DAAM's cross-attention read from an MM-DiT.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .schedules import FlowSchedule
from .speed import Compilable
from .text import PromptEncoder, execution_device

# Flux-dev's own default guidance, fed to a guidance-distilled model unless told.
FLUX_GUIDANCE = 3.5


class _FlowTransformer(Compilable):
    """What SD3 and Flux share: flow time, text encoding, the joint blocks' text attention."""

    family = ""

    def __init__(
        self,
        pipeline: Any,
        image_size: int | None,
        max_sequence_length: int | None,
        latent_channels: int,
        time_scale: float,
    ) -> None:
        self.module = pipeline.transformer
        self.vae_scale = getattr(pipeline, "vae_scale_factor", 8)
        self.image_size = image_size or pipeline.default_sample_size * self.vae_scale
        side = self.image_size // self.vae_scale
        if self.image_size % (2 * self.vae_scale):
            raise ValueError(
                f"image size {self.image_size} must be a multiple of {2 * self.vae_scale} "
                f"for {type(self.module).__name__}"
            )
        self.data_shape = (latent_channels, side, side)
        n = pipeline.scheduler.config.num_train_timesteps
        self.schedule = FlowSchedule(time_scale=time_scale, num_train_timesteps=n)
        self.text = PromptEncoder(pipeline, self.family, max_sequence_length)
        self.pipeline = pipeline

    @staticmethod
    def is_text_attention(name: str) -> bool:
        """Whether the processor ``name`` is a joint (image + text) block's attention."""
        return name.startswith("transformer_blocks.") and name.endswith(".attn.processor")

    @staticmethod
    def _probs(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """softmax over text of image queries ``(B, N, H, D)`` against text keys ``(B, L, H,
        D)``, summed over heads: ``(B, N, L)``. One head at a time: the (B, N, L) scores of all
        heads at once would take gigabytes at Flux's size."""
        scale = query.shape[-1] ** -0.5
        total = torch.zeros(*query.shape[:2], key.shape[1], device=query.device)
        for h in range(query.shape[2]):
            scores = query[:, :, h].float() @ key[:, :, h].float().transpose(1, 2)
            total += (scores * scale).softmax(-1)
        return total


class SD3Network(_FlowTransformer):
    """The SD3 / SD3.5 transformer call: latents in 2x2 patches, CLIP-L + CLIP-G + T5 text,
    pooled CLIP projections; network time is 1000 t."""

    family = "sd3"

    def __init__(
        self, pipeline: Any, image_size: int | None, max_sequence_length: int | None
    ) -> None:
        channels = pipeline.transformer.config.in_channels
        steps = pipeline.scheduler.config.num_train_timesteps  # the pipeline passes sigma * 1000
        super().__init__(pipeline, image_size, max_sequence_length, channels, float(steps))

    def __call__(self, x: torch.Tensor, timestep: torch.Tensor, conds: Sequence[Any]):
        device, dtype = execution_device(self.pipeline), self.module.dtype
        text = self.text(conds, device, dtype)
        with torch.no_grad():
            return self.runner()(
                hidden_states=x.to(device, dtype),
                timestep=timestep.to(device, torch.float32),  # as the pipeline: not rounded
                encoder_hidden_states=text["hidden"],
                pooled_projections=text["pooled"],
                return_dict=False,
            )[0]

    @staticmethod
    def text_attention(
        attn: Any, hidden: torch.Tensor, context: torch.Tensor, args: tuple, kwargs: dict
    ) -> torch.Tensor:
        """Image-to-text attention of one joint block, ``(B, n_image_tokens, L)``."""
        b, heads = hidden.shape[0], attn.heads
        query = attn.to_q(hidden).view(b, -1, heads, attn.to_q.out_features // heads)
        key = attn.add_k_proj(context).view(b, -1, heads, query.shape[-1])
        if attn.norm_q is not None:  # the norms act on the head dimension, any layout
            query = attn.norm_q(query)
        if attn.norm_added_k is not None:
            key = attn.norm_added_k(key)
        return SD3Network._probs(query, key)


class FluxNetwork(_FlowTransformer):
    """The Flux transformer call: latents packed 2x2 into tokens with rotary positions, T5 text
    and pooled CLIP, network time t, and for guidance-distilled models a guidance value."""

    family = "flux"

    def __init__(
        self,
        pipeline: Any,
        image_size: int | None,
        max_sequence_length: int | None,
        guidance_scale: float = FLUX_GUIDANCE,
    ) -> None:
        channels = pipeline.transformer.config.in_channels // 4  # packed 2x2
        # The pipeline passes sigma * 1000 / 1000.
        super().__init__(pipeline, image_size, max_sequence_length, channels, 1.0)
        self.guidance_scale = guidance_scale if self.module.config.guidance_embeds else None

    def __call__(self, x: torch.Tensor, timestep: torch.Tensor, conds: Sequence[Any]):
        device, dtype = execution_device(self.pipeline), self.module.dtype
        text = self.text(conds, device, dtype)
        b, c, h, w = x.shape
        packed = self.pack(x.to(device, dtype))
        image_ids = self.pipeline._prepare_latent_image_ids(b, h // 2, w // 2, device, dtype)
        text_ids = torch.zeros(text["hidden"].shape[1], 3, device=device, dtype=dtype)
        guidance = None
        if self.guidance_scale is not None:
            guidance = torch.full((b,), self.guidance_scale, device=device, dtype=torch.float32)
        with torch.no_grad():
            out = self.runner()(
                hidden_states=packed,
                timestep=timestep.to(device, dtype),
                guidance=guidance,
                pooled_projections=text["pooled"],
                encoder_hidden_states=text["hidden"],
                txt_ids=text_ids,
                img_ids=image_ids,
                return_dict=False,
            )[0]
        return self.unpack(out, (c, h, w))

    @staticmethod
    def pack(x: torch.Tensor) -> torch.Tensor:
        """Latents ``(B, C, h, w)`` as Flux's tokens ``(B, h/2 * w/2, 4C)`` (2x2 patches)."""
        b, c, h, w = x.shape
        x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, (h // 2) * (w // 2), c * 4)

    @staticmethod
    def unpack(tokens: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
        """Flux's tokens ``(B, h/2 * w/2, 4C)`` back as latents ``(B, *shape)``."""
        c, h, w = shape
        x = tokens.view(len(tokens), h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(len(tokens), c, h, w)

    @staticmethod
    def text_attention(
        attn: Any, hidden: torch.Tensor, context: torch.Tensor, args: tuple, kwargs: dict
    ) -> torch.Tensor:
        """Image-to-text attention of one double-stream block, rotary positions applied,
        ``(B, n_image_tokens, L)``."""
        from diffusers.models.embeddings import apply_rotary_emb

        if getattr(attn, "fused_projections", False):
            query = attn.to_qkv(hidden).chunk(3, dim=-1)[0]
            key = attn.to_added_qkv(context).chunk(3, dim=-1)[1]
        else:
            query, key = attn.to_q(hidden), attn.add_k_proj(context)
        query = attn.norm_q(query.unflatten(-1, (-1, attn.head_dim)))
        key = attn.norm_added_k(key.unflatten(-1, (-1, attn.head_dim)))
        rotary = args[1] if len(args) > 1 else kwargs.get("image_rotary_emb")
        if rotary is not None:  # positions run over [text, image]
            n_text = key.shape[1]
            cos, sin = rotary
            query = apply_rotary_emb(query, (cos[n_text:], sin[n_text:]), sequence_dim=1)
            key = apply_rotary_emb(key, (cos[:n_text], sin[:n_text]), sequence_dim=1)
        return FluxNetwork._probs(query, key)
