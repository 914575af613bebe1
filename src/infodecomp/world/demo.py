"""The main job: word heat maps on the bundled model, beside the world's exact answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..explanation import Explanation, explain, word_contexts
from ..logsnr import TruncatedLogistic
from ..models.diffusers import DiffusersModel
from ..report.pictures import image_png
from ..results import Estimate, format_entry, output_folder
from .model import WorldModel
from .scenes import assignment, parse, word_masks

BUNDLED = Path(__file__).parent / "bundled"
BUNDLED_NAME = "infodecomp/shapes-world-16px"


def load_bundled(device: str | None = None, dtype: torch.dtype | None = None) -> DiffusersModel:
    """The text-to-image model shipped with the package (trained by ``infodecomp train-world``)."""
    if not (BUNDLED / "model_index.json").exists():
        raise ValueError(f"the bundled model is missing from {BUNDLED}")
    model = DiffusersModel.from_pretrained(BUNDLED, device=device, dtype=dtype)
    model.name = BUNDLED_NAME
    return model


def run_demo(
    out: str | Path,
    caption: str = "a red circle left of a blue square",
    image: Any = None,
    n_samples: int = 256,
    seed: int = 0,
    progress: bool = True,
    scale: str = "word",
    fmt: str = "png",
) -> dict[str, Any]:
    """Explain ``caption`` on an image of the world that fits it (a seeded draw of a scene the
    caption describes, unless ``image`` is given), with the bundled model and with the exact world
    model, with the same seed and log-SNR range (each model's adaptive draws are its own). Also
    generate an image for the
    caption with the bundled model and check it. Writes the heat-map outputs (figures on the
    colour ``scale`` of :meth:`Explanation.save`, in ``fmt``), a side-by-side figure,
    ``generated.png`` and the summary.

    Returns the summary written to ``out/result.json`` (plus ``"world_model"`` and
    ``"generated"`` sections).
    """
    model, world = load_bundled(), WorldModel()
    parse(caption)  # a word the world does not know fails here, in one line
    given = image is not None
    if image is None:
        drawn, _ = world.sample(1, seed=seed, cond=caption)
        image = drawn[0].float()
    generated = model.generate([caption], seed=seed)
    res = explain(model, image, caption, n_samples=n_samples, seed=seed, progress=progress)
    # The exact model scores what the world drew (float64, never clamped); a given image as the
    # bundled model saw it.
    x = drawn[:1] if not given else res.image[None].double()

    exact = exact_cmi(world, x, res, n_samples, seed, model.logsnr_range, progress)
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


def exact_cmi(
    world: WorldModel,
    x: torch.Tensor,
    res: Explanation,
    n_samples: int,
    seed: int,
    logsnr_range: tuple[float, float],
    progress: bool = False,
) -> Estimate:
    """The exact world model's estimates for the pairs of an explanation (the caption against
    nothing, then against each word removed), with its maps, with the same seed and log-SNR range
    as the bundled model. ``x``: the image, shape ``(1, 3, H, W)``."""
    exact = explain(
        world,
        x[0],
        res.prompt,
        res.words,
        n_samples=n_samples,
        seed=seed,
        logsnr=TruncatedLogistic.from_range(*logsnr_range),
        attention=False,
        progress=progress,
    )
    return exact.estimate


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
