"""What randomized quasi-Monte Carlo over (log-SNR, noise) would gain on the held-out mixtures.

Per point of ``mixture_efficiency.py``'s held-out mixtures, the variance of the per-point MI
estimate (both estimators) from ``--draws`` draws of the paper's log-SNR distribution, in one
run:

- stratified: one log-SNR per quantile stratum, i.i.d. noise (the library's draws);
- RQMC, k scrambles of m points: scrambled Sobol points over (log-SNR quantile, noise), the noise
  through the normal quantile function, in k = draws/m independent scrambles. A standard error
  that holds needs several independent scrambles (the spread of their means), so m = draws
  (one scramble) is the gain with no honest interval; m = draws/8 keeps 7 degrees of freedom.

Printed: the variance ratio (stratified / RQMC, above 1 is a gain) per mixture, estimator and
m, geometric mean and range over points. Antithetic noise (e, -e at one log-SNR) was measured
the same way first: 0.9-1.3x, no gain.

    OMP_NUM_THREADS=1 python benchmarks/qmc_gain.py [--points 8] [--reps 16] [--draws 256]
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
from mixture_efficiency import HELD_OUT, PAPER, held_out_mixture


def paper_quantile(u: np.ndarray) -> np.ndarray:
    """The paper's truncated logistic log-SNR at quantiles ``u``."""
    low, high = PAPER.loc - PAPER.clip * PAPER.scale, PAPER.loc + PAPER.clip * PAPER.scale
    cdf_low, cdf_high = (1 / (1 + np.exp(-(v - PAPER.loc) / PAPER.scale)) for v in (low, high))
    p = cdf_low + u * (cdf_high - cdf_low)
    return PAPER.loc + PAPER.scale * np.log(p / (1 - p))


def mi_means(model, x, label, u: np.ndarray, noise: torch.Tensor) -> tuple[float, float]:
    """Standard and orthogonal MI estimates (nats) of one point from the given draws."""
    a = paper_quantile(u)
    w, alpha = torch.from_numpy(PAPER.weight(a)), torch.from_numpy(a)
    s = torch.sigmoid(alpha)[:, None]
    z = s.sqrt() * x + (1 - s).sqrt() * noise
    plain, given = model(z, alpha, [None] * len(a)), model(z, alpha, [label] * len(a))
    standard = 0.5 * w * ((noise - plain).pow(2).sum(1) - (noise - given).pow(2).sum(1))
    orthogonal = 0.5 * w * (plain - given).pow(2).sum(1)
    return standard.mean().item(), orthogonal.mean().item()


def sobol(dims: int, m: int, k: int, rng: np.random.Generator) -> tuple[np.ndarray, torch.Tensor]:
    """``k`` independent scrambles of ``m`` Sobol points: log-SNR quantiles and noise."""
    points = torch.cat(
        [
            torch.quasirandom.SobolEngine(
                dims + 1, scramble=True, seed=int(rng.integers(2**31))
            ).draw(m, dtype=torch.float64)
            for _ in range(k)
        ]
    )
    noise = torch.special.ndtri(points[:, 1:].clamp(1e-12, 1 - 1e-12))
    return points[:, 0].numpy(), noise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=8)
    parser.add_argument("--reps", type=int, default=16)
    parser.add_argument("--draws", type=int, default=256)
    args = parser.parse_args()
    n = args.draws
    sizes = [n, n // 4, n // 8, n // 16]
    print(f"qmc_gain: {args.points} points per mixture, {n} draws, {args.reps} repetitions")
    print(f"{'mixture':<20}{'estimator':<12}{'m':>5}{'k':>4}{'gain geo':>10}{'min':>7}{'max':>7}")
    for name, dims, components, seed in HELD_OUT:
        model = held_out_mixture(dims, components, seed)
        x, labels = model.sample(args.points, seed=7)
        gains = {(m, e): [] for m in sizes for e in range(2)}
        for p in range(args.points):
            base, runs = [], {m: [] for m in sizes}
            for r in range(args.reps):
                rng = np.random.default_rng([r, p])
                u = (np.arange(n) + rng.random(n)) / n
                noise = torch.from_numpy(rng.standard_normal((n, dims)))
                base.append(mi_means(model, x[p], labels[p], u, noise))
                for m in sizes:
                    runs[m].append(mi_means(model, x[p], labels[p], *sobol(dims, m, n // m, rng)))
            var_base = np.var(base, 0, ddof=1)
            for m in sizes:
                ratio = var_base / np.var(runs[m], 0, ddof=1)
                for e in range(2):
                    gains[(m, e)].append(ratio[e])
        for e, estimator in enumerate(("standard", "orthogonal")):
            for m in sizes:
                g = np.array(gains[(m, e)])
                print(
                    f"{name:<20}{estimator:<12}{m:>5}{n // m:>4}"
                    f"{math.exp(np.log(g).mean()):>10.2f}{g.min():>7.2f}{g.max():>7.2f}",
                    flush=True,
                )
    print("gain: variance of stratified draws / variance of RQMC, per point (same draws' count)")


if __name__ == "__main__":
    main()
