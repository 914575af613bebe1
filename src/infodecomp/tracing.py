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

DAAM's own names work as its users write them, inside the block after the pipeline call or
after the block::

    global_heat_map = tc.compute_global_heat_map()
    word_heat_map = global_heat_map.compute_word_heat_map("dog")
    word_heat_map.heatmap  # (H, W) at the generated image's resolution
    fig, ax = word_heat_map.plot_overlay(image)
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from .explanation import Explanation, explain, word_token_positions
from .images import load_image
from .models.diffusers import DiffusersModel
from .models.diffusers.attention import AttentionCollector, capture
from .models.diffusers.transformer import FLUX_GUIDANCE
from .report.figures import ATTENTION_UNIT
from .sampling import Sampling
from .words import distinct_words

# The colour bar's label of a generation's map: what its values are.


class Trace:
    """What one generation left behind: ``prompt``, ``seed`` (None if not seeded by one
    generator), ``latent`` (the final model input ``(1, *data_shape)``, before decoding) and
    the generation's attention maps.

    Attributes:
        model: the pipeline as a :class:`~infodecomp.models.DiffusersModel`, at the
            generation's size, T5 length and guidance (set when the block ends).
    """

    def __init__(self, model: DiffusersModel) -> None:
        self.model = model
        self.prompt: str | None = None
        self.seed: int | None = None
        self.latent: torch.Tensor | None = None
        self.attention = AttentionCollector(model.data_shape[1:])
        self._embedding: torch.Tensor | None = None
        self._last_sample: torch.Tensor | None = None
        self._size: int | None = None  # the generation's image side, pixels
        self._finished = False

    def heat_map(self, word: str) -> torch.Tensor:
        """DAAM's map of ``word`` (or phrase): the generation's text attention summed over its
        tokens (every occurrence), mean over steps, ``(h, w)`` at the model input's resolution,
        float64. Read after the pipeline call, in the block or after it."""
        return self.compute_global_heat_map()._word_map(word)

    def compute_global_heat_map(self) -> GlobalHeatMap:
        """DAAM's name: the generation's attention maps of its prompt, from which
        :meth:`GlobalHeatMap.compute_word_heat_map` takes a word's. Unlike DAAM's, it takes no
        prompt, factors, layer or head: every layer and head is summed."""
        self._generated_prompt()
        return GlobalHeatMap(self)

    def explain(
        self,
        words: list[str] | None = None,
        *,
        sampling: Sampling | None = None,
        announce: bool = True,
        **kwargs: Any,
    ) -> Explanation:
        """:func:`~infodecomp.explain` of the generated latent and its prompt (``sampling``:
        default ``Sampling(seed=<the generation's seed, or 0>)``). Prints the cost in denoiser
        rows first (``announce``). Other keyword arguments go to :func:`~infodecomp.explain`."""
        prompt, latent = self._prompt(), self.latent
        if latent is None:
            raise ValueError("the traced generation ran no sampling step")
        chosen = distinct_words(prompt) if words is None else words
        sampling = sampling or Sampling(seed=self.seed or 0)
        if announce:
            rows = sampling.rows(2 + len(chosen))
            print(
                f"infodecomp: explaining {len(chosen)} word(s) of {prompt!r}: {rows} denoiser rows",
                file=sys.stderr,
            )
        image = self.model.decode(latent)[0]
        res = explain(
            self.model,
            image,
            prompt,
            words,
            sampling=sampling,
            x=latent,
            **kwargs,
        )
        # The generation's own attention beside the estimator's, for the figures and report.
        maps = self.compute_global_heat_map()
        res.generation_attention = {word: maps._word_map(word) for word in res.words}
        return res

    def _prompt(self) -> str:
        """The prompt, once the block has ended (the model is then at the generation's
        settings, which :meth:`explain` needs)."""
        if not self._finished:
            raise ValueError("the trace is read after its `with` block ends")
        return self._generated_prompt()

    def _generated_prompt(self) -> str:
        """The prompt, once a generation has run: its attention maps are complete when the
        pipeline call returns, so (as in DAAM) they are read within the block too."""
        if not self._finished and self._last_sample is None:
            raise ValueError(
                "nothing was generated yet: read the maps after the pipeline call, in or "
                "after its `with` block"
            )
        if self.prompt is None:
            raise ValueError(
                "no prompt was traced: generate from a prompt string inside "
                "`with infodecomp.trace(pipe)` (not from prompt_embeds)"
            )
        return self.prompt

    def _start(self, args: tuple, kwargs: dict[str, Any]) -> None:
        """At ``prepare_latents``, before any sampling step: one square image, once."""
        if self._size is not None:
            raise ValueError("a trace holds one generation: start a new `with` block for each")
        named = dict(zip(("batch_size", "channels", "height", "width"), args, strict=False))
        named |= kwargs
        batch, height, width = named["batch_size"], named["height"], named["width"]
        if batch != 1 or height != width:
            raise ValueError(
                f"trace follows one square image, got a batch of {batch} at {height}x{width} "
                "(one prompt, num_images_per_prompt=1, height == width)"
            )
        generator = named.get("generator", args[6] if len(args) > 6 else None)
        if isinstance(generator, torch.Generator):
            self.seed = generator.initial_seed()

    def _size_from(self, latents: Any) -> None:
        """The generation's image side from its initial latents (Flux's come packed, with ids)."""
        latents = latents[0] if isinstance(latents, tuple) else latents
        side = latents.shape[-1] if latents.ndim == 4 else 2 * math.isqrt(latents.shape[1])
        self.attention.size = (side, side)
        self._size = side * self.model.image_size // self.model.data_shape[1]

    def _finish(self, pipeline: Any, model_kwargs: dict[str, Any], t5_tokens: int | None) -> None:
        """The model at the generation's settings, and the final latent as its input."""
        self._finished = True
        if self._last_sample is None:
            return
        settings = dict(model_kwargs, image_size=self._size)
        if t5_tokens is not None:
            settings["max_sequence_length"] = t5_tokens
        if self.model.guidance_scale is not None:  # what a guidance-distilled model was fed
            settings["guidance_scale"] = getattr(pipeline, "_guidance_scale", None) or FLUX_GUIDANCE
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # said once, when the trace began
            self.model = DiffusersModel.from_pipeline(pipeline, **settings)
        sample, shape = self._last_sample, self.model.data_shape
        if sample.ndim == 3:  # Flux's packed tokens
            sample = self.model.network.unpack(sample, shape)
        self.latent = sample.float().cpu()


