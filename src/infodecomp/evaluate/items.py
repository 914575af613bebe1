"""What an evaluation measures: one item per row of ``rows.jsonl``.

An item's ``id`` is stable and unique within its dataset; the estimators' random streams are keyed
by ``(seed, id)``, so an item's numbers depend only on the item, the seed and the settings.
``source`` says where the item came from (``"file.jsonl:12"``, ``"world:test:3"``) for messages.
Images are a path, a PIL image or a tensor ``(3, H, W)`` in [-1, 1]; masks a path (any image,
non-zero = inside) or a bool tensor ``(H, W)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# How an evaluation is scored: "ours" (the default; its departures from the published protocols
# are stated in every table) or "paper" (the published protocol point by point).
PROTOCOLS = ("ours", "paper")


class BadItemError(ValueError):
    """An item of a dataset cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class CompositionalItem:
    """One image and its candidate captions, one of them true.

    Attributes:
        id: stable item id.
        image: the image (path, PIL image or tensor).
        captions: two or more candidate captions.
        true_index: index of the true caption in ``captions``.
        type: what is tested, for macro-averaging (ARO's relation or attribute name, or the
            world's test kind: ``"relation"``, ``"attribute"``, ``"order"``); ``None`` if none.
        group: Winoground-style 2x2 group id: two items (two images) sharing the same two
            captions, image ``k`` true for caption ``k``; ``None`` if not grouped.
        box: ARO crop ``(x, y, w, h)`` in pixels of the image, or ``None``.
        source: where the item came from, for messages.
        cluster: what the bootstrap resamples whole: items sharing an image (COCO's five
            captions, ARO's boxes of one photo, a Winoground group) share it; ``None``: the
            item is its own cluster.
    """

    id: str
    image: Any
    captions: tuple[str, ...]
    true_index: int
    type: str | None = None
    group: str | None = None
    box: tuple[float, float, float, float] | None = None
    source: str = ""
    cluster: str | None = None


@dataclass(frozen=True)
class LocalizationItem:
    """One image and caption, with the ground-truth mask of one or more of its words.

    Attributes:
        id: stable item id.
        image: the image.
        caption: its caption.
        masks: ``{word or phrase: mask}``; every word occurs in ``caption``.
        source: where the item came from.
        cluster: items sharing an image share it (see ``CompositionalItem``).
    """

    id: str
    image: Any
    caption: str
    masks: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    cluster: str | None = None


@dataclass(frozen=True)
class InterventionItem:
    """One image and caption, and the words whose removal is measured.

    Attributes:
        id: stable item id.
        image: the image, or ``None`` for an image the model generates from ``noise``.
        caption: its caption.
        words: words of ``caption`` to remove, one at a time.
        source: where the item came from.
        noise: recorded starting noise ``(*data_shape)`` (the model's input space), or ``None``:
            the image is then DDIM-generated from it under the caption and the edits start from
            it, with no inversion.
        cluster: items sharing an image share it (see ``CompositionalItem``).
    """

    id: str
    image: Any
    caption: str
    words: tuple[str, ...]
    source: str = ""
    noise: Any = None
    cluster: str | None = None


@dataclass(frozen=True)
class InteractionItem:
    """One image and caption, and the pairs of its words whose interaction is measured.

    Attributes:
        id: stable item id.
        image: the image, or ``None`` for an image the model generates from ``seed``.
        caption: its caption.
        pairs: pairs of words or phrases of ``caption`` (``"a#2"`` names one occurrence).
        source: where the item came from.
        seed: for a generated image, the seed of its starting noise (a CPU generator's
            standard normal in the model's input space; DDIM, no guidance), else ``None``.
        group: what the summary averages the item's pairs under (e.g. an occupation); default
            each pair's words, ``"w1 & w2"``.
        cluster: items sharing an image share it (see ``CompositionalItem``).
    """

    id: str
    image: Any
    caption: str
    pairs: tuple[tuple[str, str], ...]
    source: str = ""
    seed: int | None = None
    group: str | None = None
    cluster: str | None = None
