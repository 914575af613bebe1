"""How many denoiser evaluations do i.i.d. and stratified log-SNR sampling need?

For the example mixture (shape x colour), on a few fixed data points, a pilot run measures the
per-draw spread of pointwise MI i(x; label) and CMI i(x; colour | shape); from it, the draws for a
2% relative standard error, then a second run at that size checks the standard error reached.
Then the share of wall time spent outside the denoiser, on the 8-dimensional example, on a
3x32x32 mixture of 64 components and on the bundled text-to-image UNet (a real network).

    python benchmarks/estimator_efficiency.py [--pilot 4000] [--points 4]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

import infodecomp as idc
from infodecomp.explain import word_contexts
from infodecomp.models import GaussianMixture, example_mixture
from infodecomp.words import distinct_words
from infodecomp.world.demo import load_bundled
from infodecomp.world.model import WorldModel

TARGET = 0.02  # relative standard error


class Timed:
    """Wraps a denoiser and adds up the time spent inside it."""

    def __init__(self, model):
        self.model, self.logsnr_range, self.seconds = model, model.logsnr_range, 0.0

    def __call__(self, x_noisy, logsnr, conds):
        start = time.perf_counter()
        out = self.model(x_noisy, logsnr, conds)
        self.seconds += time.perf_counter() - start
        return out


def draws_needed(est: idc.Estimate) -> torch.Tensor:
    """Draws per point for a TARGET relative SE, from SE ~ spread / sqrt(n)."""
    n = est.settings["n_samples"]
    return (est.stderr * math.sqrt(n) / (TARGET * est.value.abs())) ** 2


def efficiency_table(pilot: int, points: int) -> None:
    model = example_mixture()
    label = {"shape": "circle", "colour": "red"}
    x, _ = model.sample(points, seed=1, cond=label)
    cases = {
        "MI  i(x; label)": (label, None),
        "CMI i(x; colour | shape)": (label, {"shape": "circle"}),
    }
    print(f"Draws for {TARGET:.0%} relative SE (orthogonal estimator, mean over {points} points)")
    header = f"{'quantity':<26}{'sampling':>11}{'value':>8}{'draws':>8}{'evals':>8}{'rel SE':>8}"
    print(header + f"{'iid/strat':>11}")
    for name, (cond, context) in cases.items():
        needed = {}
        for sampling in ("iid", "stratified"):
            run = dict(n_samples=pilot, seed=0, sampling=sampling, progress=False)
            est = idc.conditional_mutual_info(model, x, cond, context, **run)
            n = int(draws_needed(est).mean().ceil())
            # Evaluations: every draw evaluates the condition and the context once.
            needed[sampling] = n * 2
            check = idc.conditional_mutual_info(
                model, x, cond, context, **{**run, "n_samples": max(n, 2), "seed": 1}
            )
            rel = (check.stderr / check.value.abs()).mean().item()
            ratio = f"{needed['iid'] / needed[sampling]:>11.2f}" if sampling == "stratified" else ""
            print(
                f"{name:<26}{sampling:>11}{est.value.mean().item():>8.3f}{n:>8}"
                f"{needed[sampling]:>8}{rel:>8.3f}{ratio}"
            )


def overhead_table() -> None:
    gen = torch.Generator().manual_seed(0)
    image_like = GaussianMixture(
        torch.randn(64, 3, 32, 32, generator=gen, dtype=torch.float64).clamp(-1, 1),
        torch.full((64,), 0.01),
        labels=[{"object": k % 8, "colour": k // 8} for k in range(64)],
    )
    print("\nWall time outside the denoiser (CMI on shared draws)")
    print(f"{'model':<34}{'conds':>6}{'draws':>7}{'wall s':>9}{'denoiser s':>12}{'outside':>9}")
    for name, model in {
        "example mixture, 8 dims": example_mixture(),
        "64 comps, 3x32x32": image_like,
    }.items():
        x, labels = model.sample(2, seed=0)
        context = {k: v for k, v in labels[0].items() if k != "colour"}
        n = 4000 if x[0].numel() < 100 else 500
        timed_run(name, model, x, labels[0], context, n, batch_size=256)
    # The bundled text-to-image model (a real UNet): the demo caption against nothing and
    # against each word removed, 9 prompts per draw, as `infodecomp demo` evaluates them.
    model, caption = load_bundled(), "a red circle left of a blue square"
    image, _ = WorldModel().sample(1, seed=0, cond=caption)  # a draw of the world that fits
    x = model.encode_image(image[0].float())
    words = distinct_words(caption)
    conds, contexts = [caption] * (1 + len(words)), [None, *word_contexts(caption, words)]
    name = "bundled UNet, 3x16x16 pixels"
    timed_run(name, model, x, conds, contexts, 64, batch_size=model.default_batch_size())


def timed_run(name, model, x, cond, context, n, batch_size) -> None:
    timed = Timed(model)
    start = time.perf_counter()
    est = idc.conditional_mutual_info(
        timed, x, cond, context, n_samples=n, batch_size=batch_size, progress=False
    )
    wall = time.perf_counter() - start
    conds = est.n_evaluations // (n * len(x))
    share = 1 - timed.seconds / wall
    print(f"{name:<34}{conds:>6}{n * len(x):>7}{wall:>9.2f}{timed.seconds:>12.2f}{share:>9.1%}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pilot", type=int, default=4000, help="pilot draws per point")
    parser.add_argument("--points", type=int, default=4, help="data points")
    args = parser.parse_args()
    torch.set_num_threads(2)
    efficiency_table(args.pilot, args.points)
    overhead_table()
