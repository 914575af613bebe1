"""Denoiser evaluations for a 2% relative standard error on each word's CMI of the demo caption.

Three samplers, side by side in one run, on the exact world model and the bundled model, for the
orthogonal CMI of each word of "a red circle left of a blue square" on the demo's image:
- paper: the paper's sampler: i.i.d. log-SNR from a truncated logistic (loc 1, scale 2, clip 3),
  each word's pair (caption, caption without the word) run on its own: 2 evaluations per draw.
- fixed: stratified draws from the model's whole range, all words' pairs on shared draws (the
  caption once, each context once per draw): the library before the adaptive proposal.
- adaptive: the library's default: a pilot, then a proposal fitted to all words' integrands.
From ``--draws`` draws per run and ``--seeds`` runs, each word's per-draw variance gives the draws
for a 2% relative SE; the evaluations count everything spent (the pilot and the draws at the
range's ends included). One shared run must reach 2% on its hardest word.

    python benchmarks/estimator_efficiency.py [--draws 512] [--seeds 4] [--models world,bundled]
"""

from __future__ import annotations

import argparse
import time

import torch

import infodecomp as idc
from infodecomp.explanation import word_contexts
from infodecomp.loading import load_model
from infodecomp.sampling import Sampling
from infodecomp.world.model import WorldModel

CAPTION = "a red circle left of a blue square"
WORD_SETS = {"red, circle, blue": ("red", "circle", "blue"), "all words": None}
TARGET = 0.02  # relative standard error


def draws_for_target(model, x, words, sampler, draws, seeds, shared) -> tuple[list, float]:
    """Per word, the draws for a TARGET relative SE; and the evaluations one draw costs."""
    contexts = word_contexts(CAPTION, list(words))
    runs = [(c,) for c in contexts] if not shared else [tuple(contexts)]
    variances = torch.zeros(len(words), dtype=torch.float64)
    values = torch.zeros(len(words), dtype=torch.float64)
    evaluations = 0
    for seed in range(seeds):
        k = 0
        for group in runs:
            est = idc.conditional_mutual_info(
                model,
                x,
                [CAPTION] * len(group),
                list(group),
                progress=False,
                sampling=Sampling(draws=draws, seed=seed, **sampler),
            )
            n = len(group)
            values[k : k + n] += est.value[0] / seeds
            variances[k : k + n] += est.stderr[0] ** 2 * draws / seeds
            if seed == 0:
                evaluations += est.n_evaluations
            k += n
    needed = variances / (TARGET * values.abs()) ** 2
    rows = [(w, values[i].item(), needed[i].item()) for i, w in enumerate(words)]
    return rows, evaluations / draws


def table(name: str, model, x, draws: int, seeds: int) -> None:
    wide = idc.TruncatedLogistic.from_range(*model.logsnr_range)
    samplers = {
        "paper": dict(logsnr=idc.TruncatedLogistic(), stratified=False, adaptive=False),
        "fixed": dict(logsnr=wide, stratified=True, adaptive=False),
        "adaptive": dict(logsnr=wide, stratified=True, adaptive=True),
    }
    all_words = [w for w in dict.fromkeys(CAPTION.split()) if w not in ("a", "of")]
    for set_name, words in WORD_SETS.items():
        words = words or all_words
        print(f"\n{name}: {set_name} ({draws} draws x {seeds} seeds per run)")
        header = "".join(f"{w:>16}" for w in words)
        print(f"{'sampler':<10}{header}{'evaluations':>14}{'vs paper':>10}{'wall s':>8}")
        totals = {}
        for label, sampler in samplers.items():
            start = time.perf_counter()
            rows, per_draw = draws_for_target(
                model, x, words, sampler, draws, seeds, shared=label != "paper"
            )
            if label == "paper":  # each word's pair run on its own, to its own target
                total = sum(2 * n for _, _, n in rows)
            else:  # one shared run, to the target of its hardest word
                total = max(n for _, _, n in rows) * per_draw
            totals[label] = total
            cells = "".join(f"{v:>8.3f}{n:>8.0f}" for _, v, n in rows)
            ratio = total / totals["paper"]
            wall = time.perf_counter() - start
            print(f"{label:<10}{cells}{total:>14.3g}{ratio:>10.2f}{wall:>8.1f}")
        print("(per word: value in nats, then draws for a 2% relative SE)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=512, help="draws per run")
    parser.add_argument("--seeds", type=int, default=4, help="runs per sampler")
    parser.add_argument("--models", default="world,bundled", help="world, bundled or both")
    args = parser.parse_args()
    torch.set_num_threads(1)
    world = WorldModel()
    image, _ = world.sample(1, seed=0, cond=CAPTION)  # the demo's image
    for name in args.models.split(","):
        if name == "world":
            table("exact world model", world, image, args.draws, args.seeds)
        else:
            bundled = load_model("bundled")
            x = bundled.encode_image(image[0].float())
            table("bundled model", bundled, x, args.draws, args.seeds)


if __name__ == "__main__":
    main()
