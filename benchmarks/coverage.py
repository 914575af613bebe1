"""Do the estimators' 95% intervals cover the exact answers?

On models whose answers are exact (two held-out Gaussian mixtures and the world model), many
independent (x, random stream) pairs per draw count: the share of 95% intervals that hold the
truth, the z-scores (value - truth) / SE, the bias, and (where the Estimate has them) the share
flagged unreliable and the coverage among the reliable ones.

Cases: pointwise MI i^s(x; label), CMI i^s(x; colour | shape) and -log p(x) on mixture a
(8 dims, 12 components, isotropic) and b (32 dims, 24 components, diagonal variances from 0.01
to 1); on the world, the demo caption's MI and each word's CMI (caption against the caption
without the word), for x drawn from the world given the caption. MI and CMI use the standard
estimator. ``--sampling`` and ``--adaptive`` are passed to the estimators only when given;
``--paper-range`` integrates over the paper's log-SNR range [-5, 7] instead of the model's.

    python benchmarks/coverage.py [--cases mi-gmm-a,...] [--draws 128,256,512] [--pairs 400]
        [--world-pairs 400] [--seed 0] [--sampling stratified|iid] [--adaptive 0|1]
        [--paper-range] [--target-se X] [--target-rel R] [--json PATH]

With a precision target, ``--draws`` is the most a row may take; ``counted`` is the mean number of
counted draws per value and ``met`` the share of values whose SE met the target.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

import infodecomp as idc
from infodecomp.explanation import word_contexts
from infodecomp.models import GaussianMixture
from infodecomp.sampling import Sampling, precision_target
from infodecomp.words import distinct_words
from infodecomp.world.model import WorldModel

Z95 = 1.959964
CAPTION = "a red circle left of a blue square"
NLL = "nll"  # context marker: the call is a log-likelihood, not an information estimate
CASES = (
    "mi-gmm-a",
    "mi-gmm-b",
    "cmi-gmm-a",
    "cmi-gmm-b",
    "ll-gmm-a",
    "ll-gmm-b",
    "cmi-world",
)


@dataclass
class Call:
    """One estimator call: rows of the case's x, measured for ``cond`` against ``context``
    (one condition, or lists giving one column each)."""

    rows: torch.Tensor
    cond: Any
    context: Any


@dataclass
class Case:
    """Data, exact answers ``truth`` (n, q) and the calls that estimate them."""

    model: Any
    x: torch.Tensor
    truth: torch.Tensor
    calls: list[Call]
    columns: list[str]  # a name per column of truth
    pooled: dict[str, list[int]] = field(default_factory=dict)  # extra rows over columns
    batch_size: int = 4096


def mixture_a() -> GaussianMixture:
    g = torch.Generator().manual_seed(1234)
    means = torch.randn(12, 8, generator=g, dtype=torch.float64)
    variances = 0.05 + 0.25 * torch.rand(12, generator=g, dtype=torch.float64)
    labels = [{"shape": k % 4, "colour": k // 4} for k in range(12)]
    return GaussianMixture(means, variances, labels=labels)


def mixture_b() -> GaussianMixture:
    g = torch.Generator().manual_seed(98765)
    means = 1.5 * torch.randn(24, 32, generator=g, dtype=torch.float64)
    log_var = math.log(0.01) + math.log(100) * torch.rand(24, 32, generator=g, dtype=torch.float64)
    labels = [{"shape": k % 6, "colour": k // 6} for k in range(24)]
    return GaussianMixture(means, log_var.exp(), labels=labels)


def gmm_case(kind: str, model: GaussianMixture, pairs: int, seed: int) -> Case:
    """x drawn from the mixture with its label y (so x ~ p(x|y)); one call per distinct label."""
    x, labels = model.sample(pairs, seed=seed)
    if kind == "ll":
        truth = -model.log_prob(x)
        return Case(model, x, truth[:, None], [Call(torch.arange(pairs), None, NLL)], ["-log p"])
    truth, calls = torch.empty(pairs, dtype=torch.float64), []
    for label in {tuple(sorted(lab.items())): lab for lab in labels}.values():
        rows = torch.tensor([i for i, lab in enumerate(labels) if lab == label])
        context = None if kind == "mi" else {"shape": label["shape"]}
        truth[rows] = model.log_prob(x[rows], label) - model.log_prob(x[rows], context)
        calls.append(Call(rows, label, context))
    return Case(model, x, truth[:, None], calls, ["i^s"])


def world_case(pairs: int, seed: int) -> Case:
    """The demo caption's MI and each distinct word's CMI, all on shared draws in one call."""
    model = WorldModel()
    words = distinct_words(CAPTION)
    contexts = [None, *word_contexts(CAPTION, words)]
    x, _ = model.sample(pairs, seed=seed, cond=CAPTION)
    full = model.log_prob(x, CAPTION)
    truth = torch.stack([full - model.log_prob(x, c) for c in contexts], dim=1)
    call = Call(torch.arange(pairs), [CAPTION] * len(contexts), contexts)
    columns = ["caption MI", *words]
    # Pooled over the words whose removal changes something (not "a", "of": exactly 0).
    pooled = {"words, CMI>0": [j for j in range(1, len(columns)) if truth[:, j].abs().max() > 0]}
    return Case(model, x, truth, [call], columns, pooled, batch_size=1024)


BUILDERS: dict[str, Callable[[int, int], Case]] = {
    "mi-gmm-a": lambda n, s: gmm_case("mi", mixture_a(), n, s),
    "mi-gmm-b": lambda n, s: gmm_case("mi", mixture_b(), n, s),
    "cmi-gmm-a": lambda n, s: gmm_case("cmi", mixture_a(), n, s),
    "cmi-gmm-b": lambda n, s: gmm_case("cmi", mixture_b(), n, s),
    "ll-gmm-a": lambda n, s: gmm_case("ll", mixture_a(), n, s),
    "ll-gmm-b": lambda n, s: gmm_case("ll", mixture_b(), n, s),
    "cmi-world": world_case,
}


def run_case(case: Case, draws: int, seed: int, extra: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Value, stderr, interval (lower, upper) and reliability, each (n, q[, 2]), for every pair.

    Each row has its own random stream (its key is its pair index)."""
    n, q = case.truth.shape
    out = {
        "value": torch.empty(n, q, dtype=torch.float64),
        "stderr": torch.empty(n, q, dtype=torch.float64),
        "ci": torch.empty(n, q, 2, dtype=torch.float64),
        "reliable": torch.ones(n, q, dtype=torch.bool),
        "draws": torch.empty(n, q, dtype=torch.float64),
    }
    has_reliable = False
    for call in case.calls:
        settings = dict(
            sampling=Sampling(draws=draws, seed=seed, batch_size=case.batch_size, **extra),
            keys=call.rows.tolist(),
            progress=False,
        )
        x = case.x[call.rows]
        if call.context == NLL:
            est = idc.log_likelihood(case.model, x, call.cond, **settings)
        else:
            est = idc.conditional_mutual_info(
                case.model, x, call.cond, call.context, estimator="standard", **settings
            )
        value, stderr = est.value.reshape(len(x), q), est.stderr.reshape(len(x), q)
        ci = getattr(est, "ci95", None)
        if ci is None:
            ci = torch.stack([value - Z95 * stderr, value + Z95 * stderr], dim=-1)
        out["value"][call.rows], out["stderr"][call.rows] = value.double(), stderr.double()
        out["ci"][call.rows] = ci.reshape(len(x), q, 2).double()
        out["draws"][call.rows] = est.diagnostics["draws"].reshape(len(x), q).double()
        reliable = getattr(est, "reliable", None)
        if reliable is not None:
            has_reliable = True
            out["reliable"][call.rows] = reliable.reshape(len(x), q).bool()
    if not has_reliable:
        del out["reliable"]
    return out


