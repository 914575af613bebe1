"""How good is the bundled model? Caption-consistent generation and word localisation.

1. Generation: one image per caption of the test split, for scenes of the kinds the model trained
   on ("seen") and for the object pairs it never saw together ("unseen", a test of composition);
   the world's checker (the exact model's most probable scene) says whether the image has the
   caption's objects (colour and shape of each) and, stricter, also their relation.
2. Localisation: for each colour and shape word of held-out images, the bundled model's CMI map,
   the exact world model's CMI map (same draws and log-SNR distribution), the cross-attention map
   and the combined map, each thresholded at a fraction of its maximum chosen on the validation
   split, against the word's ground-truth object mask (mIoU on the test split); the whole-image
   baseline; and the correlation between the bundled and the exact maps.

    python benchmarks/world_quality.py [--model DIR] [--generate 200] [--images 40] [--samples 64]

Prints tables (mean ± standard error over captions or words) and writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

import infodecomp as idc
from infodecomp.models import DiffusersModel
from infodecomp.world.demo import BUNDLED, exact_cmi
from infodecomp.world.model import WorldModel
from infodecomp.world.scenes import COLOURS, SHAPES, sample, split_caption, word_masks

PAIRS = ("seen", "unseen")

THRESHOLDS = [i / 20 for i in range(1, 20)]
METHODS = ("bundled CMI", "exact CMI", "attention", "combined", "whole image")


def mean_se(values: list[float]) -> tuple[float, float]:
    t = torch.tensor(values, dtype=torch.float64)
    return t.mean().item(), (t.std() / math.sqrt(len(t))).item() if len(t) > 1 else float("nan")


def generation(model: DiffusersModel, world: WorldModel, n: int, seed: int, pairs: str) -> dict:
    data = sample(n, seed=seed, split="test", pairs=pairs)
    images = torch.cat(
        [model.generate(data.captions[i : i + 50], seed=seed + i) for i in range(0, n, 50)]
    )
    single = torch.tensor([len(s.objects) == 1 for s in data.scenes])
    out = {}
    for check, relation in (("objects", False), ("objects and relation", True)):
        fits = world.fits(images, data.captions, relation=relation).double()
        for name, rows in (("all", slice(None)), ("one object", single), ("two objects", ~single)):
            k = int(fits[rows].numel())
            if k == 0:  # unseen pairs have no one-object scenes
                continue
            p = fits[rows].mean().item()
            out[f"{check}: {name}"] = {"accuracy": p, "stderr": math.sqrt(p * (1 - p) / k), "n": k}
    return out


def maps_for_split(model, world, split: str, n: int, seed: int, samples: int) -> list[dict]:
    """Per word: the four maps (16x16) and the ground-truth mask."""
    data = sample(n, seed=seed, split=split)
    rows = []
    for image, scene, caption in zip(data.images, data.scenes, data.captions, strict=True):
        words = [w for w in dict.fromkeys(split_caption(caption)) if w in COLOURS or w in SHAPES]
        res = idc.explain(
            model,
            image,
            caption,
            words,
            n_samples=samples,
            seed=seed,
            progress=False,
        )
        exact = exact_cmi(world, res, samples, seed, model.logsnr_range)
        masks = word_masks(scene, caption)
        for k, word in enumerate(words, start=1):
            rows.append(
                {
                    "mask": masks[word],
                    "bundled CMI": res.heat_map(word),
                    "exact CMI": exact.map[0, k].float(),
                    "attention": res.attention_map(word),
                    "combined": res.combined_map(word),
                    "whole image": torch.ones(16, 16),
                }
            )
    return rows


def iou(heat: torch.Tensor, mask: torch.Tensor, threshold: float) -> float:
    pred = heat >= threshold * heat.max()
    union = (pred | mask).sum().item()
    return (pred & mask).sum().item() / union if union else 0.0


def localisation(model, world, n: int, seed: int, samples: int) -> dict:
    validation = maps_for_split(model, world, "validation", n, seed, samples)
    test = maps_for_split(model, world, "test", n, seed, samples)
    out = {}
    for method in METHODS:
        best = max(THRESHOLDS, key=lambda t: sum(iou(r[method], r["mask"], t) for r in validation))
        miou, se = mean_se([iou(r[method], r["mask"], best) for r in test])
        out[method] = {"miou": miou, "stderr": se, "threshold": best, "n_words": len(test)}
    corr = [
        torch.corrcoef(torch.stack([r["bundled CMI"].flatten(), r["exact CMI"].flatten()]))[
            0, 1
        ].item()
        for r in test
    ]
    out["bundled vs exact map correlation"] = dict(
        zip(("mean", "stderr"), mean_se(corr), strict=True)
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(BUNDLED), help="diffusers folder (default: bundled)")
    parser.add_argument("--generate", type=int, default=200, help="captions to generate for")
    parser.add_argument("--images", type=int, default=40, help="images per split for localisation")
    parser.add_argument("--samples", type=int, default=64, help="noise draws per image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path("world_quality.json"))
    args = parser.parse_args()

    model, world = DiffusersModel.from_pretrained(args.model), WorldModel()
    gen = {pairs: generation(model, world, args.generate, args.seed, pairs) for pairs in PAIRS}
    print(
        "Generation: images that fit their test caption (world checker); 'objects' checks the"
        " colour and shape of each object, 'objects and relation' also left/right/above/below;"
        " 'unseen' captions name object pairs never shown together in training"
    )
    for pairs, rows in gen.items():
        for name, r in rows.items():
            label = f"{pairs} {name}"
            print(f"  {label:<38} {r['accuracy']:6.1%} ± {r['stderr']:.1%}  (n={r['n']})")
    loc = localisation(model, world, args.images, args.seed, args.samples)
    print(
        f"Localisation of colour and shape words: test mIoU ({args.images} images per split, "
        f"threshold = fraction of the map's maximum chosen on validation)"
    )
    for method in METHODS:
        r = loc[method]
        print(
            f"  {method:<12} {r['miou']:.3f} ± {r['stderr']:.3f}  (threshold {r['threshold']:.2f},"
            f" {r['n_words']} words)"
        )
    c = loc["bundled vs exact map correlation"]
    print(f"  correlation of bundled and exact CMI maps: {c['mean']:.3f} ± {c['stderr']:.3f}")
    args.json.write_text(
        json.dumps(
            {
                "generation": gen,
                "localisation": loc,
                "settings": vars(args) | {"json": str(args.json)},
            },
            indent=2,
        )
    )
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
