"""Prompt interventions (the paper's editing experiment): does a word's information predict
what changes when the word is removed?

For each (image, caption, word): the image is inverted to noise by deterministic DDIM under the
caption (or, for an image the model generated, its recorded starting noise is used), then
regenerated from that noise under the caption and under the caption without the word (all in one
batch per step, no guidance). The change is the squared difference of the two
regenerations in the model's input space (latents for latent models), summed over channels: per
pixel a map, its mean the image-level change. Comparing two regenerations (rather than the
original image) keeps the inversion's own error out of the change.

The change is correlated with the word's CMI (its value; its map, pixel by pixel) and with its
"attention + information" map (the map; its mean for the image level), by Pearson and Spearman
with bootstrap 95% intervals. On the world's data the exact model's change and CMI are measured
the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import safetensors
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from .. import ddim
from ..explanation import word_contexts
from ..images import load_image
from ..report.datasets import map_pictures, thumbnail
from ..sampling import Sampling
from . import metrics
from .common import EvalModel, in_batches, sampling_line, shared_denoisers
from .items import BadItemError, InterventionItem
from .runner import PICTURES, Task


def make_task(
    model: EvalModel,
    sampling: Sampling,
    settings: dict[str, Any],
    reference: EvalModel | None = None,
) -> Task:
    """The intervention evaluation of ``model`` (and of the exact ``reference`` on the world)."""
    # The runner merges these denoisers' calls across the items in flight (batching.py).
    model, reference = in_batches(model), in_batches(reference)

    def measure(item: InterventionItem) -> dict[str, Any]:
        pictures: dict[str, Any] = {}
        measured = measure_item(model, item, sampling, settings, pictures)
        row: dict[str, Any] = {"caption": item.caption, "models": {"model": measured}}
        if reference is not None:
            row["models"]["reference"] = measure_item(reference, item, sampling, settings)
        return row | {PICTURES: pictures}

    def denoiser_rows(item: InterventionItem) -> int:
        steps = settings["ddim_steps"]
        ddim_rows = (steps - 1) + steps * (1 + len(item.words))
        return sampling.rows(2 + len(item.words)) + ddim_rows

    denoisers = shared_denoisers(model, reference)
    return Task("intervention", measure, denoiser_rows, denoisers, sampling.batch_size)


def measure_item(
    model: EvalModel,
    item: InterventionItem,
    sampling: Sampling,
    settings: dict[str, Any],
    pictures: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Each word's CMI (nats, with its standard error), its change on removal, and the
    pixel-level correlations of the change map with the CMI and attention maps. ``pictures``,
    if given, receives the report's small pictures: the image, its regeneration with the
    caption (``"with"``) and per word without it, the change map and the CMI map."""
    words = list(item.words)
    contexts = word_contexts(item.caption, words)
    steps = settings["ddim_steps"]
    along = {"batch_size": sampling.batch_size}
    image, noise, n_eval = item.image, None, 0
    if settings.get("protocol") == "paper" and isinstance(image, (str, Path, Image.Image)):
        image = load_image(image, model.image_size, fit="squash")  # as the paper: squashed
    if item.noise is not None:  # a generated image: its starting noise is known
        noise = _noise(item)[None]
        generated = ddim.sample(model.denoiser, noise, [item.caption], steps, **along)
        # Pixel models explain the generated pixels as they are; latent ones their decoding.
        latent = not model.is_exact and model.denoiser.vae is not None
        image = model.denoiser.decode(generated)[0] if latent else generated[0]
        n_eval += steps
    if model.is_exact:
        x = model.input(image)
        est = model.word_information(item.id, image, item.caption, words, sampling)
        cmi_maps = {w: est.map[0, k] for k, w in enumerate(words, start=1)}
        cmi = {w: est.entry(0, k) for k, w in enumerate(words, 1)}
        attention: dict[str, torch.Tensor] = {}
        n_eval += est.n_evaluations
    else:
        res = model.explain(item.id, image, item.caption, words, sampling)
        x = model.denoiser.encode_image(res.image)
        cmi_maps = {w: res.heat_map(w, upsample=False) for w in words}
        cmi = {w: res.entry(w) for w in words}
        attention = {w: res.attention_map(w, upsample=False) for w in words}
        n_eval += res.estimate.n_evaluations
        image = res.image  # as the model saw it (cropped and resized)

    if noise is None:
        noise = ddim.invert(model.denoiser, x, item.caption, steps, **along)
        n_eval += steps - 1
    conds = [item.caption, *contexts]
    noises = noise.expand(len(conds), *x.shape[1:])
    regenerated = ddim.sample(model.denoiser, noises, conds, steps, **along)
    change_maps = ((regenerated[1:] - regenerated[:1]) ** 2).sum(1)  # (words, h, w)

    n_eval += steps * len(conds)
    # How faithfully the edits' starting point reproduces the image (0 for generated images
    # up to rounding; the inversion's error otherwise), per input value.
    reconstruction = (regenerated[0] - x[0].to(regenerated)).pow(2).mean().item()
    out: dict[str, Any] = {
        "n_evaluations": n_eval,
        "reconstruction_mse": reconstruction,
        "words": {},
    }
    for k, w in enumerate(words):
        change = change_maps[k].float()
        entry = {
            "cmi": cmi[w],
            "change": change.mean().item(),
            "pixel_pearson_cmi": _pixel_corr(cmi_maps[w], change, "pearson"),
            "pixel_spearman_cmi": _pixel_corr(cmi_maps[w], change, "spearman"),
        }
        if w in attention:
            entry["attention"] = attention[w].float().mean().item()
            entry["pixel_pearson_attention"] = _pixel_corr(attention[w], change, "pearson")
            entry["pixel_spearman_attention"] = _pixel_corr(attention[w], change, "spearman")
        out["words"][w] = entry
    if pictures is not None:
        pictures["image"] = thumbnail(image)
        shape = pictures["image"].shape[:2]
        shown = _images(model, regenerated)
        pictures["with"] = thumbnail(shown[0])
        for k, w in enumerate(words):
            pictures[f"without/{w}"] = thumbnail(shown[k + 1])
            pictures |= map_pictures(f"change/{w}", change_maps[k], shape)
            pictures |= map_pictures(f"cmi/{w}", cmi_maps[w], shape)
    return out


