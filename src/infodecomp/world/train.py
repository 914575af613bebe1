"""Train the bundled text-to-image model on the world, from scratch, resumably.

The model is a diffusers ``StableDiffusionPipeline`` without a VAE (pixel space, 16x16): a small
``UNet2DConditionModel`` with cross-attention over the token embeddings of a small
``CLIPTextModel``, both trained jointly with the epsilon objective and a cosine noise schedule.
Captions are randomly emptied or lose one word during training, so the model also learns the
partial captions that conditional mutual information compares.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .scenes import SIZE, VOCABULARY, all_scenes, captions, drop_words, render, scene_weights

MAX_TOKENS = 12


def build_tokenizer(words: tuple[str, ...] = VOCABULARY, max_length: int = MAX_TOKENS):
    """A CLIP BPE tokenizer whose vocabulary is every byte plus ``words`` as single tokens
    (other words split into several tokens)."""
    from transformers import CLIPTokenizer

    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    others = [b for b in range(256) if b not in printable]
    symbols = [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]
    vocab = symbols + [s + "</w>" for s in symbols]
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        # Add merges until byte-pair encoding, which applies the lowest-ranked merge first,
        # turns the word into one token; later merges rank higher, so earlier words keep theirs.
        while len(parts := _bpe([*word[:-1], word[-1] + "</w>"], ranks)) > 1:
            ranks[(parts[0], parts[1])] = len(ranks)
            vocab.append(parts[0] + parts[1])
    merges = list(ranks)
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    ids = {token: i for i, token in enumerate(dict.fromkeys(vocab))}
    return CLIPTokenizer(vocab=ids, merges=merges, model_max_length=max_length)


def _bpe(parts: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding of one word's symbols with the given merge ranks."""
    while len(parts) > 1:
        pairs = [
            (ranks.get(pair, len(ranks)), i)
            for i, pair in enumerate(zip(parts[:-1], parts[1:], strict=True))
        ]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        parts = [*parts[:i], parts[i] + parts[i + 1], *parts[i + 2 :]]
    return parts


