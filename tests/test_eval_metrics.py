"""Metrics of the evaluation against cases worked out by hand (the arithmetic is in comments)."""

import json
import math

import numpy as np
import pytest

from infodecomp.evaluate.metrics import (
    PAPER_THRESHOLDS,
    accuracy,
    average_precision,
    correlation,
    cross_fitted_scores,
    fold_of,
    iou_curve,
    macro_accuracy,
    mean_with_ci,
    minmax,
    paper_threshold,
    pixel_accuracy_curve,
    ranking_credit,
    segmentation_metrics,
    winoground_scores,
)

# ---------------------------------------------------------------------------- caption ranking


def test_ranking_credit_strict_and_ties():
    assert ranking_credit([0.1, 0.5, 0.3], 1) == 1.0
    assert ranking_credit([0.1, 0.5, 0.3], 2) == 0.0
    # True caption ties with one other at the top: a coin flip.
    assert ranking_credit([0.5, 0.5, 0.2], 0) == 0.5
    assert ranking_credit([0.7, 0.7, 0.7], 2) == pytest.approx(1 / 3)
    # A tie at the top that does not include the true caption is still a failure.
    assert ranking_credit([0.2, 0.9, 0.9], 0) == 0.0
    with pytest.raises(IndexError):
        ranking_credit([0.1, 0.2], 2)
    with pytest.raises(ValueError):
        ranking_credit([0.1, float("nan")], 0)


def test_accuracy_value_and_json():
    # (1 + 0 + 0.5 + 1) / 4 = 0.625
    res = accuracy([1.0, 0.0, 0.5, 1.0], seed=3)
    assert res["value"] == 0.625 and res["n"] == 4
    lo, hi = res["ci95"]
    assert 0.0 <= lo <= 0.625 <= hi <= 1.0
    json.dumps(res, allow_nan=False)


def test_macro_differs_from_micro_and_bootstrap_is_stratified():
    # Type "a": 8 items all right; type "b": credits 0 and 0.5.
    # micro = (8 + 0.5) / 10 = 0.85; macro = (1 + 0.25) / 2 = 0.625.
    credits = [1.0] * 8 + [0.0, 0.5]
    types = ["a"] * 8 + ["b"] * 2
    micro = accuracy(credits)
    macro = macro_accuracy(credits, types, seed=1)
    assert micro["value"] == pytest.approx(0.85)
    assert macro["value"] == pytest.approx(0.625)
    assert macro["n"] == 10
    assert macro["per_type"]["a"]["value"] == 1.0 and macro["per_type"]["a"]["n"] == 8
    assert macro["per_type"]["b"]["value"] == 0.25 and macro["per_type"]["b"]["n"] == 2
    # Stratified: "a" is always 1 and "b" resamples {0, 0.5} to a mean in {0, 0.25, 0.5}, so
    # every replicate lies in {0.5, 0.625, 0.75}. Resampling the 10 items together would leave
    # out type "b" in 0.8**10 = 11% of replicates, and score them 1.0.
    lo, hi = macro["ci95"]
    assert lo == 0.5 and hi == 0.75
    json.dumps(macro, allow_nan=False)


def test_winoground_three_groups():
    s = np.array(
        [
            # c0: (i0, i1); c1: (i0, i1). Both images and both captions prefer the match.
            [[0.9, 0.2], [0.1, 0.8]],
            # text: .5 > .1 and .7 > .6, right; image: caption 0 prefers image 1 (.6 > .5).
            [[0.5, 0.6], [0.1, 0.7]],
            # text: s[0,0] = s[1,0] = .5 is a tie, wrong; image: .5 > .1 and .9 > .5, right.
            [[0.5, 0.1], [0.5, 0.9]],
        ]
    )
    res = winoground_scores(s)
    assert res["text"]["value"] == pytest.approx(2 / 3)
    assert res["image"]["value"] == pytest.approx(2 / 3)
    assert res["group"]["value"] == pytest.approx(1 / 3)
    assert res["group"]["n"] == 3
    with pytest.raises(ValueError):
        winoground_scores(np.zeros((3, 2, 3)))


# ------------------------------------------------------------------------------- localization


def test_minmax_and_constant_map():
    np.testing.assert_allclose(minmax([[2.0, 4.0], [6.0, 3.0]]), [[0.0, 0.5], [1.0, 0.25]])
    np.testing.assert_array_equal(minmax(np.full((2, 2), 7.0)), np.ones((2, 2)))
    assert PAPER_THRESHOLDS.shape == (50,)
    assert PAPER_THRESHOLDS[0] == 0.1 and PAPER_THRESHOLDS[-1] == 0.5


