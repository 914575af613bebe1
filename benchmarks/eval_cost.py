"""Denoiser rows per compositional item: sequential ranking against the fixed protocol.

On the world's compositional items (relation swaps, attribute swaps, word orders), for the exact
world model (a strong model) and the bundled model (a weak one), in one run:

* rows per item of ``rank_sequentially`` (at most ``--draws``) against the fixed protocol
  (``--draws`` draws plus the range-end draws, every caption and the unconditional);
* its decisions against the sign of the true caption's margin in a long fixed run
  (``--reference-draws``, the standard estimator, decided where |z| >= 3): the share of items it
  decides with the other sign;
* its accuracy (undecided items as ties) against the long fixed run's;
* the coverage of its margins' intervals at the stop: against the exact log-ratios (exact model)
  or the long run's estimate (bundled model: its SE is small beside the intervals);
* the projected H200-hours of the paper's four ARO sets on an SD-class model: items x measured
  rows per item (captions scaled to the sets': 2, 2, 5, 5) / the rows/s of SD 1.5 at 512 px in
  float16 measured by ``benchmarks/gpu_check.py`` (``results/gpu_check_h200.txt``: 358).

* precision targets on the world's localization items (the bundled model, every word's CMI
  and the caption's MI, as ``eval localization`` measures them): rows per item and the mean
  worst-word SE of fixed ``--draws`` draws against ``--target-se`` at a few targets (at most
  ``--target-most`` draws), and the rows a target needs for the fixed run's mean worst-word SE
  (interpolated between the targets, log-log).

    OMP_NUM_THREADS=1 python benchmarks/eval_cost.py [--items 24] [--draws 256]
        [--reference-draws 1024] [--models exact,bundled] [--parts ranking,target]
        [--localization-items 16]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from infodecomp.estimators import conditional_mutual_info
from infodecomp.evaluate.world_data import compositional_items, localization_items
from infodecomp.explanation import explain
from infodecomp.loading import load_model
from infodecomp.sampling import Sampling
from infodecomp.sequential import rank_sequentially

H200_ROWS_PER_S = 358.0  # SD 1.5, 512 px, float16 (results/gpu_check_h200.txt)
ARO_SETS = {  # items, captions per item
    "VG-Relation": (23937, 2),
    "VG-Attribution": (28748, 2),
    "COCO-Order": (25010, 5),
    "Flickr30k-Order": (5000, 5),
}


def long_margins(model, x, item, draws: int) -> tuple[list[float], list[float]]:
    """The true caption's margin over each false caption, and its SE, from a fixed run."""
    k = item.true_index
    falses = [j for j in range(len(item.captions)) if j != k]
    est = conditional_mutual_info(
        model,
        x,
        [item.captions[k]] * len(falses),
        [item.captions[j] for j in falses],
        estimator="standard",
        sampling=Sampling(draws=draws, seed=12345),
        keys=[f"{item.id}/long"],
        progress=False,
    )
    return est.value[0].tolist(), est.stderr[0].tolist()


def worst_word_se(model, items, sampling: Sampling) -> tuple[float, np.ndarray, float]:
    """Mean rows per item, each item's worst-word SE (nats) and the share of values (MI and
    every word's CMI) above their target, for ``explain`` on each localization item."""
    rows, worst, above, values = 0, [], 0, 0
    for item in items:
        words = list(item.masks)
        res = explain(
            model,
            item.image,
            item.caption,
            words=words,
            sampling=sampling,
            attention=False,
            key=item.id,
            progress=False,
        )
        rows += res.estimate.n_evaluations
        worst.append(max(res.entry(w)["stderr"] for w in words))
        entries = [res.entry(), *(res.entry(w) for w in words)]
        above += sum(e["stderr"] > e.get("target", np.inf) for e in entries)
        values += len(entries)
    return rows / len(items), np.array(worst), above / values


