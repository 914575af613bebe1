"""Compositional tests (the paper's ARO experiments): does the model prefer the true caption?

Each item is one image with two or more candidate captions, one true. By default the captions are
ranked in stages (:mod:`infodecomp.sequential`: the standard score's margins on shared draws,
drawn until the leader is decided; undecided items count as ties). With the fixed ranking
(``--fixed``; the paper's protocol) every caption is scored on the same noise draws (keyed by the
item id) and the highest score wins; two scores come from the same denoiser calls:

* ``standard`` (the default of the fixed ranking): the standard estimate of
  log p(x|caption) - log p(x), a log-likelihood ratio. With the prior over captions uniform,
  the caption with the highest ratio is the most probable caption given the image (Bayes), so
  this is the score to rank with.
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

from collections import Counter
from typing import Any

import numpy as np

from .. import sequential
from ..estimators import conditional_mutual_info
from ..report.datasets import thumbnail
from ..results import Z95
from ..sampling import Sampling
from ..words import text_key
from . import metrics
from .common import EvalModel, in_batches, sampling_line, shared_denoisers
from .datasets import ARO_SYMMETRIC_RELATIONS
from .items import CompositionalItem
from .runner import PICTURES, Task

SCORES = ("standard", "orthogonal")  # both from one pass of denoiser calls, shown in this order
# Formats whose types are ARO's VG-Relation names (ARO_SYMMETRIC_RELATIONS applies to them).
ARO_FORMATS = ("aro", "aro-parquet")
# What a row's flags say, for the table. Under "ours" a false caption that is the true one's text
# is dropped from the item's ranking (the item is left out if none is left) and items with an
# EXCLUDED flag are left out of every column; under "paper" every item and caption is scored as
# ARO scores them. The other flags are counted and the items scored.
FLAGS = {
    "identical_captions": "a false caption is the true caption's text (ignoring case and spacing)",
    "symmetric_relation": "a relation ARO's list leaves out of its macro accuracy (ARO calls "
    "them symmetric; a few, such as 'biting', are not)",
    "centre_crop": "the centre crop keeps under half of the box (subject or object may be cut)",
    "squashed": "squashing to a square stretches the box over 2x",
    "small_box": "the box's short side is under 1/8 of the model's image size",
}
EXCLUDED = ("symmetric_relation",)
# More types than this: the table shows the best and worst few; summary.json has them all.
MAX_TYPES_SHOWN = 12


def make_task(
    model: EvalModel,
    sampling: Sampling,
    settings: dict[str, Any],
    reference: EvalModel | None = None,
) -> Task:
    """The compositional evaluation of ``model`` (and of the exact ``reference`` on the world's
    data, so every table shows what a perfect model gets)."""

    # The runner merges these denoisers' calls across the items in flight (batching.py).
    model, reference = in_batches(model), in_batches(reference)
    fit = fit_of(settings)
    staged = settings.get("ranking") == "sequential"

    def scorer(model: EvalModel, item: CompositionalItem, sampling: Sampling, fit: str) -> Any:
        if staged:
            return score_sequentially(model, item, sampling, fit, settings.get("report_mi", False))
        return score(model, item, sampling, fit, first=settings.get("estimator", "standard"))

    def measure(item: CompositionalItem) -> dict[str, Any]:
        check_captions(model, item)
        row: dict[str, Any] = {
            "captions": list(item.captions),
            "true_index": item.true_index,
            "type": item.type,
            "group": item.group,
            "flags": item_flags(item, settings, model.image_size),
            "scores": {"model": scorer(model, item, sampling, fit)},
        }
        if reference is not None:
            row["scores"]["reference"] = scorer(reference, item, sampling, fit)
        return row | {PICTURES: {"image": thumbnail(_image(item))}}

    def denoiser_rows(item: CompositionalItem) -> int:
        if staged:  # at most
            mi = sampling.rows(2) if settings.get("report_mi") else 0
            return (sequential.PILOT + sampling.draws) * len(item.captions) + mi
        return sampling.rows(len(item.captions) + 1)

    denoisers = shared_denoisers(model, reference)
    return Task("compositional", measure, denoiser_rows, denoisers, sampling.batch_size)


def score_sequentially(
    model: EvalModel,
    item: CompositionalItem,
    sampling: Sampling,
    fit: str = "crop",
    report_mi: bool = False,
) -> dict[str, Any]:
    """The item ranked with as few draws as decide it (:mod:`infodecomp.sequential`): under
    ``"sequential"`` each caption's log p(x|c) - log p(x|c_true) (nats; the true caption 0),
    the credit (1/(plausible leaders) if the true caption is one of them, else 0), the margin of
    the true caption over the best false one with its confidence-sequence interval, the decision
    and the draws; with ``report_mi`` each caption's own MI (:func:`sequential.caption_mi`,
    anchored on the true caption); for the exact model also the exact log-ratios (against the
    true caption)."""
    x = model.input(_image(item), fit=fit)
    k = item.true_index
    ranked = sequential.rank_sequentially(
        model.denoiser, x, list(item.captions), sampling=sampling, key=item.id, true_index=k
    )
    falses = [j for j in range(len(item.captions)) if j != k]
    best = max(falses, key=lambda j: ranked["scores"][j])
    margin = sequential.margin_of(ranked["margins"], k, best)
    entry = {
        "scores": ranked["scores"],
        "credit": ranked["credit"],
        "margin": margin | {"verdict": _verdict(margin["ci95"])},
        **{key: ranked[key] for key in ("decision", "draws", "plausible", "leader", "margins")},
    }
    out: dict[str, Any] = {"n_evaluations": ranked["n_evaluations"], "sequential": entry}
    if report_mi:
        entry["mi"], rows = sequential.caption_mi(
            model.denoiser, x, list(item.captions), ranked, sampling=sampling, key=item.id, anchor=k
        )
        out["n_evaluations"] += rows
    if model.is_exact:
        log_p = [model.denoiser.log_prob(x, c).item() for c in item.captions]
        exact = [lp - log_p[k] for lp in log_p]
        out["exact"] = {"scores": exact, "credit": metrics.ranking_credit(exact, k)}
    return out


def fit_of(settings: dict[str, Any]) -> str:
    """How images are brought to the model's square: the paper squashes, ours centre-crops."""
    return "squash" if settings.get("protocol") == "paper" else "crop"


