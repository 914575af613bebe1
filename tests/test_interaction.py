"""Interaction information and DiffusionPID's atoms against exact answers: the plain and the
correlated world's exact models (exact log-probabilities) and a labelled Gaussian mixture with two
factors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import infodecomp as idc
from infodecomp.interactions import (
    ATOMS,
    LINEAR,
    interaction_information,
    pair_conditions,
    quantities,
)
from infodecomp.models.reference import example_mixture
from infodecomp.sampling import Sampling
from infodecomp.world.model import WorldModel
from infodecomp.world.scenes import sample

KINDS: dict[tuple, str] = {}  # (caption, pair) -> which kind of pair
WEIGHTS = {name: torch.tensor(w, dtype=torch.float64) for name, w in LINEAR.items()}


def exact_terms(model, x: torch.Tensor, conditions: dict) -> torch.Tensor:
    """(i1, i2, i12) of one pair from exact log-probabilities."""
    lp = {k: model.log_prob(x, v).item() for k, v in conditions.items()}
    return torch.tensor(
        [lp["first"] - lp["rest"], lp["second"] - lp["rest"], lp["joint"] - lp["rest"]],
        dtype=torch.float64,
    )


def world_items(n: int, prior: str = "plain", seed: int = 11) -> list[tuple]:
    """Two-object world images with pairs of every kind: colour and shape of one object, words
    of different objects, the relation word with an object."""
    s = sample(10 * n, seed=seed, split="test", prior=prior)
    items = []
    for image, caption, scene in zip(s.images, s.captions, s.scenes, strict=True):
        if len(scene.objects) != 2:
            continue
        first, second = scene.objects
        relation = next(w for w in caption.split() if w in ("left", "right", "above", "below"))
        kinds = {
            (first.colour, first.shape): "one object",
            (first.colour, second.shape): "two objects",
            (relation, second.shape): "relation",
        }
        words = caption.split()
        pairs = [p for p in kinds if p[0] != p[1] and all(words.count(w) == 1 for w in p)]
        if pairs:
            items.append((image[None].double(), caption, pairs))
            KINDS.update({(caption, p): kinds[p] for p in pairs})
        if len(items) == n:
            return items
    raise AssertionError("too few two-object images")


def measure(model, items, draws: int, per_dim: bool = False) -> list[dict]:
    """Every pair's estimates and exact terms."""
    rows = []
    for x, caption, pairs in items:
        conditions = [pair_conditions(caption, a, b) for a, b in pairs]
        out = interaction_information(
            model,
            x,
            *([c[k] for c in conditions] for k in ("joint", "first", "second", "rest")),
            sampling=Sampling(draws=draws, seed=0),
            per_dim=per_dim,
            sum_channels=per_dim,
            progress=False,
        )
        for p, c in enumerate(conditions):
            kind = KINDS.get((caption, pairs[p]))
            rows.append({"out": out, "p": p, "terms": exact_terms(model, x, c), "kind": kind})
    return rows


def check_linear(rows: list[dict]) -> None:
    """Each linear quantity within about 4 standard errors of its exact value: within twice its
    skew-aware 95% interval's arm on the side of the truth (the standard estimator's draws are
    right-skewed: runs that miss a rare large draw are low *and* look precise, so a symmetric
    4 SE fails where the interval, built for that skew, does not); and the intervals cover."""
    covered, worst = [], 0.0
    for row in rows:
        for name, weights in WEIGHTS.items():
            truth = float(weights @ row["terms"])
            est = row["out"][name]
            value = est.value[0, row["p"]].item()
            low, high = est.ci95[0, row["p"]].tolist()
            arm = (high - value) if truth > value else (value - low)
            # A value that is 0 but for rounding (independent factors) has an interval of ~0.
            worst = max(worst, max(abs(truth - value) - 1e-9, 0) / max(arm, 1e-12))
            covered.append(low - 1e-9 <= truth <= high + 1e-9)
    assert worst < 2.0, f"an estimate is {worst:.2f} interval arms from its exact value"
    assert np.mean(covered) >= 0.85, f"linear intervals cover {np.mean(covered):.1%}"


@pytest.fixture(scope="module")
def plain_rows():
    return measure(idc.load_model("exact", device="cpu"), world_items(20), 512, per_dim=True)


def test_linear_quantities_match_the_exact_world(plain_rows):
    assert len(plain_rows) >= 40
    assert {row["kind"] for row in plain_rows} == {"one object", "two objects", "relation"}
    check_linear(plain_rows)


