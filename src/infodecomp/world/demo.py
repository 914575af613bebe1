"""The main job: word heat maps on the bundled model, beside the world's exact answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..estimators import TruncatedLogistic, conditional_mutual_info
from ..explain import Explanation, explain, word_contexts
from ..models.diffusers import DiffusersModel
from ..plotting import plain_text, plot_overlay, png_bytes
from ..results import Estimate
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
    n_samples: int = 128,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Explain ``caption`` on an image of the world that fits it (a seeded draw of a scene the
    caption describes, unless ``image`` is given), with the bundled model and with the exact world
    model, on the same noise draws and log-SNR distribution. Also generate an image for the
    caption with the bundled model and check it. Writes the heat-map outputs, a side-by-side
    figure, ``generated.png`` and the summary.

    Returns the summary written to ``out/result.json`` (plus ``"world_model"`` and
    ``"generated"`` sections).
    """
    model, world = load_bundled(), WorldModel()
    parse(caption)  # a word the world does not know fails here, in one line
    if image is None:
        drawn, _ = world.sample(1, seed=seed, cond=caption)
        image = drawn[0].float()
    generated = model.generate([caption], seed=seed)
    res = explain(model, image, caption, n_samples=n_samples, seed=seed, progress=progress)
    x = res.image[None].double()

    exact = exact_cmi(world, res, n_samples, seed, model.logsnr_range, progress)
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
    summary["world_model"] = {
        "image_fits_caption": fits,
        "scene": scene.factors(),
        "mi": {
            "value": exact.value[0, 0].item(),
            "stderr": exact.stderr[0, 0].item(),
            "exact_log_ratio": log_ratio[0],
        },
        "cmi": {
            w: {
                "value": exact.value[0, k].item(),
                "stderr": exact.stderr[0, k].item(),
                "exact_log_ratio": log_ratio[k],
            }
            for k, w in enumerate(res.words, start=1)
        },
        "n_evaluations": exact.n_evaluations,
        "settings": exact.settings,
    }
    out = Path(out)
    res.save(out)
    (out / "result.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "world_comparison.png").write_bytes(png_bytes(_comparison(res, exact, masks)[0]))
    fig, ax = plot_overlay(generated[0], torch.zeros(16, 16), f"generated: {caption}", alpha=0)
    (out / "generated.png").write_bytes(png_bytes(fig))
    return summary


def exact_cmi(
    world: WorldModel,
    res: Explanation,
    n_samples: int,
    seed: int,
    logsnr_range: tuple[float, float],
    progress: bool = False,
) -> Estimate:
    """The exact world model's estimates for the pairs of an explanation (the caption against
    nothing, then against each word removed), with its maps, on the same draws (seed) and log-SNR
    distribution as the bundled model."""
    x = res.image[None].double()
    contexts = [None, *word_contexts(res.prompt, res.words)]
    return conditional_mutual_info(
        world,
        x,
        [res.prompt] * len(contexts),
        contexts,
        n_samples=n_samples,
        seed=seed,
        logsnr=TruncatedLogistic.from_range(*logsnr_range),
        per_dim=True,
        sum_channels=True,
        progress=progress,
    )


def _comparison(res: Explanation, exact: Any, masks: dict[str, torch.Tensor]) -> tuple[Any, Any]:
    """Rows: bundled model's CMI maps, the exact world model's, attention, ground truth."""
    import matplotlib.pyplot as plt

    cols = len(res.words) + 1
    fig, axes = plt.subplots(4, cols, figsize=(2.8 * cols, 11), squeeze=False)
    rows = ["bundled model CMI", "exact world model CMI", "cross-attention", "ground truth"]
    for r, label in enumerate(rows):
        axes[r, 0].imshow(((res.image.permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy())
        axes[r, 0].set_title(label, fontsize=9)
        axes[r, 0].set_axis_off()
    for k, word in enumerate(res.words, start=1):
        value, se = res.cmi(word)
        plot_overlay(res.image, res.heat_map(word), f"{word}: {value:.2f} ± {se:.2f}", axes[0, k])
        ev, es = exact.value[0, k].item(), exact.stderr[0, k].item()
        plot_overlay(res.image, exact.map[0, k], f"{word}: {ev:.2f} ± {es:.2f}", axes[1, k])
        plot_overlay(res.image, res.attention_map(word), word, axes[2, k], colorbar_label="")
        if word in masks:
            plot_overlay(res.image, masks[word].float(), word, axes[3, k], colorbar_label="mask")
        else:
            axes[3, k].set_axis_off()
    fig.suptitle(plain_text(f"{res.prompt} (nats)"))
    fig.tight_layout()
    return fig, axes
