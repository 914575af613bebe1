"""Batch fill of ``infodecomp eval compositional``: one item at a time against items in flight.

Runs the world's compositional evaluation (``evaluate(...)``, as the command does: on the
bundled model the exact world model is measured beside it) for fixed and sequential ranking, with
one item in flight and with the default (``infodecomp.batching.DEFAULT_IN_FLIGHT``), at a
GPU-like batch size, and prints one table: denoiser calls, rows, mean fill (rows / (calls x batch
size)) and the calls relative to one item at a time. The fill depends on how items call the
denoiser, not on its speed, so the CPU measures what a GPU would see; the seconds are this
machine's.

    OMP_NUM_THREADS=1 python benchmarks/batch_fill.py [--items 64] [--draws 256]
        [--batch-size 256] [--models exact,bundled] [--rankings fixed,sequential]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from infodecomp.batching import DEFAULT_IN_FLIGHT
from infodecomp.evaluate import evaluate
from infodecomp.sampling import Sampling


def batch_fill_rows(
    items: int = 64,
    draws: int = 256,
    batch_size: int = 256,
    models: Sequence[str] = ("exact", "bundled"),
    rankings: Sequence[str] = ("fixed", "sequential"),
    in_flights: Sequence[int] = (1, DEFAULT_IN_FLIGHT),
    split: str = "test",
) -> list[dict[str, Any]]:
    """One row per (model, ranking, items in flight): ``model``, ``ranking``, ``in_flight``,
    ``items``, ``calls``, ``rows`` (denoiser rows, every model of the run), ``fill`` (rows /
    (calls x batch size)), ``calls_ratio`` (calls / those with the first of ``in_flights``),
    ``per_model`` (the same per denoiser: ``model``, ``reference``) and ``seconds``."""
    out: list[dict[str, Any]] = []
    for model in models:
        for ranking in rankings:
            first_calls = None
            for in_flight in in_flights:
                with tempfile.TemporaryDirectory() as folder:
                    start = time.perf_counter()
                    evaluate(
                        "compositional",
                        Path(folder) / "run",
                        model=model,
                        split=split,
                        limit=items,
                        sampling=Sampling(draws=draws, batch_size=batch_size),
                        ranking=ranking,
                        device="cpu",
                        in_flight=in_flight,
                        progress=False,
                        log=lambda message: None,
                    )
                    seconds = time.perf_counter() - start
                    stats = json.loads((Path(folder) / "run" / "batching.json").read_text())
                first_calls = first_calls or stats["calls"]
                out.append(
                    {
                        "model": model,
                        "ranking": ranking,
                        "in_flight": in_flight,
                        "items": items,
                        "calls": stats["calls"],
                        "rows": stats["rows"],
                        "fill": stats["fill"],
                        "calls_ratio": stats["calls"] / first_calls,
                        "per_model": stats["models"],
                        "seconds": seconds,
                    }
                )
    return out


def table(rows: list[dict[str, Any]], batch_size: int) -> str:
    """The rows of :func:`batch_fill_rows` as one table."""
    lines = [
        f"{'model':<9}{'ranking':<12}{'in flight':>10}{'items':>7}{'calls':>8}{'rows':>9}"
        f"{'fill':>7}{'calls ratio':>13}{'fill: model':>13}{'reference':>11}{'s':>7}"
    ]
    for r in rows:
        fills = [r["per_model"].get(name, {}).get("fill") for name in ("model", "reference")]
        shown = ["" if f is None else f"{f:.3f}" for f in fills]
        lines.append(
            f"{r['model']:<9}{r['ranking']:<12}{r['in_flight']:>10}{r['items']:>7}"
            f"{r['calls']:>8}{r['rows']:>9}{r['fill']:>7.3f}{r['calls_ratio']:>13.3f}"
            f"{shown[0]:>13}{shown[1]:>11}{r['seconds']:>7.0f}"
        )
    lines.append(
        f"fill: rows / (calls x {batch_size}), every denoiser of the run (the bundled model's run "
        "measures the exact world model beside it: its own calls, 'reference'); calls ratio: "
        "calls / those with one item in flight; s: this machine's seconds, model loading included."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--draws", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--models", default="exact,bundled")
    parser.add_argument("--rankings", default="fixed,sequential")
    parser.add_argument("--in-flight", type=int, default=DEFAULT_IN_FLIGHT)
    args = parser.parse_args()
    print(
        f"batch_fill: {args.items} world compositional items (test split), at most {args.draws} "
        f"draws, batch size {args.batch_size}; one item in flight vs {args.in_flight}"
    )
    rows = batch_fill_rows(
        items=args.items,
        draws=args.draws,
        batch_size=args.batch_size,
        models=args.models.split(","),
        rankings=args.rankings.split(","),
        in_flights=(1, args.in_flight),
    )
    print(table(rows, args.batch_size))


if __name__ == "__main__":
    main()
