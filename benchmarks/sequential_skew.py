"""Wrong decisions of the sequential ranking's stopping rule when margins are skewed.

A margin's draws with a heavy right tail and a mean near 0 are where a rule that looks after
every block goes wrong: early on the rare large draws are missing, so the mean looks negative
*and* precise. This script simulates such margins (shifted lognormal draws, true mean >= 0, so
every "negative" decision is wrong) and decisive ones (normal draws whose z at 256 draws is 5, 10
or 27, the exact world model's range), and prints one table: the share of wrong decisions, and
the mean draws used on the decisive margins, for

- ``cs+skew``: the confidence sequence the ranking uses (``sequential.confidence_sequence``:
  the symmetric boundary on skew-aware arms, twice the sample skewness), looks every 16 draws
  from 16;
- ``cs``: the symmetric boundary alone (``sequential.boundary``);
- ``cs+floor Z``: the same, never narrower than ``Z * sqrt(64 / t)`` standard errors (a guard
  against early decisions);
- ``obf C``: an O'Brien-Fleming-shaped boundary, ``C * sqrt(256 / t)`` standard errors;
- ``fixed 256``: one 95% interval after 256 draws (today's protocol; no early stop).

    python benchmarks/sequential_skew.py [--runs 4000] [--seed 1]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np

from infodecomp.sequential import BLOCK, FIRST_LOOK, boundary, confidence_sequence

MOST = 256
Rule = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # draws so far -> (lower, upper)


def rules() -> dict[str, Rule]:
    """The boundaries compared, by name."""

    def symmetric(half_width: Callable[[int, np.ndarray], np.ndarray]) -> Rule:
        def rule(part: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            t, mean = part.shape[1], part.mean(1)
            half = half_width(t, part.std(1, ddof=1))
            return mean - half, mean + half

        return rule

    def floor(z: float) -> Rule:
        return symmetric(
            lambda t, sd: np.maximum(boundary(t, sd, 0.05), z * np.sqrt(64 / t) * sd / t**0.5)
        )

    def obf(c: float) -> Rule:
        return symmetric(lambda t, sd: c * np.sqrt(MOST / t) * sd / np.sqrt(t))

    return {
        "cs+skew": lambda part: confidence_sequence(part, 0.05),
        "cs": symmetric(lambda t, sd: boundary(t, sd, 0.05)),
        "cs+floor 3": floor(3.0),
        "cs+floor 5": floor(5.0),
        "obf 2.0": obf(2.0),
        "obf 2.5": obf(2.5),
    }


def run_rule(rule: Rule | None, x: np.ndarray) -> tuple[float, float]:
    """Share of runs decided negative (wrong when the true mean is >= 0) and mean draws used.
    ``rule=None`` is the fixed protocol: one normal 95% interval after all draws."""
    runs, most = x.shape
    if rule is None:
        wrong = x.mean(1) + 1.96 * x.std(1, ddof=1) / np.sqrt(most) < 0
        return float(wrong.mean()), float(most)
    wrong = np.zeros(runs, dtype=bool)
    decided = np.zeros(runs, dtype=bool)
    used = np.full(runs, most)
    for t in range(FIRST_LOOK, most + 1, BLOCK):
        lower, upper = rule(x[:, :t])
        negative = (upper < 0) & ~decided
        positive = (lower > 0) & ~decided
        used[negative | positive] = t
        wrong |= negative
        decided |= negative | positive
    return float(wrong.mean()), float(used.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    skewed = {}  # (lognormal sigma, true mean in SEs at 256 draws) -> draws
    for sigma, dz in [(1.0, 0.0), (1.0, 0.5), (1.5, 0.5), (1.5, 1.0)]:
        mean = np.exp(sigma**2 / 2)
        sd = np.sqrt((np.exp(sigma**2) - 1) * np.exp(sigma**2))
        draws = rng.lognormal(0.0, sigma, (args.runs, MOST)) - mean + dz * sd / np.sqrt(MOST)
        skewed[f"wrong s={sigma} z={dz}"] = draws
    normal = rng.standard_normal
    decisive = {f"draws z={z}": normal((args.runs, MOST)) + z / MOST**0.5 for z in (5, 10, 27)}
    header = ["rule", *skewed, *decisive]
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for name, rule in [*rules().items(), ("fixed 256", None)]:
        cells = [f"{run_rule(rule, x)[0]:.3f}" for x in skewed.values()]
        cells += [f"{run_rule(rule, x)[1]:.0f}" for x in decisive.values()]
        print(" | ".join([name, *cells]))


if __name__ == "__main__":
    main()
