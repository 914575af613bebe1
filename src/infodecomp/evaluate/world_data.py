"""Evaluation data built from the shapes world, with known answers.

Item ``i`` of a split is drawn from its own random stream ``(split, kind, i)``, so the first ``n``
items are the same whatever ``limit`` is asked for, and items never depend on each other.
Images are the world's draws (rendered scene plus pixel noise), as tensors, never clamped.
Every builder takes the world's ``prior`` (:func:`~infodecomp.world.scenes.scene_weights`): the
correlated world's items (data ``"world-correlated"``) use the same random streams, with ids and
sources that say ``world-correlated``.
"""

from __future__ import annotations

import numpy as np
import torch

from ..world.model import WorldModel
from ..world.scenes import (
    COLOURS,
    PIXEL_NOISE,
    SHAPES,
    SIZE,
    SPLITS,
    Scene,
    all_scenes,
    assignment,
    captions,
    parse,
    render,
    scene_weights,
    split_caption,
    word_masks,
)
from .items import CompositionalItem, InteractionItem, InterventionItem, LocalizationItem

COMPOSITIONAL_KINDS = ("relation", "attribute", "order")
SWAP = {"left": "right", "right": "left", "above": "below", "below": "above"}
ORDER_FALSE_CAPTIONS = 3  # false captions per word-order item (ARO's order sets have 4)
# The world's data names, and the prior over scenes each draws from.
WORLD_DATA = {"world": "plain", "world-correlated": "correlated"}


def _rng(split: str, kind: str, index: int) -> np.random.Generator:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {tuple(SPLITS)}")
    kinds = ("compositional", "localization", "intervention", *COMPOSITIONAL_KINDS, "interaction")
    return np.random.default_rng([SPLITS[split], kinds.index(kind), index])


def _data_name(prior: str) -> str:
    """The data name of the world with ``prior`` (ids and sources start with it)."""
    names = {v: k for k, v in WORLD_DATA.items()}
    if prior not in names:
        raise ValueError(f"unknown prior {prior!r}; choose one of {tuple(names)}")
    return names[prior]


def _draw(
    rng: np.random.Generator, two_objects: bool, prior: str = "plain"
) -> tuple[Scene, torch.Tensor, str]:
    """A scene from the world's prior (two-object scenes only if asked), its noisy image and one
    of its captions."""
    scenes, p = all_scenes(), scene_weights(prior=prior)
    if two_objects:
        p = p * np.array([len(s.objects) == 2 for s in scenes])
        p = p / p.sum()
    scene = scenes[rng.choice(len(scenes), p=p)]
    caption = str(rng.choice(captions(scene)))
    noise = torch.from_numpy(rng.standard_normal((3, SIZE, SIZE)).astype(np.float32))
    return scene, render(scene) + PIXEL_NOISE * noise, caption


def compositional_items(
    split: str = "test", n: int = 24, prior: str = "plain"
) -> list[CompositionalItem]:
    """Two-object images with a true caption and false ones, cycling through three tests:
    ``"relation"`` (the relation word swapped: left/right, above/below), ``"attribute"`` (the two
    objects' colours exchanged; scenes with two colours) and ``"order"`` (up to three random
    orders of the caption's words that the world reads as a description of other scenes)."""
    name, items = _data_name(prior), []
    for i in range(n):
        kind = COMPOSITIONAL_KINDS[i % len(COMPOSITIONAL_KINDS)]
        rng = _rng(split, kind, i)
        while True:
            scene, image, caption = _draw(rng, two_objects=True, prior=prior)
            falses = _false_captions(kind, scene, caption, rng)
            if falses:
                break
        texts = [caption, *falses]
        order = rng.permutation(len(texts))  # the true caption's place is not a tell
        items.append(
            CompositionalItem(
                id=f"{name}-{split}-{i}",
                image=image,
                captions=tuple(texts[j] for j in order),
                true_index=int(np.argmin(order)),
                type=kind,
                source=f"{name}:{split}:{i}",
            )
        )
    return items