class GlobalHeatMap:
    """DAAM's name for the attention maps of a traced generation's prompt.

    Attributes:
        prompt: the generated prompt.
        heat_maps: per token of the model's text sequence, the attention summed over heads and
            layers, mean over steps, ``(L, h, w)`` at the model input's resolution (DAAM's are
            per token too, at the latent's).
    """

    def __init__(self, trace: Trace) -> None:
        self._model, self._side = trace.model, trace._size
        self.prompt = trace.prompt
        self.heat_maps = trace.attention.token_maps()

    def compute_word_heat_map(self, word: str) -> WordHeatMap:
        """``word``'s (or a phrase's) map, its tokens' maps summed over every occurrence (DAAM
        averages the tokens of one occurrence, chosen by ``word_idx``), upsampled to the
        generated image's size: :meth:`Trace.heat_map` at image resolution."""
        return WordHeatMap(_resize(self._word_map(word), (self._side, self._side)), word)

    def _word_map(self, word: str) -> torch.Tensor:
        """``(h, w)`` at the model input's resolution."""
        return self.heat_maps[word_token_positions(self._model, self.prompt, word)].sum(0)


class WordHeatMap:
    """DAAM's name for one word's map of a generation.

    Attributes:
        word: the word or phrase.
        heatmap: ``(H, W)`` at the generated image's resolution, float64: attention summed over
            heads, layers and the word's tokens, mean over steps, upsampled bilinearly from the
            model input's resolution (as the explanation's attention maps; DAAM upsamples
            bicubically, and only in ``expand_as``). Values are not normalised.
    """

    def __init__(self, heatmap: torch.Tensor, word: str) -> None:
        self.word = word
        self.heatmap = heatmap

    @property
    def value(self) -> torch.Tensor:
        """DAAM's alias of :attr:`heatmap`."""
        return self.heatmap

    def expand_as(
        self, image: Any, absolute: bool = False, threshold: float | None = None
    ) -> torch.Tensor:
        """As DAAM: the map at ``image``'s size (a PIL image or a ``(3, H, W)`` tensor), scaled
        to [0, 1] unless ``absolute``, then 0 or 1 against ``threshold`` when one is given.
        ``(H, W)``."""
        size = image.shape[-2:] if isinstance(image, torch.Tensor) else image.size[::-1]
        heat = _resize(self.heatmap, tuple(size))
        if not absolute:
            heat = (heat - heat.min()) / (heat.max() - heat.min()).clamp(min=1e-12)
        return (heat > threshold).double() if threshold is not None else heat

    def plot_overlay(
        self,
        image: Any,
        ax: Any = None,
        vmin: float | None = None,
        vmax: float | None = None,
    ) -> tuple[Any, Any]:
        """The map drawn over ``image`` (path, PIL image or ``(3, H, W)`` tensor in [-1, 1];
        fitted to the map's size) in :data:`~infodecomp.report.figures.MAP_CMAP`, with a colour
        bar of its values (its own range; ``vmin`` / ``vmax`` fix it). DAAM's draws into ``ax``
        and returns nothing; this returns ``(fig, ax)``, as every plot of ours."""
        from .report.figures import Panel, plot_map, scale_of

        pixels = load_image(image, self.heatmap.shape[-1])
        low, high = scale_of(self.heatmap, zero=False)
        title = f"{self.word}: attention during generation"
        panel = Panel(
            title,
            self.heatmap,
            low if vmin is None else vmin,
            high if vmax is None else vmax,
            ATTENTION_UNIT,
            over=True,
        )
        return plot_map(pixels, panel, ax)


