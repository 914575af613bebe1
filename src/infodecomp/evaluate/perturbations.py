"""ARO's word-order perturbations (COCO-Order, Flickr30k-Order), seeded, and BLIP's
``pre_caption``.

ARO (Yuksekgonul et al. 2023, ``dataset_zoo/perturbations.py``, after O'Connor and Andreas 2021)
builds four false captions of each true one: nouns and adjectives shuffled among their own
places, everything but the nouns and adjectives shuffled, the words shuffled within each trigram,
and the trigrams shuffled. Each function here does the same to a tagged caption with the random
generator it is given; :func:`perturbation_rng` seeds one from the item's id and the function's
name, so an item's false captions are the same in every run. ARO's are not seeded (NumPy's and
Python's global generators), so its false captions change from run to run: the captions here
are ARO's kind, not ARO's draws.

Tokens come from a tagger, ``tagger(text) -> [(token, Penn Treebank tag), ...]``, by default
spaCy's ``en_core_web_sm`` as in ARO. ARO tokenizes the two trigram perturbations with NLTK's
``word_tokenize`` instead of spaCy; here all four use the tagger's tokens (the two tokenizers
differ on a few forms, e.g. ``"cannot"``, quotes).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence

import numpy as np

Tagged = Sequence[tuple[str, str]]
Tagger = Callable[[str], list[tuple[str, str]]]

NOUN_TAGS = frozenset({"NN", "NNS", "NNP", "NNPS"})
ADJECTIVE_TAGS = frozenset({"JJ", "JJR", "JJS"})
# ARO's caption length for COCO-Order and Flickr30k-Order (``max_words=30``).
ARO_MAX_WORDS = 30
SPACY_MODEL = "en_core_web_sm"


def _tokens(tagged: Tagged) -> np.ndarray:
    return np.array([token for token, _ in tagged], dtype=object)


def _permute(tokens: np.ndarray, where: list[int], rng: np.random.Generator) -> None:
    """Permute ``tokens[where]`` among those places, in place."""
    if where:
        tokens[where] = tokens[where][rng.permutation(len(where))]


def shuffle_nouns_and_adj(tagged: Tagged, rng: np.random.Generator) -> str:
    """The nouns (NN, NNS, NNP, NNPS) permuted among the nouns' places and the adjectives (JJ,
    JJR, JJS) among the adjectives' places; every other token stays. Tokens joined by spaces."""
    tokens = _tokens(tagged)
    _permute(tokens, [i for i, (_, tag) in enumerate(tagged) if tag in NOUN_TAGS], rng)
    _permute(tokens, [i for i, (_, tag) in enumerate(tagged) if tag in ADJECTIVE_TAGS], rng)
    return " ".join(tokens)


def shuffle_allbut_nouns_and_adj(tagged: Tagged, rng: np.random.Generator) -> str:
    """Every token but the nouns and adjectives permuted among their places; nouns and
    adjectives stay."""
    tokens = _tokens(tagged)
    held = NOUN_TAGS | ADJECTIVE_TAGS
    _permute(tokens, [i for i, (_, tag) in enumerate(tagged) if tag not in held], rng)
    return " ".join(tokens)


def trigrams(tokens: Sequence[str]) -> list[list[str]]:
    """Consecutive runs of three tokens, the last one shorter when the count is not a multiple
    of three (ARO's ``get_trigrams``)."""
    return [list(tokens[i : i + 3]) for i in range(0, len(tokens), 3)]


def shuffle_within_trigrams(tagged: Tagged, rng: np.random.Generator) -> str:
    """The tokens of each trigram permuted within it; the trigrams stay in order."""
    groups = trigrams([token for token, _ in tagged])
    return " ".join(" ".join(group[k] for k in rng.permutation(len(group))) for group in groups)


def shuffle_trigrams(tagged: Tagged, rng: np.random.Generator) -> str:
    """The trigrams permuted, each one's tokens kept in order."""
    groups = trigrams([token for token, _ in tagged])
    return " ".join(" ".join(groups[k]) for k in rng.permutation(len(groups)))


# ARO's four, in ARO's order (the order of the false captions of each item).
PERTURBATIONS: tuple[Callable[[Tagged, np.random.Generator], str], ...] = (
    shuffle_nouns_and_adj,
    shuffle_allbut_nouns_and_adj,
    shuffle_within_trigrams,
    shuffle_trigrams,
)


def perturbation_rng(item_id: str, name: str) -> np.random.Generator:
    """The generator of perturbation ``name`` for item ``item_id``: seeded from a SHA-256 of
    both, so it is the same in every run, on every machine."""
    digest = hashlib.sha256(f"{item_id}\0{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def perturbed_captions(caption: str, item_id: str, tagger: Tagger) -> list[str]:
    """The four false captions of ``caption`` (ARO's order), each through ``pre_caption`` with
    ARO's 30 words, before which the caption is tagged as written (as ARO does)."""
    tagged = tagger(caption)
    return [
        pre_caption(perturb(tagged, perturbation_rng(item_id, perturb.__name__)), ARO_MAX_WORDS)
        for perturb in PERTURBATIONS
    ]


def pre_caption(caption: str, max_words: int = 50) -> str:
    """BLIP's caption cleaning, as ARO applies it: lower-cased, each of ``.!"()*#:;~`` made a
    space, runs of two or more white-space characters made one space, spaces stripped from the
    ends, and cut to the first ``max_words`` space-separated words."""
    caption = re.sub(r"([.!\"()*#:;~])", " ", caption.lower())
    caption = re.sub(r"\s{2,}", " ", caption)
    caption = caption.rstrip("\n").strip(" ")
    words = caption.split(" ")
    if len(words) > max_words:
        caption = " ".join(words[:max_words])
    return caption


_SPACY: list[Callable[[str], object]] = []


def spacy_tagger(text: str) -> list[tuple[str, str]]:
    """``[(token, Penn Treebank tag), ...]`` of ``text`` by spaCy's ``en_core_web_sm`` (ARO's
    tagger), loaded on first use. ``ImportError`` in one line naming the install if absent."""
    if not _SPACY:
        try:
            import spacy

            _SPACY.append(spacy.load(SPACY_MODEL))
        except (ImportError, OSError):
            raise ImportError(
                f"ARO's perturbations tag captions with spaCy's {SPACY_MODEL}: pip install spacy "
                f"&& python -m spacy download {SPACY_MODEL}"
            ) from None
    return [(token.text, token.tag_) for token in _SPACY[0](text)]  # type: ignore[attr-defined]
