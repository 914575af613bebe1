"""Tiny random-weight diffusers pipelines built from configs, for tests (no hub access)."""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from infodecomp.world.train import build_tokenizer

WORDS = ("a", "photo", "of", "red", "blue", "circle", "square", "dog", "cat", "left", "above")


def tiny_clip_tokenizer(words: tuple[str, ...] = WORDS, max_length: int = 16) -> CLIPTokenizer:
    """A CLIP BPE tokenizer holding ``words`` as single tokens; other words split into several."""
    return build_tokenizer(words, max_length)


def _text_encoder(tokenizer: CLIPTokenizer, cls=CLIPTextModel, seed: int = 0):
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=32,
    )
    return cls(config).eval()


def _unet(channels: int, size: int, cross_dim: int, **extra) -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=size,
        in_channels=channels,
        out_channels=channels,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_dim,
        norm_num_groups=4,
        attention_head_dim=4,
        **extra,
    ).eval()


def _vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=[8, 8],
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        norm_num_groups=4,
        sample_size=16,
    ).eval()


def _scheduler(prediction_type: str) -> DDPMScheduler:
    return DDPMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type=prediction_type,
        clip_sample=False,
        steps_offset=1,
    )


def sd_pipeline(prediction_type: str = "epsilon", pixel: bool = False) -> StableDiffusionPipeline:
    """SD-style latent pipeline (16x16 images, 8x8x4 latents) or pixel-space (16x16x3, no VAE)."""
    tokenizer = tiny_clip_tokenizer()
    return StableDiffusionPipeline(
        vae=None if pixel else _vae(),
        text_encoder=_text_encoder(tokenizer),
        tokenizer=tokenizer,
        unet=_unet(3 if pixel else 4, 16 if pixel else 8, 32),
        scheduler=_scheduler(prediction_type),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def sdxl_pipeline() -> StableDiffusionXLPipeline:
    """SDXL-style: two text encoders (32 + 32 wide), pooled embeddings and time ids."""
    tokenizer = tiny_clip_tokenizer()
    unet = _unet(
        4,
        8,
        64,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, steps_offset=1, beta_schedule="scaled_linear"
    )
    return StableDiffusionXLPipeline(
        vae=_vae(),
        text_encoder=_text_encoder(tokenizer),
        tokenizer=tokenizer,
        text_encoder_2=_text_encoder(tokenizer, CLIPTextModelWithProjection, seed=1),
        tokenizer_2=tiny_clip_tokenizer(),
        unet=unet,
        scheduler=scheduler,
    )
