"""Words of a prompt: where they are, and the prompt without them."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

# A word: letters or digits, with inner hyphens or apostrophes ("dog-like", "cat's").
_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")


@dataclass(frozen=True)
class Word:
    """One occurrence of a word: its text and character span ``[start, end)`` in the prompt."""

    text: str
    start: int
    end: int


def check_text(text: object, what: str = "prompt") -> str:
    """``text`` if a model can take it as a caption, else one line saying why: ``TypeError`` if
    it is not a str; ``ValueError`` if it is not valid UTF-8 text (a lone surrogate, as Python
    gives an undecodable byte of a command line or file name), holds a line break (a caption is
    one line: join its lines with spaces) or another control character."""
    if not isinstance(text, str):
        raise TypeError(f"the {what} must be a str, got {type(text).__name__}")
    for i, char in enumerate(text):
        kind = unicodedata.category(char)
        if kind == "Cs":
            code = ord(char)  # U+DC80..U+DCFF: the byte (code - 0xDC00) that did not decode
            found = f"the byte 0x{code - 0xDC00:02x}" if code >= 0xDC80 else f"U+{code:04X}"
            raise ValueError(
                f"the {what} is not valid UTF-8 text: character {i + 1} is {found}: {text!r}"
            )
        if kind in ("Cc", "Zl", "Zp"):
            line_break = len(f"a{char}b".splitlines()) > 1
            raise ValueError(
                f"the {what} holds a line break ({char!r} at character {i + 1}): a caption is one "
                f"line (join its lines with spaces): {text!r}"
                if line_break
                else f"the {what} holds the control character {char!r} at character {i + 1}: "
                f"{text!r}"
            )
    return text


def words_to_explain(prompt: str, words: list[str] | None = None) -> list[str]:
    """The words (or phrases) of ``prompt`` to explain: ``words`` stripped and lower-cased, or
    by default every distinct word of the prompt. ``ValueError`` with one line if there are none
    (a prompt of punctuation only has no words: letters or digits), or a word is not in the
    prompt or names an occurrence it does not have (``"a#3"``: :func:`word_spans`)."""
    if not prompt.strip():
        raise ValueError("the prompt is empty")
    if words is None:
        chosen = distinct_words(prompt)
        if not chosen:
            raise ValueError(f"the prompt {prompt!r} has no words (letters or digits) to explain")
        return chosen
    chosen = [w.strip().lower() for w in words]
    if not chosen or not all(chosen):
        raise ValueError(f"no words to explain in {words!r} (an empty word, or none)")
    for word in chosen:
        word_spans(prompt, word)  # in the prompt, and a valid occurrence ("a#2")
    return chosen


def text_key(caption: str) -> str:
    """What a CLIP-style tokenizer reads of ``caption``: lower-cased, white space collapsed
    (two captions with one key are the same text to the model)."""
    return " ".join(caption.casefold().split())


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


def word_spans(prompt: str, spec: str) -> tuple[tuple[int, int], ...]:
    """The character spans ``[start, end)`` in ``prompt`` of the word (or phrase) that ``spec``
    names: ``"a"`` every occurrence of "a" (:func:`occurrences`), ``"a#2"`` only the second
    (counted from 1, in the prompt's order; "red car#2" the phrase's second). A ``#`` is never
    part of a word, so it always marks an occurrence.

    Raises ``ValueError`` (one line) if the word is not in the prompt, or the occurrence is not
    a whole number from 1 to the number of occurrences.
    """
    word, mark, index = spec.partition("#")
    if not mark:
        return tuple((o.start, o.end) for o in occurrences(prompt, spec))
    index = index.strip()
    if not word.strip() or not (index.isascii() and index.isdigit()) or int(index) == 0:
        raise ValueError(
            f"{spec!r}: name one occurrence of a word as word#k, k counted from 1 (e.g. 'a#2')"
        )
    found, k = occurrences(prompt, word.strip()), int(index)
    if not 1 <= k <= len(found):
        times = f"{len(found)} time{'s' if len(found) > 1 else ''}"
        raise ValueError(f"{spec!r}: {word.strip()!r} occurs {times} in {prompt!r}")
    return ((found[k - 1].start, found[k - 1].end),)


def remove_spans(prompt: str, spans: list[tuple[int, int]]) -> str:
    """``prompt`` with the character spans deleted and the spacing tidied."""
    kept, last = [], 0
    for start, end in sorted(spans):
        kept.append(prompt[last:start])
        last = end
    kept.append(prompt[last:])
    text = re.sub(r"\s+", " ", "".join(kept))
    return re.sub(r"\s+([,.;:!?])", r"\1", text).strip()


def file_name(word: str) -> str:
    """A file name for ``word``; words that needed characters replaced get a short hash of the
    word, so that "cat's" and "cat’s" do not share a file."""
    safe = re.sub(r"[^\w-]", "_", word)
    return safe if safe == word else f"{safe}-{hashlib.sha1(word.encode()).hexdigest()[:6]}"
