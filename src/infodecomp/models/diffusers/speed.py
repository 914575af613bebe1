"""The GPU path of a diffusers network: fused attention, channels-last and ``torch.compile``.

None of them changes what is computed, only how: the numbers agree with the plain network's to
float rounding (tested on tiny pipelines). :meth:`DiffusersModel.accelerate` applies them;
``load_model(..., compile=True)`` and the commands' ``--compile`` call it.

* Fused attention: diffusers (>= 0.2x, on torch 2) builds its attention layers with processors
  that call ``torch.nn.functional.scaled_dot_product_attention`` (``AttnProcessor2_0``, SD3's
  ``JointAttnProcessor2_0``, Flux's dispatcher); a pipeline set back to the classic processors
  (``set_default_attn_processor()``: explicit softmax, one more (B, heads, N, L) tensor) gets
  the fused ones again.
* Channels-last: the memory format that tensor-core convolutions take without transposes; for
  convolutional networks (UNets) only. A transformer's work is in linear layers and attention.
* ``torch.compile`` of the network (the UNet or transformer; the text encoders run once per
  prompt, their outputs are cached). The first call of each input shape compiles (tens of
  seconds to minutes); a batch of another size (the last, partial call of an estimate) compiles
  once more, with dynamic shapes.

Attention maps (:meth:`DiffusersModel.collect_attention`, DAAM-style) replace the text-attention
processors for the block and record inside them: those calls run the uncompiled network (a
compiled graph cannot record, and changing processors under it would recompile it each time),
with the fused processors wrapped, so the maps and the outputs are those of the plain network.
"""

from __future__ import annotations

from typing import Any

import torch

CONVOLUTIONAL = ("UNet2DConditionModel", "UNet2DModel")


def fused_attention(module: Any) -> int:
    """Put diffusers' fused (SDPA) processors in place of its classic ones in ``module``;
    returns how many were swapped (0 where they are fused already, diffusers' default)."""
    from diffusers.models import attention_processor as ap

    swaps = {ap.AttnProcessor: ap.AttnProcessor2_0}
    if hasattr(ap, "AttnAddedKVProcessor2_0"):
        swaps[ap.AttnAddedKVProcessor] = ap.AttnAddedKVProcessor2_0
    processors = getattr(module, "attn_processors", None)
    if not processors:
        return 0
    new = {name: swaps[type(p)]() if type(p) in swaps else p for name, p in processors.items()}
    swapped = sum(type(p) in swaps for p in processors.values())
    if swapped:
        module.set_attn_processor(new)
    return swapped


def attention_kind(module: Any) -> str:
    """How the network's attention runs: ``"fused (SDPA)"``, ``"classic"`` (explicit softmax)
    or ``"mixed"`` / ``"custom"``."""
    from diffusers.models import attention_processor as ap

    processors = list(getattr(module, "attn_processors", {}).values())
    classic = (ap.AttnProcessor, ap.AttnAddedKVProcessor)
    n_classic = sum(isinstance(p, classic) for p in processors)
    if n_classic == 0:
        return "fused (SDPA)"
    return "classic" if n_classic == len(processors) else "mixed"


def is_convolutional(module: Any) -> bool:
    return type(module).__name__ in CONVOLUTIONAL


def channels_last(module: Any) -> None:
    """``module``'s 4-D weights in channels-last memory format (in place)."""
    module.to(memory_format=torch.channels_last)


def compiled(
    module: Any, backend: Any = "inductor", mode: str | None = None, dynamic: bool | None = None
) -> Any:
    """``torch.compile(module)``: a callable sharing ``module``'s weights (the module itself is
    left uncompiled, for the calls that collect attention)."""
    return torch.compile(module, backend=backend, mode=mode, dynamic=dynamic)


class Compilable:
    """What a network adapter holds for the GPU path: its compiled module, if any, and whether
    the calls now must run the plain one (attention maps being collected)."""

    module: Any
    compiled: Any = None
    eager: bool = False

    def runner(self) -> Any:
        """The module to call: the compiled one unless none or the calls must run eager."""
        return self.module if self.eager or self.compiled is None else self.compiled
