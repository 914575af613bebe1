"""Compositional tests (the paper's ARO experiments): does the model prefer the true caption?

Each item is one image with two or more candidate captions, one true. Every caption is scored on
the same noise draws (keyed by the item id) and the highest score wins. Two scores come from the
same denoiser calls:

* ``standard`` (default): the standard estimate of log p(x|caption) - log p(x), a log-likelihood
  ratio. With the prior over captions uniform, the caption with the highest ratio is the most
  probable caption given the image (Bayes), so this is the score to rank with.
* ``orthogonal``: the paper's protocol, 1/2 int E||eps_hat(x_a) - eps_hat(x_a|caption)||^2 da.
  It measures how much a caption changes the denoiser, not how well it fits the image: a caption
  that contradicts the image moves the denoiser a lot and gets a huge score. Its mean over images
  drawn with the caption equals the mutual information, but for one image it is not the ratio.

Each row keeps every score with its standard error, and the margin of the true caption over the
best false one: for ``standard`` the log-likelihood ratio of the two captions estimated directly
(its own pair on the same draws, with its own standard error); for ``orthogonal`` the difference
of the two scores with the sum of their standard errors (an upper bound on the difference's,
whatever the covariance). A margin is significant when its 95% interval (for ``standard`` the
estimator's skew-aware one) excludes 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..estimators import conditional_mutual_info
from ..report.datasets import thumbnail
from ..results import Z95
from ..sampling import Sampling
from . import metrics
from .common import EvalModel, sampling_line
from .items import CompositionalItem
from .runner import PICTURES, Task

SCORES = ("standard", "orthogonal")  # both from one pass of denoiser calls, shown in this order


def make_task(
    model: EvalModel,
    sampling: Sampling,
    settings: dict[str, Any],
    reference: EvalModel | None = None,
) -> Task:
    """The compositional evaluation of ``model`` (and of the exact ``reference`` on the world's
    data, so every table shows what a perfect model gets)."""

    def measure(item: CompositionalItem) -> dict[str, Any]:
        check_captions(model, item)
        row: dict[str, Any] = {
            "captions": list(item.captions),
            "true_index": item.true_index,
            "type": item.type,
            "group": item.group,
            "scores": {"model": score(model, item, sampling)},
        }
        if reference is not None:
            row["scores"]["reference"] = score(reference, item, sampling)
        return row | {PICTURES: {"image": thumbnail(_image(item))}}

    def denoiser_rows(item: CompositionalItem) -> int:
        return sampling.rows(len(item.captions) + 1)

    return Task("compositional", measure, denoiser_rows)


def score(model: EvalModel, item: CompositionalItem, sampling: Sampling) -> dict[str, Any]:
    """Every caption's scores (nats, with standard errors), the true caption's margin over the
    best false one, and the ranking credit, for each estimator."""
    x = model.input(_image(item))
    captions, k = list(item.captions), item.true_index
    falses = [j for j in range(len(captions)) if j != k]
    # Pairs: each caption against nothing (its score), then the true caption against each false
    # one (their log-likelihood ratio). The distinct conditions, hence the cost, are the same.
    conds = captions + [captions[k]] * len(falses)
    contexts = [None] * len(captions) + [captions[j] for j in falses]
    estimates = conditional_mutual_info(
        model.denoiser,
        x,
        conds,
        contexts,
        estimator=SCORES,
        sampling=sampling,
        keys=[item.id],
        progress=False,
    )
    out: dict[str, Any] = {"n_evaluations": estimates["standard"].n_evaluations}
    for name, est in estimates.items():
        value, se = est.value[0].tolist(), est.stderr[0].tolist()
        scores, ses = value[: len(captions)], se[: len(captions)]
        best = max(falses, key=lambda j: scores[j])
        if name == "standard":  # its own pair: the skew-aware interval of the estimator
            pair = len(captions) + falses.index(best)
            margin, margin_se = value[pair], se[pair]
            interval = est.ci95[0, pair].tolist()
        else:  # se of a difference <= sum of the two se's, whatever their covariance
            margin, margin_se = scores[k] - scores[best], ses[k] + ses[best]
            interval = [margin - Z95 * margin_se, margin + Z95 * margin_se]
        out[name] = {
            "scores": scores,
            "stderr": ses,
            "ci95": est.ci95[0, : len(captions)].tolist(),
            "reliable": est.reliable[0, : len(captions)].tolist(),
            "credit": metrics.ranking_credit(scores, k),
            "margin": {
                "value": margin,
                "stderr": margin_se,
                "ci95": interval,
                "verdict": _verdict(interval),
            },
        }
    if model.is_exact:  # the exact log-ratios themselves: the Bayes-optimal ranking
        log_p = [model.denoiser.log_prob(x, c).item() for c in [None, *captions]]
        exact = [lp - log_p[0] for lp in log_p[1:]]
        out["exact"] = {"scores": exact, "credit": metrics.ranking_credit(exact, k)}
    return out


def check_captions(model: EvalModel, item: CompositionalItem) -> None:
    """``ValueError`` naming the caption if the model cannot take one of the item's captions
    whole: the token-limit rule of ``heatmap``, ``explain`` and the other evaluations (its
    ``check_prompt``), not a silent truncation that could make two captions one."""
    check = getattr(model.denoiser, "check_prompt", None)
    if check is None:  # the exact world model: no tokenizer, no limit
        return
    for k, caption in enumerate(item.captions):
        try:
            check(caption)
        except ValueError as err:
            raise ValueError(f"caption {k}: {err}") from None


def _image(item: CompositionalItem) -> Any:
    """The item's image as the model sees it (ARO's crop to its box)."""
    from .datasets import crop_box

    return item.image if item.box is None else crop_box(item.image, item.box)


def _verdict(interval: list[float]) -> str:
    if interval[0] > 0:
        return "true caption significantly ahead"
    if interval[1] < 0:
        return "a false caption significantly ahead"
    return "not significant"


def _columns(rows: list[dict[str, Any]], settings: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(key, model, score) of each column: the reference's first, then the model's."""
    cols = []
    for who in ("reference", "model"):
        if who in rows[0]["scores"]:
            names = (["exact"] if "exact" in rows[0]["scores"][who] else []) + list(SCORES)
            cols += [(f"{who}/{name}", who, name) for name in names]
    return cols