def summarise(
    res: dict[str, torch.Tensor], truth: torch.Tensor, cols: list[int], extra: dict[str, Any]
) -> dict:
    """Coverage, z-score, relative SE, bias and reliability over the pairs of columns ``cols``;
    the counted draws, and under a precision target the share of values that met it."""
    value, se, t = res["value"][:, cols], res["stderr"][:, cols], truth[:, cols]
    lo, hi = res["ci"][:, cols, 0], res["ci"][:, cols, 1]
    err = (value - t).flatten()
    exact = err.abs() <= 1e-9 * (1 + t.abs().flatten())  # e.g. a word whose removal changes nothing
    covered = ((lo <= t) & (t <= hi)).flatten() | exact
    z = torch.where(exact, 0.0, err / se.flatten())
    n = err.numel()
    row = {
        "n": n,
        "coverage": covered.double().mean().item(),
        "z_mean": z.mean().item(),
        "z_q01": torch.quantile(z, 0.01).item(),
        "z_q99": torch.quantile(z, 0.99).item(),
        "z_over_3": (z.abs() > 3).double().mean().item(),
        "rel_se": (se.mean() / t.abs().mean()).item() if t.abs().mean() > 1e-9 else None,
        "bias": err.mean().item(),
        "bias_se": (err.std() / math.sqrt(n)).item(),
        "unreliable": None,
        "coverage_reliable": None,
        "truth_mean": t.mean().item(),
        "draws_mean": res["draws"][:, cols].mean().item(),
        "target_met": None,
    }
    if extra.get("target_se") or extra.get("target_rel"):
        tolerance = precision_target(extra.get("target_se"), extra.get("target_rel"), value)
        row["target_met"] = (se <= tolerance).double().mean().item()
    if "reliable" in res:
        ok = res["reliable"][:, cols].flatten()
        row["unreliable"] = 1 - ok.double().mean().item()
        row["coverage_reliable"] = covered[ok].double().mean().item() if ok.any() else None
    return row


