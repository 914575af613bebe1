"""The synthetic world, its captions and its exact model."""

import math
from collections import defaultdict

import numpy as np
import pytest
import torch
from torch.distributions import Normal

import infodecomp as idc
from infodecomp.sampling import Sampling
from infodecomp.world.model import WorldModel
from infodecomp.world.scenes import (
    BACKGROUND,
    COLOURS,
    PIXEL_NOISE,
    all_scenes,
    assignment,
    captions,
    held_out,
    object_mask,
    parse,
    render,
    sample,
    scene_weights,
    split_caption,
    word_masks,
)


@pytest.fixture(scope="module")
def world():
    return WorldModel()


def test_sampling_is_deterministic_by_seed_and_split():
    a, b = sample(20, seed=3), sample(20, seed=3)
    assert torch.equal(a.images, b.images) and a.captions == b.captions and a.scenes == b.scenes
    c = sample(20, seed=3, split="test")
    assert not torch.equal(a.images, c.images)
    for image, scene in zip(a.images, a.scenes, strict=True):
        assert (image - render(scene)).std() == pytest.approx(PIXEL_NOISE, rel=0.2)


def test_held_out_pairs_are_kept_apart():
    unseen = np.array([held_out(s) for s in all_scenes()])
    assert unseen.sum() == 4 * 12 + 6  # four pairs of different objects, one pair of twins
    seen, new = scene_weights("seen"), scene_weights("unseen")
    assert (seen[unseen] == 0).all() and (seen[~unseen] > 0).all() and (new[~unseen] == 0).all()
    assert seen.sum() == pytest.approx(1.0) and new.sum() == pytest.approx(1.0)
    # Within the seen scenes the world's prior keeps its proportions.
    world = scene_weights()
    assert np.allclose(seen[~unseen] / world[~unseen], seen[0] / world[0])
    assert all(held_out(s) for s in sample(30, seed=1, split="test", pairs="unseen").scenes)
    assert not any(held_out(s) for s in sample(30, seed=1, split="test", pairs="seen").scenes)
    with pytest.raises(ValueError, match="unknown pairs"):
        scene_weights("some")


def test_rendering_and_masks_agree():
    assert len(all_scenes()) == 81 + 486
    assert scene_weights().sum() == pytest.approx(1.0)
    for scene in all_scenes()[::37]:
        image = render(scene)
        covered = torch.zeros(16, 16, dtype=torch.bool)
        for obj in scene.objects:
            mask = object_mask(obj)
            assert 15 <= mask.sum() <= 40
            assert (image[:, mask] == torch.tensor(COLOURS[obj.colour])[:, None]).all()
            assert not (covered & mask).any()  # objects never overlap
            covered |= mask
        assert (image[:, ~covered] == BACKGROUND).all()


def test_word_masks_follow_the_caption():
    scene = next(
        s
        for s in all_scenes()
        if s.layout == "h"
        and s.objects[0].colour == "red"
        and s.objects[1].colour == "blue"
        and s.objects[0].shape != s.objects[1].shape
    )
    left, right = (object_mask(o) for o in scene.objects)
    for caption in captions(scene):
        masks = word_masks(scene, caption)
        assert set(masks) == {"red", "blue", scene.objects[0].shape, scene.objects[1].shape}
        assert torch.equal(masks["red"], left) and torch.equal(masks["blue"], right)
        assert torch.equal(masks[scene.objects[1].shape], right)


def test_every_caption_fits_its_scene_and_names_it_up_to_position():
    scenes = all_scenes()
    for scene in scenes:
        for caption in captions(scene):
            parsed = parse(caption)
            assert assignment(scene, parsed) is not None
            fitting = [s for s in scenes if assignment(s, parsed) is not None]
            assert len(fitting) == (9 if scene.layout is None else 3)
    assert parse("a red circle left of a blue square").first == 0
    assert parse("a red circle below a blue square").first == 1
    with pytest.raises(ValueError, match="no word 'dog'"):
        parse("a red dog")


