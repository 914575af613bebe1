"""How good is the bundled model? Caption-consistent generation and word localisation.

1. Generation: one image per caption of the test split, for scenes of the kinds the model trained
   on ("seen") and for the object pairs it never saw together ("unseen", a test of composition);
   the world's checker (the exact model's most probable scene) says whether the image has the
   caption's objects (colour and shape of each) and, stricter, also their relation.
2. Localisation: ``infodecomp eval localization`` on the world's test split (the library's
   metrics: mIoU under the paper's and an honest threshold protocol, mAP, ImageNet-Segmentation
   metrics; the bundled model's maps beside the exact world model's CMI maps).

    python benchmarks/world_quality.py [--model DIR] [--generate 200] [--images 40] [--samples 64]

Prints tables (mean ± standard error over captions; 95% bootstrap intervals for localisation)
and writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import torch

from infodecomp.evaluate import localization
from infodecomp.evaluate.evaluation import evaluate
from infodecomp.models import DiffusersModel
from infodecomp.sampling import Sampling
from infodecomp.world.bundled_model import BUNDLED
from infodecomp.world.model import WorldModel
from infodecomp.world.scenes import sample

PAIRS = ("seen", "unseen")


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(BUNDLED), help="diffusers folder (default: bundled)")
    parser.add_argument("--generate", type=int, default=200, help="captions to generate for")
    parser.add_argument("--images", type=int, default=40, help="test images for localisation")
    parser.add_argument("--samples", type=int, default=64, help="noise draws per image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path("world_quality.json"))
    args = parser.parse_args()

    model, world = DiffusersModel.from_pretrained(args.model), WorldModel()
    args.model = "bundled" if Path(args.model) == BUNDLED else args.model
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
    with tempfile.TemporaryDirectory() as out:
        loc = evaluate(
            "localization",
            out,
            model=args.model,
            limit=args.images,
            progress=False,
            sampling=Sampling(draws=args.samples, seed=args.seed),
        )
    print(localization.table(loc))
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
