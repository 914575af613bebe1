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


def tiny_t5_tokenizer(words: tuple[str, ...] = WORDS):
    """A T5 (Unigram) tokenizer holding ``words`` as single pieces; other words spelled out."""
    from transformers import T5TokenizerFast

    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(f"▁{w}", -1.0) for w in words] + [(c, -5.0) for c in letters]
    return T5TokenizerFast(vocab=vocab, extra_ids=0)


def _t5(tokenizer, seed: int = 2):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return T5EncoderModel(config).eval()


def _flow_vae(shift: float) -> AutoencoderKL:
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
        shift_factor=shift,
        scaling_factor=1.5,
        use_quant_conv=False,
        use_post_quant_conv=False,
    ).eval()


def sd3_pipeline(t5: bool = True):
    """SD3-style MM-DiT: two CLIP encoders and T5, pooled projections, 16x16 images, 8x8x4
    latents in 2x2 patches."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=32,
        caption_projection_dim=32,
        pooled_projection_dim=64,
        pos_embed_max_size=8,
    ).eval()
    tokenizer = tiny_clip_tokenizer()
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_flow_vae(0.1),
        text_encoder=_text_encoder(tokenizer, CLIPTextModelWithProjection),
        tokenizer=tokenizer,
        text_encoder_2=_text_encoder(tokenizer, CLIPTextModelWithProjection, seed=1),
        tokenizer_2=tiny_clip_tokenizer(),
        text_encoder_3=_t5(tiny_t5_tokenizer()) if t5 else None,
        tokenizer_3=tiny_t5_tokenizer() if t5 else None,
    )


def flux_pipeline(guidance_embeds: bool = False):
    """Flux-style MM-DiT: CLIP pooled and T5 text, 2x2-packed 8x8x4 latents, rotary positions;
    ``guidance_embeds`` as in guidance-distilled Flux-dev."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(4, 2, 2),
    ).eval()
    tokenizer = tiny_clip_tokenizer()
    return FluxPipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_flow_vae(0.1),
        text_encoder=_text_encoder(tokenizer, CLIPTextModel),
        tokenizer=tokenizer,
        text_encoder_2=_t5(tiny_t5_tokenizer()),
        tokenizer_2=tiny_t5_tokenizer(),
    )
