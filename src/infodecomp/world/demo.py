"""The main job: word heat maps on the bundled model, beside the world's exact answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..explanation import Explanation, explain, word_contexts
from ..loading import load_model
from ..report.pictures import image_png
from ..results import format_entry, output_folder
from ..sampling import Sampling, check_sampling
from .scenes import assignment, parse, word_masks


def run_demo(
    out: str | Path,
    caption: str = "a red circle left of a blue square",
    image: Any = None,
    sampling: Sampling | None = None,
    progress: bool = True,
    scale: str = "word",
    fmt: str = "png",
) -> dict[str, Any]:
    """Explain ``caption`` on an image of the world that fits it (a seeded draw of a scene the
    caption describes, unless ``image`` is given), with the bundled model and with the exact world
    model, on the same settings (each model's adaptive draws are its own). Also generate an image
    for the caption with the bundled model and check it. Writes the heat-map outputs (figures on
    the colour ``scale`` of :meth:`Explanation.save`, in ``fmt``), a side-by-side figure,
    ``generated.png`` and the summary.

    ``sampling``: the draws of both models (default ``Sampling()``: 256, seed 0, on the bundled
    model's trained log-SNR range, which the exact model shares); its seed also draws the scene
    and the generated image.

    Returns the summary written to ``out/result.json`` (plus ``"world_model"`` and
    ``"generated"`` sections).
    """
    sampling = check_sampling(sampling)
    seed = sampling.seed
    model, world = load_model("bundled"), load_model("exact")
    parse(caption)  # a word the world does not know fails here, in one line
    given = image is not None
    if image is None:
        drawn, _ = world.sample(1, seed=seed, cond=caption)
        image = drawn[0].float()
    generated = model.generate([caption], seed=seed)
    res = explain(model, image, caption, sampling=sampling, progress=progress)
    # The exact model scores what the world drew (float64, never clamped); a given image as the
    # bundled model saw it.
    x = drawn[:1] if not given else res.image[None].double()

    exact = explain(
        world, x[0], caption, res.words, sampling=sampling, attention=False, progress=progress
    ).estimate
    contexts = [None, *word_contexts(caption, res.words)]
    log_ratio = [
        (world.log_prob(x, caption) - world.log_prob(x, c)).item() for c in contexts
    ]  # exact pointwise i^s, whose mean over images the orthogonal estimate shares
    scene = world.classify(x)[0]
    fits = assignment(scene, parse(caption)) is not None
    masks = word_masks(scene, caption) if fits else {}

    summary = res.to_dict()
    summary["generated"] = {
        "seed": seed,
        "objects_fit_caption": world.fits(generated, [caption], relation=False).item(),
        "fits_caption": world.fits(generated, [caption]).item(),
        "scene": world.classify(generated)[0].factors(),
    }
    summary["explained_image"] = "given" if given else f"world draw for the caption, seed {seed}"
    summary["world_model"] = {
        "image_fits_caption": fits,
        "scene": scene.factors(),
        "mi": exact.entry(0, 0) | {"exact_log_ratio": log_ratio[0]},
        "cmi": {
            w: exact.entry(0, k) | {"exact_log_ratio": log_ratio[k]}
            for k, w in enumerate(res.words, start=1)
        },
        "n_evaluations": exact.n_evaluations,
        "settings": exact.settings,
    }
    # The explained image and, apart, what the bundled model draws for the caption.
    source = "given image" if given else f"a draw of the world for the caption (seed {seed})"
    figures = {
        f"explained.png ({source})": image_png(res.image, 256),
        f"generated.png (by the bundled model, seed {seed})": image_png(generated[0], 256),
    }
    n_pairs = 1 + len(res.words)
    columns = {
        "exact world model [95% interval]": [exact.entry(0, k) for k in range(n_pairs)],
        "exact log-ratio (the standard estimator's target; orthogonal values match it only on "
        "average over images)": log_ratio,
    }
    with output_folder(out) as folder:
        # The grid compares with the exact model and the ground truth.
        res.save(
            folder, figures, columns, scale=scale, fmt=fmt, grid=_comparison(res, exact, masks)
        )
        (folder / "result.json").write_text(json.dumps(summary, indent=2) + "\n")
        for name, data in figures.items():
            (folder / name.split(" ")[0]).write_bytes(data)
    return summary


def _comparison(res: Explanation, exact: Any, masks: dict[str, torch.Tensor]) -> Any:
    """The demo's grid: rows of the bundled model's CMI maps and the exact world model's (one
    colour scale for both), the attention maps and the ground truth. A matplotlib figure."""
    from ..report.figures import ATTENTION_UNIT, Panel, grid_figure, scale_of, warning_text

    bundled = {w: res.heat_map(w).float() for w in res.words}
    exact_maps = {w: exact.map[0, k].float() for k, w in enumerate(res.words, start=1)}
    low, high = scale_of(*bundled.values(), *exact_maps.values())

    def panels(maps: dict[str, torch.Tensor], est: Any = None, unit: str = "nats/pixel") -> list:
        """A row's panels; CMI rows (``est`` given) on the common scale, titled with values."""
        scale = (low, high) if est is not None else scale_of(*maps.values(), zero=unit == "mask")
        out = []
        for k, (w, heat) in enumerate(maps.items(), start=1):
            title, warning = w, ""
            if est is not None:
                entry, mi = est.entry(0, k), est.value[0, 0].item()
                title, warning = f"{w}\n{format_entry(entry, mi, 'none')}", warning_text(entry)
            out.append(Panel(title, heat, *scale, unit, warning=warning))
        return out

    attention = {w: res.attention_map(w) for w in res.words}
    rows = [
        ("bundled model CMI", panels(bundled, res.estimate)),
        ("exact world model CMI", panels(exact_maps, exact)),
        ("attention + information", panels(attention, None, ATTENTION_UNIT)),
    ]
    if masks:
        rows.append(
            ("ground truth", panels({w: m.float() for w, m in masks.items()}, None, "mask"))
        )
    heading = f"{res.prompt}: bundled model against the exact world model (nats, 95% intervals)"
    note = "both CMI rows share one colour scale; orthogonal estimator"
    return grid_figure(res.image, rows, heading, note)[0]
