"""The world with correlated factors: its prior, its exact model and its redundancy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from infodecomp.models import PaddedPrompt
from infodecomp.world.model import WorldModel
from infodecomp.world.scenes import (
    CORRELATION,
    PIXEL_NOISE,
    Obj,
    Scene,
    all_scenes,
    render,
    sample,
    scene_weights,
)


def blue_triangle(seed: int = 0) -> torch.Tensor:
    """A noisy image of a blue triangle in the middle, ``(1, 3, 16, 16)`` float64."""
    g = torch.Generator().manual_seed(seed)
    clean = render(Scene((Obj("triangle", "blue", 8.0, 8.0),))).to(torch.float64)
    return (clean + PIXEL_NOISE * torch.randn(clean.shape, generator=g, dtype=torch.float64))[None]


def exact_interaction(model: WorldModel, x: torch.Tensor, prompt: str, w1: str, w2: str) -> float:
    """Pointwise interaction information of words ``w1`` and ``w2`` of ``prompt`` about ``x``,
    from exact log-probs: log p(x|c-w2) + log p(x|c-w1) - log p(x|c) - log p(x|c-w1-w2)
    (positive: redundancy)."""

    def without(*words: str) -> str:
        return " ".join(w for w in prompt.split() if w not in words)

    lp = lambda c: model.log_prob(x, c or None).item()  # noqa: E731
    return lp(without(w2)) + lp(without(w1)) - lp(prompt) - lp(without(w1, w2))


def test_weights_sum_to_one_and_plain_unchanged():
    plain = scene_weights()
    assert np.array_equal(scene_weights(prior="plain"), plain)
    # The plain world: uniform within one-object scenes and within two-object scenes.
    n_objects = np.array([len(s.objects) for s in all_scenes()])
    assert np.allclose(plain[n_objects == 1], 0.3 / 81) and np.allclose(plain.sum(), 1)
    for prior in ("correlated", 1 / 3, 0.6, 0.9):
        for pairs in ("all", "seen", "unseen"):
            assert scene_weights(pairs, prior).sum() == pytest.approx(1, abs=1e-12)
    assert np.allclose(scene_weights(prior=1 / 3), plain, rtol=1e-12, atol=0)
    assert np.array_equal(scene_weights(prior="correlated"), scene_weights(prior=CORRELATION))
    # Only colours change: the number of objects and the shapes keep their plain distribution.
    corr = scene_weights(prior="correlated")
    assert corr[n_objects == 1].sum() == pytest.approx(0.3)
    tri = np.array([s.objects[0].shape == "triangle" for s in all_scenes()])
    assert corr[tri].sum() == pytest.approx(plain[tri].sum())
    for bad in ("skewed", 0.2, 1.0, True):
        with pytest.raises(ValueError):
            scene_weights(prior=bad)


def test_correlated_sample_has_blue_triangles():
    draws = sample(4000, seed=0, prior="correlated")
    objs = [o for s in draws.scenes for o in s.objects if o.shape == "triangle"]
    p = np.mean([o.colour == "blue" for o in objs])
    se = math.sqrt(CORRELATION * (1 - CORRELATION) / len(objs))
    assert abs(p - CORRELATION) < 4 * se
    plain = sample(5, seed=3, split="test")
    again = sample(5, seed=3, split="test", prior="plain")
    assert torch.equal(plain.images, again.images) and plain.captions == again.captions


def test_model_name_and_describe():
    plain, corr = WorldModel(), WorldModel(prior="correlated")
    assert plain.name == "exact world model"
    assert corr.name == (
        "exact world model (correlated: triangles blue 90%, circles red 90%, squares green 90%)"
    )
    assert plain.describe()["world_prior"] == "plain"
    assert corr.describe()["model"] == corr.name
    assert "60%" in WorldModel(prior=0.6).describe()["world_prior"]
    assert torch.equal(plain.components("a red circle"), corr.components("a red circle"))


def test_log_prob_is_the_mixture():
    """On a one-object image whose posterior is one scene, naming its colour gains exactly
    -log P(blue | triangle) over "a triangle"."""
    x = blue_triangle()
    for prior, p_blue in (("plain", 1 / 3), ("correlated", CORRELATION), (0.6, 0.6)):
        model = WorldModel(prior=prior)
        gain = model.log_prob(x, "a blue triangle") - model.log_prob(x, "a triangle")
        assert gain.item() == pytest.approx(-math.log(p_blue), abs=1e-6)


def test_interaction_is_redundancy_that_grows_with_strength():
    x = blue_triangle()
    values = {
        s: exact_interaction(WorldModel(prior=s), x, "a blue triangle", "blue", "triangle")
        for s in ("plain", 0.6, 0.9)
    }
    # One scene explains x: II = log P(s|blue) P(s|triangle) / (P(s|both) P(s|one object))
    # = log(3 * strength).
    assert values["plain"] == pytest.approx(0, abs=1e-6)
    assert values[0.6] == pytest.approx(math.log(1.8), abs=1e-6)
    assert values[0.9] == pytest.approx(math.log(2.7), abs=1e-6)
    assert values["plain"] < values[0.6] < values[0.9]


def test_padded_prompt_is_the_removal():
    model = WorldModel(prior="correlated")
    prompt = "a blue triangle above a red circle"
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    logsnr = torch.tensor([-2.0, 0.0, 1.0, 4.0], dtype=torch.float64)

    def span(word: str) -> tuple[int, int]:
        return prompt.index(word), prompt.index(word) + len(word)

    for spans, removed in [
        ((span("blue"),), "a triangle above a red circle"),
        ((span("triangle"), span("circle")), "a blue above a red"),
        (((0, len(prompt)),), None),
    ]:
        padded = model(x, logsnr, [PaddedPrompt(prompt, spans)] * 4)
        assert torch.equal(padded, model(x, logsnr, [removed] * 4))
    assert torch.equal(
        model.components(PaddedPrompt(prompt, (span("blue"),))),
        model.components("a triangle above a red circle"),
    )


def test_load_exact_correlated():
    from infodecomp.loading import load_model

    exact, corr = load_model("exact", device="cpu"), load_model("exact-correlated", device="cpu")
    assert exact.name == "exact world model" and exact.prior == "plain"
    assert corr.name == WorldModel(prior="correlated").name
    assert corr.logsnr_range == exact.logsnr_range
    assert torch.equal(corr.timestep_logsnr, exact.timestep_logsnr)


def test_correlated_world_data():
    from infodecomp.evaluate import world_data
    from infodecomp.evaluate.evaluation import _items

    plain = world_data.localization_items("test", 3)
    corr, _, settings = _items(
        "localization", "world-correlated", "test", None, None, None, 3, False
    )
    assert settings == {"data": "world-correlated", "split": "test"}
    assert [i.id for i in plain] == [f"world-test-{i}" for i in range(3)]
    assert [i.id for i in corr] == [f"world-correlated-test-{i}" for i in range(3)]
    assert corr[0].source == "world-correlated:test:0"
    items = world_data.intervention_items("test", 2, generated=True, prior="correlated")
    assert items[1].id == "world-correlated-test-1-generated"
    assert len(world_data.compositional_items("test", 3, prior="correlated")) == 3
