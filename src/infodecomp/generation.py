"""Images through a pipeline's own sampler, written with what made them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .report.pictures import image_png
from .results import output_folder

# The folder generate_images writes whole: its marker and its files (beside the images).
GENERATED = ("generate.json", ("generate.json",))


def generate_images(
    model: Any,
    prompts: list[str],
    out: str | Path,
    *,
    seed: int = 0,
    steps: int | None = None,
    guidance_scale: float | None = None,
) -> list[dict[str, Any]]:
    """One image per prompt with the pipeline's own ``__call__`` (its scheduler and defaults,
    seeded), written whole into ``out`` as ``image_000.png``, ... with ``generate.json`` (model,
    sampler settings, each file's prompt and seed). ``model``: a loaded
    :class:`~infodecomp.models.DiffusersModel`. Returns the records of ``generate.json``."""
    if not hasattr(model, "generate_with_pipeline"):  # the exact world model has no sampler
        raise ValueError(
            f"{getattr(model, 'name', type(model).__name__)} has no pipeline to generate with: "
            "give a diffusers model ('bundled', a folder or a cached id)"
        )
    prompts = [p.strip() for p in prompts]
    if not prompts or not all(prompts):
        raise ValueError("a prompt is empty")
    for prompt in prompts:
        model.check_prompt(prompt)
    images = [
        model.generate_with_pipeline(prompt, seed, steps, guidance_scale) for prompt in prompts
    ]
    records = [
        {"file": f"image_{i:03d}.png", "prompt": p, "seed": seed} for i, p in enumerate(prompts)
    ]
    doc = {
        "model": model.name,
        "model_revision": model.revision,
        "family": model.family,
        **model.sampling_settings(steps, guidance_scale),
        "images": records,
    }
    with output_folder(out, *GENERATED) as folder:  # whole or not at all
        for record, image in zip(records, images, strict=True):
            (folder / record["file"]).write_bytes(image_png(image, image.shape[-1]))
        (folder / "generate.json").write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    return records
