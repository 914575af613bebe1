"""A small captioned world where every answer is known.

Scenes are 16x16 RGB images (values in [-1, 1]) of one object, or of two objects side by side or
one above the other. Objects have a shape (circle, square, triangle), a colour (red, green, blue)
and a position on a 3x3 grid of centres. Captions come from templates: "a red circle",
"a red circle left of a blue square" (or "a blue square right of a red circle"), "a green
triangle above a red square" (or "... below ..."). Images are the rendered scene plus isotropic
Gaussian pixel noise, so the world is exactly a Gaussian mixture with one component per scene.

A caption with words removed still names a set of scenes: the scenes that could have produced it
(the model is trained with such captions too), which is how removing a word marginalises its factor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

SIZE = 16
SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (1.0, -1.0, -1.0), "green": (-1.0, 1.0, -1.0), "blue": (-1.0, -1.0, 1.0)}
BACKGROUND = -0.5
PIXEL_NOISE = 0.1  # standard deviation of the isotropic pixel noise
CENTRES = (4.0, 8.0, 12.0)
P_SINGLE = 0.3  # probability of a one-object scene
RELATIONS = {"left": ("h", 0), "right": ("h", 1), "above": ("v", 0), "below": ("v", 1)}
VOCABULARY = ("a", "of", *COLOURS, *SHAPES, *RELATIONS)
# Pairs of objects (colour, shape) never shown together in training: captions of these scenes
# are new to the bundled model, so drawing them tests composition, not memory.
HELD_OUT_PAIRS = frozenset(
    frozenset(pair)
    for pair in [
        (("red", "circle"), ("blue", "triangle")),
        (("green", "square"), ("red", "triangle")),
        (("blue", "circle"), ("green", "triangle")),
        (("red", "square"), ("green", "circle")),
        (("blue", "square"), ("blue", "square")),
    ]
)
PAIRS = ("all", "seen", "unseen")
# Priors over scenes: "plain" (every object's colour, shape and place independent and uniform)
# or "correlated" (an object's colour depends on its shape: :data:`PREFERRED_COLOUR` with
# probability :data:`CORRELATION`, each other colour with half the rest), for measuring
# redundancy between words. A float strength in [1/3, 1) is a correlated prior of that strength
# (1/3 is the plain world's numbers).
PRIORS = ("plain", "correlated")
CORRELATION = 0.9
PREFERRED_COLOUR = {"triangle": "blue", "circle": "red", "square": "green"}


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    cx: float
    cy: float


@dataclass(frozen=True)
class Scene:
    """One or two objects; for two, ``objects[0]`` is the left (``layout="h"``) or the top
    (``layout="v"``) one."""

    objects: tuple[Obj, ...]
    layout: str | None = None

    def factors(self) -> dict[str, str]:
        """Factor values, e.g. ``{"colour1": "red", "shape1": "circle", "layout": "h", ...}``."""
        out = {"layout": self.layout or "single"}
        for k, o in enumerate(self.objects, start=1):
            out.update({f"colour{k}": o.colour, f"shape{k}": o.shape, f"x{k}": o.cx, f"y{k}": o.cy})
        return out


@dataclass(frozen=True)
class Mention:
    colour: str | None
    shape: str | None
    words: tuple[int, ...]  # indices (in the caption's words) of this mention's words


@dataclass(frozen=True)
class Parsed:
    """What a (possibly partial) caption says: the objects it mentions, in order, the layout
    (``"h"``, ``"v"`` or unknown) and which mention is the left/top object (0, 1 or unknown)."""

    mentions: tuple[Mention, ...]
    layout: str | None
    first: int | None


@lru_cache(maxsize=1)
def all_scenes() -> tuple[Scene, ...]:
    """Every scene of the world, in a fixed order."""
    kinds = [(s, c) for s in SHAPES for c in COLOURS]
    scenes = [Scene((Obj(s, c, cx, cy),)) for s, c in kinds for cy in CENTRES for cx in CENTRES]
    lo, hi = CENTRES[0], CENTRES[-1]
    for a in kinds:
        for b in kinds:
            for mid in CENTRES:
                scenes.append(Scene((Obj(*a, lo, mid), Obj(*b, hi, mid)), "h"))
                scenes.append(Scene((Obj(*a, mid, lo), Obj(*b, mid, hi)), "v"))
    return tuple(scenes)


def held_out(scene: Scene) -> bool:
    """Whether the scene's two objects form one of :data:`HELD_OUT_PAIRS`."""
    kinds = frozenset((o.colour, o.shape) for o in scene.objects)
    return len(scene.objects) == 2 and kinds in HELD_OUT_PAIRS


