"""Prompt conditions of a diffusers pipeline: encoded by the pipeline's own ``encode_prompt``.

A condition is a prompt string, ``None`` (the null condition: the empty prompt, or zero
embeddings where the pipeline sets ``force_zeros_for_empty_prompt``, as SDXL does) or a
:class:`PaddedPrompt`. A padded prompt (SD 1.x / 2.x / XL) is encoded by the same
``encode_prompt`` with the pipeline's tokenizers swapped, for that call, for ones that put the
padding token in place of the tokens of the padded words: the only custom step. SD3 and Flux
refuse it: their pooled vector comes from a CLIP whose padding token is its end token, where it
stops reading.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ...words import check_text

# Embeddings kept per model, least recently used dropped first (a heat map uses 2 + words).
CACHED_CONDITIONS = 64


@dataclass(frozen=True)
class PaddedPrompt:
    """A prompt whose tokens inside the character ``spans`` are replaced by the padding token
    (the alternative to deleting a word: the sentence keeps its length and positions)."""

    text: str
    spans: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class TextSegment:
    """A part of the text sequence the network attends to: tokens of ``tokenizer`` (an attribute
    name of the pipeline) at positions ``offset + i``, at most ``length`` of them."""

    tokenizer: str
    offset: int
    length: int


class PromptEncoder:
    """Embeddings of conditions for one pipeline family, cached by condition.

    Args:
        pipeline: the diffusers pipeline.
        family: ``"sd"``, ``"sdxl"``, ``"sd3"`` or ``"flux"``.
        max_sequence_length: T5 tokens (SD3: 256, Flux: 512, as their pipelines default).
    """

    def __init__(self, pipeline: Any, family: str, max_sequence_length: int | None = None) -> None:
        self.pipeline, self.family = pipeline, family
        self.zeros_for_null = bool(getattr(pipeline.config, "force_zeros_for_empty_prompt", False))
        clip = pipeline.tokenizer.model_max_length if pipeline.tokenizer is not None else 77
        t5 = max_sequence_length or {"sd3": 256, "flux": 512}.get(family, 0)
        self.max_sequence_length = t5
        if family in ("sd", "sdxl"):
            self.segments = [TextSegment("tokenizer", 0, clip)]
        elif family == "sd3":  # [CLIP-L|CLIP-G features, 77 tokens] then T5 (zeros if absent)
            self.segments = [TextSegment("tokenizer", 0, clip)]
            if getattr(pipeline, "tokenizer_3", None) is not None:
                self.segments.append(TextSegment("tokenizer_3", clip, t5))
        elif family == "flux":  # T5 tokens only; CLIP gives the pooled vector
            self.segments = [TextSegment("tokenizer_2", 0, t5)]
        else:
            raise ValueError(f"unknown pipeline family {family!r}")
        self._cache: OrderedDict[Any, dict[str, torch.Tensor]] = OrderedDict()

    def __call__(self, conds: Sequence[Any], device: torch.device, dtype: torch.dtype):
        """The embeddings of each condition, stacked: ``{"hidden": (B, L, D), "pooled": (B, P)
        or absent}``."""
        for c in conds:
            if not (c is None or isinstance(c, (str, PaddedPrompt))):
                raise ValueError(f"conditions of a diffusers model are prompts, got {c!r}")
        for c in dict.fromkeys(conds):
            if c in self._cache:
                self._cache.move_to_end(c)
            else:
                if c is not None:  # checked once, when first encoded
                    check_text(c.text if isinstance(c, PaddedPrompt) else c)
                self._cache[c] = self._encode(c, device)
        while len(self._cache) > max(CACHED_CONDITIONS, len(set(conds))):
            self._cache.popitem(last=False)  # bounded: a T5 embedding is megabytes
        return {
            k: torch.stack([self._cache[c][k] for c in conds]).to(device, dtype)
            for k in self._cache[conds[0]]
        }

    def check(self, prompt: str) -> None:
        """``ValueError`` with one line if ``prompt`` is longer than the text window that sees
        every token (CLIP's 77 for SD / SDXL; T5's for SD3 with T5 and Flux), or is not one line
        of valid text (:func:`~infodecomp.words.check_text`)."""
        check_text(prompt)
        segment = self.segments[-1]
        tok = getattr(self.pipeline, segment.tokenizer)
        n = len(tok(prompt).input_ids)
        if n > segment.length:
            raise ValueError(
                f"prompt is {n} tokens long, the model takes at most {segment.length}: {prompt!r}"
            )

    def token_positions(self, prompt: str, span: tuple[int, int]) -> list[int]:
        """Positions in the network's text sequence of the tokens that make up the characters
        ``span`` of ``prompt`` (in every segment: SD3 sees a word in its CLIP and T5 parts)."""
        positions = []
        for seg in self.segments:
            enc = getattr(self.pipeline, seg.tokenizer)(prompt, return_offsets_mapping=True)
            positions += [
                seg.offset + i
                for i, (s, e) in enumerate(enc.offset_mapping)
                if s < span[1] and e > span[0] and i < seg.length
            ]
        return positions

    @torch.no_grad()
    def _encode(self, cond: Any, device: torch.device) -> dict[str, torch.Tensor]:
        text = "" if cond is None else cond.text if isinstance(cond, PaddedPrompt) else cond
        spans = cond.spans if isinstance(cond, PaddedPrompt) else ()
        if spans and self.family in ("sd3", "flux"):
            # CLIP-L pads with its end token and pools at the first one: a padded word would
            # also cut the rest of the prompt out of the pooled vector.
            raise ValueError(
                f"context='pad' is not available for {self.family.upper()}: its pooled CLIP "
                "vector ends at the first padding token; use context='remove'"
            )
        pipe = self.pipeline
        with _padding_tokenizers(pipe, spans):
            if self.family == "sd":
                hidden, _ = pipe.encode_prompt(text, device, 1, False)
                out = {"hidden": hidden[0]}
            elif self.family == "sdxl":
                hidden, _, pooled, _ = pipe.encode_prompt(
                    text, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
                )
                out = {"hidden": hidden[0], "pooled": pooled[0]}
            elif self.family == "sd3":
                hidden, _, pooled, _ = pipe.encode_prompt(
                    text,
                    text,
                    text,
                    device=device,
                    do_classifier_free_guidance=False,
                    max_sequence_length=self.max_sequence_length,
                )
                out = {"hidden": hidden[0], "pooled": pooled[0]}
            else:
                hidden, pooled, _ = pipe.encode_prompt(
                    text, text, device=device, max_sequence_length=self.max_sequence_length
                )
                out = {"hidden": hidden[0], "pooled": pooled[0]}
        if cond is None and self.zeros_for_null:
            out = {k: torch.zeros_like(v) for k, v in out.items()}
        return out


def execution_device(pipeline: Any) -> torch.device:
    """Where the pipeline's networks run: its device, or the GPU its CPU-offload hooks move
    each network to (inputs are put there directly, not on the offloaded weights' CPU)."""
    return torch.device(pipeline._execution_device)


@contextlib.contextmanager
def _padding_tokenizers(pipeline: Any, spans: tuple[tuple[int, int], ...]) -> Iterator[None]:
    """Within the block, the pipeline's tokenizers put padding in place of the tokens that
    overlap ``spans`` (nothing changes when there are none)."""
    if not spans:
        yield
        return
    names = [n for n in ("tokenizer", "tokenizer_2", "tokenizer_3") if getattr(pipeline, n, None)]
    originals = {n: getattr(pipeline, n) for n in names}
    try:
        for n, tok in originals.items():
            # Past the pipeline's __setattr__, which would record the swap in its config.
            object.__setattr__(pipeline, n, _PaddingTokenizer(tok, spans))
        yield
    finally:
        for n, tok in originals.items():
            object.__setattr__(pipeline, n, tok)


class _PaddingTokenizer:
    """A tokenizer whose output has the padding token (and a zero attention mask) in place of
    the tokens that overlap the character ``spans``; otherwise the tokenizer itself."""

    def __init__(self, tokenizer: Any, spans: tuple[tuple[int, int], ...]) -> None:
        self._tokenizer, self._spans = tokenizer, spans

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)

    def __call__(self, text: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["return_offsets_mapping"] = True
        enc = self._tokenizer(text, *args, **kwargs)
        offsets = torch.as_tensor(enc.pop("offset_mapping"))
        ids = torch.as_tensor(enc["input_ids"])
        hit = torch.zeros(ids.shape, dtype=torch.bool)
        for a, b in self._spans:
            hit |= (offsets[..., 0] < b) & (offsets[..., 1] > a)
        ids = ids.masked_fill(hit, self._tokenizer.pad_token_id)
        enc["input_ids"] = ids if kwargs.get("return_tensors") == "pt" else ids.tolist()
        if "attention_mask" in enc:
            mask = torch.as_tensor(enc["attention_mask"]).masked_fill(hit, 0)
            enc["attention_mask"] = mask if kwargs.get("return_tensors") == "pt" else mask.tolist()
        return enc
