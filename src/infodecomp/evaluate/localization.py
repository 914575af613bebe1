"""Unsupervised localization (the paper's COCO-IT experiment): do a word's maps find its object?

For each (image, caption, word, mask) every method's map is min-max normalised per image and
thresholded. The methods, as Kong et al. define them:

* ``whole image``: a constant map (predicts every pixel), the floor.
* ``information (CMI)``: the word's pixel-wise conditional mutual information i(x; word | rest).
* ``attention + information``: DAAM's aggregation of cross-attention (heads and layers summed,
  each layer upsampled) collected in the estimator's own denoiser calls on the image noised at
  its log-SNR draws (what ``heatmap`` draws as attention).
* ``DAAM``: the same aggregation along a DDIM inversion of the image under the caption and its
  reconstruction (DAAM's own setting), ``steps`` each way.
* ``combined (ours)``: not the paper's: the geometric mean of the CMI and attention maps.
* ``caption MI``: the caption's pixel-wise mutual information (the same map for every word).
* ``exact world model CMI``: on the world's data, the exact model's CMI map (same seed and
  settings).

Two threshold protocols, both reported: the paper's (one global threshold, the best of 50 values
in [0.1, 0.5] on the evaluated items themselves: optimistic) and an honest one (each item's
threshold chosen on the other of two folds fixed by the item id). Also the ImageNet-Segmentation
protocol (Chefer et al.; DAAM and ConceptAttention report it): per-image threshold at the
normalised map's mean, pixel accuracy, mIoU (background and foreground) and mAP.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .. import ddim
from ..report.datasets import map_pictures, small_mask, thumbnail
from ..results import Estimate
from ..sampling import Sampling
from . import metrics
from .common import EvalModel, sampling_line
from .items import LocalizationItem
from .metrics import ATTN_INFO, CMI, COMBINED, DAAM, EXACT, MI, REPORT_MAPS, WHOLE
from .runner import PICTURES, Task


def make_task(
    model: EvalModel,
    sampling: Sampling,
    settings: dict[str, Any],
    reference: EvalModel | None = None,
) -> Task:
    """The localization evaluation of ``model`` (with the exact ``reference``'s CMI maps on the
    world's data)."""

    def measure(item: LocalizationItem) -> dict[str, Any]:
        image, masks = _image_and_masks(item, model.image_size)
        words = list(masks)
        maps, numbers = _maps(model, item, image, words, sampling, settings)
        if reference is not None:
            ref_maps, ref_numbers = _maps(reference, item, image, words, sampling, settings)
            for w in words:
                maps[w][EXACT] = ref_maps[w][CMI]
            numbers["reference"] = ref_numbers
        row: dict[str, Any] = {"caption": item.caption, "words": {}, **numbers}
        pictures = {"image": thumbnail(image)}
        shape = pictures["image"].shape[:2]
        for w in words:
            mask = masks[w].numpy()
            row["words"][w] = {
                method: _scores(_to_size(heat, mask.shape), mask)
                for method, heat in maps[w].items()
            }
            pictures[f"mask/{w}"] = small_mask(mask, shape)
            for method in REPORT_MAPS:
                if method in maps[w]:
                    pictures |= map_pictures(f"map/{w}/{method}", maps[w][method], shape)
        return row | {PICTURES: pictures}

    def denoiser_rows(item: LocalizationItem) -> int:
        n = sampling.rows(2 + len(item.masks))
        return n + (0 if model.is_exact else 2 * settings["ddim_steps"] - 1)

    return Task("localization", measure, denoiser_rows)


def _image_and_masks(item: LocalizationItem, size: int) -> tuple[Any, dict[str, torch.Tensor]]:
    if isinstance(item.image, torch.Tensor):  # data built in memory (the world)
        return item.image, {w: torch.as_tensor(m).bool() for w, m in item.masks.items()}
    from .datasets import load_item_image_and_masks

    return load_item_image_and_masks(item, size)


def _maps(
    model: EvalModel,
    item: LocalizationItem,
    image: Any,
    words: list[str],
    sampling: Sampling,
    settings: dict[str, Any],
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """Each word's maps by method, and the numbers (MI, CMI with standard errors)."""
    if model.is_exact:
        est = model.word_information(item.id, image, item.caption, words, sampling)
        cmi = {w: est.map[0, k].float() for k, w in enumerate(words, start=1)}
        mi_map = est.map[0, 0].float()
        numbers = _numbers(est, words)
        maps = {w: {WHOLE: torch.ones_like(cmi[w]), CMI: cmi[w], MI: mi_map} for w in words}
        return maps, numbers
    res = model.explain(item.id, image, item.caption, words, sampling)
    daam = daam_maps(model.denoiser, res.image, item.caption, words, settings["ddim_steps"])
    numbers = _numbers(res.estimate, words)
    maps = {
        w: {
            WHOLE: torch.ones_like(res.heat_map(w)),
            CMI: res.heat_map(w),
            ATTN_INFO: res.attention_map(w),
            DAAM: daam[w],
            COMBINED: res.combined_map(w),
            MI: res.heat_map(),
        }
        for w in words
    }
    return maps, numbers


def daam_maps(
    model: Any, image: torch.Tensor, caption: str, words: list[str], steps: int
) -> dict[str, torch.Tensor]:
    """DAAM's maps of ``words``: cross-attention (heads and layers summed, each layer upsampled)
    collected along a DDIM inversion of ``image`` under ``caption`` and its reconstruction,
    summed over the word's tokens, at image resolution."""
    from ..explanation import word_token_positions

    x = model.encode_image(image)
    with model.collect_attention(caption) as collector:
        noise = ddim.invert(model, x, caption, steps)
        ddim.sample(model, noise, [caption], steps)
    tokens = collector.token_maps()
    out = {}
    for w in words:
        heat = tokens[word_token_positions(model, caption, w)].sum(0).float()
        out[w] = F.interpolate(heat[None, None], size=image.shape[-2:], mode="bilinear")[0, 0]
    return out


def _numbers(est: Estimate, words: list[str]) -> dict[str, Any]:
    """The item's MI and each word's CMI (value, stderr, ci95, flags) and the evaluations."""
    return {
        "mi": est.entry(0, 0),
        "cmi": {w: est.entry(0, k) for k, w in enumerate(words, 1)},
        "n_evaluations": est.n_evaluations,
    }


def _to_size(heat: torch.Tensor, shape: tuple[int, ...]) -> np.ndarray:
    """The map at the mask's size (bilinear; maps come at the model's image size)."""
    heat = heat.detach().float().cpu()
    if tuple(heat.shape) != tuple(shape):
        heat = F.interpolate(heat[None, None], size=shape, mode="bilinear")[0, 0]
    return heat.numpy()


def _scores(heat: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    thresholds = metrics.PAPER_THRESHOLDS
    return {
        "iou": np.round(metrics.iou_curve(heat, mask, thresholds), 6).tolist(),
        "pixel_accuracy": np.round(
            metrics.pixel_accuracy_curve(heat, mask, thresholds), 6
        ).tolist(),
        "ap": metrics.average_precision(heat, mask),
        "segmentation": metrics.segmentation_stats(heat, mask),
    }


def summarize(rows: list[dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    """Per method: mIoU and pixel accuracy under the paper's and the honest threshold protocol
    (both at the threshold chosen by IoU), mAP, and the ImageNet-Segmentation metrics, each with
    a bootstrap 95% interval that resamples images (a caption's words share their image)."""
    seed = settings["sampling"]["seed"]
    pairs = [(r["id"], scores) for r in rows for scores in r["words"].values()]
    if not pairs:
        return {"methods": {}}
    images = [item_id for item_id, _ in pairs]
    folds = np.array([metrics.fold_of(item_id) for item_id in images])
    both_folds = 0 < folds.sum() < len(folds)
    out: dict[str, Any] = {"methods": {}, "n_words": len(pairs)}
    for method in pairs[0][1]:
        iou = np.array([s[method]["iou"] for _, s in pairs])
        acc = np.array([s[method]["pixel_accuracy"] for _, s in pairs])
        best = metrics.paper_threshold(iou)
        entry: dict[str, Any] = {
            "paper": {
                "threshold": float(metrics.PAPER_THRESHOLDS[best]),
                "miou": metrics.mean_with_ci(iou[:, best], seed=seed, groups=images),
                "pixel_accuracy": metrics.mean_with_ci(acc[:, best], seed=seed, groups=images),
            },
            "map": metrics.mean_with_ci(
                [s[method]["ap"] for _, s in pairs], seed=seed, groups=images
            ),
            "imagenet_segmentation": metrics.segmentation_summary(
                [s[method]["segmentation"] for _, s in pairs], seed=seed, groups=images
            ),
        }
        if both_folds:  # each image's threshold chosen on the other fold of images
            chosen = metrics.cross_fitted_thresholds(iou, folds)
            rows_ = np.arange(len(pairs))
            entry["honest"] = {
                "miou": metrics.mean_with_ci(iou[rows_, chosen], seed=seed, groups=images),
                "pixel_accuracy": metrics.mean_with_ci(
                    acc[rows_, chosen], seed=seed, groups=images
                ),
            }
        out["methods"][method] = entry
    return out


def table(summary: dict[str, Any]) -> str:
    """A line per method: mIoU (paper's threshold, honest threshold), mAP and the
    ImageNet-Segmentation metrics, each with its 95% interval."""
    methods = summary.get("methods", {})
    if not methods:
        return "localization: no items measured yet"
    settings = summary["settings"]

    def fmt(m: dict[str, Any]) -> str:
        return metrics.format_metric(m, 3)

    heads = ["mIoU, paper", "mIoU, honest", "mAP", "IN-Seg acc", "IN-Seg mIoU", "IN-Seg mAP"]
    first = max(len(m) for m in methods) + 2
    lines = [
        f"Localization: {summary['n_items']} images, {summary['n_words']} words "
        f"({summary['n_skipped']} skipped), {sampling_line(settings)}."
        " Mean over words, 95% bootstrap interval resampling images.",
        f"{'':<{first}}" + "".join(f"{h:>23}" for h in heads),
    ]
    for method, e in methods.items():
        seg = e["imagenet_segmentation"]
        honest = fmt(e["honest"]["miou"]) if "honest" in e else "n/a"
        cells = [
            fmt(e["paper"]["miou"]),
            honest,
            fmt(e["map"]),
            fmt(seg["pixel_accuracy"]),
            fmt(seg["miou"]),
            fmt(seg["map"]),
        ]
        lines.append(f"{method:<{first}}" + "".join(f"{c:>23}" for c in cells))
    lines.append(
        "paper: one threshold, the best of 50 in [0.1, 0.5] chosen on these items (optimistic);"
        " honest: each image's threshold chosen on the other half of the images. IN-Seg: the "
        "ImageNet-Segmentation protocol (threshold at each map's mean; mIoU of background and "
        "foreground)."
    )
    return "\n".join(lines)