def test_partial_captions_mean_what_the_training_captions_mean(world):
    """Brute force: the posterior over scenes given a caption with one word dropped, from the
    caption process itself (phrasing at random, then one word dropped at random), equals the
    world model's restriction of the prior."""
    weights = scene_weights()
    posterior: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for k, scene in enumerate(all_scenes()):
        texts = captions(scene)
        for text in texts:
            words = split_caption(text)
            for i in range(len(words)):
                partial = " ".join(words[:i] + words[i + 1 :])
                posterior[partial][k] += weights[k] / len(texts) / len(words)
    rng = np.random.default_rng(0)
    for partial in rng.choice(sorted(posterior), size=60, replace=False):
        brute = np.zeros(len(weights))
        for k, p in posterior[partial].items():
            brute[k] = p
        brute /= brute.sum()
        keep = world.components(str(partial)).numpy()
        model = np.zeros(len(weights))
        model[keep] = weights[keep] / weights[keep].sum()
        np.testing.assert_allclose(model, brute, atol=1e-12, err_msg=partial)


def test_exact_denoiser_matches_brute_force_posterior(world):
    """Against an explicit sum over scenes with torch.distributions densities."""
    data = sample(3, seed=4)
    caption = "a red circle of a blue square"
    keep = world.components(caption)
    for alpha in (-3.0, 0.5, 4.0):
        a2 = torch.sigmoid(torch.tensor(alpha, dtype=torch.float64))
        eps = torch.randn(
            3, 3, 16, 16, generator=torch.Generator().manual_seed(5), dtype=torch.float64
        )
        z = a2.sqrt() * data.images.double() + (1 - a2).sqrt() * eps
        means = torch.stack([render(all_scenes()[k]) for k in keep]).double()
        var = a2 * PIXEL_NOISE**2 + (1 - a2)
        loglik = Normal(a2.sqrt() * means[None], var.sqrt()).log_prob(z[:, None]).flatten(2).sum(-1)
        post = torch.softmax(
            loglik + torch.from_numpy(np.log(scene_weights()[keep.numpy()])), dim=1
        )
        per_scene = (1 - a2).sqrt() * (z[:, None] - a2.sqrt() * means[None]) / var
        expected = (post[..., None, None, None] * per_scene).sum(1)
        got = world(z, torch.full((3,), alpha, dtype=torch.float64), [caption] * 3)
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-8)


def test_estimators_on_the_world_match_exact_log_ratios(world):
    data = sample(6, seed=6, split="test")
    z = []
    for image, text in zip(data.images, data.captions, strict=True):
        words = split_caption(text)
        drop = next(i for i, w in enumerate(words) if w in COLOURS)  # the first colour word
        context = " ".join(words[:drop] + words[drop + 1 :])
        x = image[None].double()
        est = idc.conditional_mutual_info(
            world,
            x,
            [text, text],
            [None, context],
            estimator="standard",
            progress=False,
            sampling=Sampling(draws=2000),
        )
        exact = torch.stack(
            [world.log_prob(x, text) - world.log_prob(x, c) for c in (None, context)], 1
        )
        z.append(((est.value - exact) / est.stderr).flatten())
    z = torch.cat(z)
    assert z.abs().max() < 4 and z.mean().abs() < 4 / math.sqrt(len(z)), z


def test_checker_recovers_scenes_and_captions(world):
    data = sample(40, seed=7, split="validation")
    assert world.classify(data.images) == data.scenes
    assert world.fits(data.images, data.captions).all()
    swapped = [
        c.replace("red", "blue") if "red" in c else c.replace("blue", "red") for c in data.captions
    ]
    changed = torch.tensor([s != c for s, c in zip(swapped, data.captions, strict=True)])
    assert not world.fits(data.images, swapped)[changed].any()
    assert not world.fits(data.images, swapped, relation=False)[changed].any()
    # Objects right, relation wrong: fits only when the relation is not checked.
    flipped = [
        c.replace("left", "above").replace(" of", "") if "left" in c else c for c in data.captions
    ]
    moved = torch.tensor(["left" in c for c in data.captions])
    assert moved.any()
    assert not world.fits(data.images, flipped)[moved].any()
    assert world.fits(data.images, flipped, relation=False).all()
