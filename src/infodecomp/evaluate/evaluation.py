"""One call per evaluation: pick the data and the model, fix the settings, run, summarize."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .. import ddim, sequential
from ..batching import DEFAULT_IN_FLIGHT
from ..results import versions
from ..sampling import Sampling, check_sampling
from . import (
    compositional,
    datasets,
    interaction,
    intervention,
    localization,
    perturbations,
    released,
    world_data,
)
from .common import load_evaluated
from .items import PROTOCOLS
from .runner import _stderr, process_state, run

# Items of the world's data per evaluation unless --limit says otherwise.
WORLD_ITEMS = {"compositional": 24, "localization": 40, "intervention": 24, "interaction": 36}
FORMATS = tuple(dict.fromkeys(f for formats in released.TASK_FORMATS.values() for f in formats))
EVALUATIONS = {
    "compositional": compositional,
    "localization": localization,
    "intervention": intervention,
    "interaction": interaction,
}


def evaluate(
    task: str,
    out: str | Path,
    *,
    model: str = "bundled",
    data: str = "world",
    split: str = "test",
    data_format: str | None = None,
    image_root: str | None = None,
    coco_captions: str | None = None,
    limit: int | None = None,
    sample: int | None = None,
    sampling: Sampling | None = None,
    ddim_steps: int = ddim.DEFAULT_STEPS,
    estimator: str | None = None,
    ranking: str | None = None,
    report_mi: bool = False,
    protocol: str = "ours",
    tagger: Callable[[str], list[tuple[str, str]]] | None = None,
    generated: bool = False,
    device: str | None = "auto",
    dtype: torch.dtype | None = None,
    compile: bool = False,
    skip_bad: bool = False,
    in_flight: int = DEFAULT_IN_FLIGHT,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any] | None:
    """Run the evaluation ``task`` (``"compositional"``, ``"localization"``, ``"intervention"``,
    ``"interaction"``)
    of ``model`` on ``data`` into the folder ``out`` and return its summary (``None`` on the
    processes other than the main one under Accelerate).

    Args:
        task: which evaluation.
        out: output folder (``rows.jsonl``, ``summary.json``, ``settings.json``); a rerun with
            the same settings resumes, with other settings it is refused.
        model: ``"bundled"``, ``"exact"`` (the shapes world's two models) or a diffusers folder
            or cached hub id.
        data: ``"world"`` (built with known answers), ``"world-correlated"`` (the same from the
            world whose colours depend on shapes) or a data file.
        split: the world's split (``"train"``, ``"validation"``, ``"test"``).
        data_format: ``"jsonl"``, ``"aro"`` (ARO's VG-Relation / VG-Attribution JSON),
            ``"aro-parquet"`` (a parquet copy of them, images inside; a file or a folder of
            shards), ``"aro-order"`` (COCO-Order / Flickr30k-Order from BLIP's Karpathy test
            JSON), ``"winoground"`` (``examples.jsonl``), ``"winoground-parquet"`` (the hub's
            parquet copy) or ``"coco"`` (instances JSON;
            captions in ``coco_captions``); default: told from the file's content
            (``released.detect_format``).
        image_root: folder that image paths are relative to (default: the data file's folder;
            for ARO and Winoground its ``images`` folder if there is one).
        coco_captions: COCO captions JSON (with ``data_format="coco"``).
        limit: at most this many items (the first ones; the world's items do not change with it).
        sample: this many items drawn at random (seeded by the sampling seed, by a hash of
            each id: a larger ``sample`` keeps the smaller one's items, so a run can grow).
        sampling: the draws of every item (:class:`~infodecomp.Sampling`; default 256 per item,
            or per image for localization and interventions, seed 0, on the model's trained
            log-SNR range); an item's draws are keyed by its id.
        ddim_steps: DDIM steps each way (DAAM's maps, interventions).
        estimator: the fixed compositional ranking's score (``"standard"``, the log-likelihood
            ratio,
            or ``"orthogonal"``, the paper's score); default: ``"orthogonal"`` under the paper's
            protocol, else ``"standard"``; the fixed ranking measures and shows both. For
            ``"interaction"``, the estimator of every quantity (default ``"standard"``: each
            image's own values).
        ranking: compositional items: ``"sequential"`` (the default; each item drawn in stages
            until its leader is decided, at most ``sampling.draws``: :mod:`infodecomp.sequential`)
            or ``"fixed"`` (``sampling.draws`` for every item, every caption and the
            unconditional: both scores and every caption's MI; the default under the paper's
            protocol, and for Winoground's 2x2 groups, whose image score compares one
            caption's MI across images).
        report_mi: with ``ranking="sequential"``, also each caption's own MI (from the true
            caption's, measured on two conditions' draws, plus the ranking's margins).
        tagger: ``text -> [(token, Penn Treebank tag), ...]`` for the word-order perturbations
            of ``"aro-order"`` data (default: spaCy's ``en_core_web_sm``, as ARO); its name is
            recorded in the settings.
        generated: interventions on the world: images each model generates from recorded noise
            (no inversion) instead of the world's draws.
        device, dtype: where (``"auto"``: CUDA when torch sees it; under Accelerate each
            process's GPU) and in which precision the model runs.
        compile: the network on the GPU path (``torch.compile``, fused attention,
            channels-last: :func:`~infodecomp.load_model`); not a setting of the rows (their
            numbers agree to float rounding), so a run may resume with or without it.
        skip_bad: record and skip bad items instead of stopping at the first.
        in_flight: items measured at once, their denoiser calls merged into full batches
            (:mod:`~infodecomp.batching`); 1 measures one item after another. Not a
            setting of the rows: a run repeated with the same one is bit for bit the same, and
            with another (or resumed, or sharded) agrees to float rounding.
        progress: progress bar (on a terminal) or periodic log lines.
        log: where messages go (default: standard error).
    """
    log = log or _stderr
    if task not in EVALUATIONS:
        raise ValueError(f"unknown evaluation {task!r}; choose one of {tuple(EVALUATIONS)}")
    if isinstance(ddim_steps, bool) or not isinstance(ddim_steps, int) or ddim_steps < 2:
        raise ValueError(f"ddim_steps must be an integer >= 2, got {ddim_steps!r}")
    for name, value in (("limit", limit), ("sample", sample)):
        bad_int = isinstance(value, bool) or not isinstance(value, int) or value < 1
        if value is not None and bad_int:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
    if limit is not None and sample is not None:
        raise ValueError("give `limit` (the first items) or `sample` (a random subset), not both")
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {PROTOCOLS}")
    sampling = check_sampling(sampling)
    if estimator is not None and estimator not in ("standard", "orthogonal"):
        raise ValueError(f"unknown estimator {estimator!r}; choose 'standard' or 'orthogonal'")
    if task != "compositional":
        estimator = estimator or "standard"
        if sampling.targeted and protocol == "paper":
            raise ValueError(
                "a precision target (`target_se`, `target_rel`) sets the draws of values; the "
                "paper's protocol takes the same draws for every item"
            )
    if isinstance(in_flight, bool) or not isinstance(in_flight, int) or in_flight < 1:
        raise ValueError(f"`in_flight` must be a positive integer, got {in_flight!r}")
    if task == "interaction" and protocol == "paper":
        raise ValueError(
            "the interaction evaluation has no published protocol (DiffusionPID's code is not "
            "public): leave `protocol` as 'ours'"
        )
    if generated and (task != "intervention" or data not in world_data.WORLD_DATA):
        raise ValueError("generated applies to interventions on the world's data")
    n_world = limit or max(sample or 0, WORLD_ITEMS[task])
    items, bad, data_settings = _items(
        task,
        data,
        split,
        data_format,
        image_root,
        coco_captions,
        n_world,
        skip_bad,
        generated,
        protocol=protocol,
        tagger=tagger,
    )
    if data_settings.get("format") == "aro-order":
        data_settings["tagger"] = _name_of(tagger)
    if task == "compositional":
        # Winoground's image score compares one caption's MI across images: it needs the fixed
        # ranking. Told from every item of the data, so a run's default does not change as
        # --limit or --sample grows.
        grouped = any(getattr(item, "group", None) is not None for item in items)
        ranking, estimator = _ranking(ranking, protocol, estimator, sampling, report_mi, grouped)
    if limit:
        items = items[:limit]
    if sample:
        items = random_subset(items, sample, sampling.seed)
    for source, message in bad:
        log(f"skipped {source}: {message}")
    if not items:
        raise ValueError(f"no items to evaluate in {data}")

    rank, n_proc, _, _ = process_state()
    if device in (None, "auto") and n_proc > 1 and torch.cuda.is_available():
        from accelerate import PartialState

        device = str(PartialState().device)  # this process's GPU
    evaluated = load_evaluated(model, device=device, dtype=dtype, compile=compile)
    reference = None
    exact_of_data = {"world": "exact", "world-correlated": "exact-correlated"}.get(data)
    if exact_of_data and not evaluated.is_exact:  # the exact model of its world
        reference = load_evaluated(exact_of_data)
    elif exact_of_data and evaluated.is_exact and model != exact_of_data:
        log(
            f"infodecomp: note: {model!r} is the exact model of another world than {data!r}'s "
            f"(its own is {exact_of_data!r})"
        )
    # Resolved once for the evaluated model; the exact reference takes the same draws.
    sampling = sampling.resolve(evaluated.denoiser)
    settings = {
        "task": task,
        **data_settings,
        "limit": limit,
        "sample": sample,
        "protocol": protocol,
        "sampling": sampling.describe(),
        # Only what changes this evaluation's rows (a rerun must match these).
        **(
            {"estimator": estimator, "ranking": ranking, "report_mi": report_mi}
            | ({"sequential_rule": sequential.RULE} if ranking == "sequential" else {})
            if task == "compositional"
            else {"ddim_steps": ddim_steps}
        ),
        **({"estimator": estimator} if task == "interaction" else {}),
        **evaluated.describe(),
        "reference_label": reference.label if reference else None,
        "dtype": str(dtype or torch.float32).removeprefix("torch."),
        "versions": versions(),
    }
    return run(
        EVALUATIONS[task].make_task(evaluated, sampling, settings, reference),
        items,
        out,
        settings,
        skip_bad=skip_bad,
        progress=progress,
        log=log,
        bad_data=bad,
        in_flight=in_flight,
    )


def _name_of(tagger: Callable[..., Any] | None) -> str:
    """How the settings name a tagger (a rerun must use the same one)."""
    if tagger is None:
        return f"spaCy {perturbations.SPACY_MODEL}"
    return f"{getattr(tagger, '__module__', '?')}.{getattr(tagger, '__qualname__', tagger)}"


def random_subset(items: list[Any], n: int, seed: int) -> list[Any]:
    """``n`` of ``items`` drawn at random, in their order: those whose SHA-256 of
    ``"{seed}:{id}"`` is smallest, so the draw depends on the ids alone (not on the order or the
    number of items) and a larger ``n`` keeps a smaller one's items."""

    def key(item: Any) -> bytes:
        return hashlib.sha256(f"{seed}:{item.id}".encode()).digest()

    chosen = {id(item) for item in sorted(items, key=key)[:n]}
    return [item for item in items if id(item) in chosen]


def _items(
    task: str,
    data: str,
    split: str,
    data_format: str | None,
    image_root: str | None,
    coco_captions: str | None,
    n: int,
    skip_bad: bool,
    generated: bool = False,
    protocol: str = "ours",
    tagger: Callable[[str], list[tuple[str, str]]] | None = None,
) -> tuple[list[Any], list[tuple[str, str]], dict[str, Any]]:
    """The items of ``data`` (``n`` of the world's), the bad lines, and the data's settings
    (paths resolved, so a run resumed from another folder has the same settings)."""
    if data in world_data.WORLD_DATA:
        prior = world_data.WORLD_DATA[data]
        if generated:
            items = world_data.intervention_items(split, n, generated=True, prior=prior)
            return items, [], {"data": data, "split": split, "generated": True}
        build = {
            "compositional": world_data.compositional_items,
            "localization": world_data.localization_items,
            "intervention": world_data.intervention_items,
            "interaction": world_data.interaction_items,
        }[task]
        return build(split, n, prior=prior), [], {"data": data, "split": split}
    path = Path(data)
    if not path.is_file() and not path.is_dir():  # a folder: a parquet copy's shards
        raise ValueError(f"data {data!r} is neither 'world', 'world-correlated' nor a file")
    extra: dict[str, Any] = {}
    fmt = data_format or released.detect_format(path, task)
    if fmt not in FORMATS:
        raise ValueError(f"unknown data format {fmt!r}; choose one of {FORMATS}")
    if task == "compositional" and fmt in released.TASK_FORMATS[task]:
        items, bad = released.read(fmt, path, image_root, skip_bad, tagger)
        pairs = items and all("_" in (item.type or "") for item in items)
        if fmt in ("aro", "aro-parquet") and pairs:  # VG-Attribution pairs
            extra["macro_min_items"] = datasets.ARO_MIN_PAIR_ITEMS
    elif task == "localization" and fmt == "jsonl":
        items, bad = datasets.read_localization(path, image_root, skip_bad=skip_bad)
    elif task in ("localization", "intervention") and fmt == "coco":
        if coco_captions is None or image_root is None:
            raise ValueError("COCO data needs `coco_captions` and `image_root`")
        read = datasets.read_coco if task == "localization" else datasets.read_coco_interventions
        items, bad = read(path, coco_captions, image_root, skip_bad=skip_bad, protocol=protocol)
    elif task == "intervention" and fmt == "jsonl":
        items, bad = datasets.read_intervention(path, image_root, skip_bad=skip_bad)
    elif task == "interaction" and fmt == "jsonl":
        items, bad = datasets.read_interaction(path, image_root, skip_bad=skip_bad)
    else:
        raise ValueError(f"the {task} evaluation does not read {fmt!r} data")
    root = str(Path(image_root).resolve()) if image_root is not None else None
    settings = {"data": str(path.resolve()), "format": fmt, "image_root": root, **extra}
    if coco_captions:
        settings["coco_captions"] = str(Path(coco_captions).resolve())
    return items, bad, settings


def _ranking(
    ranking: str | None,
    protocol: str,
    estimator: str | None,
    sampling: Sampling,
    report_mi: bool,
    grouped: bool,
) -> tuple[str, str]:
    """The compositional ranking and its estimator, checked: sequential by default; fixed
    under the paper's protocol and for Winoground's groups (each caption's MI is needed)."""
    if ranking is None:
        ranking = "fixed" if protocol == "paper" or grouped else "sequential"
    if ranking not in ("sequential", "fixed"):
        raise ValueError(f"unknown ranking {ranking!r}; choose 'sequential' or 'fixed'")
    if ranking == "sequential" and protocol == "paper":
        raise ValueError(
            "the paper's protocol takes the same draws for every item: no `sequential`"
        )
    if ranking == "sequential" and grouped:
        raise ValueError(
            "Winoground's groups are scored with each caption's MI (its image score compares "
            "images): ranking='fixed', not 'sequential'"
        )
    if ranking == "sequential" and estimator is not None:
        raise ValueError(
            "`estimator` picks the fixed ranking's score; the sequential ranking uses the "
            "standard score's margins: give ranking='fixed' (CLI: --fixed)"
        )
    if sampling.targeted and (ranking == "sequential" or protocol == "paper"):
        raise ValueError(
            "a precision target (`target_se`, `target_rel`) sets the draws of values; the "
            + (
                "sequential ranking draws until the ranking is decided: give ranking='fixed' "
                "(CLI: --fixed)"
                if ranking == "sequential"
                else "paper's protocol takes the same draws for every item"
            )
        )
    if estimator is None:  # Kong et al. rank ARO's captions by the orthogonal estimate
        estimator = "orthogonal" if protocol == "paper" else "standard"
    if ranking == "sequential" and sampling.draws < sequential.FIRST_LOOK:
        raise ValueError(
            f"the sequential ranking needs at least {sequential.FIRST_LOOK} draws (`samples`), "
            f"got {sampling.draws} (its first look: fewer under-cover): more, or ranking='fixed' "
            "(CLI: --fixed)"
        )
    if report_mi and ranking != "sequential":
        raise ValueError(
            "`report_mi` goes with the sequential ranking (the fixed one measures every "
            "caption's MI already)"
        )
    return ranking, estimator