def _images(model: EvalModel, x: torch.Tensor) -> list[torch.Tensor]:
    """Model inputs ``(n, *data_shape)`` as images ``(3, H, W)`` in [-1, 1], decoded one at a
    time (a latent model's VAE at full resolution)."""
    if model.is_exact:
        return [image.float().clamp(-1, 1).cpu() for image in x]
    return [model.denoiser.decode(one[None])[0] for one in x]


def _noise(item: InterventionItem) -> torch.Tensor:
    """The item's recorded noise: a tensor, or a safetensors file holding a tensor "noise"."""
    if isinstance(item.noise, (str, Path)):
        try:
            return load_file(str(item.noise))["noise"].to(torch.float64)
        except (OSError, KeyError, safetensors.SafetensorError) as err:
            raise BadItemError(
                f"{item.source}: cannot read noise from {item.noise}: {err}"
            ) from None
    return torch.as_tensor(item.noise, dtype=torch.float64)


def _pixel_corr(heat: torch.Tensor, change: torch.Tensor, method: str) -> float:
    """Correlation of a map with the change map over pixels (the map resized to the change's
    size); NaN when either is constant."""
    heat = heat.detach().float().cpu()
    if heat.shape != change.shape:
        heat = F.interpolate(heat[None, None], size=change.shape, mode="bilinear")[0, 0]
    corr = metrics.pearson if method == "pearson" else metrics.spearman
    return corr(heat.flatten().double().numpy(), change.flatten().double().numpy())


def summarize(rows: list[dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    """Per model: image-level Pearson and Spearman correlations (over (item, word) pairs) of the
    change with the CMI and with the attention, and pixel-level correlations (mean over pairs),
    each with a bootstrap 95% interval; and the mean change."""
    seed = settings["sampling"]["seed"]
    out: dict[str, Any] = {"models": {}}
    if not rows:
        return out
    labels = {"model": settings["model_label"], "reference": settings.get("reference_label")}
    for who in rows[0]["models"]:
        # The bootstrap resamples images: a caption's words, and an image's captions, share it.
        pairs = [
            (r.get("cluster", r["id"]), e) for r in rows for e in r["models"][who]["words"].values()
        ]
        images = [cluster for cluster, _ in pairs]
        entries = [e for _, e in pairs]
        change = [e["change"] for e in entries]
        kw = {"seed": seed, "groups": images}
        model_out: dict[str, Any] = {
            "label": labels[who],
            "n_pairs": len(entries),
            "mean_change": metrics.mean_with_ci(change, **kw),
            "reconstruction_mse": metrics.mean_with_ci(
                [r["models"][who].get("reconstruction_mse", float("nan")) for r in rows],
                seed=seed,
                groups=[r.get("cluster", r["id"]) for r in rows],
            ),
            "clusters": len({r.get("cluster", r["id"]) for r in rows}),
            "image_level": {},
            "pixel_level": {},
        }
        signals = {"cmi": [e["cmi"]["value"] for e in entries]}
        if entries and "attention" in entries[0]:
            signals["attention"] = [e["attention"] for e in entries]
        for what, signal in signals.items():
            for method in ("pearson", "spearman"):
                model_out["image_level"][f"{method}_{what}"] = metrics.correlation(
                    signal, change, method, **kw
                )
                model_out["pixel_level"][f"{method}_{what}"] = metrics.mean_with_ci(
                    [e[f"pixel_{method}_{what}"] for e in entries], **kw
                )
        out["models"][who] = model_out
    return out


def table(summary: dict[str, Any]) -> str:
    """Correlations of the change on removing a word with its CMI and its attention."""
    models = summary.get("models", {})
    if not models:
        return "intervention: no items measured yet"
    settings = summary["settings"]

    def fmt(m: dict[str, Any]) -> str:
        return metrics.format_metric(m, 2)

    lines = [
        f"Prompt interventions: {summary['n_items']} images"
        + (" generated from recorded noise" if settings.get("generated") else "")
        + f" ({summary['n_skipped']} skipped), "
        f"{sampling_line(settings)}, {settings['ddim_steps']} DDIM steps. Correlation of the "
        "change on removing a word with the word's CMI / attention, 95% bootstrap interval.",
        f"{'':<44}{'Pearson':>22}{'Spearman':>22}",
    ]
    for m in models.values():
        for name, pearson, spearman in metrics.correlations(m):
            lines.append(f"{name:<44}{fmt(pearson):>22}{fmt(spearman):>22}")
        lines.append(
            f"{m['label']}: {m['n_pairs']} (caption, word) pairs of {m.get('clusters', '?')} "
            f"images, mean change "
            f"{fmt(m['mean_change'])} (squared difference per input value, summed over channels);"
            f" reconstruction error {metrics.format_metric(m['reconstruction_mse'], 2, 'g')} per"
            " input value"
        )
    lines.append(
        "image level: across (image, word) pairs, the word's CMI (nats) or mean attention against"
        " the mean change; pixel level: per pair, map against change map, then the mean. "
        "Intervals resample images (all the captions and words of an image together)."
    )
    return "\n".join(lines)