def item_flags(item: CompositionalItem, settings: dict[str, Any], size: int) -> dict[str, str]:
    """``{flag: one line}`` (keys of :data:`FLAGS`) of what makes the item degenerate."""
    flags = {}
    text = [text_key(c) for c in item.captions]
    k = item.true_index
    same = [j for j, t in enumerate(text) if j != k and t == text[k]]
    if same:
        flags["identical_captions"] = (
            f"caption {same[0]} is the true caption's text: the test cannot be passed"
        )
    if settings.get("format") in ARO_FORMATS and item.type in ARO_SYMMETRIC_RELATIONS:
        flags["symmetric_relation"] = f"{item.type!r} is in ARO's list of symmetric relations"
    if item.box is not None:
        w, h = item.box[2], item.box[3]
        kept = min(w, h) / max(w, h)
        if kept < 0.5 and fit_of(settings) == "crop":
            flags["centre_crop"] = f"the centre crop keeps {kept:.0%} of the {w:g}x{h:g} box"
        elif kept < 0.5:
            flags["squashed"] = f"the {w:g}x{h:g} box is stretched {1 / kept:.1f}x to a square"
        if min(w, h) < size / 8:
            flags["small_box"] = f"the {w:g}x{h:g} box is upsampled to {size}x{size}"
    return flags


def score(
    model: EvalModel,
    item: CompositionalItem,
    sampling: Sampling,
    fit: str = "crop",
    first: str = "standard",
) -> dict[str, Any]:
    """Every caption's scores (nats, with standard errors), the true caption's margin over the
    best false one, and the ranking credit, for each estimator. ``fit``: how the image is brought
    to the model's square (``"crop"`` or ``"squash"``); ``first``: the estimator ranked by, to
    which the draws' proposal is fitted."""
    x = model.input(_image(item), fit=fit)
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
        estimator=tuple(dict.fromkeys((first, *SCORES))),  # the proposal fits the first
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
            names = [n for n in ("exact", *SCORES, "sequential") if n in rows[0]["scores"][who]]
            cols += [(f"{who}/{name}", who, name) for name in names]
    return cols