def prior_strength(prior: str | float = "plain") -> float | None:
    """The correlation strength of ``prior`` (P(preferred colour | shape)): ``None`` for
    ``"plain"``, :data:`CORRELATION` for ``"correlated"``, a float in [1/3, 1) as it is.
    Raises ``ValueError`` on anything else."""
    if isinstance(prior, str):
        if prior not in PRIORS:
            raise ValueError(f"unknown prior {prior!r}; choose one of {PRIORS} or a float")
        return None if prior == "plain" else CORRELATION
    if isinstance(prior, bool) or not isinstance(prior, (int, float)):
        raise ValueError(f"prior must be one of {PRIORS} or a float, got {prior!r}")
    if not 1 / 3 - 1e-12 <= float(prior) < 1:
        raise ValueError(f"a correlated prior's strength must be in [1/3, 1), got {prior!r}")
    return float(prior)


def prior_name(prior: str | float = "plain") -> str:
    """How results name ``prior``: ``"plain"``, or ``"correlated: triangles blue 90%, circles
    red 90%, squares green 90%"`` (the strength in percent)."""
    strength = prior_strength(prior)
    if strength is None:
        return "plain"
    pct = f"{100 * strength:.4g}%"
    return "correlated: " + ", ".join(
        f"{shape}s {colour} {pct}" for shape, colour in PREFERRED_COLOUR.items()
    )


def colour_given_shape(strength: float) -> dict[tuple[str, str], float]:
    """P(colour | shape) of a correlated prior, ``{(shape, colour): p}``: the shape's
    :data:`PREFERRED_COLOUR` with probability ``strength``, each other colour ``(1 -
    strength) / 2``."""
    return {
        (shape, colour): strength if colour == PREFERRED_COLOUR[shape] else (1 - strength) / 2
        for shape in SHAPES
        for colour in COLOURS
    }


def scene_weights(pairs: str = "all", prior: str | float = "plain") -> np.ndarray:
    """Probability of each scene of :func:`all_scenes`: the world's prior (``pairs="all"``),
    or that prior restricted to the scenes the bundled model trains on (``"seen"``: all but
    the held-out pairs) or to the held-out pairs (``"unseen"``).

    ``prior`` (see :data:`PRIORS`): ``"plain"``, the world's own, or a correlated one
    (``"correlated"`` or a strength, :func:`prior_strength`), where each object's colour
    depends on its shape (:func:`colour_given_shape`) and everything else (how many objects,
    shapes, places, layouts) is as in the plain world."""
    if pairs not in PAIRS:
        raise ValueError(f"unknown pairs {pairs!r}; choose one of {PAIRS}")
    strength = prior_strength(prior)
    n_objects = np.array([len(s.objects) for s in all_scenes()])
    singles = (n_objects == 1).sum()
    pair = (1 - P_SINGLE) / (len(n_objects) - singles)
    weights = np.where(n_objects == 1, P_SINGLE / singles, pair)
    if strength is not None:
        # Plain P(colour | shape) is 1/3: reweight each object by 3 P(colour | shape), which
        # averages 1 over the colours, so shapes, places and the number of objects keep their
        # plain distribution.
        p = colour_given_shape(strength)
        factor = [np.prod([3 * p[o.shape, o.colour] for o in s.objects]) for s in all_scenes()]
        weights = weights * np.array(factor)
    if pairs != "all":
        unseen = np.array([held_out(s) for s in all_scenes()])
        weights = weights * (unseen if pairs == "unseen" else ~unseen)
    return weights / weights.sum()


def object_mask(obj: Obj) -> torch.Tensor:
    """Pixels covered by an object, ``(SIZE, SIZE)`` bool."""
    ys, xs = torch.meshgrid(torch.arange(SIZE) + 0.5, torch.arange(SIZE) + 0.5, indexing="ij")
    dx, dy = xs - obj.cx, ys - obj.cy
    if obj.shape == "circle":
        return dx**2 + dy**2 <= 3.2**2
    if obj.shape == "square":
        return (dx.abs() <= 2.6) & (dy.abs() <= 2.6)
    # Triangle pointing up: apex 3 above the centre, base 3 below, 6.6 wide at the base.
    return (dy >= -3) & (dy <= 3) & (dx.abs() <= 3.3 * (dy + 3) / 6)


def render(scene: Scene) -> torch.Tensor:
    """The noiseless image, ``(3, SIZE, SIZE)`` float32 in [-1, 1]."""
    image = torch.full((3, SIZE, SIZE), BACKGROUND)
    for obj in scene.objects:
        image[:, object_mask(obj)] = torch.tensor(COLOURS[obj.colour])[:, None]
    return image


def captions(scene: Scene) -> list[str]:
    """Every caption the templates give for ``scene`` (one, or two phrasings for a pair)."""
    names = [f"a {o.colour} {o.shape}" for o in scene.objects]
    if scene.layout is None:
        return names
    forward, backward = ("left", "right") if scene.layout == "h" else ("above", "below")
    of = " of" if scene.layout == "h" else ""
    return [f"{names[0]} {forward}{of} {names[1]}", f"{names[1]} {backward}{of} {names[0]}"]