def _four_by_four():
    # heat k = 0..15 row by row, so minmax(heat) = k / 15 and "k / 15 >= t" means k >= 15 t.
    heat = np.arange(16.0).reshape(4, 4)
    mask = np.zeros(16, dtype=bool)
    mask[[6, 10, 11, 12, 13, 14, 15]] = True
    return heat, mask.reshape(4, 4)


def test_iou_and_pixel_accuracy_curves_on_4x4():
    heat, mask = _four_by_four()
    thresholds = [0.0, 0.5, 0.9, 1.01]
    # t = 0:    all 16 predicted; IoU 7/16; correct = the 7 mask pixels.
    # t = 0.5:  k >= 7.5 -> {8..15}; inter {10..15} = 6, union {6, 8..15} = 9 -> 2/3;
    #           wrong pixels {6, 8, 9} -> 13/16.
    # t = 0.9:  k >= 13.5 -> {14, 15}; inter 2, union 7 -> 2/7; wrong {6, 10..13} -> 11/16.
    # t = 1.01: nothing predicted; IoU 0/7; wrong = the 7 mask pixels -> 9/16.
    np.testing.assert_allclose(iou_curve(heat, mask, thresholds), [7 / 16, 2 / 3, 2 / 7, 0.0])
    np.testing.assert_allclose(
        pixel_accuracy_curve(heat, mask, thresholds), [7 / 16, 13 / 16, 11 / 16, 9 / 16]
    )
    # Empty prediction of an empty mask: IoU 1 by convention.
    empty = np.zeros((4, 4), dtype=bool)
    np.testing.assert_allclose(iou_curve(heat, empty, [0.5, 1.01]), [0.0, 1.0])
    with pytest.raises(ValueError):
        iou_curve(heat, mask[:2], thresholds)


def test_average_precision_with_ties_and_perfect_map():
    heat = np.array([[0.9, 0.8, 0.8], [0.3, 0.3, 0.1]])
    mask = np.array([[1, 0, 1], [1, 0, 0]], dtype=bool)
    # 3 positives. Tie groups from the top:
    #   {.9}:       tp 1 of 1 -> P 1,   R 1/3
    #   {.8, .8}:   tp 2 of 3 -> P 2/3, R 2/3
    #   {.3, .3}:   tp 3 of 5 -> P 3/5, R 1
    #   {.1}:       R unchanged, adds nothing
    # AP = 1/3 * (1 + 2/3 + 3/5) = 34/45. (Positives first within ties would give 11/12.)
    assert average_precision(heat, mask) == pytest.approx(34 / 45)
    assert average_precision(heat, heat > 0.5) == pytest.approx(1.0)
    assert math.isnan(average_precision(heat, np.zeros_like(mask)))


def _two_images():
    # Image A: minmax = [[0, 1/3], [2/3, 1]], mean 1/2 -> prediction [[0, 0], [1, 1]].
    heat_a = np.array([[0.0, 1.0], [2.0, 3.0]])
    mask_a = np.array([[0, 1], [1, 1]], dtype=bool)
    # Image B: minmax = [[1, 0], [0, 0]], mean 1/4 -> prediction [[1, 0], [0, 0]].
    heat_b = np.array([[4.0, 0.0], [0.0, 0.0]])
    mask_b = np.array([[0, 0], [0, 1]], dtype=bool)
    return [heat_a, heat_b], [mask_a, mask_b]


def test_segmentation_metrics_chefer_protocol():
    heats, masks = _two_images()
    res = segmentation_metrics(heats, masks, seed=0, n_boot=200)
    # Pixel accuracy: A right on 3 of 4, B on 2 of 4 -> 5/8 pooled.
    assert res["pixel_accuracy"]["value"] == pytest.approx(5 / 8)
    # Foreground: A inter 2, union 3; B inter 0, union 2 -> 2/5 (the mean of per-image IoUs
    # would be 1/3). Background: A inter 1, union 2; B inter 2, union 4 -> 3/6.
    assert res["iou_foreground"]["value"] == pytest.approx(2 / 5)
    assert res["miou"]["value"] == pytest.approx((2 / 5 + 1 / 2) / 2)
    # AP of A over the 8 pooled scores [map | 1 - map] against [mask | ~mask], 4 positives:
    #   score 1   : 2 of 2 positive -> P 1,   R 1/2
    #   score 2/3 : 3 of 4          -> P 3/4, R 3/4
    #   score 1/3 : 4 of 6          -> P 2/3, R 1        AP_A = 1/2 + 3/16 + 1/6 = 41/48
    # AP of B: score 1 holds 2 positives of 4 -> P 1/2, R 1/2; then all 8 -> P 1/2, R 1:
    #   AP_B = 1/2.   mAP = (41/48 + 24/48) / 2 = 65/96.
    assert res["map"]["value"] == pytest.approx(65 / 96)
    assert all(res[k]["n"] == 2 for k in ("pixel_accuracy", "miou", "iou_foreground", "map"))
    # A fixed threshold uses ">=" on the normalised map: at 0.3 image A's prediction is its
    # mask exactly (4/4) and B is unchanged (2/4) -> 6/8.
    fixed = segmentation_metrics(heats, masks, threshold=0.3, n_boot=50)
    assert fixed["pixel_accuracy"]["value"] == pytest.approx(6 / 8)
    json.dumps(res, allow_nan=False)


