"""Metrics of the evaluation: caption ranking, unsupervised localization and correlation.

Pure numpy. Unless said otherwise a metric returns a plain, JSON-ready dict
``{"value": float, "ci95": [lo, hi], "n": int}``: ``ci95`` is a 95% percentile bootstrap interval
over items drawn with ``np.random.default_rng(seed)`` (so results are deterministic by seed) and
is ``[None, None]`` where it cannot be computed (fewer than two items, or no usable replicate).

Localization follows two protocols:

* the paper "Interpretable Diffusion via Information Decomposition" thresholds min-max normalised
  maps at one global threshold, the best of :data:`PAPER_THRESHOLDS` on the evaluated items
  themselves (:func:`paper_threshold`); :func:`cross_fitted_scores` is the honest variant that
  picks each item's threshold on the other fold (:func:`fold_of`);
* the ImageNet-Segmentation protocol of Chefer et al. (used by ConceptAttention):
  :func:`segmentation_metrics`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

PAPER_THRESHOLDS: np.ndarray = np.linspace(0.1, 0.5, 50)
"""The 50 thresholds in [0.1, 0.5] of which the paper keeps the best one."""
WIDE_THRESHOLDS: np.ndarray = np.linspace(0.02, 0.98, 49)
"""Our protocol's grid: the paper's [0.1, 0.5] caps maps whose best threshold lies outside it
(CMI's sits at its edge, 0.10)."""

# Bootstrap replicates are drawn in chunks of at most this many indices, to bound memory.
_CHUNK = 1 << 20


# ----------------------------------------------------------------------------------------------
# Bootstrap helpers
# ----------------------------------------------------------------------------------------------


def _replicates(
    rng: np.random.Generator,
    n: int,
    n_boot: int,
    stat: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """``n_boot`` bootstrap replicates of a statistic of ``n`` items.

    ``stat`` maps an index matrix (one resample of ``range(n)`` per row) to one value per row.
    """
    rows = max(1, _CHUNK // max(n, 1))
    out = []
    for start in range(0, n_boot, rows):
        idx = rng.integers(0, n, size=(min(rows, n_boot - start), n))
        out.append(np.asarray(stat(idx), dtype=np.float64))
    return np.concatenate(out) if out else np.empty(0)


def _result(value: float, reps: np.ndarray | None, n: int) -> dict[str, Any]:
    """The metric dict; the interval is the 2.5 and 97.5 percentiles of the finite replicates."""
    lo: float | None = None
    hi: float | None = None
    if reps is not None and n >= 2:
        finite = reps[np.isfinite(reps)]
        if finite.size:
            lo, hi = (float(q) for q in np.percentile(finite, [2.5, 97.5]))
    return {"value": float(value), "ci95": [lo, hi], "n": int(n)}


def format_metric(m: dict[str, Any], digits: int = 2, style: str = "f") -> str:
    """A metric dict as text, ``"value [lo, hi]"`` (``style`` "f": ``digits`` decimals, "g":
    significant digits); ``"n/a"`` for a missing value (a summary read back from JSON has
    ``None`` where the value was NaN)."""
    value, (lo, hi) = m["value"], m["ci95"]
    if value is None or value != value:
        return "n/a"
    spec = f".{digits}{style}"
    interval = f" [{lo:{spec}}, {hi:{spec}}]" if lo is not None and hi is not None else ""
    return f"{value:{spec}}{interval}"


def _vector(values: ArrayLike, name: str) -> np.ndarray:
    """``values`` as a 1-D float64 array."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _clusters(groups: ArrayLike | None, n: int) -> np.ndarray:
    """Cluster index (0..G-1) of each of ``n`` values: one cluster per value without ``groups``."""
    if groups is None:
        return np.arange(n)
    labels = np.asarray(groups, dtype=object)
    if labels.shape != (n,):
        raise ValueError(f"groups must have one label per value ({n}), got shape {labels.shape}")
    _, index = np.unique(labels.astype(str), return_inverse=True)
    return index.reshape(-1)


def _cluster_draws(rng: np.random.Generator, n_clusters: int, n_boot: int) -> np.ndarray:
    """``(n_boot, n_clusters)`` resamples of the clusters, with replacement."""
    return rng.integers(0, n_clusters, size=(n_boot, n_clusters))


def mean_with_ci(
    values: ArrayLike, seed: int = 0, n_boot: int = 2000, groups: ArrayLike | None = None
) -> dict[str, Any]:
    """Mean of ``values`` with a percentile bootstrap 95% interval.

    NaNs are dropped first and ``n`` counts the values kept; the value is NaN when none is left.
    ``groups`` gives each value's cluster (e.g. the image of each word): the bootstrap then
    resamples whole clusters, since values of one cluster are correlated.
    """
    arr = _vector(values, "values")
    cluster = _clusters(groups, arr.size)
    keep = ~np.isnan(arr)
    arr, cluster = arr[keep], cluster[keep]
    n = arr.size
    if n == 0:
        return _result(float("nan"), None, 0)
    if groups is None:
        reps = _replicates(
            np.random.default_rng(seed), n, n_boot, lambda idx: arr[idx].mean(axis=1)
        )
        return _result(arr.mean(), reps, n)
    _, cluster = np.unique(cluster, return_inverse=True)
    sums, counts = np.bincount(cluster, weights=arr), np.bincount(cluster).astype(np.float64)
    idx = _cluster_draws(np.random.default_rng(seed), len(sums), n_boot)
    reps = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    return _result(arr.mean(), reps if len(sums) >= 2 else None, n)


def ratio_with_ci(
    numerators: ArrayLike,
    denominators: ArrayLike,
    seed: int = 0,
    n_boot: int = 2000,
    groups: ArrayLike | None = None,
) -> dict[str, Any]:
    """The ratio of the means, ``sum(numerators) / sum(denominators)``, with a percentile
    bootstrap 95% interval that resamples whole clusters (``groups``, as in
    :func:`mean_with_ci`; each value its own without). Pairs with a NaN are dropped."""
    num, den = _vector(numerators, "numerators"), _vector(denominators, "denominators")
    if num.shape != den.shape:
        raise ValueError(f"numerators and denominators differ in length ({num.size}, {den.size})")
    cluster = _clusters(groups, num.size)
    keep = ~(np.isnan(num) | np.isnan(den))
    num, den, cluster = num[keep], den[keep], cluster[keep]
    if num.size == 0:
        return _result(float("nan"), None, 0)
    _, cluster = np.unique(cluster, return_inverse=True)
    sum_num, sum_den = np.bincount(cluster, weights=num), np.bincount(cluster, weights=den)
    idx = _cluster_draws(np.random.default_rng(seed), len(sum_num), n_boot)
    with np.errstate(divide="ignore", invalid="ignore"):
        reps = sum_num[idx].sum(axis=1) / sum_den[idx].sum(axis=1)
        value = num.sum() / den.sum() if den.sum() != 0 else float("nan")
    return _result(value, reps if len(sum_num) >= 2 else None, num.size)


# ----------------------------------------------------------------------------------------------
# Caption ranking (ARO, Winoground)
# ----------------------------------------------------------------------------------------------


def ranking_credit(scores: Sequence[float], true_index: int) -> float:
    """Credit of one ranking item: did the true caption get the highest score?

    1.0 if the true score is strictly the highest, 0.0 if another score is strictly higher, and
    ``1/k`` if it ties with ``k - 1`` others at the top: the expected accuracy of breaking ties at
    random (an exact tie is neither a success nor a failure).
    """
    arr = _vector(scores, "scores")
    if np.isnan(arr).any():
        raise ValueError("scores contain NaN")
    if not 0 <= true_index < arr.size:
        raise IndexError(f"true_index {true_index} out of range for {arr.size} scores")
    top = arr.max()
    if arr[true_index] < top:
        return 0.0
    return 1.0 / int(np.count_nonzero(arr == top))


def strict_credit(scores: Sequence[float], true_index: int) -> float:
    """ARO's and Kong et al.'s credit: 1.0 only if the true score is strictly the highest.

    Their ``argmax`` over the captions, listed with the true one last (ARO's VG sets; Kong et al.
    reverse the order sets too), gives a tie to a false caption: a tie is a failure.
    """
    arr = _vector(scores, "scores")
    if np.isnan(arr).any():
        raise ValueError("scores contain NaN")
    if not 0 <= true_index < arr.size:
        raise IndexError(f"true_index {true_index} out of range for {arr.size} scores")
    return float(arr[true_index] > np.delete(arr, true_index).max())


def accuracy(
    credits: ArrayLike, seed: int = 0, n_boot: int = 2000, groups: ArrayLike | None = None
) -> dict[str, Any]:
    """Mean credit (see :func:`ranking_credit`) over items, with a bootstrap 95% interval
    (resampling whole ``groups``, e.g. the items of one image, when given)."""
    arr = _vector(credits, "credits")
    if np.isnan(arr).any():
        raise ValueError("credits contain NaN")
    return mean_with_ci(arr, seed=seed, n_boot=n_boot, groups=groups)


def macro_accuracy(
    credits: ArrayLike,
    types: Sequence[Hashable],
    seed: int = 0,
    n_boot: int = 2000,
    groups: ArrayLike | None = None,
) -> dict[str, Any]:
    """Mean over types of the per-type accuracy, as ARO reports VG-Relation and VG-Attribution.

    The bootstrap is stratified: each replicate resamples the items of every type within that
    type (whole ``groups`` of it, e.g. the items of one image, when given), so every replicate
    has every type. ``n`` counts items; the result also has ``"per_type": {str(type): accuracy
    dict}`` (each with its own bootstrap from ``seed``), keyed in sorted order.
    """
    arr = _vector(credits, "credits")
    if np.isnan(arr).any():
        raise ValueError("credits contain NaN")
    labels = np.array([str(t) for t in types], dtype=object)
    if labels.size != arr.size:
        raise ValueError(f"{arr.size} credits but {labels.size} types")
    if arr.size == 0:
        return {**_result(float("nan"), None, 0), "per_type": {}}
    cluster = _clusters(groups, arr.size)
    names = sorted(set(labels.tolist()))
    rng = np.random.default_rng(seed)
    reps, per_type, means = [], {}, []
    for name in names:
        here = labels == name
        values = arr[here]
        _, own = np.unique(cluster[here], return_inverse=True)
        sums, counts = np.bincount(own, weights=values), np.bincount(own).astype(np.float64)
        idx = _cluster_draws(rng, len(sums), n_boot)
        reps.append(sums[idx].sum(axis=1) / counts[idx].sum(axis=1))
        means.append(values.mean())
        per_type[name] = accuracy(
            values, seed=seed, n_boot=n_boot, groups=None if groups is None else cluster[here]
        )
    return {**_result(float(np.mean(means)), np.mean(reps, axis=0), arr.size), "per_type": per_type}


def winoground_scores(s: ArrayLike, seed: int = 0, n_boot: int = 2000) -> dict[str, Any]:
    """Winoground's text, image and group scores of ``s[g, c, i]``, caption ``c`` for image ``i``.

    Caption ``k`` is the true one for image ``k``. A group is text-correct when each image
    prefers its caption (``s[0,0] > s[1,0]`` and ``s[1,1] > s[0,1]``), image-correct when each
    caption prefers its image (``s[0,0] > s[0,1]`` and ``s[1,1] > s[1,0]``), group-correct when
    both. Inequalities are strict, so ties fail, as in the ``text_correct``/``image_correct``
    functions of Winoground's example evaluation code.

    Returns ``{"text": dict, "image": dict, "group": dict}``, each an accuracy over groups with
    the same bootstrap resamples (same seed).
    """
    arr = np.asarray(s, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1:] != (2, 2):
        raise ValueError(f"s must have shape (n_groups, 2, 2), got {arr.shape}")
    if np.isnan(arr).any():
        raise ValueError("s contains NaN")
    text = (arr[:, 0, 0] > arr[:, 1, 0]) & (arr[:, 1, 1] > arr[:, 0, 1])
    image = (arr[:, 0, 0] > arr[:, 0, 1]) & (arr[:, 1, 1] > arr[:, 1, 0])
    return {
        name: accuracy(ok.astype(np.float64), seed=seed, n_boot=n_boot)
        for name, ok in (("text", text), ("image", image), ("group", text & image))
    }


# ----------------------------------------------------------------------------------------------
# Localization
# ----------------------------------------------------------------------------------------------


def minmax(heat: ArrayLike) -> np.ndarray:
    """Min-max normalise a map to [0, 1] (float64).

    A constant map becomes all ones: it carries no localization information, and all ones makes
    the whole-image baseline (a constant map) predict the whole image at every threshold in
    (0, 1], instead of nothing.
    """
    arr = np.asarray(heat, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("empty map")
    if not np.isfinite(arr).all():
        raise ValueError("map contains NaN or infinity")
    lo, hi = arr.min(), arr.max()
    if hi == lo:
        return np.ones_like(arr)
    return (arr - lo) / (hi - lo)


def _map_and_mask(heat: ArrayLike, mask: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Flattened min-max normalised map and boolean mask of the same shape."""
    h = minmax(heat)
    m = np.asarray(mask, dtype=bool)
    if h.shape != m.shape:
        raise ValueError(f"map shape {h.shape} differs from mask shape {m.shape}")
    return h.reshape(-1), m.reshape(-1)


def _predictions(heat: ArrayLike, mask: ArrayLike, thresholds: ArrayLike):
    """Predicted masks ``minmax(heat) >= t`` (one row per threshold) and the flat mask."""
    h, m = _map_and_mask(heat, mask)
    t = _vector(thresholds, "thresholds")
    return h[None, :] >= t[:, None], m


def iou_curve(heat: ArrayLike, mask: ArrayLike, thresholds: ArrayLike) -> np.ndarray:
    """IoU of ``minmax(heat) >= t`` with the boolean ``mask``, for each threshold ``t``.

    The IoU of two empty sets is 1.0 (an empty prediction of an absent object is right).
    """
    pred, m = _predictions(heat, mask, thresholds)
    inter = np.count_nonzero(pred & m, axis=1)
    union = np.count_nonzero(pred | m, axis=1)
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def pixel_accuracy_curve(heat: ArrayLike, mask: ArrayLike, thresholds: ArrayLike) -> np.ndarray:
    """Fraction of pixels where ``minmax(heat) >= t`` equals the mask, for each threshold."""
    pred, m = _predictions(heat, mask, thresholds)
    return np.mean(pred == m, axis=1)


def _average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Sum over distinct score thresholds, high to low, of ``(R_n - R_{n-1}) P_n``; tied scores
    enter together. NaN when there is no positive."""
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], targets[order].astype(np.float64)
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(t)[last_of_tie]
    if tp[-1] == 0:
        return float("nan")
    precision = tp / (np.flatnonzero(last_of_tie) + 1)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def average_precision(heat: ArrayLike, mask: ArrayLike) -> float:
    """Average precision of the pixel scores ``heat`` against the boolean ``mask``.

    The definition of scikit-learn's ``average_precision_score``: ``sum_n (R_n - R_{n-1}) P_n``
    over the distinct scores from high to low, tied pixels entering together (no interpolation).
    NaN if the mask is empty. Only the order of the scores matters, so no normalisation is done.
    """
    h = np.asarray(heat, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    if h.shape != m.shape:
        raise ValueError(f"map shape {h.shape} differs from mask shape {m.shape}")
    if np.isnan(h).any():
        raise ValueError("map contains NaN")
    return _average_precision(h.reshape(-1), m.reshape(-1))


def segmentation_metrics(
    heats: Sequence[ArrayLike],
    masks: Sequence[ArrayLike],
    threshold: float | Literal["mean"] = "mean",
    seed: int = 0,
    n_boot: int = 2000,
) -> dict[str, Any]:
    """Pixel accuracy, mIoU and mAP of the ImageNet-Segmentation protocol of Chefer et al.

    Read in ``baselines/ViT/imagenet_seg_eval.py`` and ``utils/metrices.py`` of
    hila-chefer/Transformer-Explainability, whose functions ConceptAttention copies into
    ``concept_attention/utils.py`` (helblazer811/ConceptAttention). Per image the map is min-max
    normalised and binarised at its own mean (``Res > Res.mean()``); then

    * ``pixel_accuracy``: correct pixels over all pixels, both summed over the dataset;
    * ``miou``: per class (background, foreground) intersection over union, each summed over
      the dataset, then averaged over the two classes;
    * ``map``: per image, one average precision over the two channels pooled: scores
      ``1 - map`` against the background and ``map`` against the foreground, concatenated; then
      the mean over images (a pooled AP is never undefined: half the targets are positive).

    Also ``iou_foreground`` (the foreground term of ``miou``). Each is a metric dict whose
    bootstrap resamples images (the same resamples for all four).

    Differences to know: a constant map is all ones here (:func:`minmax`) where Chefer's code
    makes it NaN then zeros (same binary prediction, but its AP is then 0.5). ConceptAttention's
    ImageNet script (seen in the fork manuragkhullar/ConceptAttention,
    ``experiments/imagenet_segmentation/run_experiment.py``; not found in helblazer811's stored
    tree) passes the two stacked channels to its ``batch_intersection_union``, which then counts
    ``TP + TN`` as the intersection of both classes: its "mIoU" equals ``a / (2 - a)`` of its
    pooled pixel accuracy ``a``, not the mean of the background and foreground IoUs.

    Args:
        heats: one map per image.
        masks: boolean ground-truth masks, each of its map's shape.
        threshold: ``"mean"`` for Chefer's rule (strictly above the normalised map's mean), or
            a float ``t`` for ``minmax(map) >= t`` as in :func:`iou_curve`.
        seed: bootstrap seed.
        n_boot: number of bootstrap replicates.
    """
    if len(heats) != len(masks):
        raise ValueError(f"{len(heats)} maps but {len(masks)} masks")
    stats = [segmentation_stats(h, m, threshold) for h, m in zip(heats, masks, strict=True)]
    return segmentation_summary(stats, seed=seed, n_boot=n_boot)


def segmentation_stats(
    heat: ArrayLike, mask: ArrayLike, threshold: float | Literal["mean"] = "mean"
) -> dict[str, Any]:
    """One image's counts for :func:`segmentation_summary` (JSON-ready): correct pixels, pixels,
    per-class (background, foreground) intersections and unions, and the pooled AP."""
    h, m = _map_and_mask(heat, mask)
    if threshold == "mean":
        # A constant map (the whole-image baseline) predicts every pixel; Chefer's code would
        # turn it into NaN, then zeros, and predict none.
        pred = h > h.mean() if h.max() > h.min() else np.ones_like(m)
    else:
        pred = h >= float(threshold)
    pairs = ((~pred, ~m), (pred, m))
    return {
        "correct": int(np.count_nonzero(pred == m)),
        "pixels": int(m.size),
        "intersection": [int(np.count_nonzero(p & t)) for p, t in pairs],
        "union": [int(np.count_nonzero(p | t)) for p, t in pairs],
        "ap": _average_precision(np.concatenate([1.0 - h, h]), np.concatenate([~m, m])),
    }


def segmentation_summary(
    stats: Sequence[dict[str, Any]],
    seed: int = 0,
    n_boot: int = 2000,
    groups: ArrayLike | None = None,
) -> dict[str, Any]:
    """The metrics of :func:`segmentation_metrics` from per-map :func:`segmentation_stats`;
    with ``groups`` (each map's cluster, e.g. its image) the bootstrap resamples whole clusters.
    ``n`` counts the maps."""
    n_maps = len(stats)
    cluster = _clusters(groups, n_maps)
    _, cluster = np.unique(cluster, return_inverse=True)
    n = int(cluster.max()) + 1 if n_maps else 0

    def per_cluster(values: np.ndarray) -> np.ndarray:
        out = np.zeros((n, *values.shape[1:]))
        np.add.at(out, cluster, values)
        return out

    correct = per_cluster(np.array([s["correct"] for s in stats], dtype=np.float64))
    pixels = per_cluster(np.array([s["pixels"] for s in stats], dtype=np.float64))
    inter = per_cluster(
        np.array([s["intersection"] for s in stats], dtype=np.float64).reshape(-1, 2)
    )
    union = per_cluster(np.array([s["union"] for s in stats], dtype=np.float64).reshape(-1, 2))
    ap_sum = per_cluster(np.array([s["ap"] for s in stats], dtype=np.float64))
    ap_count = per_cluster(np.ones(n_maps))

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        # Chefer divides by (union + eps): a class absent from prediction and truth scores 0.
        return np.where(den == 0, 0.0, num / np.maximum(den, 1))

    def acc_of(idx: np.ndarray) -> np.ndarray:
        return ratio(correct[idx].sum(axis=-1), pixels[idx].sum(axis=-1))

    def ious_of(idx: np.ndarray) -> np.ndarray:
        return ratio(inter[idx].sum(axis=-2), union[idx].sum(axis=-2))

    everything = np.arange(n)
    metrics: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "pixel_accuracy": acc_of,
        "miou": lambda idx: ious_of(idx).mean(axis=-1),
        "iou_foreground": lambda idx: ious_of(idx)[..., 1],
        "map": lambda idx: ap_sum[idx].sum(axis=-1) / ap_count[idx].sum(axis=-1),
    }
    out: dict[str, Any] = {}
    for name, stat in metrics.items():
        value = stat(everything) if n else float("nan")
        reps = _replicates(np.random.default_rng(seed), n, n_boot, stat) if n else None
        out[name] = _result(float(value), reps, n_maps)
    return out


# ----------------------------------------------------------------------------------------------
# Threshold selection
# ----------------------------------------------------------------------------------------------


def _curves(curves: ArrayLike) -> np.ndarray:
    """``curves`` as a non-empty 2-D float64 array."""
    arr = np.asarray(curves, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"curves must be a non-empty (items, thresholds) array, got {arr.shape}")
    return arr


def paper_threshold(curves: ArrayLike) -> int:
    """Index of the threshold maximising the mean curve over the items themselves.

    ``curves[j, k]`` is item ``j``'s score (IoU, pixel accuracy) at threshold ``k``. This is the
    paper's protocol: one global threshold chosen on the evaluated items, hence optimistic. Ties
    go to the lowest index.
    """
    return int(np.argmax(_curves(curves).mean(axis=0)))


def cross_fitted_scores(curves: ArrayLike, folds: ArrayLike) -> np.ndarray:
    """Each item's curve at the threshold chosen (as :func:`paper_threshold`) on the other fold.

    ``folds`` gives each item's fold, 0 or 1 (see :func:`fold_of`); both folds must be present.
    No item's score depends on a threshold chosen with that item, so the mean is honest.
    """
    arr = _curves(curves)
    return arr[np.arange(arr.shape[0]), cross_fitted_thresholds(arr, folds)]


def cross_fitted_thresholds(curves: ArrayLike, folds: ArrayLike) -> np.ndarray:
    """Each item's threshold index, chosen (as :func:`paper_threshold`) on the other fold's
    ``curves``; apply it to any other curve of the items (e.g. pixel accuracy at the threshold
    chosen by IoU)."""
    arr = _curves(curves)
    f = np.asarray(folds)
    if f.shape != (arr.shape[0],):
        raise ValueError(f"folds must have shape ({arr.shape[0]},), got {f.shape}")
    if not np.isin(f, (0, 1)).all():
        raise ValueError("folds must be 0 or 1")
    chosen = np.empty(arr.shape[0], dtype=np.int64)
    for fold in (0, 1):
        here = f == fold
        if here.all():
            raise ValueError("both folds must have items")
        chosen[here] = paper_threshold(arr[~here])
    return chosen


def fold_of(item_id: str) -> int:
    """Stable fold (0 or 1) of an item: the parity of the first 8 bytes of SHA-256 of its id.

    Independent of item order, sharding and Python's hash seed.
    """
    digest = hashlib.sha256(item_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 2


# ----------------------------------------------------------------------------------------------
# Correlation
# ----------------------------------------------------------------------------------------------


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``x``, ties sharing the average of their ranks."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    first = np.r_[True, xs[1:] != xs[:-1]]
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], x.size] - 1
    ranks = np.empty(x.size)
    ranks[order] = ((starts + ends) / 2.0 + 1.0)[np.cumsum(first) - 1]
    return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; NaN when either variable is constant."""
    dx, dy = x - x.mean(), y - y.mean()
    sxx, syy = float(dx @ dx), float(dy @ dy)
    if sxx == 0.0 or syy == 0.0:
        return float("nan")
    return float(np.clip((dx @ dy) / np.sqrt(sxx * syy), -1.0, 1.0))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of the average ranks."""
    return pearson(_average_ranks(x), _average_ranks(y))


def correlation(
    x: ArrayLike,
    y: ArrayLike,
    method: Literal["pearson", "spearman"] = "pearson",
    seed: int = 0,
    n_boot: int = 2000,
    groups: ArrayLike | None = None,
) -> dict[str, Any]:
    """Pearson or Spearman correlation with a bootstrap 95% interval resampling pairs (or, with
    ``groups``, whole clusters of pairs, as in :func:`mean_with_ci`).

    Pairs with a NaN are dropped (``n`` counts the pairs kept). Spearman is the Pearson
    correlation of average ranks (ties share their mean rank), ranked anew in each replicate. The
    value is NaN when a variable is constant; replicates in which one is constant are skipped.
    """
    a, b = _vector(x, "x"), _vector(y, "y")
    if a.size != b.size:
        raise ValueError(f"x has {a.size} values but y has {b.size}")
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}")
    cluster = _clusters(groups, a.size)
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b, cluster = a[keep], b[keep], cluster[keep]
    n = a.size
    corr = pearson if method == "pearson" else spearman
    if n < 2:
        return _result(float("nan"), None, n)
    rng = np.random.default_rng(seed)
    if groups is None:

        def stat(idx: np.ndarray) -> np.ndarray:
            return np.array([corr(a[row], b[row]) for row in idx])

        return _result(corr(a, b), _replicates(rng, n, n_boot, stat), n)
    _, cluster = np.unique(cluster, return_inverse=True)
    members = [np.flatnonzero(cluster == g) for g in range(cluster.max() + 1)]
    reps = []
    for draw in _cluster_draws(rng, len(members), n_boot):
        rows = np.concatenate([members[g] for g in draw])
        reps.append(corr(a[rows], b[rows]))
    return _result(corr(a, b), np.array(reps) if len(members) >= 2 else None, n)


# Localization's methods, by the names its rows and tables give them.
WHOLE, CMI, ATTN_INFO, DAAM, COMBINED, MI, EXACT = (
    "whole image",
    "information (CMI)",
    "attention + information",
    "DAAM (DDIM inversion)",
    "combined (ours)",
    "caption MI",
    "exact world model CMI",
)
# The maps each localization item keeps for the report (the others are in its summary alone).
REPORT_MAPS = (CMI, ATTN_INFO, DAAM, EXACT)


def correlations(model: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """A model's summary as rows ``(name, Pearson, Spearman)``: image and pixel level, CMI and
    attention (those measured)."""
    rows = []
    for level, title in (("image_level", "image level"), ("pixel_level", "pixel level")):
        for what in ("cmi", "attention"):
            if f"pearson_{what}" in model[level]:
                name = f"{model['label']}, {title}, {'CMI' if what == 'cmi' else 'attention'}"
                rows.append(
                    (name, model[level][f"pearson_{what}"], model[level][f"spearman_{what}"])
                )
    return rows