def target_table(args: argparse.Namespace) -> None:
    model = load_model("bundled", device="cpu")
    items = localization_items(args.split, args.localization_items)
    print(
        f"\nprecision targets: {len(items)} world localization items ({args.split}), bundled "
        f"model, MI and every word's CMI; fixed {args.draws} draws vs --target-se (at most "
        f"{args.target_most})",
        flush=True,
    )
    header = (
        f"{'run':<22}{'rows/item':>10}{'worst-word SE: mean':>21}{'max':>7}{'above target':>14}"
    )
    print(header + f"{'s':>6}")
    start = time.perf_counter()
    fixed_rows, fixed_se, _ = worst_word_se(model, items, Sampling(draws=args.draws))
    print(
        f"{f'fixed {args.draws}':<22}{fixed_rows:>10.0f}{fixed_se.mean():>21.3f}"
        f"{fixed_se.max():>7.3f}{'-':>14}{time.perf_counter() - start:>6.0f}",
        flush=True,
    )
    targets = {"median": np.median(fixed_se), "largest": fixed_se.max()}
    ratios = {}
    for name, target in targets.items():
        start = time.perf_counter()
        sampling = Sampling(draws=args.target_most, target_se=round(float(target), 3))
        rows, se, above = worst_word_se(model, items, sampling)
        ratios[name] = (rows / fixed_rows, float((se <= target).mean()))
        print(
            f"{f'--target-se {target:.3f}':<22}{rows:>10.0f}{se.mean():>21.3f}{se.max():>7.3f}"
            f"{above:>14.1%}{time.perf_counter() - start:>6.0f}",
            flush=True,
        )
    for name, (ratio, met) in ratios.items():
        print(
            f"target = the fixed run's {name} worst-word SE: {ratio:.2f}x its rows; "
            f"{met:.0%} of items' worst words at or below it (fixed: "
            f"{(fixed_se <= targets[name]).mean():.0%})"
        )
    print(
        "(equal SE for every item costs more than equal draws for the same *mean* SE: "
        "sum s_i^2 / t^2 >= n, Jensen; a target pays where items differ and a worst case is asked)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=24)
    parser.add_argument("--draws", type=int, default=256)
    parser.add_argument("--reference-draws", type=int, default=1024)
    parser.add_argument("--models", default="exact,bundled")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--parts", default="ranking,target")
    parser.add_argument("--localization-items", type=int, default=16)
    parser.add_argument("--target-most", type=int, default=1024)
    args = parser.parse_args()
    parts = args.parts.split(",")
    if "ranking" in parts:
        ranking_table(args)
    if "target" in parts:
        target_table(args)


def ranking_table(args: argparse.Namespace) -> None:
    items = compositional_items(args.split, args.items)
    print(
        f"eval_cost: {args.items} world compositional items ({args.split}), sequential at most "
        f"{args.draws} draws vs fixed {args.draws}; reference: fixed {args.reference_draws} "
        "draws, standard estimator, other seed"
    )
    header = (
        f"{'model':<9}{'rows/item seq':>14}{'fixed':>8}{'ratio':>7}{'decided':>9}{'futile':>8}"
        f"{'max':>5}{'wrong sign':>11}{'acc seq':>9}{'acc long':>9}{'coverage':>10}{'s':>7}"
    )
    print(header)
    per_caption: dict[str, float] = {}
    for name in args.models.split(","):
        model = load_model(name, device="cpu")
        start = time.perf_counter()
        rows = fixed = 0
        decisions = {"decided": 0, "futile": 0, "maximum": 0}
        wrong = decided_long = 0
        credits, long_credits = [], []
        covered = total = 0
        rows_per_caption = []
        for item in items:
            x = model.encode_image(item.image)
            k = item.true_index
            ranked = rank_sequentially(
                model,
                x,
                list(item.captions),
                sampling=Sampling(draws=args.draws),
                key=item.id,
                true_index=k,
            )
            n = len(item.captions)
            rows += ranked["n_evaluations"]
            rows_per_caption.append(ranked["n_evaluations"] / n)
            fixed += Sampling(draws=args.draws).rows(n + 1)
            decisions[ranked["decision"]] += 1
            credits.append(ranked["credit"])
            margins, ses = long_margins(model, x, item, args.reference_draws)
            worst = int(np.argmin(margins))
            z = margins[worst] / ses[worst] if ses[worst] > 0 else 0.0
            long_credits.append(1.0 if min(margins) > 0 else 0.0)
            if abs(z) >= 3 and ranked["decision"] == "decided":
                decided_long += 1
                says_true = ranked["leader"] == k
                wrong += says_true != (margins[worst] > 0)
            truth = None
            if name == "exact":
                log_p = [model.log_prob(x, c).item() for c in item.captions]
            for margin in ranked["margins"]:
                i, j = margin["pair"]
                if margin["stderr"] == 0:
                    continue
                if name == "exact":
                    truth = log_p[i] - log_p[j]
                elif k in (i, j):  # the long run measures the true caption's pairs
                    other = j if i == k else i
                    falses = [f for f in range(n) if f != k]
                    value = margins[falses.index(other)]
                    truth = value if i == k else -value
                else:
                    continue
                lo, hi = margin["ci95"]
                covered += lo <= truth <= hi
                total += 1
        seconds = time.perf_counter() - start
        per_caption[name] = float(np.mean(rows_per_caption))
        print(
            f"{name:<9}{rows / len(items):>14.1f}{fixed / len(items):>8.0f}{rows / fixed:>7.3f}"
            f"{decisions['decided']:>9}{decisions['futile']:>8}{decisions['maximum']:>5}"
            f"{f'{wrong}/{decided_long}':>11}{np.mean(credits):>9.3f}{np.mean(long_credits):>9.3f}"
            f"{covered / max(total, 1):>10.3f}{seconds:>7.0f}",
            flush=True,
        )
    print(
        "wrong sign: items decided against the sign of the long run's margin, of the items both "
        "decide (|z| >= 3); acc: accuracy (sequential: undecided items count as ties; long: the "
        "true caption's margin over every false one > 0); coverage: the sequential margins' 95% "
        "intervals at the stop against the exact log-ratio (exact) or the long run (bundled)."
    )
    print("projected H200-hours, the four ARO sets, SD 1.5 rows/s (358), rows per caption as here:")
    for name, rows_each in per_caption.items():
        fixed_rows = sum(n * (args.draws + 16) * (c + 1) for n, c in ARO_SETS.values())
        seq_rows = sum(n * rows_each * c for n, c in ARO_SETS.values())
        print(
            f"  {name} as the stand-in: sequential {seq_rows / H200_ROWS_PER_S / 3600:.1f} h, "
            f"fixed {fixed_rows / H200_ROWS_PER_S / 3600:.1f} h"
        )


if __name__ == "__main__":
    main()
