"""Futility stops of sequential ranking: rows saved against decisions lost, in one run.

Each world compositional item is ranked to the maximum draws without stopping (the ranking's
own draws, ``sequential.margin_blocks``), and its looks are then replayed with
``sequential.decide`` at each futility threshold (the predictive probability of a decision at
the maximum below which an item stops): the same draws for every threshold, so the rows differ
only by the rule. Printed per model and threshold: rows per item against the fixed protocol
(``--draws`` draws plus the range-end draws, every caption and the unconditional), items decided /
futile / at the maximum, decisions lost (items the run without futility decides that the rule
stops first), and the accuracy (undecided items as ties). A futile stop never decides, so it
adds no wrong decision; it can only lose one.

    OMP_NUM_THREADS=1 python benchmarks/futility.py [--items 64] [--split validation]
        [--models bundled,exact] [--draws 256] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from infodecomp.evaluate.world_data import compositional_items
from infodecomp.loading import load_model
from infodecomp.sampling import Sampling
from infodecomp.sequential import BLOCK, FIRST_LOOK, FUTILE_BELOW, PILOT, decide, margin_blocks

THRESHOLDS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3)


def trajectories(name: str, items, draws: int, cache: Path | None) -> list[np.ndarray]:
    """Each item's margins per draw up to ``draws`` (cached as JSON when ``cache`` is given)."""
    stem = f"futility_{name}_{items[0].id}_{len(items)}_{draws}"
    path = None if cache is None else cache / f"{stem}.json"
    if path is not None and path.exists():
        return [np.array(o) for o in json.loads(path.read_text())]
    model = load_model(name, device="cpu")
    sampling = Sampling(draws=draws).resolve(model)
    out = []
    for item in items:
        x = model.encode_image(item.image)
        blocks = margin_blocks(model, x, list(item.captions), sampling=sampling, key=item.id)
        out.append(np.concatenate(list(blocks), 1))
    if path is not None:
        path.write_text(json.dumps([o.tolist() for o in out]))
    return out


def replay(obs: np.ndarray, item, draws: int, futile_below: float) -> dict:
    """The ranking's last look with this threshold, on the recorded draws."""
    look = {}
    looks = [*range(FIRST_LOOK, draws + 1, BLOCK), *([draws] if draws % BLOCK else [])]
    for t in looks:
        look = decide(
            obs[:, :t],
            list(item.captions),
            item.true_index,
            most=draws,
            futile_below=futile_below,
        )
        if look["decision"] != "maximum":
            break
    return look


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--split", default="validation")
    parser.add_argument("--models", default="bundled,exact")
    parser.add_argument("--draws", type=int, default=256)
    parser.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args()
    items = compositional_items(args.split, args.items)
    fixed = sum(Sampling(draws=args.draws).rows(len(item.captions) + 1) for item in items)
    print(
        f"futility: {len(items)} world compositional items ({args.split}), at most {args.draws} "
        f"draws; rows against fixed {args.draws}; default threshold {FUTILE_BELOW}"
    )
    header = f"{'model':<9}{'threshold':>10}{'ratio':>7}{'decided':>9}{'futile':>8}{'max':>5}"
    print(header + f"{'lost':>6}{'accuracy':>10}{'s':>6}")
    for name in args.models.split(","):
        start = time.perf_counter()
        obs = trajectories(name, items, args.draws, args.cache)
        seconds = time.perf_counter() - start
        without = [replay(o, item, args.draws, 0.0) for o, item in zip(obs, items, strict=True)]
        for threshold in THRESHOLDS:
            looks = [
                replay(o, item, args.draws, threshold) for o, item in zip(obs, items, strict=True)
            ]
            rows = sum(
                (PILOT + look["draws"]) * len(set(item.captions))
                for look, item in zip(looks, items, strict=True)
            )
            counts = {
                d: sum(look["decision"] == d for look in looks)
                for d in ("decided", "futile", "maximum")
            }
            lost = sum(
                a["decision"] == "futile" and b["decision"] == "decided"
                for a, b in zip(looks, without, strict=True)
            )
            credit = np.mean(
                [
                    1 / len(look["plausible"]) if item.true_index in look["plausible"] else 0.0
                    for look, item in zip(looks, items, strict=True)
                ]
            )
            print(
                f"{name:<9}{threshold:>10.2f}{rows / fixed:>7.3f}{counts['decided']:>9}"
                f"{counts['futile']:>8}{counts['maximum']:>5}{lost:>6}{credit:>10.3f}{seconds:>6.0f}",
                flush=True,
            )
    print(
        "threshold: futile when every undecided margin's predictive probability of a decision at "
        "the maximum is below it (0: never futile); lost: decided without futility, futile with "
        "it; accuracy: the true caption's credit (1 / plausible leaders if among them)"
    )


if __name__ == "__main__":
    main()
