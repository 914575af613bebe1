"""DAAM's workflow: explain an image while (and after) a pipeline generates it.

    with infodecomp.trace(pipe) as tc:
        g = torch.Generator().manual_seed(0)
        image = pipe("a red car next to a dog", generator=g).images[0]
    tc.heat_map("car")  # DAAM: attention during generation, free
    res = tc.explain(words=["red car", "dog"], n_samples=256)  # information maps, paid for

During the block the pipeline runs unchanged; the trace keeps its prompt, seed and final latent,
and sums the text attention of the prompt's rows over every step (heads and layers summed, as
DAAM). :meth:`Trace.explain` then measures the information maps of that very latent (no VAE
round trip), announcing its cost in denoiser rows first.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Iterator
from typing import Any

import torch

from .explanation import Explanation, denoiser_rows, explain
from .models.diffusers import DiffusersModel
from .models.diffusers.attention import AttentionCollector, capture
from .words import distinct_words, occurrences


class Trace:
    """What one generation left behind: ``prompt``, ``seed`` (None if not seeded by one
    generator), ``latent`` (the final model input ``(1, *data_shape)``, before decoding) and
    the generation's attention maps.

    Attributes:
        model: the pipeline as a :class:`~infodecomp.models.DiffusersModel`.
    """

    def __init__(self, model: DiffusersModel) -> None:
        self.model = model
        self.prompt: str | None = None
        self.seed: int | None = None
        self.latent: torch.Tensor | None = None
        self.attention = AttentionCollector(model.data_shape[1:])
        self._embedding: torch.Tensor | None = None
        self._last_sample: torch.Tensor | None = None

    def _keep_latent(self) -> None:
        """The final latent as the model's input ``(1, *data_shape)`` (Flux's unpacked)."""
        sample = self._last_sample
        if sample is None:
            return
        if sample.ndim == 3:  # Flux's packed tokens
            sample = self.model.network.unpack(sample, self.model.data_shape)
        if tuple(sample.shape[1:]) != self.model.data_shape:
            raise ValueError(
                f"generated latents {tuple(sample.shape[1:])}, traced for "
                f"{self.model.data_shape}: give trace(pipe, image_size=...) the generated size"
            )
        self.latent = sample.float().cpu()

    def heat_map(self, word: str) -> torch.Tensor:
        """DAAM's map of ``word`` (or phrase): the generation's text attention summed over its
        tokens, mean over steps, ``(h, w)`` at the model input's resolution."""
        prompt = self._prompt()
        positions = [
            p
            for o in occurrences(prompt, word)
            for p in self.model.token_positions(prompt, (o.start, o.end))
        ]
        return self.attention.token_maps()[positions].sum(0)

    def explain(
        self,
        words: list[str] | None = None,
        *,
        n_samples: int = 256,
        seed: int | None = None,
        announce: bool = True,
        **kwargs: Any,
    ) -> Explanation:
        """:func:`~infodecomp.explain` of the generated latent and its prompt (``seed``: the
        estimator's, default the generation's seed or 0). Prints the cost in denoiser rows
        first (``announce``). Other keyword arguments go to :func:`~infodecomp.explain`."""
        prompt, latent = self._prompt(), self.latent
        if latent is None:
            raise ValueError("the traced generation ran no sampling step")
        chosen = distinct_words(prompt) if words is None else words
        if announce:
            rows = denoiser_rows(n_samples, len(chosen))
            print(
                f"infodecomp: explaining {len(chosen)} word(s) of {prompt!r}: {rows} denoiser rows",
                file=sys.stderr,
            )
        image = self.model.decode(latent)[0]
        return explain(
            self.model,
            image,
            prompt,
            words,
            n_samples=n_samples,
            seed=(self.seed or 0) if seed is None else seed,
            x=latent,
            **kwargs,
        )

    def _prompt(self) -> str:
        if self.prompt is None:
            raise ValueError("nothing was traced: generate inside `with infodecomp.trace(pipe)`")
        return self.prompt


@contextlib.contextmanager
def trace(pipeline: Any, **model_kwargs: Any) -> Iterator[Trace]:
    """Trace one generation of ``pipeline`` (SD 1.x / 2.x / XL, SD3, Flux) in the block: see the
    module's docstring. ``model_kwargs`` go to :class:`~infodecomp.models.DiffusersModel`
    (``image_size`` for a generation at another size than the pipeline's default)."""
    model = DiffusersModel.from_pipeline(pipeline, **model_kwargs)
    tc = Trace(model)
    net = model.network
    originals = {name: getattr(pipeline, name) for name in ("encode_prompt", "prepare_latents")}

    # Wrappers keep the signatures: pipelines inspect them (e.g. whether step takes a generator).
    @functools.wraps(originals["encode_prompt"])
    def encode_prompt(*args: Any, **kwargs: Any) -> Any:
        prompt = kwargs.get("prompt", args[0] if args else None)
        out = originals["encode_prompt"](*args, **kwargs)
        if tc.prompt is None and isinstance(prompt, (str, list)):
            tc.prompt = prompt if isinstance(prompt, str) else prompt[0]
            tc._embedding = out[0][0].detach()
        return out

    @functools.wraps(originals["prepare_latents"])
    def prepare_latents(*args: Any, **kwargs: Any) -> Any:
        generator = kwargs.get("generator", args[6] if len(args) > 6 else None)
        if isinstance(generator, torch.Generator):
            tc.seed = generator.initial_seed()
        return originals["prepare_latents"](*args, **kwargs)

    def collect_rows(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        # The prompt's rows, by their text embedding (not the negative prompt's under CFG).
        hidden = kwargs.get("encoder_hidden_states")
        if hidden is None or tc._embedding is None:
            tc.attention.rows = None
            return
        same = (hidden - tc._embedding.to(hidden)).flatten(1).abs().amax(1) == 0
        tc.attention.rows = same.cpu()
        tc.attention.n_rows += int(same.sum())

    scheduler = pipeline.scheduler
    original_step = scheduler.step

    @functools.wraps(original_step)
    def step(*args: Any, **kwargs: Any) -> Any:
        # The last step's sample is the final latent: what the pipeline decodes (or returns).
        out = original_step(*args, **kwargs)
        tc._last_sample = out[0][:1].detach()
        return out

    hook = net.module.register_forward_pre_hook(collect_rows, with_kwargs=True)
    try:
        for name, fn in (("encode_prompt", encode_prompt), ("prepare_latents", prepare_latents)):
            object.__setattr__(pipeline, name, fn)
        object.__setattr__(scheduler, "step", step)
        with capture(net.module, net.is_text_attention, net.text_attention, tc.attention):
            yield tc
    finally:
        hook.remove()
        for name in originals:
            object.__delattr__(pipeline, name)
        object.__delattr__(scheduler, "step")
    tc._keep_latent()  # only after a generation that ran through