def split_caption(caption: str) -> list[str]:
    return re.findall(r"[a-z]+", caption.lower())


def parse(caption: str) -> Parsed:
    """Read a caption of the world, complete or with words removed.

    Mentions are separated by relation words and start at each article. Without a side word,
    "of" still says the layout is horizontal; two mentions with neither mean a vertical layout
    (only "above"/"below" stand alone). Raises ``ValueError`` on a word the world does not have.
    """
    words = split_caption(caption)
    unknown = [w for w in words if w not in VOCABULARY]
    if unknown:
        raise ValueError(
            f"the world has no word {unknown[0]!r} (its words: {', '.join(VOCABULARY)})"
        )
    groups: list[list[int]] = []
    layout, first, start_new = None, None, True
    for i, w in enumerate(words):
        if w in RELATIONS or w == "of":
            if w in RELATIONS:
                layout, first = RELATIONS[w]
            elif layout is None:
                layout = "h"
            start_new = True
        else:
            if start_new or w == "a":
                groups.append([])
            groups[-1].append(i)
            start_new = False
    mentions = tuple(
        Mention(
            next((words[i] for i in g if words[i] in COLOURS), None),
            next((words[i] for i in g if words[i] in SHAPES), None),
            tuple(g),
        )
        for g in groups
    )
    if len(mentions) == 2 and layout is None:
        layout = "v"
    return Parsed(mentions, layout, first)


def assignment(scene: Scene, parsed: Parsed) -> tuple[int, ...] | None:
    """Which object each mention describes, if ``scene`` fits the caption; else ``None``."""
    n = len(parsed.mentions)
    if n == 0:
        return ()
    if n != len(scene.objects) or (n == 2 and parsed.layout != scene.layout):
        return None
    orders = [(0,)] if n == 1 else [(0, 1), (1, 0)]
    if n == 2 and parsed.first is not None:
        orders = [orders[parsed.first]]
    for order in orders:
        if all(
            (m.colour in (None, scene.objects[k].colour))
            and (m.shape in (None, scene.objects[k].shape))
            for m, k in zip(parsed.mentions, order, strict=True)
        ):
            return order
    return None


def word_masks(scene: Scene, caption: str) -> dict[str, torch.Tensor]:
    """Ground-truth masks of the caption's colour and shape words: each covers the pixels of
    the object its mention describes, ``{word: (SIZE, SIZE) bool}`` (a word used for both
    objects covers both)."""
    words, parsed = split_caption(caption), parse(caption)
    order = assignment(scene, parsed)
    if order is None:
        raise ValueError(f"caption {caption!r} does not describe the scene")
    masks: dict[str, torch.Tensor] = {}
    for mention, k in zip(parsed.mentions, order, strict=True):
        for i in mention.words:
            if words[i] in COLOURS or words[i] in SHAPES:
                mask = object_mask(scene.objects[k])
                masks[words[i]] = masks[words[i]] | mask if words[i] in masks else mask
    return masks


@dataclass
class Sample:
    """Draws from the world: images ``(n, 3, SIZE, SIZE)`` with their scenes and captions."""

    images: torch.Tensor
    scenes: list[Scene]
    captions: list[str]


SPLITS = {"train": 0, "validation": 1, "test": 2}


def sample(
    n: int, seed: int = 0, split: str = "train", pairs: str = "all", prior: str | float = "plain"
) -> Sample:
    """``n`` scenes drawn from the prior, a caption each (phrasing at random) and a noisy image.

    Deterministic by ``(seed, split)``; the splits draw from independent random streams.
    ``pairs`` restricts the prior and ``prior`` chooses it, as in :func:`scene_weights`.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {tuple(SPLITS)}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS[split]]))
    scenes = all_scenes()
    index = rng.choice(len(scenes), size=n, p=scene_weights(pairs, prior))
    chosen = [scenes[i] for i in index]
    texts = [rng.choice(captions(s)) for s in chosen]
    noise = torch.from_numpy(rng.standard_normal((n, 3, SIZE, SIZE)).astype(np.float32))
    images = torch.stack([render(s) for s in chosen]) + PIXEL_NOISE * noise
    return Sample(images, chosen, [str(t) for t in texts])


def drop_words(
    caption: str, rng: np.random.Generator, p_null: float = 0.1, p_drop: float = 0.4
) -> str:
    """Training-time caption dropout: the empty caption with probability ``p_null``, one word
    removed at random with probability ``p_drop``, otherwise the caption as is."""
    u = rng.random()
    if u < p_null:
        return ""
    words = split_caption(caption)
    if u < p_null + p_drop:
        del words[rng.integers(len(words))]
    return " ".join(words)
