"""Which caption fits an image best: every caption's information on shared draws, and the
winner's log-likelihood ratio over each other caption with its interval."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .estimators import conditional_mutual_info
from .explanation import as_text_denoiser
from .results import Estimate
from .sampling import Sampling, check_sampling


@dataclass
class CaptionRanking:
    """Attributes:
    captions: the captions, as given (stripped).
    estimate: i(x; caption) for each caption (pairs ``0 .. n-1``) and each pair of captions
        ``(i, j)``, i < j, as log p(x|c_i) - log p(x|c_j) (pairs ``n ..``), by ``estimator``.
    order: caption indices, highest score first.
    paired: for each caption after the winner, in ``order``: the winner's log-likelihood ratio
        over it (standard estimator, same draws; :meth:`Estimate.entry` fields in nats) with
        ``"other"`` (its index) and ``"verdict"``.
    """

    captions: list[str]
    estimate: Estimate
    order: list[int]
    paired: list[dict[str, Any]]


def rank_captions(
    model: Any,
    image: Any,
    captions: list[str],
    *,
    estimator: str = "standard",
    sampling: Sampling | None = None,
    progress: bool = True,
) -> CaptionRanking:
    """Rank ``captions`` of ``image`` by i(x; caption) (``"standard"``: log p(x|caption) -
    log p(x), the score to rank with; ``"orthogonal"``: the paper's). Each caption is evaluated
    once per draw: the pairs of captions cost no extra denoiser row. ``model`` as for
    :func:`~infodecomp.explain`; ``sampling`` as for the estimators."""
    model = as_text_denoiser(model)
    captions = [c.strip() if isinstance(c, str) else c for c in captions]
    if not captions or not all(isinstance(c, str) and c for c in captions):
        raise ValueError("every caption must be a non-empty string")
    if hasattr(model, "check_prompt"):
        for caption in captions:
            model.check_prompt(caption)
    x = model.encode_image(image)
    n = len(captions)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    conds = captions + [captions[i] for i, _ in pairs]
    contexts = [None] * n + [captions[j] for _, j in pairs]
    estimates = conditional_mutual_info(
        model,
        x,
        conds,
        contexts,
        estimator=tuple(dict.fromkeys((estimator, "standard"))),
        sampling=check_sampling(sampling).resolve(model),
        progress=progress,
    )
    est, standard = estimates[estimator], estimates["standard"]
    order = sorted(range(n), key=lambda j: -est.value[0, j].item())
    winner = order[0]
    paired = []
    for j in order[1:]:
        k = n + pairs.index((min(winner, j), max(winner, j)))
        # The pair (j, winner) measures the other way round: its negative.
        entry = standard.entry(0, k) if winner < j else _negated(standard.entry(0, k))
        paired.append(entry | {"other": j, "verdict": _verdict(entry)})
    return CaptionRanking(captions, est, order, paired)


def _negated(entry: dict[str, Any]) -> dict[str, Any]:
    """An :meth:`Estimate.entry` of the opposite difference: value and interval mirrored (the
    skew-aware interval mirrors with its skewness)."""
    low, high = entry["ci95"]
    return entry | {"value": -entry["value"], "ci95": [-high, -low]}


def _verdict(difference: dict[str, Any]) -> str:
    """Whether the winner's log-likelihood ratio over a caption decides between them."""
    low, high = difference["ci95"]
    if low > 0:
        return "winner ahead"
    if high < 0:  # possible when the orthogonal score ranked them
        return "this caption ahead (log-likelihood)"
    return "not decided (take more draws)"