def test_linear_maps_sum_to_values_and_pixel_atoms_do_not_add_up(plain_rows):
    gaps = []
    for row in plain_rows:
        out, p = row["out"], row["p"]
        for name in LINEAR:
            total = out[name].map[0, p].sum().item()
            assert total == pytest.approx(out[name].value[0, p].item(), abs=1e-9)
        # A sum of minima is at most the minimum of the sums.
        pixel = out["redundancy"].map[0, p].sum().item()
        assert pixel <= out["redundancy"].value[0, p].item() + 1e-9
        gaps.append(out["redundancy"].value[0, p].item() - pixel)
        for name in ATOMS:
            low, high = out[name].map_ci95[0, p].unbind(-1)
            assert (low <= out[name].map[0, p] + 1e-12).all()
            assert (out[name].map[0, p] <= high + 1e-12).all()
    assert max(gaps) > 0.05  # pixel atoms do not sum to the image's


def test_atom_intervals_cover_the_exact_atoms(plain_rows):
    for name in ATOMS:
        covered = []
        for row in plain_rows:
            low, high = row["out"][name].ci95[0, row["p"]].tolist()
            covered.append(low - 1e-9 <= quantities(*row["terms"].tolist())[name] <= high + 1e-9)
        # 95% nominal (measured 94-99% over 136 pairs); 85% leaves room for ~45 pairs' noise.
        assert np.mean(covered) >= 0.85, f"{name}: {np.mean(covered):.1%}"


def test_linear_quantities_match_the_exact_correlated_world():
    """Over the pairs, each quantity's mean error is within 4 standard errors of 0, and its
    intervals cover. Item by item the check above fails here: a small information carried by a
    rare posterior switch (i(x; square | "a blue triangle above a green"), exact 0.105 nats, as
    green things are squares 90% of the time) has heavy-tailed draws: 0.063 +- 0.010 at 4096
    draws, yet 0.096 +- 0.006 over 16 seeds of 2048 (unbiased; its SE is not honest alone)."""
    model = idc.load_model("exact-correlated", device="cpu")
    rows = measure(model, world_items(20, prior="correlated", seed=5), 512)
    assert len(rows) >= 40
    for name, weights in WEIGHTS.items():
        errors, variances, covered = [], [], []
        for row in rows:
            est, p = row["out"][name], row["p"]
            truth = float(weights @ row["terms"])
            errors.append(est.value[0, p].item() - truth)
            variances.append(est.stderr[0, p].item() ** 2)
            low, high = est.ci95[0, p].tolist()
            covered.append(low <= truth <= high)
        mean_se = np.sqrt(np.sum(variances)) / len(rows)
        assert abs(np.mean(errors)) < 4 * mean_se, f"{name}: {np.mean(errors):.3f} +- {mean_se:.3f}"
        assert np.mean(covered) >= 0.75, f"{name}: intervals cover {np.mean(covered):.0%}"


def test_interaction_and_redundancy_share_rise_with_the_correlation():
    """ "blue" and "triangle" on a blue triangle, as triangles are blue more often: the exact
    interaction information is log(3 * strength) (0 in the plain world) and the redundancy's
    share of the joint rises, while DiffusionPID's redundancy min(i1, i2) stays log 3 (each word
    alone tells log 3 whatever the correlation; the synergy falls instead). The estimates follow
    the exact values within 4 SE (the redundancy within its interval: a minimum of two equal
    informations is biased low)."""
    image = sample(200, seed=2, split="test")
    index = next(i for i, c in enumerate(image.captions) if c == "a blue triangle")
    x = image.images[index][None].double()
    conditions = pair_conditions("a blue triangle", "blue", "triangle")
    found, shares = [], []
    for strength in (1 / 3, 0.6, 0.9):
        model = WorldModel(prior=strength)
        out = interaction_information(
            model,
            x,
            *(conditions[k] for k in ("joint", "first", "second", "rest")),
            sampling=Sampling(draws=256, seed=0),
            progress=False,
        )
        exact = quantities(*exact_terms(model, x, conditions).tolist())
        assert exact["interaction"] == pytest.approx(np.log(3 * strength), abs=1e-6)
        assert exact["redundancy"] == pytest.approx(np.log(3), abs=1e-6)
        est = out["interaction"]
        assert abs(est.value.item() - exact["interaction"]) < 4 * est.stderr.item() + 1e-6
        low, high = out["redundancy"].ci95[0].tolist()
        assert low <= exact["redundancy"] <= high
        found.append(est.value.item())
        shares.append(exact["redundancy"] / exact["joint"])
    assert found[0] < found[1] < found[2]
    assert found[2] > 0.5
    assert shares[0] < shares[1] < shares[2]


