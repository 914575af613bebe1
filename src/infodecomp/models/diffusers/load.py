"""Loading a diffusers pipeline as diffusers users expect, offline, with one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

# Each supported pipeline needs a network, a scheduler and text encoding.
_NETWORKS = ("unet", "transformer")
_WEIGHT_NAMES = ("diffusion_pytorch_model", "model")


class ModelNotFoundError(ValueError):
    """The model is neither a local folder nor in the local Hugging Face cache."""


def load_pipeline(
    path_or_id: str | Path,
    *,
    torch_dtype: torch.dtype | None = None,
    variant: str | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    use_safetensors: bool | None = None,
) -> tuple[Any, dict[str, str | None]]:
    """The pipeline saved at ``path_or_id`` (a folder, or a hub id in the local cache; never
    downloaded), loaded by diffusers in ``torch_dtype`` from the start, and its provenance
    ``{"revision", "variant"}``.

    A folder whose network is saved only as one variant (e.g. ``*.fp16.safetensors``) loads that
    variant. Raises :class:`ModelNotFoundError` if the model is not there, ``ValueError`` with one
    line naming a missing component or a broken ``model_index.json``.
    """
    from diffusers import DiffusionPipeline

    source = str(path_or_id)
    folder, commit = _resolve(source, revision, cache_dir)
    index = _read_index(folder, source)
    _check_components(folder, index, source)
    _check_not_custom(index, source)
    variant = variant or _only_variant(folder, index)
    # Components saved as null (e.g. no VAE for a pixel-space model) are passed as None.
    absent = {k: None for k, v in _components(index).items() if v[0] is None}
    try:
        pipe = DiffusionPipeline.from_pretrained(
            folder,
            local_files_only=True,
            **{_dtype_keyword(): torch_dtype},
            variant=variant,
            use_safetensors=use_safetensors,
            **absent,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ImportError) as err:
        raise ValueError(f"cannot load the diffusers model {source!r}: {_first(err)}") from None
    except RuntimeError as err:  # e.g. weights that do not fit the config
        raise ValueError(f"cannot load the diffusers model {source!r}: {_first(err)}") from None
    return pipe, {"revision": commit, "variant": variant}


def _dtype_keyword() -> str:
    """diffusers' name for the loading dtype: ``dtype`` since it deprecated ``torch_dtype``
    (mid 2026, with the helper ``_resolve_dtype``), ``torch_dtype`` before."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401
    except ImportError:
        return "torch_dtype"
    return "dtype"


def check_dtype(dtype: Any) -> torch.dtype | None:
    """A torch dtype from a dtype or its name ("float16", "torch.bfloat16"); ``TypeError``
    otherwise."""
    if dtype is None or isinstance(dtype, torch.dtype):
        if dtype is not None and not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch dtype, got {dtype!r}")
        return dtype
    found = (
        getattr(torch, str(dtype).removeprefix("torch."), None) if isinstance(dtype, str) else None
    )
    if not isinstance(found, torch.dtype) or not found.is_floating_point:
        raise TypeError(
            f"dtype must be a floating torch dtype such as torch.float16, got {dtype!r}"
        )
    return found


def _resolve(source: str, revision: str | None, cache_dir: Any) -> tuple[str, str | None]:
    """The local folder of ``source`` and its commit (None for a plain folder)."""
    if Path(source).is_dir():
        if revision is not None:
            raise ValueError(
                f"revision {revision!r} given for the local folder {source!r}: a folder has no "
                "revisions (give a cached hub id, or no revision)"
            )
        return source, None
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            source, revision=revision, cache_dir=cache_dir, local_files_only=True
        )
    except Exception as err:  # huggingface_hub raises several kinds for "not there"
        raise ModelNotFoundError(
            f"model {source!r} not found: not a diffusers folder nor in the local Hugging Face "
            f"cache (infodecomp never downloads) [{type(err).__name__}]"
        ) from None
    return folder, Path(folder).name


def _read_index(folder: str, source: str) -> dict[str, Any]:
    path = Path(folder) / "model_index.json"
    if not path.is_file():
        raise ModelNotFoundError(
            f"model {source!r} not found: {source!r} has no model_index.json (not a diffusers "
            "pipeline folder)"
        )
    try:
        index = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{source!r}: model_index.json is not valid JSON ({err})") from None
    if not isinstance(index, dict) or "_class_name" not in index:
        raise ValueError(f"{source!r}: model_index.json has no _class_name (not a pipeline index)")
    return index


def _component(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2


def _components(index: dict[str, Any]) -> dict[str, list[Any]]:
    """The index's components: ``name: [library, class]`` entries. Keys starting with ``_``
    are the pipeline's own (``_class_name``, which a custom pipeline gives as ``[module,
    class]``; ``_diffusers_version``), not components."""
    return {k: v for k, v in index.items() if not k.startswith("_") and _component(v)}


def _check_components(folder: str, index: dict[str, Any], source: str) -> None:
    """One line naming what a text-to-image pipeline needs and the folder lacks."""
    components = _components(index)
    if not any(components.get(n, [None])[0] for n in _NETWORKS):
        raise ValueError(f"{source!r}: model_index.json names no unet or transformer")
    for needed in ("scheduler", "text_encoder", "tokenizer"):
        if not any(v[0] for k, v in components.items() if k.startswith(needed)):
            raise ValueError(f"{source!r}: model_index.json names no {needed}")
    missing = [
        k for k, v in components.items() if v[0] is not None and not (Path(folder) / k).is_dir()
    ]
    if missing:
        raise ValueError(
            f"{source!r} lacks the component folder(s) {', '.join(missing)} that its "
            "model_index.json names"
        )
    weightless = [
        k
        for k, v in components.items()
        if v[0] is not None
        and k.split("_")[0] in ("unet", "transformer", "vae", "text")
        and not any(p.suffix in (".safetensors", ".bin") for p in (Path(folder) / k).iterdir())
    ]
    if weightless:
        raise ValueError(
            f"{source!r}: no weights (*.safetensors or *.bin) in {', '.join(weightless)}"
        )


def _check_not_custom(index: dict[str, Any], source: str) -> None:
    """A custom pipeline (``_class_name`` ``[module, class]``) runs its folder's own code:
    refused with one line saying how to load it."""
    custom = index["_class_name"]
    if not isinstance(custom, str):
        module = custom[0] if isinstance(custom, list) and custom else custom
        raise ValueError(
            f"{source!r} is a custom pipeline (model_index.json's _class_name is {custom!r}, "
            f"code in {module}.py): infodecomp does not run a model folder's code; load it with "
            "DiffusionPipeline.from_pretrained(..., trust_remote_code=True) and wrap it with "
            "DiffusersModel.from_pipeline"
        )


def _only_variant(folder: str, index: dict[str, Any]) -> str | None:
    """The variant (e.g. "fp16") of the network's weights when they exist only as that variant
    (``diffusion_pytorch_model.fp16.safetensors``, sharded or not)."""
    for name in _NETWORKS:
        part = Path(folder) / name
        if not part.is_dir():
            continue
        variants = set()
        for path in part.iterdir():
            pieces = path.name.split(".")  # name[-shard].[variant[-shard].]suffix
            if pieces[-1] in ("safetensors", "bin") and pieces[0].split("-")[0] in _WEIGHT_NAMES:
                variants.add(pieces[1].split("-")[0] if len(pieces) == 3 else None)
        if len(variants) == 1 and None not in variants:
            return variants.pop()
    return None


def _first(err: BaseException) -> str:
    """The error's kind and the first line of its message (diffusers' can run to pages)."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"
