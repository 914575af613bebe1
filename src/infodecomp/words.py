"""Words of a prompt: where they are, and the prompt without them."""

from __future__ import annotations

import re
from dataclasses import dataclass

# A word: letters or digits, with inner hyphens or apostrophes ("dog-like", "cat's").
_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")


@dataclass(frozen=True)
class Word:
    """One occurrence of a word: its text and character span ``[start, end)`` in the prompt."""

    text: str
    start: int
    end: int


def split_words(prompt: str) -> list[Word]:
    """Every word occurrence of ``prompt``, in order (punctuation is not a word)."""
    return [Word(m.group(), m.start(), m.end()) for m in _WORD.finditer(prompt)]


def distinct_words(prompt: str) -> list[str]:
    """The distinct words of ``prompt``, lower-cased, in order of first appearance."""
    return list(dict.fromkeys(w.text.lower() for w in split_words(prompt)))


def occurrences(prompt: str, word: str) -> list[Word]:
    """All occurrences of ``word`` (case-insensitive) in ``prompt``; ``word`` may be a phrase of
    several words ("hot dog", "red car"), found where its words stand next to each other (the
    occurrence's span then covers the phrase).

    Raises ``ValueError`` if there are none.
    """
    wanted = [w.text.lower() for w in split_words(word)]
    words = split_words(prompt)
    n = len(wanted)
    found = [
        Word(prompt[words[i].start : words[i + n - 1].end], words[i].start, words[i + n - 1].end)
        for i in range(len(words) - n + 1)
        if n and [w.text.lower() for w in words[i : i + n]] == wanted
    ]
    if not found:
        raise ValueError(
            f"word {word!r} is not in the prompt {prompt!r} (its words: "
            f"{', '.join(distinct_words(prompt))})"
        )
    return found


def remove_spans(prompt: str, spans: list[tuple[int, int]]) -> str:
    """``prompt`` with the character spans deleted and the spacing tidied."""
    kept, last = [], 0
    for start, end in sorted(spans):
        kept.append(prompt[last:start])
        last = end
    kept.append(prompt[last:])
    text = re.sub(r"\s+", " ", "".join(kept))
    return re.sub(r"\s+([,.;:!?])", r"\1", text).strip()