# -------------------------------------------------------------------------- threshold choice


def test_paper_threshold_picks_best_mean():
    curves = np.array([[0.1, 0.5, 0.3], [0.9, 0.2, 0.4], [0.2, 0.6, 0.2]])
    # Column means 0.4, 0.433, 0.3 -> index 1 (index 0 holds the single best value, 0.9).
    assert paper_threshold(curves) == 1


def test_cross_fitted_scores_use_the_other_fold():
    curves = np.array(
        [
            [0.2, 0.8, 0.1],  # fold 0
            [0.4, 0.6, 0.3],  # fold 0: fold-0 mean [.3, .7, .2] -> index 1
            [0.9, 0.1, 0.5],  # fold 1
            [0.7, 0.3, 0.6],  # fold 1: fold-1 mean [.8, .2, .55] -> index 0
        ]
    )
    folds = np.array([0, 0, 1, 1])
    # Fold-0 items at index 0 (chosen on fold 1), fold-1 items at index 1 (chosen on fold 0).
    np.testing.assert_allclose(cross_fitted_scores(curves, folds), [0.2, 0.4, 0.1, 0.3])
    # The paper's in-sample choice (overall mean [.55, .45, .375] -> 0) scores higher.
    assert curves[:, paper_threshold(curves)].mean() > cross_fitted_scores(curves, folds).mean()
    with pytest.raises(ValueError):
        cross_fitted_scores(curves, np.zeros(4, dtype=int))


def test_fold_of_is_stable_and_balanced():
    # SHA-256("abc") = ba7816bf8f01cfea..., first 8 bytes end in 0xea (even) -> fold 0.
    # SHA-256("")    = e3b0c44298fc1c14..., first 8 bytes end in 0x14 (even) -> fold 0.
    assert fold_of("abc") == 0
    assert fold_of("") == 0
    folds = [fold_of(f"item-{k}") for k in range(200)]
    assert set(folds) == {0, 1}
    assert 70 < sum(folds) < 130
    assert folds == [fold_of(f"item-{k}") for k in range(200)]


# ------------------------------------------------------------------------------ correlation


def test_spearman_with_ties():
    x = [1.0, 2.0, 2.0, 3.0, 4.0]
    y = [1.0, 3.0, 2.0, 5.0, 4.0]
    # Ranks x [1, 2.5, 2.5, 4, 5], y [1, 3, 2, 5, 4], both of mean 3.
    # Centred: dx [-2, -.5, -.5, 1, 2], dy [-2, 0, -1, 2, 1]:
    # sum dx dy = 8.5, sum dx^2 = 9.5, sum dy^2 = 10 -> rho = 8.5 / sqrt(95).
    # (The no-ties shortcut 1 - 6 sum d^2 / (n (n^2 - 1)) would give 0.875.)
    res = correlation(x, y, method="spearman", n_boot=300)
    assert res["value"] == pytest.approx(8.5 / math.sqrt(95))
    assert res["n"] == 5


def test_pearson_linear_constant_and_nan_pairs():
    x = np.arange(10.0)
    assert correlation(x, 3 * x - 2, n_boot=100)["value"] == pytest.approx(1.0)
    assert correlation(x, -x, n_boot=100)["value"] == pytest.approx(-1.0)
    const = correlation(x, np.ones(10), n_boot=100)
    assert math.isnan(const["value"]) and const["ci95"] == [None, None]
    # A pair with a NaN is dropped.
    res = correlation([1.0, 2.0, np.nan, 3.0], [2.0, 4.0, 1.0, 6.0], n_boot=100)
    assert res["n"] == 3 and res["value"] == pytest.approx(1.0)