HEADER = (
    f"{'case':<24}{'draws':>6}{'n':>6}{'truth':>8}{'cover':>7}{'unrel':>7}{'cov|rel':>8}"
    f"{'z mean':>8}{'z q01':>7}{'z q99':>7}{'|z|>3':>7}{'rel SE':>8}{'bias ± SE':>18}"
    f"{'counted':>8}{'met':>7}{'wall s':>8}"
)


def format_row(name: str, draws: int, r: dict, wall: float) -> str:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.1%}"

    rel = "-" if r["rel_se"] is None else f"{r['rel_se']:.3f}"
    bias = f"{r['bias']:+.4f} ± {r['bias_se']:.4f}"
    return (
        f"{name:<24}{draws:>6}{r['n']:>6}{r['truth_mean']:>8.3f}{pct(r['coverage']):>7}"
        f"{pct(r['unreliable']):>7}{pct(r['coverage_reliable']):>8}{r['z_mean']:>8.2f}"
        f"{r['z_q01']:>7.2f}{r['z_q99']:>7.2f}{pct(r['z_over_3']):>7}{rel:>8}{bias:>18}"
        f"{r['draws_mean']:>8.0f}{pct(r['target_met']):>7}{wall:>8.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma list (default all)")
    parser.add_argument("--draws", default="128,256,512", help="comma list of draw counts")
    parser.add_argument("--pairs", type=int, default=400, help="(x, stream) pairs per case")
    parser.add_argument("--world-pairs", type=int, default=None, help="pairs for cmi-world")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sampling", choices=("stratified", "iid"), default=None)
    parser.add_argument("--adaptive", type=int, choices=(0, 1), default=None)
    parser.add_argument(
        "--paper-range",
        action="store_true",
        help="integrate over the paper's log-SNR range [-5, 7] (TruncatedLogistic()), not the "
        "model's: information beyond it is then the tails' to extrapolate",
    )
    parser.add_argument("--target-se", type=float, default=None, help="precision target (nats)")
    parser.add_argument("--target-rel", type=float, default=None, help="relative target")
    parser.add_argument("--json", default=None, help="save every row here")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if unknown := [c for c in cases if c not in BUILDERS]:
        parser.error(f"unknown cases {unknown}; choose from {', '.join(CASES)}")
    draw_counts = [int(d) for d in args.draws.split(",")]
    extra: dict[str, Any] = {}
    if args.sampling is not None:
        extra["stratified"] = args.sampling == "stratified"
    if args.adaptive is not None:
        extra["adaptive"] = bool(args.adaptive)
    for name in ("target_se", "target_rel"):
        if getattr(args, name) is not None:
            extra[name] = getattr(args, name)
    if args.paper_range:
        extra["logsnr"] = idc.TruncatedLogistic()

    print(f"Coverage of 95% intervals (estimator options: {extra or 'defaults'}; seed {args.seed})")
    print("truth: mean exact value; rel SE: mean SE / mean |truth|; wall: seconds for the case")
    print(HEADER)
    rows = []
    for name in cases:
        pairs = (args.world_pairs or args.pairs) if name == "cmi-world" else args.pairs
        case = BUILDERS[name](pairs, 1000 * (args.seed + 1) + CASES.index(name))
        for draws in draw_counts:
            start = time.perf_counter()
            res = run_case(case, draws, args.seed, extra)
            wall = time.perf_counter() - start
            groups = {col: [j] for j, col in enumerate(case.columns)} | case.pooled
            for label, cols in groups.items():
                row_name = name if len(groups) == 1 else f"{name}[{label}]"
                r = summarise(res, case.truth, cols, extra)
                print(format_row(row_name, draws, r, wall), flush=True)
                rows.append({"case": row_name, "draws": draws, "wall_s": wall, **r})
    if args.json:
        options = {k: v for k, v in vars(args).items() if k != "json"}
        with open(args.json, "w") as f:
            described = {k: v.describe() if hasattr(v, "describe") else v for k, v in extra.items()}
            json.dump(
                {"options": options, "estimator_options": described, "rows": rows}, f, indent=1
            )
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