def test_two_factor_mixture():
    """The labelled Gaussian mixture: shape and colour of each point as the two parts."""
    model = example_mixture()
    x, labels = model.sample(20, seed=4)
    rows = []
    for i, label in enumerate(labels):
        conditions = {
            "joint": label,
            "first": {"shape": label["shape"]},
            "second": {"colour": label["colour"]},
            "rest": None,
        }
        out = interaction_information(
            model,
            x[i : i + 1],
            *(conditions[k] for k in ("joint", "first", "second", "rest")),
            sampling=Sampling(draws=1024, seed=1),
            per_dim=True,
            progress=False,
        )
        # One pair given as single conditions: values of shape (1,); as lists in check_linear.
        out = {name: _as_pairs(est) for name, est in out.items()}
        rows.append({"out": out, "p": 0, "terms": exact_terms(model, x[i : i + 1], conditions)})
        for name in LINEAR:
            assert out[name].map.sum().item() == pytest.approx(out[name].value.item(), abs=1e-9)
    check_linear(rows)


def _as_pairs(est: idc.Estimate) -> idc.Estimate:
    """A one-pair estimate with its pairs axis back (values ``(1, 1)``)."""
    est.value, est.stderr, est.ci95 = est.value[:, None], est.stderr[:, None], est.ci95[:, None]
    if est.map is not None:
        est.map = est.map[:, None]
    return est


def test_a_row_does_not_depend_on_its_neighbours():
    model = idc.load_model("exact", device="cpu")
    (x, caption, pairs), (other, _, _) = world_items(2)[:2]
    c = pair_conditions(caption, *pairs[0])
    args = [c[k] for k in ("joint", "first", "second", "rest")]
    run = {"sampling": Sampling(draws=64, seed=3), "progress": False, "keys": ["a"]}
    alone = interaction_information(model, x, *args, **run)
    both = interaction_information(
        model, torch.cat([x, other]), *args, **run | {"keys": ["a", "b"]}
    )
    for name in [*LINEAR, *ATOMS]:
        assert both[name].value[0].item() == pytest.approx(alone[name].value[0].item(), abs=1e-9)


def test_text_api_result_and_errors(tmp_path):
    model = idc.load_model("exact", device="cpu")
    x, caption, pairs = world_items(1)[0]
    result = idc.interaction(
        model, x[0].float(), caption, pairs, sampling=Sampling(draws=64), progress=False
    )
    assert result.pairs == pairs
    doc = result.to_dict()
    assert doc["pairs"][0]["conditions"]["joint"] == caption
    assert set(doc["pairs"][0]["atoms"]) == set(ATOMS)
    assert "do not sum" in doc["definitions"]["pixel_atoms"]
    assert result.heat_map(pairs[0], "interaction").shape == (16, 16)
    assert "interaction information" in repr(result)
    with pytest.raises(TypeError, match="pair"):
        idc.interaction(model, x[0].float(), caption, "red")
    with pytest.raises(ValueError, match="two different words"):
        idc.interaction(model, x[0].float(), caption, ("red", "red"))
    with pytest.raises(ValueError, match="overlap"):
        idc.interaction(model, x[0].float(), "a red car", ("red car", "car"))
    with pytest.raises(ValueError, match="not in the prompt"):
        idc.interaction(model, x[0].float(), caption, ("purple", "red"))
    with pytest.raises(ValueError, match="unknown estimator"):
        idc.interaction(model, x[0].float(), caption, pairs[0], estimator="bogus")
    with pytest.raises(ValueError, match="was not measured"):
        result.entry(("blue", "green"))


def test_orthogonal_contrasts_keep_negative_values_inside_their_intervals():
    """Orthogonal informations are never negative (their intervals are cut at 0); their
    combinations can be (i1 + i2 - i12), so theirs are not cut."""
    model = idc.load_model("exact", device="cpu")
    negative = 0
    for x, caption, pairs in world_items(6):
        c = [pair_conditions(caption, *p) for p in pairs]
        out = interaction_information(
            model,
            x,
            *([k[name] for k in c] for name in ("joint", "first", "second", "rest")),
            estimator="orthogonal",
            sampling=Sampling(draws=64, seed=0),
            progress=False,
        )
        for name in LINEAR:
            value, ci95 = out[name].value, out[name].ci95
            assert (ci95[..., 0] <= value + 1e-12).all() and (value <= ci95[..., 1] + 1e-12).all()
        negative += int((out["interaction"].value < 0).sum())
    assert negative > 0  # the case the test is about occurs