def test_correlation_skips_constant_replicates():
    # x is constant unless index 4 is drawn (missed by 0.8**5 = 33% of replicates).
    res = correlation([0.0, 0.0, 0.0, 0.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0], n_boot=500)
    lo, hi = res["ci95"]
    assert lo is not None and math.isfinite(lo) and math.isfinite(hi)


# -------------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_contains_value_and_is_reproducible():
    values = np.random.default_rng(0).normal(1.0, 1.0, size=40)
    a = mean_with_ci(values, seed=7)
    b = mean_with_ci(values, seed=7)
    c = mean_with_ci(values, seed=8)
    assert a == b
    assert a["ci95"] != c["ci95"]
    lo, hi = a["ci95"]
    assert lo < a["value"] < hi
    assert a["value"] == pytest.approx(values.mean())


def test_ci_width_shrinks_with_n():
    rng = np.random.default_rng(1)
    small = mean_with_ci(rng.normal(size=20))
    large = mean_with_ci(rng.normal(size=2000))

    def width(r):
        return r["ci95"][1] - r["ci95"][0]

    # Widths scale like 1/sqrt(n): about 0.88 vs 0.088.
    assert width(large) < width(small) / 4


def test_mean_with_ci_drops_nan_and_small_n():
    res = mean_with_ci([1.0, float("nan"), 3.0])
    assert res["value"] == 2.0 and res["n"] == 2
    one = mean_with_ci([5.0])
    assert one == {"value": 5.0, "ci95": [None, None], "n": 1}
    none = mean_with_ci([])
    assert none["n"] == 0 and math.isnan(none["value"]) and none["ci95"] == [None, None]


def test_cluster_bootstrap_resamples_whole_groups():
    """Three copies of each value in one cluster carry no more information than the value: the
    grouped interval equals the interval of the values themselves; ignoring the clusters would
    give a narrower, overconfident one."""
    from infodecomp.evaluate.metrics import correlation, mean_with_ci

    v = np.array([0.1, 0.5, 0.2, 0.9, 0.4, 0.7, 0.3, 0.8])
    grouped = mean_with_ci(np.repeat(v, 3), seed=4, groups=np.repeat(np.arange(8), 3))
    plain = mean_with_ci(v, seed=4)
    assert grouped["value"] == pytest.approx(plain["value"]) and grouped["n"] == 24
    assert grouped["ci95"] == pytest.approx(plain["ci95"])
    naive = mean_with_ci(np.repeat(v, 3), seed=4)
    assert naive["ci95"][1] - naive["ci95"][0] < 0.8 * (grouped["ci95"][1] - grouped["ci95"][0])
    x, y = np.repeat(v, 2), np.repeat(v**2 + 0.1 * np.sin(7 * v), 2)
    c = correlation(x, y, "pearson", seed=1, groups=np.repeat(np.arange(8), 2))
    assert c["n"] == 16 and c["ci95"][0] <= c["value"] <= c["ci95"][1]


def test_constant_map_predicts_every_pixel_in_the_segmentation_protocol():
    from infodecomp.evaluate.metrics import segmentation_stats, segmentation_summary

    mask = np.zeros((4, 4), bool)
    mask[:2] = True
    stats = segmentation_stats(np.ones((4, 4)), mask)
    assert stats["correct"] == 8 and stats["intersection"] == [0, 8] and stats["union"] == [8, 16]
    summary = segmentation_summary([stats, stats], groups=["a", "a"])
    assert summary["iou_foreground"]["value"] == 0.5 and summary["pixel_accuracy"]["n"] == 2


def test_cross_fitted_thresholds_apply_to_other_curves():
    from infodecomp.evaluate.metrics import cross_fitted_scores, cross_fitted_thresholds

    iou = np.array([[0.1, 0.9], [0.2, 0.8], [0.9, 0.1], [0.7, 0.3]])
    folds = np.array([0, 0, 1, 1])
    # Fold 0 takes fold 1's best (index 0), fold 1 takes fold 0's best (index 1).
    assert cross_fitted_thresholds(iou, folds).tolist() == [0, 0, 1, 1]
    assert cross_fitted_scores(iou, folds).tolist() == [0.1, 0.2, 0.1, 0.3]


def test_format_metric_reads_summaries_back_from_json():
    from infodecomp.evaluate.metrics import format_metric

    assert format_metric({"value": 0.5, "ci95": [0.25, 0.75], "n": 3}) == "0.50 [0.25, 0.75]"
    assert format_metric({"value": None, "ci95": [None, None], "n": 0}) == "n/a"
    assert format_metric({"value": 2.2e-4, "ci95": [None, None], "n": 1}, 2, "g") == "0.00022"