def build_pipeline(seed: int = 0):
    """The untrained model: tokenizer, text encoder, UNet and scheduler in one pipeline."""
    from diffusers import DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=MAX_TOKENS,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    # No attention at full resolution: it would triple the cost for little gain at 16x16.
    unet = UNet2DConditionModel(
        sample_size=SIZE,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(64, 96, 128),
        norm_num_groups=16,
        attention_head_dim=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64,
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="epsilon",
        steps_offset=1,
        clip_sample=False,
    )
    return StableDiffusionPipeline(
        vae=None,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def train_world(
    out: str | Path,
    steps: int = 6000,
    batch_size: int = 64,
    lr: float = 5e-4,
    seed: int = 0,
    checkpoint_every: int = 250,
    ema_decay: float = 0.999,
    progress: bool = True,
) -> Path:
    """Train (or resume training) in ``out``; returns the exported model folder ``out/model``.

    Every ``checkpoint_every`` steps the weights, their moving average, the optimizer state and
    the step are written to ``out/checkpoint`` (safetensors + JSON); a restarted run continues
    from there and, since each step's data and noise come from ``(seed, step)``, repeats nothing.
    """
    from diffusers.training_utils import EMAModel

    for name, value in (("steps", steps), ("batch_size", batch_size), ("every", checkpoint_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not (lr > 0 and 0 <= ema_decay < 1):
        raise ValueError(f"need lr > 0 and 0 <= ema_decay < 1, got lr={lr}, ema_decay={ema_decay}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # What the weights depend on: a resume with other values would mix two trainings.
    settings = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed}
    settings["ema_decay"] = ema_decay
    recorded = out / "settings.json"
    if recorded.exists():
        old = json.loads(recorded.read_text())
        changed = [f"{k}: {old.get(k)} -> {v}" for k, v in settings.items() if old.get(k) != v]
        if changed:
            raise ValueError(
                f"{out} holds a training with other settings ({'; '.join(changed)}): "
                "use another `out`, or the same settings to resume"
            )
    else:
        recorded.write_text(json.dumps(settings, indent=2) + "\n")
    pipe = build_pipeline(seed)
    unet, text_encoder, tokenizer = pipe.unet, pipe.text_encoder, pipe.tokenizer
    params = [*unet.parameters(), *text_encoder.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    ema = EMAModel(params, decay=ema_decay)
    start = _load_checkpoint(out / "checkpoint", unet, text_encoder, optimizer, ema)
    # Warm-up, then cosine decay; counted from step 0 of the whole run, also after a resume.
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda i: min(1.0, (start + i + 1) / 300) * 0.5 * (1 + np.cos(np.pi * (start + i) / steps)),
    )

    scenes, weights = all_scenes(), scene_weights("seen")  # held-out pairs stay unseen
    images = torch.stack([render(s) for s in scenes])
    phrasings = [captions(s) for s in scenes]
    abar = pipe.scheduler.alphas_cumprod.float()
    unet.train()
    text_encoder.train()
    bar = tqdm(range(start, steps), initial=start, total=steps, disable=not progress)
    for step in bar:
        rng = np.random.default_rng(np.random.SeedSequence([seed, step]))
        index = rng.choice(len(scenes), size=batch_size, p=weights)
        texts = [drop_words(str(rng.choice(phrasings[i])), rng) for i in index]
        noise = torch.from_numpy(rng.standard_normal((batch_size, 3, SIZE, SIZE)).astype("f4"))
        x = images[index] + 0.1 * torch.from_numpy(
            rng.standard_normal((batch_size, 3, SIZE, SIZE)).astype("f4")
        )
        t = torch.from_numpy(rng.integers(0, len(abar), batch_size))
        a = abar[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * x + (1 - a).sqrt() * noise
        ids = tokenizer(texts, padding="max_length", max_length=MAX_TOKENS, return_tensors="pt")
        hidden = text_encoder(ids.input_ids)[0]
        loss = F.mse_loss(unet(noisy, t, encoder_hidden_states=hidden).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        ema.step(params)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            _save_checkpoint(out / "checkpoint", step + 1, unet, text_encoder, optimizer, ema)
    bar.close()
    return export(out / "checkpoint", out / "model", seed)


def export(checkpoint: str | Path, target: str | Path, seed: int = 0) -> Path:
    """Write the moving-average weights of a checkpoint as a diffusers model folder."""
    from diffusers.training_utils import EMAModel

    pipe = build_pipeline(seed)
    params = [*pipe.unet.parameters(), *pipe.text_encoder.parameters()]
    ema = EMAModel(params)
    _load_checkpoint(Path(checkpoint), pipe.unet, pipe.text_encoder, None, ema)
    ema.copy_to(params)
    target = Path(target)
    if target.exists():
        shutil.rmtree(target)
    pipe.save_pretrained(target, safe_serialization=True)
    return target


def _save_checkpoint(folder: Path, step: int, unet, text_encoder, optimizer, ema) -> None:
    tmp, old = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)  # a partial write from a killed run
    tmp.mkdir(parents=True)
    save_file(unet.state_dict(), str(tmp / "unet.safetensors"))
    save_file(text_encoder.state_dict(), str(tmp / "text_encoder.safetensors"))
    save_file(
        {str(i): p.contiguous() for i, p in enumerate(ema.shadow_params)},
        str(tmp / "ema.safetensors"),
    )
    state = optimizer.state_dict()
    tensors = {f"{i}.{k}": v for i, s in state["state"].items() for k, v in s.items()}
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    meta = {
        "step": step,
        "ema_optimization_step": ema.optimization_step,
        "param_groups": state["param_groups"],
    }
    (tmp / "state.json").write_text(json.dumps(meta))  # last: it marks the folder whole
    # Swap by renames, so a kill at any moment leaves a whole checkpoint in `folder` or `old`.
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(folder: Path, unet, text_encoder, optimizer, ema) -> int:
    """Restore a checkpoint if there is one; returns the step to continue from."""
    if not (folder / "state.json").exists():
        folder = folder.with_name(folder.name + ".old")  # killed in the middle of a swap
        if not (folder / "state.json").exists():
            return 0
    meta = json.loads((folder / "state.json").read_text())
    unet.load_state_dict(load_file(str(folder / "unet.safetensors")))
    text_encoder.load_state_dict(load_file(str(folder / "text_encoder.safetensors")))
    shadow = load_file(str(folder / "ema.safetensors"))
    ema.shadow_params = [shadow[str(i)] for i in range(len(shadow))]
    ema.optimization_step = meta["ema_optimization_step"]
    if optimizer is not None:
        tensors = load_file(str(folder / "optimizer.safetensors"))
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            index, name = key.split(".", 1)
            state.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta["step"]