def summarize(rows: list[dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    """Accuracy per column (plain, macro over types, per type) with bootstrap 95% intervals,
    chance, the share of significant margins, and Winoground's text / image / group scores for
    2x2 groups."""
    if not rows:
        return {"columns": {}}
    seed, min_items = settings["sampling"]["seed"], settings.get("macro_min_items", 1)
    types = [r["type"] or "all" for r in rows]
    chance = [1 / len(r["captions"]) for r in rows]
    out: dict[str, Any] = {
        "labels": {"reference": settings.get("reference_label"), "model": settings["model_label"]},
        "headline": f"model/{settings['estimator']}",
        "chance": _accuracies(chance, types, seed, min_items),
        "columns": {},
    }
    for key, who, name in _columns(rows, settings):
        credits = [r["scores"][who][name]["credit"] for r in rows]
        col = _accuracies(credits, types, seed, min_items)
        if name != "exact":
            verdicts = [r["scores"][who][name]["margin"]["verdict"] for r in rows]
            for share, verdict in (
                ("significant_true", "true caption significantly ahead"),
                ("significant_false", "a false caption significantly ahead"),
            ):
                hits = [float(v == verdict) for v in verdicts]
                col[share] = metrics.accuracy(hits, seed=seed)
        groups = _winoground(rows, who, name, seed)
        if groups is not None:
            col["winoground"] = groups
        out["columns"][key] = col
    return out


def _accuracies(
    credits: list[float], types: list[str], seed: int, min_items: int = 1
) -> dict[str, Any]:
    """Plain accuracy, per-type accuracy and the macro average over the types with at least
    ``min_items`` items (ARO's rule for VG-Attribution's attribute pairs)."""
    out = {"accuracy": metrics.accuracy(credits, seed=seed)}
    if len(set(types)) > 1:
        out["per_type"] = metrics.macro_accuracy(credits, types, seed=seed)["per_type"]
        kept = [k for k, t in enumerate(types) if types.count(t) >= min_items]
        if kept:
            macro = metrics.macro_accuracy(
                [credits[k] for k in kept], [types[k] for k in kept], seed=seed
            )
            macro.pop("per_type")
            out["macro_accuracy"] = macro | {"min_items_per_type": min_items}
    return out


def _winoground(rows: list[dict[str, Any]], who: str, name: str, seed: int) -> Any:
    """Text / image / group scores over the complete 2x2 groups: two rows (true caption 0 and
    1) with the same two captions; other groups are counted as incomplete and left out."""
    by_group: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["group"] is not None:
            by_group.setdefault(r["group"], []).append(r)
    complete = [
        {r["true_index"]: r["scores"][who][name]["scores"] for r in g}
        for g in by_group.values()
        if len(g) == 2
        and {r["true_index"] for r in g} == {0, 1}
        and len(g[0]["captions"]) == 2
        and g[0]["captions"] == g[1]["captions"]
    ]
    if not by_group:
        return None
    out: dict[str, Any] = {"incomplete_groups": len(by_group) - len(complete)}
    if complete:
        # s[g, c, i]: caption c's score for image i (image i's row holds both captions' scores).
        s = np.array([[[g[i][c] for i in (0, 1)] for c in (0, 1)] for g in complete])
        out |= metrics.winoground_scores(s, seed=seed)
    return out


def table(summary: dict[str, Any]) -> str:
    """Accuracy table: a line per score (chance, the reference's, the model's), a column per
    test type, each cell the accuracy and its 95% bootstrap interval."""
    cols = summary.get("columns", {})
    if not cols:
        return "compositional: no items measured yet"
    labels, settings = summary["labels"], summary["settings"]
    names = {"exact": "exact log-ratio", "standard": "standard", "orthogonal": "orthogonal (paper)"}
    lines_of = {"chance": summary["chance"]}
    for key, col in cols.items():
        who, name = key.split("/")
        star = " *" if key == summary["headline"] else ""
        lines_of[f"{labels[who]}: {names[name]}{star}"] = col
    chance = summary["chance"]
    heads = [("all items", "accuracy", None)]
    if "per_type" in chance:
        heads.append(("macro over types", "macro_accuracy", None))
        heads += [(f"{t} (n={m['n']})", "per_type", t) for t, m in chance["per_type"].items()]

    def cell(entry: dict[str, Any], field: str, kind: str | None) -> str:
        if field not in entry:  # no type has enough items for a macro average
            return "n/a"
        m = entry[field] if kind is None else entry[field][kind]
        lo, hi = m["ci95"]
        return f"{m['value']:.0%}" + (f" [{lo:.0%}-{hi:.0%}]" if lo is not None else "")

    first = max(len(k) for k in lines_of) + 2
    width = max(18, *(len(h) + 2 for h, _, _ in heads))
    lines = [
        f"Compositional tests: {summary['n_items']} items ({summary['n_skipped']} skipped), "
        f"{sampling_line(settings)}. Accuracy (true caption ranked "
        "first) with its 95% bootstrap interval.",
        f"{'':<{first}}" + "".join(f"{h:>{width}}" for h, _, _ in heads),
    ]
    for label, entry in lines_of.items():
        lines.append(
            f"{label:<{first}}" + "".join(f"{cell(entry, f, t):>{width}}" for _, f, t in heads)
        )
    for key, col in cols.items():
        who, name = key.split("/")
        if "significant_true" in col:
            lines.append(
                f"{labels[who]}, {name}: margin significant for the true caption in "
                f"{col['significant_true']['value']:.0%} of items, for a false one in "
                f"{col['significant_false']['value']:.0%}"
            )
        if "winoground" in col and "text" in col["winoground"]:
            w = col["winoground"]
            lines.append(
                f"{labels[who]}, {name}: Winoground text {w['text']['value']:.0%}, image "
                f"{w['image']['value']:.0%}, group {w['group']['value']:.0%} "
                f"({w['text']['n']} groups)"
            )
    lines.append(
        "* the ranking score chosen with --estimator. standard: log p(x|caption) - log p(x), the "
        "score to rank captions with. orthogonal: the paper's protocol; it grows with how much a "
        "caption changes the denoiser, so a caption that contradicts the image scores high. No "
        "attention-based score ranks captions. Significance verdicts rest on standard errors "
        "that are optimistic at a few hundred draws."
    )
    return "\n".join(lines)
