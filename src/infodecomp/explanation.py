"""Word heat maps for an image and its prompt: the one call for the common case."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .estimators import conditional_mutual_info
from .files import write_atomic
from .images import prepare_image
from .models.diffusers.text import PaddedPrompt
from .results import Estimate, format_entry, versions
from .sampling import Sampling, check_sampling
from .words import check_text, remove_spans, word_spans, words_to_explain


@dataclass
class Explanation:
    """What each word of a prompt tells about an image, and where (nats).

    Attributes:
        prompt: the prompt.
        words: the explained words (lower case).
        estimate: the underlying estimate; pair 0 is i(x; prompt) against the null prompt, pair
            ``k`` is i(x; word k | prompt without it). ``estimate.map`` has shape
            ``(1, 1 + n_words, h, w)`` at the model's input resolution, channels summed.
        image: the image as the model saw it, ``(3, H, W)`` in [-1, 1].
        attention: per word, the "attention + information" map of the paper (Kong et al.):
            DAAM's aggregation of cross-attention (heads and layers summed, mean over draws)
            collected in the estimator's own denoiser calls on the noisy image, ``(h, w)``; or
            ``None``.
        model_name, model_revision: where the model came from.
        generation_attention: per word, DAAM's map of the generation that made the image
            (:func:`~infodecomp.trace`: attention summed over the sampling steps), ``(h, w)``;
            or ``None``.
        image_note: how the input was fitted to the model's size (``"centre-cropped 640x480 to
            480x480, resized to 512x512"``), or ``None`` when it was not changed.
        context_check: with ``explain(..., check_context=True)``, per word its CMI under both
            contexts on the same draws, ``{"remove": entry, "pad": entry, "overlap": bool,
            "warning": str | None}`` (entries as :meth:`entry`; ``overlap``: whether their 95%
            intervals overlap); else ``None``.
    """

    prompt: str
    words: list[str]
    estimate: Estimate
    image: torch.Tensor
    attention: dict[str, torch.Tensor] | None
    model_name: str
    model_revision: str | None = None
    generation_attention: dict[str, torch.Tensor] | None = None
    image_note: str | None = None
    context_check: dict[str, dict[str, Any]] | None = None

    @property
    def mi(self) -> tuple[float, float]:
        """i(x; prompt) in nats and its standard error."""
        return self.estimate.value[0, 0].item(), self.estimate.stderr[0, 0].item()

    def cmi(self, word: str) -> tuple[float, float]:
        """i(x; word | rest of the prompt) in nats and its standard error."""
        k = self._index(word)
        return self.estimate.value[0, k].item(), self.estimate.stderr[0, k].item()

    def entry(self, word: str | None = None) -> dict[str, Any]:
        """``word``'s CMI (or, for None, the prompt's MI) with its standard error, 95% interval
        and flags: :meth:`Estimate.entry`."""
        return self.estimate.entry(0, 0 if word is None else self._index(word))

    def heat_map(self, word: str | None = None, upsample: bool = True) -> torch.Tensor:
        """Pixel-wise information (nats per pixel) of ``word`` (CMI), or of the whole prompt (MI)
        when ``word`` is None; ``(H, W)`` at image resolution if ``upsample``, else ``(h, w)``.
        Upsampling is bilinear and keeps the map's total."""
        heat = self.estimate.map[0, 0 if word is None else self._index(word)].float()
        return self._upsample(heat) if upsample else heat

    def attention_map(self, word: str, upsample: bool = True) -> torch.Tensor:
        """The "attention + information" map of ``word`` (cross-attention summed over its tokens,
        collected on the estimator's noisy inputs)."""
        if self.attention is None:
            raise ValueError("attention maps were not collected (attention=False)")
        heat = self.attention[self.words[self._index(word) - 1]].float()
        return self._upsample(heat, keep_total=False) if upsample else heat

    def combined_map(self, word: str) -> torch.Tensor:
        """Our combination (not the paper's): the geometric mean of the CMI and attention maps,
        each scaled to a maximum of 1 (high only where both are high)."""
        cmi, attn = self.heat_map(word), self.attention_map(word)
        return (cmi.clamp(min=0) / cmi.max().clamp(min=1e-12) * attn / attn.max()).sqrt()

    def to_numpy(self, kind: str = "information") -> dict[str, np.ndarray]:
        """Each word's map as a numpy array ``(h, w)`` at the model's input resolution, exactly
        as in ``maps.safetensors``: ``kind`` ``"information"`` (CMI, nats per model-input pixel;
        the prompt's MI map is ``heat_map(None, upsample=False)``), ``"stderr"`` (each pixel's
        standard error, nats), ``"attention"`` (attention + information) or ``"generation"``
        (DAAM, traced generations). Empty when the kind was not collected."""
        from .report.figures import explanation_maps

        if kind == "stderr":
            se = self.estimate.map_stderr[0]
            return {w: se[k].float().numpy() for k, w in enumerate(self.words, start=1)}
        if kind not in ("information", "attention", "generation"):
            raise ValueError(
                f"unknown map kind {kind!r}; choose information, stderr, attention or generation"
            )
        return {w: m.numpy() for w, m in explanation_maps(self, kind).items()}  # type: ignore[arg-type]

    def plot(
        self,
        word: str | None = None,
        kind: Literal["information", "attention", "generation"] = "information",
        scale: Literal["word", "shared"] = "word",
        ax: Any = None,
        over: bool = True,
    ) -> tuple[Any, Any]:
        """``word``'s map (None: the prompt's MI map) of ``kind`` over the image (``over=False``:
        alone), on the word's own colour scale (``scale="shared"``: the scale all the words'
        maps of that kind share), value and interval in the title. ``(fig, ax)``."""
        from .report.figures import plot_explanation

        return plot_explanation(self, word, kind, scale, ax, over)

    def plot_grid(self) -> tuple[Any, Any]:
        """Every map at once: a row per kind (information, attention + information, DAAM of a
        traced generation), the words' maps of a row on one colour scale. ``(fig, axes)``."""
        from .report.figures import grid_explanation

        return grid_explanation(self, f"input {self.image_note}" if self.image_note else None)

    def to_dict(self) -> dict[str, Any]:
        settings = dict(self.estimate.settings)
        return {
            "model": self.model_name,
            "model_revision": self.model_revision,
            "prompt": self.prompt,
            "units": "nats",
            "map_units": {
                "maps.safetensors": "nats per model-input pixel (a latent pixel for latent models)",
                "figures": "the same values, drawn in blocks over the image",
            },
            "mi": self.entry(),
            "cmi": {
                w: self.entry(w) | {"context": settings["contexts"][k]}
                for k, w in enumerate(self.words, start=1)
            },
            "n_evaluations": self.estimate.n_evaluations,
            "seed": self.estimate.seed,
            "settings": settings,
            "attention": self.attention is not None,
            "generation_attention": self.generation_attention is not None,
            "image_note": self.image_note,
            "context_check": self.context_check,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(
        self,
        out_dir: str | Path,
        figures: dict[str, bytes] | None = None,
        columns: dict[str, list[Any]] | None = None,
        scale: Literal["word", "shared"] = "word",
        fmt: str = "png",
        grid: Any = None,
    ) -> Path:
        """Write into ``out_dir``: ``result.json`` (numbers, intervals, settings, seed),
        ``maps.safetensors`` (every map in nats per model-input pixel, their standard errors,
        attention, the estimate's diagnostics and the image: :meth:`load` reads it all back),
        the figures of :func:`~infodecomp.report.figures.explanation_figures` in ``fmt`` (png,
        pdf or svg; words on their own colour scale or, ``scale="shared"``, on one) and the
        interactive viewer ``report.html`` (:func:`~infodecomp.report.viewer.viewer_html`,
        with ``figures``, name to PNG bytes, and extra number ``columns``, one value or entry
        per row: prompt, then words). ``grid``: a matplotlib figure written as ``grid.<fmt>``
        instead of the default comparison (and shown in the report). Each file is written
        whole or not at all (:func:`~infodecomp.files.write_atomic`). Returns the report's
        path."""
        from .report.figures import explanation_figures
        from .report.viewer import viewer_html

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        est = self.estimate
        tensors = {"image": self.image.contiguous(), "mi_map": self.heat_map(upsample=False)}
        tensors["mi_map_stderr"] = est.map_stderr[0, 0].float().contiguous()
        for k, word in enumerate(self.words, start=1):
            tensors[f"cmi_map/{word}"] = self.heat_map(word, upsample=False).contiguous()
            tensors[f"cmi_map_stderr/{word}"] = est.map_stderr[0, k].float().contiguous()
            for name, maps in (
                ("attention", self.attention),
                ("generation", self.generation_attention),
            ):
                if maps is not None:
                    tensors[f"{name}_map/{word}"] = maps[word].float().contiguous()
        for name, t in est.diagnostics.items():
            tensors[f"diagnostics/{name}"] = t.contiguous()
        write_atomic(out / "maps.safetensors", save(tensors))
        write_atomic(out / "result.json", self.to_json() + "\n")  # after its maps

        files = explanation_figures(self, scale, fmt, grid)
        for name, data in files.items():
            write_atomic(out / name, data)
        if grid is not None:
            figures = {f"grid.{fmt}": files[f"grid.{fmt}"], **(figures or {})}
        return write_atomic(out / "report.html", viewer_html(self, figures, columns))

    @classmethod
    def load(cls, path: str | Path) -> Explanation:
        """The explanation :meth:`save` wrote into the folder ``path`` (``result.json`` and
        ``maps.safetensors``), numbers, maps and settings as they were."""
        folder = Path(path)
        try:
            doc = json.loads((folder / "result.json").read_text())
            tensors = load_file(str(folder / "maps.safetensors"))
            words = list(doc["cmi"])
            entries = [doc["mi"], *(doc["cmi"][w] for w in words)]
            maps = [tensors["mi_map"], *(tensors[f"cmi_map/{w}"] for w in words)]
            map_se = [tensors["mi_map_stderr"], *(tensors[f"cmi_map_stderr/{w}"] for w in words)]
        except (OSError, ValueError, SafetensorError, KeyError, TypeError) as err:
            what = f"missing {err}" if isinstance(err, KeyError) else str(err)
            raise ValueError(f"cannot read an explanation from {str(folder)!r}: {what}") from None

        def row(key: str, dtype: torch.dtype = torch.float64) -> torch.Tensor:
            return torch.tensor([[e[key] for e in entries]], dtype=dtype)

        estimate = Estimate(
            quantity="conditional_mutual_info",
            value=row("value"),
            stderr=row("stderr"),
            ci95=row("ci95"),
            reliable=row("reliable", torch.bool),
            truncated=row("truncated", torch.bool),
            n_evaluations=doc["n_evaluations"],
            seed=doc["seed"],
            settings=doc["settings"],
            map=torch.stack(maps)[None],
            map_stderr=torch.stack(map_se)[None],
            diagnostics={
                k.split("/", 1)[1]: t for k, t in tensors.items() if k.startswith("diagnostics/")
            },
        )

        def held(name: str) -> dict[str, torch.Tensor] | None:
            found = {w: tensors[f"{name}_map/{w}"] for w in words if f"{name}_map/{w}" in tensors}
            return found or None

        return cls(
            prompt=doc["prompt"],
            words=words,
            estimate=estimate,
            image=tensors["image"],
            attention=held("attention"),
            model_name=doc["model"],
            model_revision=doc.get("model_revision"),
            generation_attention=held("generation"),
            image_note=doc.get("image_note"),
            context_check=doc.get("context_check"),
        )

    def __repr__(self) -> str:
        mi = self.entry()
        ranked = sorted(self.words, key=lambda w: -self.entry(w)["value"])
        top = ", ".join(
            f"{w} {format_entry(self.entry(w), reference=mi['value'], flags='short')}"
            for w in ranked[:3]
        )
        more = f", ... ({len(ranked)} words)" if len(ranked) > 3 else ""
        return (
            f"Explanation({self.prompt!r}: i(x; prompt) = {format_entry(mi, flags='short')} "
            f"nats; words by CMI: {top}{more}; {self.estimate.n_evaluations} denoiser "
            f"evaluations, seed {self.estimate.seed})"
        )

    def _repr_html_(self) -> str:
        """A notebook's view: the numbers and each word's map, small, on its own scale."""
        from .report.pictures import notebook_html

        return notebook_html(self)

    def _index(self, word: str) -> int:
        key = word.strip().lower()
        if key not in self.words:
            raise ValueError(
                f"word {word!r} was not explained (explained: {', '.join(self.words)})"
            )
        return 1 + self.words.index(key)

    def _upsample(self, heat: torch.Tensor, keep_total: bool = True) -> torch.Tensor:
        """Bilinear to image size; an additive map is rescaled so that its total is kept."""
        size = self.image.shape[-2:]
        if tuple(heat.shape) == tuple(size):
            return heat
        up = F.interpolate(heat[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
        return up * (heat.numel() / up.numel()) if keep_total else up


@runtime_checkable
class TextDenoiser(Protocol):
    """What :func:`explain` needs of a model: a denoiser over prompts that takes images.

    ``model(x_noisy, logsnr, conds)`` returns eps_hat (the :class:`~infodecomp.Denoiser`
    protocol) for conditions that are prompt strings, ``None`` (no prompt) or, for
    ``context="pad"``, :class:`~infodecomp.models.PaddedPrompt`; ``encode_image(image)`` gives
    the model input ``(1, *data_shape)`` of an image (path, PIL image or ``(3, H, W)`` tensor in
    [-1, 1]) at ``image_size`` pixels; ``name`` names it in results.

    Optional, used when present: ``logsnr_range``, ``check_prompt(prompt)`` (raise on a prompt
    the model cannot take), ``default_batch_size()``, ``collect_attention(prompt)`` with
    ``token_positions(prompt, span)`` (the attention baseline), ``revision``, ``dtype``,
    ``device``. :class:`~infodecomp.models.DiffusersModel` has them all.
    """

    name: str
    image_size: int

    def __call__(self, x_noisy: torch.Tensor, logsnr: torch.Tensor, conds: Any) -> torch.Tensor: ...

    def encode_image(self, image: Any) -> torch.Tensor: ...


def explain(
    model: Any,
    image: Any,
    prompt: str,
    words: list[str] | None = None,
    *,
    sampling: Sampling | None = None,
    context: Literal["remove", "pad"] = "remove",
    check_context: bool = False,
    attention: bool = True,
    key: str | int | None = None,
    progress: bool = True,
    x: torch.Tensor | None = None,
    _warn: bool = True,
) -> Explanation:
    """How much each word of ``prompt`` tells about ``image``, and where.

    Estimates i(x; prompt) and, for each word or phrase, i(x; word | prompt without it) with the
    orthogonal estimator, their pixel maps, and (optionally) the DAAM-style attention maps, all
    on the same noisy inputs: every draw evaluates the prompt, the null prompt and one context per
    word in one batch.

    Args:
        model: any :class:`TextDenoiser` (a :class:`~infodecomp.models.DiffusersModel`, the
            world's exact model, ...) or a diffusers pipeline.
        image: path, PIL image or ``(3, H, W)`` tensor in [-1, 1].
        prompt: the caption.
        words: words or phrases ("red car") to explain (default: every distinct word). A
            word counts every occurrence (taken out everywhere, its attention summed over all);
            ``"a#2"`` names only its second occurrence (from 1; ``"red car#2"`` for a phrase:
            :func:`~infodecomp.words.word_spans`), and is labelled ``"a#2"`` in the results. A
            phrase is one unit: its CMI given the rest of the prompt, its attention summed over
            its tokens.
        sampling: the draws (:class:`~infodecomp.Sampling`; default 256 on the model's trained
            log-SNR range, seed 0, the model's batch size). The cost is
            ``sampling.rows(2 + len(words))`` denoiser rows (the prompt, the null prompt and one
            context per word at every draw). Attention maps average over all of them.
        context: how a word is taken out: ``"remove"`` deletes it from the prompt, ``"pad"``
            replaces its tokens by padding.
        check_context: also take each word out the other way (padding for ``"remove"``) on the
            same draws, and warn (:class:`ContextWarning`) for each word whose CMIs under the
            two contexts have 95% intervals that do not overlap: a removal can leave a prompt
            the model never saw (or padding one it reads oddly). The two values, their
            standard errors and intervals are in :attr:`Explanation.context_check` and
            ``result.json``. Cost: one more condition per word, ``sampling.rows(2 +
            2 * len(words))`` rows in all; the adaptive proposal and the intervals' skew are
            fitted to every condition, so the reported values differ a little (within their
            errors) from a run without the check.
        attention: also collect attention maps (models with ``collect_attention``).
        key: the image's item id, naming its random streams (default: the image's content).
        progress: show a progress bar.
        x: the model input of ``image``, ``(1, *data_shape)``, when it is known (the latent a
            generation ended at): explained instead of encoding ``image``, which is then only
            shown.
    """
    model = as_text_denoiser(model)
    if isinstance(words, str):
        raise TypeError(f"words must be a list of words or phrases, e.g. [{words!r}], not a str")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("the prompt is empty")
    prompt = check_text(prompt.strip())  # one line of valid text, whatever the model
    if hasattr(model, "check_prompt"):
        model.check_prompt(prompt)  # fails early, with one line, on a prompt over the limit
    chosen = words_to_explain(prompt, words)
    if x is not None and (not isinstance(x, torch.Tensor) or x.ndim < 2 or len(x) != 1):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be one image's model input, (1, *data_shape), got {shape}")
    contexts = [None, *word_contexts(prompt, chosen, context)]
    other: Literal["remove", "pad"] = "pad" if context == "remove" else "remove"
    if check_context:
        contexts += word_contexts(prompt, chosen, other)
    pixels, image_note = prepare_image(image, model.image_size)
    x = model.encode_image(image) if x is None else x
    run = {
        "sampling": check_sampling(sampling).resolve(model),
        "progress": progress,
        "per_dim": True,
        "sum_channels": True,
        "keys": None if key is None else [key],
    }
    conds = [prompt] * len(contexts)
    attention_maps = None
    if attention and hasattr(model, "collect_attention"):
        with model.collect_attention(prompt) as collector:
            estimate = conditional_mutual_info(model, x, conds, contexts, **run)
        tokens = collector.token_maps()
        attention_maps = {
            word: tokens[word_token_positions(model, prompt, word)].sum(0) for word in chosen
        }
    else:
        estimate = conditional_mutual_info(model, x, conds, contexts, **run)
    described = (
        model.describe()
        if hasattr(model, "describe")
        else {
            "model": model.name,
            "model_revision": getattr(model, "revision", None),
            "dtype": str(getattr(model, "dtype", x.dtype)).removeprefix("torch."),
        }
    )
    checked = None
    if check_context:
        n = 1 + len(chosen)
        checked = {}
        for k, word in enumerate(chosen, start=1):
            entries = {context: estimate.entry(0, k), other: estimate.entry(0, n + k - 1)}
            checked[word] = context_check(word, entries["remove"], entries["pad"], context)
        estimate = estimate.take_pairs(range(n))
    estimate.settings.update(
        context=context,
        occurrences=OCCURRENCES,
        check_context=check_context,
        image_preparation=image_note,
        device=str(getattr(model, "device", x.device)),
        versions=versions(),
        **described,
    )
    for check in (checked or {}).values() if _warn else ():  # (callers that say it their way)
        if check["warning"]:
            warnings.warn(check["warning"], ContextWarning, stacklevel=2)
    return Explanation(
        prompt=prompt,
        words=chosen,
        estimate=estimate,
        image=pixels.cpu(),
        attention=attention_maps,
        model_name=model.name,
        model_revision=getattr(model, "revision", None),
        image_note=image_note,
        context_check=checked,
    )


OCCURRENCES = "every occurrence of a word, unless it names one as word#k (k from 1)"


class ContextWarning(UserWarning):
    """A word's CMI disagrees between its two contexts (removed, padded) beyond their 95%
    intervals: one of them may be out of distribution for the model (on the bundled model,
    removing "a" from "a red circle above a blue triangle" gives about 4 nats where the exact
    value is 0; padding can be the one astray too)."""


def context_check(
    word: str,
    removed: dict[str, Any],
    padded: dict[str, Any],
    context: str = "remove",
    compare: str | None = None,
) -> dict[str, Any]:
    """The check of ``word``'s two contexts from their entries (:meth:`Estimate.entry`):
    ``{"remove", "pad", "overlap", "warning"}``, ``warning`` a line when the 95% intervals do
    not overlap (``None`` else). ``context``: the one the explanation reports; ``compare``:
    how the line names the other (default ``context='pad'``, or ``'remove'``)."""
    (lo_r, hi_r), (lo_p, hi_p) = removed["ci95"], padded["ci95"]
    overlap = lo_r <= hi_p and lo_p <= hi_r
    warning = None
    if not overlap:
        other = "pad" if context == "remove" else "remove"
        compare = compare or f"context={other!r}"
        warning = (
            f"{word!r}: removing it gives {_with_se(removed)} nats, padding "
            f"{_with_se(padded)} (value ± SE [95% interval]): the removed (or the padded) "
            f"prompt may be out of distribution for this model; compare {compare}"
        )
    return {"remove": removed, "pad": padded, "overlap": overlap, "warning": warning}


def context_warnings(checks: dict[str, dict[str, Any]] | None, context: str) -> list[str]:
    """The warning lines of :attr:`Explanation.context_check` (none for ``None``), the other
    context named as the command's option (``--context pad``)."""
    other = "pad" if context == "remove" else "remove"
    lines = []
    for word, check in (checks or {}).items():
        redone = context_check(word, check["remove"], check["pad"], context, f"--context {other}")
        if redone["warning"]:
            lines.append(redone["warning"])
    return lines


def _with_se(entry: dict[str, Any]) -> str:
    """``"4.5 ± 1.5 [2.1, 7.9]"``: value, standard error and 95% interval."""
    value, interval = format_entry(entry, flags="none").split(" ", 1)
    return f"{value} ± {entry['stderr']:.2g} {interval}"


def as_text_denoiser(model: Any) -> Any:
    """``model`` itself if it is a :class:`TextDenoiser`; a diffusers pipeline wrapped in a
    :class:`~infodecomp.models.DiffusersModel`; else ``TypeError``."""
    if isinstance(model, TextDenoiser):
        return model
    if hasattr(model, "scheduler") and (hasattr(model, "unet") or hasattr(model, "transformer")):
        from .models.diffusers import DiffusersModel

        return DiffusersModel.from_pipeline(model)
    raise TypeError(
        f"model must be a text denoiser (e.g. a DiffusersModel) or a diffusers pipeline, got "
        f"{type(model).__name__}"
    )


def word_contexts(prompt: str, words: list[str], context: str = "remove") -> list[Any]:
    """For each word, the condition with it taken out of ``prompt``: the prompt with every
    occurrence (or, for ``"a#2"``, the one named: :func:`~infodecomp.words.word_spans`) deleted
    (``"remove"``; ``None`` if nothing is left) or a :class:`PaddedPrompt` (``"pad"``)."""
    if context not in ("remove", "pad"):
        raise ValueError(f"unknown context {context!r}; choose 'remove' or 'pad'")
    out: list[Any] = []
    for word in words:
        spans = word_spans(prompt, word)
        if context == "pad":
            out.append(PaddedPrompt(prompt, spans))
        else:
            out.append(remove_spans(prompt, list(spans)) or None)
    return out


def word_token_positions(model: Any, prompt: str, word: str) -> list[int]:
    """Positions in the model's text sequence of every token of every occurrence of ``word``
    (or phrase) in ``prompt``; of one occurrence for ``"a#2"``
    (:func:`~infodecomp.words.word_spans`)."""
    positions: list[int] = []
    for span in word_spans(prompt, word):
        positions += model.token_positions(prompt, span)
    return positions