def _false_captions(kind: str, scene: Scene, caption: str, rng: np.random.Generator) -> list[str]:
    """False captions of ``kind`` for the scene; none if the swap would still describe it (two
    identical objects swapped, two objects of one colour)."""
    words = split_caption(caption)
    if kind in ("relation", "attribute"):
        swap = dict(SWAP)
        if kind == "attribute":
            first, second = [w for w in words if w in COLOURS]
            swap = {first: second, second: first}
        false = " ".join(swap.get(w, w) for w in words)
        return [false] if assignment(scene, parse(false)) is None else []
    world, falses = _world(), []
    for _ in range(200):
        shuffled = " ".join(words[j] for j in rng.permutation(len(words)))
        if shuffled in falses or shuffled == caption:
            continue
        try:
            world.components(shuffled)  # the world reads it as some scenes ...
        except ValueError:
            continue
        if assignment(scene, parse(shuffled)) is None:  # ... and not as this one
            falses.append(shuffled)
            if len(falses) == ORDER_FALSE_CAPTIONS:
                break
    return falses


_WORLD: list[WorldModel] = []


def _world() -> WorldModel:
    if not _WORLD:
        _WORLD.append(WorldModel())
    return _WORLD[0]


def localization_items(
    split: str = "test", n: int = 40, prior: str = "plain"
) -> list[LocalizationItem]:
    """Images of the world's prior with their caption and the ground-truth mask of each colour
    and shape word (the pixels of the object its mention describes)."""
    name, items = _data_name(prior), []
    for i in range(n):
        rng = _rng(split, "localization", i)
        scene, image, caption = _draw(rng, two_objects=False, prior=prior)
        masks = word_masks(scene, caption)
        items.append(
            LocalizationItem(
                id=f"{name}-{split}-{i}",
                image=image,
                caption=caption,
                masks=masks,
                source=f"{name}:{split}:{i}",
            )
        )
    return items


def intervention_items(
    split: str = "test", n: int = 24, generated: bool = False, prior: str = "plain"
) -> list[InterventionItem]:
    """Images of the world's prior with their caption; the words removed are the colour, shape
    and relation words. With ``generated``, no image: a recorded starting noise from which each
    model generates its own image for the caption (no inversion needed)."""
    keep = {*COLOURS, *SHAPES, *SWAP}
    name, items = _data_name(prior), []
    for i in range(n):
        rng = _rng(split, "intervention", i)
        _, image, caption = _draw(rng, two_objects=False, prior=prior)
        words = tuple(dict.fromkeys(w for w in split_caption(caption) if w in keep))
        noise = None
        if generated:
            image = None
            noise = torch.from_numpy(rng.standard_normal((3, SIZE, SIZE)))
        items.append(
            InterventionItem(
                id=f"{name}-{split}-{i}" + ("-generated" if generated else ""),
                image=image,
                caption=caption,
                words=words,
                source=f"{name}:{split}:{i}",
                noise=noise,
            )
        )
    return items


def interaction_items(
    split: str = "test", n: int = 36, prior: str = "plain"
) -> list[InteractionItem]:
    """Images of the world's prior with their caption; the pairs are each object's colour and
    shape (where both words occur once in the caption): the attribute pairs whose redundancy
    the correlated world raises (its triangles are mostly blue)."""
    name, items = _data_name(prior), []
    for i in range(n):
        rng = _rng(split, "interaction", i)
        while True:
            scene, image, caption = _draw(rng, two_objects=False, prior=prior)
            words = split_caption(caption)
            pairs = tuple(
                (o.colour, o.shape)
                for o in scene.objects
                if words.count(o.colour) == 1 and words.count(o.shape) == 1
            )
            if pairs:
                break
        items.append(
            InteractionItem(
                id=f"{name}-{split}-{i}-interaction",
                image=image,
                caption=caption,
                pairs=pairs,
                source=f"{name}:{split}:{i}",
            )
        )
    return items