def summarize(rows: list[dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    """Accuracy per column (plain, macro over types, per type) with 95% bootstrap intervals
    resampling clusters (the items of one image together), chance, the share of significant
    margins, Winoground's text / image / group scores for 2x2 groups, the flags counted, and
    the other protocol's scoring of the same rows (ties and exclusions share the model calls).
    """
    if not rows:
        return {"columns": {}}
    protocol = settings.get("protocol", "ours")
    other = "paper" if protocol == "ours" else "ours"
    clusters = [r.get("cluster", r["id"]) for r in rows]
    out: dict[str, Any] = {
        "labels": {"reference": settings.get("reference_label"), "model": settings["model_label"]},
        "headline": "model/sequential"
        if settings.get("ranking") == "sequential"
        else f"model/{settings['estimator']}",
        "protocol": protocol,
        "protocol_note": PROTOCOL_NOTES[protocol],
        "flags": dict(Counter(f for r in rows for f in r.get("flags", {}))),
        "flag_texts": FLAGS,
        "cluster": {
            "unit": "item"
            if clusters == [r["id"] for r in rows]
            else "group"
            if all(r.get("group") is not None for r in rows)
            else "image",
            "n": len(set(clusters)),
        },
        **_scoring(rows, settings, protocol, full=True),
        "other": {"protocol": other, **_scoring(rows, settings, other, full=False)},
    }
    out["types_shown"] = _types_shown(out)
    return out


def _scoring(
    rows: list[dict[str, Any]], settings: dict[str, Any], protocol: str, full: bool
) -> dict[str, Any]:
    """Chance and every column's accuracies under ``protocol``: "ours" ranks each item among
    its distinct captions (:func:`_ranked`), leaves out the items with an :data:`EXCLUDED` flag
    or no distinct false caption, and gives a tie ``1/k`` credit; "paper" keeps every item,
    fails ties (ARO's argmax) and leaves ARO's symmetric relations out of the macro average only.
    ``full``: also per-type accuracies, significance shares and Winoground scores."""
    seed, min_items = settings["sampling"]["seed"], settings.get("macro_min_items", 1)
    ranked = {r["id"]: _ranked(r, protocol) for r in rows}
    if protocol == "ours":
        rows = [
            r
            for r in rows
            if len(ranked[r["id"]]) > 1 and not set(r.get("flags", {})) & set(EXCLUDED)
        ]
    rule = metrics.ranking_credit if protocol == "ours" else metrics.strict_credit

    def credit_of(r: dict[str, Any], scored: dict[str, Any]) -> float:
        kept = ranked[r["id"]]
        if "margins" in scored:  # sequential: from each pair's interval at the stop
            k = r["true_index"]
            if protocol == "paper":  # only a decided true leader without a copy counts
                copied = len(_ranked(r, "ours")) < len(r["captions"])
                return float(scored["leader"] == k and not copied)
            beaten = set()
            for m in scored["margins"]:
                i, j = m["pair"]
                if i in kept and j in kept:
                    lo, hi = m["ci95"]
                    beaten |= {j} if lo > 0 else {i} if hi < 0 else set()
            plausible = [j for j in kept if j not in beaten]
            return 1 / len(plausible) if k in plausible else 0.0
        scores = scored["scores"]
        return rule([scores[j] for j in kept], kept.index(r["true_index"]))

    in_macro = [protocol == "ours" or "symmetric_relation" not in r.get("flags", {}) for r in rows]
    groups = [r.get("cluster", r["id"]) for r in rows]
    types = [r["type"] or "all" for r in rows]
    if not rows:
        return {"n_scored": 0, "chance": {}, "columns": {}}

    def accuracies(credits: list[float]) -> dict[str, Any]:
        out = {"accuracy": metrics.accuracy(credits, seed=seed, groups=groups)}
        if len(set(types)) < 2:
            return out
        if full:
            per_type = metrics.macro_accuracy(credits, types, seed=seed, groups=groups)
            out["per_type"] = per_type["per_type"]
        kept = [k for k, t in enumerate(types) if in_macro[k] and types.count(t) >= min_items]
        if kept:
            macro = metrics.macro_accuracy(
                [credits[k] for k in kept],
                [types[k] for k in kept],
                seed=seed,
                groups=[groups[k] for k in kept],
            )
            macro.pop("per_type")
            out["macro_accuracy"] = macro | {"min_items_per_type": min_items}
        return out

    result: dict[str, Any] = {
        "n_scored": len(rows),
        "chance": accuracies([1 / len(ranked[r["id"]]) for r in rows]),
        "columns": {},
    }
    for key, who, name in _columns(rows, settings):
        credits = [credit_of(r, r["scores"][who][name]) for r in rows]
        col = accuracies(credits)
        if full and name != "exact":
            verdicts = [r["scores"][who][name]["margin"]["verdict"] for r in rows]
            for share, verdict in (
                ("significant_true", "true caption significantly ahead"),
                ("significant_false", "a false caption significantly ahead"),
            ):
                hits = [float(v == verdict) for v in verdicts]
                col[share] = metrics.accuracy(hits, seed=seed, groups=groups)
        if full and name == "sequential":
            decisions = Counter(r["scores"][who][name]["decision"] for r in rows)
            col["decisions"] = dict(decisions)
            col["draws"] = metrics.mean_with_ci(
                [r["scores"][who][name]["draws"] for r in rows], seed=seed, groups=groups
            )
        elif full:  # Winoground's image score compares images: it needs each caption's MI
            wino = _winoground(rows, who, name, seed)
            if wino is not None:
                col["winoground"] = wino
        result["columns"][key] = col
    return result


def _ranked(row: dict[str, Any], protocol: str) -> list[int]:
    """The captions an item is ranked among: all of them under "paper"; under "ours" all but
    the false ones that are the true caption's text (ignoring case and spacing), which no
    model can rank below it (ARO's word shuffles of short captions make such copies)."""
    if protocol == "paper":
        return list(range(len(row["captions"])))
    text = [text_key(c) for c in row["captions"]]
    k = row["true_index"]
    return [j for j, t in enumerate(text) if j == k or t != text[k]]


def _types_shown(summary: dict[str, Any]) -> list[str]:
    """The types the table shows: all of them, or when there are more than
    :data:`MAX_TYPES_SHOWN`, the best and the worst few of the headline column (among types
    with enough items for the macro average)."""
    per_type = summary["chance"].get("per_type", {})
    if len(per_type) <= MAX_TYPES_SHOWN:
        return list(per_type)
    headline = summary["columns"].get(summary["headline"], {}).get("per_type", {})
    least = summary["chance"].get("macro_accuracy", {}).get("min_items_per_type", 1)
    ranked = sorted(
        (t for t, m in headline.items() if m["n"] >= least),
        key=lambda t: (-headline[t]["value"], t),
    )
    half = MAX_TYPES_SHOWN // 2
    return ranked if len(ranked) <= MAX_TYPES_SHOWN else ranked[:half] + ranked[-half:]


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


PROTOCOL_NOTES = {
    "ours": "ours: images centre-cropped to the model's square (no distortion; flagged where the "
    "crop keeps under half of the box); an exact tie gets 1/k credit (a coin toss); a false "
    "caption that is the true one's text is dropped from the ranking (an item left with none is "
    "left out) and the items of the relations ARO's list calls symmetric (their swapped "
    "caption is mostly as true; a few, such as 'biting', are not) are left out of every "
    "column, and counted.",
    "paper": "paper: ranked by the orthogonal score unless --estimator says otherwise, images "
    "squashed to the model's square (Kong et al.'s code); a tie fails "
    "(ARO's argmax, true caption last); every item is in 'all items' (ARO's plain accuracy), "
    "ARO's symmetric relations are left out of the macro average only.",
}


def table(summary: dict[str, Any]) -> str:
    """Accuracy table: a line per score (chance, the reference's, the model's), a column per
    test type (the best and worst few when there are many), each cell the accuracy and its 95%
    bootstrap interval; then the flags, the other protocol's accuracies, and the notes."""
    cols = summary.get("columns", {})
    if not cols:
        return "compositional: no items measured yet"
    labels, settings = summary["labels"], summary["settings"]
    protocol = summary.get("protocol", "ours")
    names = {
        "exact": "exact log-ratio",
        "standard": "standard",
        "orthogonal": "orthogonal (paper)",
        "sequential": "sequential (standard, in stages)",
    }
    lines_of = {"chance": summary["chance"]}
    for key, col in cols.items():
        who, name = key.split("/")
        star = " *" if key == summary["headline"] else ""
        lines_of[f"{labels[who]}: {names[name]}{star}"] = col
    chance = summary["chance"]
    heads = [("all items", "accuracy", None)]
    per_type = chance.get("per_type", {})
    shown = summary.get("types_shown", list(per_type))
    if per_type:
        heads.append(("macro over types", "macro_accuracy", None))
        heads += [(f"{t} (n={per_type[t]['n']})", "per_type", t) for t in shown]

    def cell(entry: dict[str, Any], field: str, kind: str | None) -> str:
        if field not in entry:  # no type has enough items for a macro average
            return "n/a"
        return _percent(entry[field] if kind is None else entry[field][kind])

    first = max(len(k) for k in lines_of) + 2
    width = max(18, *(len(h) + 2 for h, _, _ in heads))
    cluster = summary.get("cluster", {"unit": "item", "n": summary["n_items"]})
    lines = [
        f"Compositional tests: {summary['n_items']} items ({summary['n_skipped']} skipped, "
        f"{summary['n_items'] - summary.get('n_scored', 0)} left out), protocol '{protocol}', "
        f"{sampling_line(settings)}. Accuracy (true caption ranked first), 95% "
        f"bootstrap interval resampling {cluster['n']} {cluster['unit']}s.",
        f"{'':<{first}}" + "".join(f"{h:>{width}}" for h, _, _ in heads),
    ]
    for label, entry in lines_of.items():
        lines.append(
            f"{label:<{first}}" + "".join(f"{cell(entry, f, t):>{width}}" for _, f, t in heads)
        )
    if len(shown) < len(per_type):
        lines.append(
            f"(the {len(shown) // 2} best and worst of {len(per_type)} types shown; all in "
            "summary.json)"
        )
    for key, col in cols.items():
        who, name = key.split("/")
        if "significant_true" in col:
            lines.append(
                f"{labels[who]}, {name}: margin significant for the true caption in "
                f"{col['significant_true']['value']:.0%} of items, for a false one in "
                f"{col['significant_false']['value']:.0%}"
            )
        if "decisions" in col:
            d = col["decisions"]
            lines.append(
                f"{labels[who]}, sequential: {d.get('decided', 0)} items decided, "
                f"{d.get('futile', 0)} futile, {d.get('maximum', 0)} undecided at the maximum "
                f"(counted as ties); {metrics.format_metric(col['draws'], 0)} draws per item"
            )
        if "winoground" in col and "text" in col["winoground"]:
            w = col["winoground"]
            lines.append(
                f"{labels[who]}, {name}: Winoground text {w['text']['value']:.0%}, image "
                f"{w['image']['value']:.0%}, group {w['group']['value']:.0%} "
                f"({w['text']['n']} groups)"
            )
    for flag, count in sorted(summary.get("flags", {}).items()):
        left_out = {
            "symmetric_relation": " (left out under 'ours')",
            "identical_captions": " (under 'ours' the copies are dropped from the ranking)",
        }.get(flag, "")
        lines.append(f"flagged: {count} items: {FLAGS.get(flag, flag)}{left_out}")
    other = summary.get("other", {})
    differ = [
        (key, col)
        for key, col in other.get("columns", {}).items()
        if _percent(col["accuracy"]) != _percent(cols[key]["accuracy"])
        or _percent(col.get("macro_accuracy", col["accuracy"]))
        != _percent(cols[key].get("macro_accuracy", cols[key]["accuracy"]))
    ]
    if other and not differ:
        lines.append(f"scored as '{other['protocol']}' (same calls): the same accuracies here")
    for key, col in differ:
        who, name = key.split("/")
        macro = col.get("macro_accuracy")
        lines.append(
            f"{labels[who]}, {name}, scored as '{other['protocol']}' (same calls, this run's "
            f"images): all items {_percent(col['accuracy'])}"
            + (f", macro {_percent(macro)}" if macro else "")
        )
    if summary["headline"].endswith("/sequential"):
        lines.append(
            "* sequential: the standard score's margins, log p(x|c_i) - "
            "log p(x|c_j), on draws taken in stages until the item is decided (an anytime-valid "
            "95% confidence sequence for every pair excludes 0), futile or at the maximum; "
            "undecided items count as ties. With --fixed: the same draws for every item, both "
            "scores measured (as the paper's protocol)."
        )
    lines.append(
        (
            ""
            if summary["headline"].endswith("/sequential")
            else "* the ranking score chosen with --estimator. "
        )
        + "standard: log p(x|caption) - log p(x), the "
        "score to rank captions with. orthogonal: the paper's protocol; it grows with how much a "
        "caption changes the denoiser, so a caption that contradicts the image scores high. No "
        "attention-based score ranks captions. Significance verdicts rest on standard errors "
        "that are optimistic at a few hundred draws."
    )
    lines.append(PROTOCOL_NOTES[protocol])
    return "\n".join(lines)


def _percent(m: dict[str, Any]) -> str:
    """An accuracy as ``"55% [40%-70%]"``."""
    lo, hi = m["ci95"]
    return f"{m['value']:.0%}" + (f" [{lo:.0%}-{hi:.0%}]" if lo is not None else "")
