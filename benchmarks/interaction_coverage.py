"""Truth tables of `infodecomp.interaction_information` against exact answers.

For the exact models of the plain and the correlated world (exact log-probabilities) and the
labelled two-factor Gaussian mixture, every pair's linear quantities (the three informations,
the interaction information, each word given the other, the difference) and DiffusionPID's atoms
are estimated (standard estimator) and compared with their exact values: per quantity the mean
error with its standard error (sqrt of the summed variances / n), the share of 95% intervals that
cover the exact value, and the mean exact value. World pairs: each two-object image's first
object's colour and shape, a colour with the other object's shape, and the relation word with the
second object's shape; mixture pairs: each point's shape and colour.

    OMP_NUM_THREADS=1 python benchmarks/interaction_coverage.py [--images 60] [--draws 256]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import infodecomp as idc
from infodecomp.interactions import (
    ATOMS,
    LINEAR,
    interaction_information,
    pair_conditions,
    quantities,
)
from infodecomp.models.reference import example_mixture
from infodecomp.sampling import Sampling
from infodecomp.world.scenes import sample

RELATIONS = ("left", "right", "above", "below")


def exact_terms(model, x: torch.Tensor, conditions: dict) -> np.ndarray:
    """(i1, i2, i12) of one pair from exact log-probabilities, nats."""
    lp = {k: model.log_prob(x, v).item() for k, v in conditions.items()}
    return np.array([lp["first"] - lp["rest"], lp["second"] - lp["rest"], lp["joint"] - lp["rest"]])


def world_cases(prior: str, n_images: int) -> list[tuple[torch.Tensor, list[dict]]]:
    """Two-object world images and the conditions of their pairs."""
    s = sample(20 * n_images, seed=11, split="test", prior=prior)
    cases = []
    for image, caption, scene in zip(s.images, s.captions, s.scenes, strict=True):
        if len(scene.objects) != 2:
            continue
        first, second = scene.objects
        relation = next(w for w in caption.split() if w in RELATIONS)
        words = caption.split()
        pairs = [
            p
            for p in [
                (first.colour, first.shape),
                (first.colour, second.shape),
                (relation, second.shape),
            ]
            if p[0] != p[1] and all(words.count(w) == 1 for w in p)
        ]
        if pairs:
            cases.append((image[None].double(), [pair_conditions(caption, *p) for p in pairs]))
        if len(cases) == n_images:
            break
    return cases


def mixture_cases(n_points: int) -> list[tuple[torch.Tensor, list[dict]]]:
    model = example_mixture()
    x, labels = model.sample(n_points, seed=4)
    return [
        (
            x[i : i + 1],
            [
                {
                    "joint": label,
                    "first": {"shape": label["shape"]},
                    "second": {"colour": label["colour"]},
                    "rest": None,
                }
            ],
        )
        for i, label in enumerate(labels)
    ]


def measure(model, cases, draws: int) -> dict[str, dict[str, list[float]]]:
    """Per quantity: errors, variances, coverage and exact values over every pair."""
    found: dict[str, dict[str, list[float]]] = {
        q: {"error": [], "var": [], "cover": [], "exact": []} for q in (*LINEAR, *ATOMS)
    }
    for x, conditions in cases:
        keys = ("joint", "first", "second", "rest")
        out = interaction_information(
            model,
            x,
            *([c[k] for c in conditions] for k in keys),
            sampling=Sampling(draws=draws, seed=0),
            progress=False,
        )
        for p, c in enumerate(conditions):
            exact = quantities(*exact_terms(model, x, c))
            for q, f in found.items():
                est = out[q]
                value = est.value[0, p].item()
                low, high = est.ci95[0, p].tolist()
                f["error"].append(value - exact[q])
                f["var"].append(est.stderr[0, p].item() ** 2)
                f["cover"].append(low - 1e-9 <= exact[q] <= high + 1e-9)
                f["exact"].append(exact[q])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60, help="world images / mixture points")
    parser.add_argument("--draws", type=int, default=256)
    args = parser.parse_args()
    runs = {
        "plain world": (idc.load_model("exact", device="cpu"), world_cases("plain", args.images)),
        "correlated world": (
            idc.load_model("exact-correlated", device="cpu"),
            world_cases("correlated", args.images),
        ),
        "two-factor mixture": (example_mixture(), mixture_cases(args.images)),
    }
    print(f"{args.draws} draws per image, seed 0, standard estimator; nats")
    for name, (model, cases) in runs.items():
        start = time.perf_counter()
        found = measure(model, cases, args.draws)
        n = len(found["joint"]["error"])
        seconds = time.perf_counter() - start
        print(f"\n{name}: {len(cases)} images, {n} pairs ({seconds:.0f} s)")
        print(
            f"{'quantity':<20}{'mean exact':>12}{'mean error':>14}{'+- SE':>9}{'z':>7}{'cover':>8}"
        )
        for q, f in found.items():
            error = np.mean(f["error"])
            se = np.sqrt(np.sum(f["var"])) / n
            # A quantity that is 0 but for rounding (independent factors) has no z.
            z = f"{error / se:.2f}" if se > 1e-9 else "-"
            print(
                f"{q:<20}{np.mean(f['exact']):>12.3f}{error:>14.4f}{se:>9.4f}"
                f"{z:>7}{np.mean(f['cover']):>8.1%}"
            )


if __name__ == "__main__":
    main()