def _resize(heat: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(h, w)`` to ``size`` bilinearly; values kept, not totals (attention, not nats)."""
    if tuple(heat.shape) == tuple(size):
        return heat
    return F.interpolate(heat[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]


@contextlib.contextmanager
def trace(pipeline: Any, **model_kwargs: Any) -> Iterator[Trace]:
    """Trace one generation of ``pipeline`` (SD 1.x / 2.x / XL, SD3, Flux) in the block: see the
    module's docstring. One prompt, one square image of any size the model takes; the model is
    then read at the generation's size, T5 length and guidance value. ``model_kwargs`` go to
    :class:`~infodecomp.models.DiffusersModel`."""
    model = DiffusersModel.from_pipeline(pipeline, **model_kwargs)
    tc = Trace(model)
    net = model.network
    scheduler = pipeline.scheduler
    originals = {name: getattr(pipeline, name) for name in ("encode_prompt", "prepare_latents")}
    original_step = scheduler.step
    t5_tokens: list[int] = []

    # Wrappers keep the signatures: pipelines inspect them (e.g. whether step takes a generator).
    @functools.wraps(originals["encode_prompt"])
    def encode_prompt(*args: Any, **kwargs: Any) -> Any:
        prompt = kwargs.get("prompt", args[0] if args else None)
        out = originals["encode_prompt"](*args, **kwargs)
        if tc.prompt is None and isinstance(prompt, (str, list)):
            tc.prompt = prompt if isinstance(prompt, str) else prompt[0]
            tc._embedding = out[0][0].detach()
            if "max_sequence_length" in kwargs:
                t5_tokens.append(kwargs["max_sequence_length"])
        return out

    @functools.wraps(originals["prepare_latents"])
    def prepare_latents(*args: Any, **kwargs: Any) -> Any:
        tc._start(args, kwargs)
        out = originals["prepare_latents"](*args, **kwargs)
        tc._size_from(out)
        return out

    @functools.wraps(original_step)
    def step(*args: Any, **kwargs: Any) -> Any:
        # The last step's sample is the final latent: what the pipeline decodes (or returns).
        out = original_step(*args, **kwargs)
        tc._last_sample = out[0][:1].detach()
        return out

    def collect_rows(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        # The prompt's rows, by their text embedding (not the negative prompt's under CFG).
        hidden = kwargs.get("encoder_hidden_states")
        if hidden is None or tc._embedding is None:
            tc.attention.rows = None
            return
        same = (hidden - tc._embedding.to(hidden)).flatten(1).abs().amax(1) == 0
        tc.attention.rows = same.cpu()
        tc.attention.n_rows += int(same.sum())

    patches = [
        (pipeline, "encode_prompt", encode_prompt),
        (pipeline, "prepare_latents", prepare_latents),
        (scheduler, "step", step),
    ]
    hook = net.module.register_forward_pre_hook(collect_rows, with_kwargs=True)
    with contextlib.ExitStack() as stack:
        stack.callback(hook.remove)
        for owner, name, fn in patches:
            stack.enter_context(_patched(owner, name, fn))
        stack.enter_context(
            capture(net.module, net.is_text_attention, net.text_attention, tc.attention)
        )
        yield tc
    tc._finish(pipeline, model_kwargs, t5_tokens[0] if t5_tokens else None)


@contextlib.contextmanager
def _patched(owner: Any, name: str, value: Any) -> Iterator[None]:
    """``owner.name`` is ``value`` within the block, then exactly what it was (an instance
    attribute put back, or none): nested traces and earlier patches survive."""
    had = name in vars(owner)
    before = vars(owner).get(name)
    object.__setattr__(owner, name, value)  # past a pipeline's __setattr__ (its config)
    try:
        yield
    finally:
        if had:
            object.__setattr__(owner, name, before)
        else:
            object.__delattr__(owner, name)
