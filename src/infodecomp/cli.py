"""The ``infodecomp`` command. Thin: parses arguments, calls the library, prints."""

from __future__ import annotations

import argparse
import errno
import json
import math
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch
from safetensors import SafetensorError

from ._version import __version__
from .estimators import DenoiserOutputError
from .explanation import context_warnings, explain
from .files import temporary
from .images import load_image
from .loading import EXACT_MODELS, MODEL_NAMES, load_model, resolve_device
from .models.diffusers.transformer import FLUX_GUIDANCE
from .results import OUR_FILES, check_output_folder, entry_warnings, format_entry, output_folder
from .sampling import DEFAULT_DRAWS, MAX_SEED, Sampling
from .words import check_text, words_to_explain

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# The (marker, files) of the folder `reference` writes whole.
REFERENCE = ("nll.json", ("nll.json", "standard.json", "orthogonal.json"))


def _integer_type(low: int, what: str, high: float = float("inf")) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return value


def finite_float(text: str) -> float:
    """An argparse type: a finite number (``inf`` and ``nan`` refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


# argparse types: counts and sizes, noise draws (a standard error needs two), seeds (what
# every generator takes: torch's below 2**64).
positive_int = _integer_type(1, "a positive integer")
draws_int = _integer_type(2, "an integer >= 2 (a standard error needs two draws)")
seed_int = _integer_type(0, "an integer from 0 to 2**64 - 1", MAX_SEED)


class _Parser(argparse.ArgumentParser):
    """Errors in one line (the usage is one --help away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(
        prog="infodecomp",
        description="Information decomposition of diffusion models (values in nats).",
    )
    parser.add_argument("--version", action="version", version=f"infodecomp {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    ref = commands.add_parser(
        "reference",
        help="estimate information on an exact reference model and compare with the truth",
        description="Draw x from a labelled Gaussian mixture (shape x colour) whose answers are "
        "known, estimate -log p(x), i(x; label) and i(x; colour | shape) from its denoiser, and "
        "print them beside the exact values.",
    )
    _sampling_arguments(ref, "draws per estimate")
    ref.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ref.add_argument("--out", type=Path, help="also save every estimate as JSON in this folder")

    heat = commands.add_parser(
        "heatmap",
        help="where and how much each word of a prompt tells about an image",
        description="Per-word conditional mutual information i(x; word | rest of the prompt) and "
        "the prompt's mutual information with the image, their pixel maps and the "
        "cross-attention baseline, with standard errors. Writes result.json, maps.safetensors, "
        "<word>.heat_map.png, grid.png and report.html into --out. With --prompts, each prompt "
        "of a file into --out/<id>/ and a row per prompt into --out/rows.jsonl (rerun the same "
        "command to resume).",
    )
    _model_arguments(heat, image="optional")
    which = heat.add_mutually_exclusive_group(required=True)
    which.add_argument("--prompt", help="the image's caption")
    which.add_argument(
        "--prompts",
        type=Path,
        help="a file of prompts: text, one per line, or JSON lines with 'prompt' and optional "
        "'image' (overrides --image), 'seed', 'words', 'id'",
    )
    heat.add_argument(
        "--words",
        help="comma-separated words or phrases to explain (default: all); a word counts every "
        "occurrence, 'a#2' only its second",
    )
    _sampling_arguments(heat, "noise draws (per prompt with --prompts)")
    heat.add_argument(
        "--context",
        choices=["remove", "pad"],
        default="remove",
        help="take a word out by deleting it (default) or padding its tokens",
    )
    heat.add_argument(
        "--check-context",
        action="store_true",
        help="also take each word out the other way (padding or deleting) on the same draws "
        "and warn where the two CMIs disagree beyond their 95%% intervals (a context out of "
        "distribution for the model); one more condition per word",
    )
    heat.add_argument("--no-attention", action="store_true", help="skip the attention baseline")
    _figure_arguments(heat)
    heat.add_argument("--out", type=Path, required=True, help="output folder")

    from .report.figures import FORMATS as FIGURE_FORMATS

    pair = commands.add_parser(
        "interaction",
        help="how two words of a prompt share what they tell about an image (redundancy, synergy)",
        description="For each --pair w1,w2 (rest = the prompt without both): i(x; w1 | rest), "
        "i(x; w2 | rest), i(x; w1, w2 | rest), the interaction information i(x; w1; w2 | rest) "
        "= their sum minus the joint (positive: redundant, negative: synergistic) with a pixel "
        "map that sums to it, each word given the other, and DiffusionPID's atoms (redundancy "
        "= min, unique, synergy; their pixel maps do not sum to the image's), all with 95%% "
        "intervals, every pair on the same draws. Writes result.json, maps.safetensors, a "
        "figure per pair and report.html into --out.",
    )
    _model_arguments(pair)
    pair.add_argument("--prompt", required=True, help="the image's caption")
    pair.add_argument(
        "--pair",
        action="append",
        required=True,
        metavar="W1,W2",
        help="two words or phrases of the prompt, comma-separated (repeat for more pairs); a "
        "word counts every occurrence, 'a#2' only its second",
    )
    _sampling_arguments(pair, "noise draws")
    pair.add_argument(
        "--estimator",
        choices=["standard", "orthogonal"],
        default="standard",
        help="standard (default): this image's log-probability combination; orthogonal: equal "
        "to it only on average over images",
    )
    pair.add_argument(
        "--context",
        choices=["remove", "pad"],
        default="remove",
        help="take words out by deleting them (default) or padding their tokens",
    )
    pair.add_argument(
        "--format",
        dest="figure_format",
        choices=FIGURE_FORMATS,
        default="png",
        help="figure files: png (300 dpi, default), or pdf / svg (vector, for papers)",
    )
    pair.add_argument("--out", type=Path, required=True, help="output folder")

    score = commands.add_parser(
        "score",
        help="rank prompts by how well they fit an image (choose among captions)",
        description="The prompts ranked by log p(x|prompt): their log-likelihood ratios on "
        "shared noise, drawn in stages until an anytime-valid 95% interval decides the leader "
        "(at most --samples draws), with each ratio's interval and verdict. --fixed: "
        "i(x; prompt) = log p(x|prompt) - log p(x) for each prompt on the same --samples "
        "draws, with 95% intervals, the highest first, then the winner's log-likelihood ratio "
        "over each other prompt (one prompt: its MI).",
    )
    _model_arguments(score)
    score.add_argument(
        "--prompt", action="append", required=True, help="a candidate caption (repeat for several)"
    )
    _sampling_arguments(score, "noise draws (the most, in stages; every one with --fixed)")
    score.add_argument(
        "--estimator",
        choices=["standard", "orthogonal"],
        help="with --fixed: standard (default): log p(x|prompt) - log p(x), the score to rank "
        "captions with; orthogonal: the paper's score, which is large for a caption that "
        "contradicts the image (the winner's log-likelihood ratios stay standard)",
    )
    score.add_argument(
        "--fixed",
        action="store_true",
        help="every prompt's MI i(x; prompt) on the same --samples draws, and the winner's "
        "log-likelihood ratios (one prompt: always). Default: the prompts ranked in stages "
        "(at most --samples draws) until an anytime-valid 95%% interval of each "
        "log-likelihood ratio decides the leader",
    )
    score.add_argument(
        "--report-mi",
        action="store_true",
        help="with the ranking in stages: also each prompt's own MI i(x; prompt) (the first "
        "prompt's on two conditions' draws, plus the ranking's margins)",
    )
    score.add_argument(
        "--json",
        action="store_true",
        help="print JSON instead of a table: the ranking's decision, draws, plausible leaders, "
        "leader and margins (each pair's log-likelihood ratio); with --fixed the estimate "
        "(columns: the prompts, then each pair of prompts), ranking (prompt indices, winner "
        "first) and paired",
    )

    gen = commands.add_parser(
        "generate",
        help="an image for a prompt through the pipeline's own sampler",
        description="Generate one image per --prompt with the pipeline's own __call__ (its "
        "scheduler and defaults), seeded; writes PNG files into --out with generate.json.",
    )
    _model_arguments(gen, image=None, exact=False)
    gen.add_argument("--prompt", action="append", required=True, help="a prompt (repeatable)")
    gen.add_argument("--seed", type=seed_int, default=0, help="random seed (default 0)")
    gen.add_argument("--steps", type=positive_int, help="sampling steps (default: pipeline's)")
    gen.add_argument(
        "--guidance-scale", type=finite_float, help="classifier-free guidance (default: pipeline's)"
    )
    gen.add_argument("--out", type=Path, required=True, help="output folder")

    train = commands.add_parser(
        "train-world",
        help="train the bundled text-to-image model on the synthetic world (resumable)",
        description="Train the small pixel-space text-to-image model from scratch on the "
        "captioned shapes world. Checkpoints go to OUT/checkpoint every --checkpoint-every steps; "
        "running the same command again resumes. The final model is written to OUT/model.",
    )
    train.add_argument("--out", type=Path, required=True, help="training folder")
    train.add_argument(
        "--steps", type=positive_int, default=6000, help="optimizer steps (default 6000)"
    )
    train.add_argument(
        "--batch-size", type=positive_int, default=64, help="batch size (default 64)"
    )
    train.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (default 5e-4)")
    train.add_argument("--seed", type=seed_int, default=0, help="random seed (default 0)")
    train.add_argument(
        "--checkpoint-every", type=positive_int, default=250, help="steps between checkpoints"
    )

    demo = commands.add_parser(
        "demo",
        help="word heat maps on the bundled model, beside the exact world model (the main job)",
        description="Generate an image for a caption with the bundled shapes-world model (or take "
        "--image), estimate the caption's MI and each word's CMI with standard errors, the heat "
        "maps and the attention baseline, and the exact world model's answers side by side.",
    )
    demo.add_argument("--out", type=Path, default=Path("infodecomp-demo"), help="output folder")
    demo.add_argument(
        "--caption", default="a red circle left of a blue square", help="a caption of the world"
    )
    demo.add_argument("--image", help="explain this image instead of a draw of the world")
    _sampling_arguments(
        demo, "noise draws", seed="random seed of the draws, the scene and the generated image"
    )
    _figure_arguments(demo)

    _eval_arguments(commands)

    args = parser.parse_args(argv)
    run = {
        "reference": run_reference,
        "demo": run_demo,
        "heatmap": run_heatmap,
        "interaction": run_interaction,
        "score": run_score,
        "generate": run_generate,
        "train-world": run_train_world,
        "eval": run_eval,
    }[args.command]
    try:
        return run(args)
    except (ValueError, DenoiserOutputError, OSError, SafetensorError) as err:
        print(f"infodecomp: error: {_as_flags(_error_line(err))}", file=sys.stderr)
        return 2
    except ImportError as err:
        if "pip install" not in str(err):  # not an optional package we name: a real bug
            raise
        print(f"infodecomp: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("infodecomp: interrupted", file=sys.stderr)
        return 130


def _as_flags(message: str) -> str:
    """A library message with its arguments (written `like_this`) named as this command's
    options (--like-this)."""
    return re.sub(r"`([a-z_]+)`", lambda m: "--" + m.group(1).replace("_", "-"), message)


def _error_line(err: Exception) -> str:
    """The message of an error, an ``OSError`` as ``file: reason`` (a full disk: what to do)."""
    if not isinstance(err, OSError) or err.errno is None:
        return str(err)
    line = f"{err.filename}: {err.strerror}" if err.filename else str(err.strerror)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        line += " (free some space, then run the same command again)"
    return line


def _eval_arguments(commands: Any) -> None:
    from .batching import DEFAULT_IN_FLIGHT
    from .ddim import DEFAULT_STEPS

    ev = commands.add_parser(
        "eval",
        help="evaluate a model over a dataset (compositional tests, localization, interventions, "
        "word-pair interactions)",
        description="Measure a model over a dataset, one row per item in OUT/rows.jsonl (written "
        "as it goes; rerun the same command to resume after a kill), then OUT/summary.json and a "
        "table. On the world's data the exact world model is measured beside the model. Shard "
        "over processes or GPUs with `accelerate launch -m infodecomp eval ...`.",
    )
    kinds = ev.add_subparsers(dest="evaluation", required=True, parser_class=_Parser)
    texts = {
        "compositional": "does the model rank the true caption first? (relations, attribute "
        "binding, word order; ARO, Winoground-style groups)",
        "localization": "do a word's information and attention maps find its object? (mIoU, "
        "pixel accuracy, mAP)",
        "intervention": "does a word's information predict what changes when it is removed?",
        "interaction": "how do pairs of words share what they tell? (interaction information, "
        "DiffusionPID's redundancy and synergy, averaged per group: a bias study)",
    }
    for name, text in texts.items():
        sub = kinds.add_parser(name, help=text, description=text)
        sub.add_argument("--out", type=Path, required=True, help="output folder")
        sub.add_argument(
            "--model",
            default="bundled",
            help=f"{_model_names()}, a diffusers folder or a cached id (default bundled)",
        )
        sub.add_argument(
            "--data",
            default="world",
            help="'world' (default; answers known), 'world-correlated' or a data file",
        )
        formats = {
            "compositional": "jsonl, aro (ARO's VG-Relation / VG-Attribution JSON), "
            "aro-parquet (a parquet copy of them), aro-order (COCO-/Flickr30k-Order from "
            "BLIP's Karpathy test JSON), winoground (examples.jsonl) or winoground-parquet (the "
            "hub's copy); default: from the file's content",
            "localization": "jsonl or coco (instances JSON; with --coco-captions)",
            "intervention": "jsonl or coco (instances JSON; with --coco-captions)",
            "interaction": 'jsonl: {"image" or "seed", "caption", "pair": [w1, w2] or "pairs", '
            '"group"?, "id"?}',
        }[name]
        sub.add_argument("--format", dest="data_format", help=f"data format: {formats}")
        sub.add_argument(
            "--image-root",
            help="folder the data's image paths are relative to (default: the data file's "
            "folder, or its images/ folder for ARO and Winoground; COCO: required)",
        )
        if name in ("localization", "intervention"):
            sub.add_argument("--coco-captions", help="COCO captions JSON (--format coco)")
        sub.add_argument(
            "--split",
            default="test",
            choices=["train", "validation", "test"],
            help="the world's split (default test)",
        )
        subset = sub.add_mutually_exclusive_group()
        subset.add_argument("--limit", type=positive_int, help="the first N items only")
        subset.add_argument(
            "--sample",
            type=positive_int,
            metavar="N",
            help="N items drawn at random (seeded by --seed; a larger N keeps a smaller one's)",
        )
        sub.add_argument(
            "--protocol",
            choices=["ours", "paper"],
            default="ours",
            help="ours (default; the table says what it changes and why) or paper: the "
            "published protocol point by point (preprocessing, ties, items, threshold grid)",
        )
        _sampling_arguments(
            sub,
            "noise draws per item"
            + (" (the most, in stages; every one with --fixed)" if name == "compositional" else ""),
        )
        if name == "intervention":
            sub.add_argument(
                "--generated",
                action="store_true",
                help="on the world: each model generates its own image from recorded noise and "
                "edits start from that noise (no inversion)",
            )
        if name == "interaction":
            sub.add_argument(
                "--estimator",
                choices=["standard", "orthogonal"],
                help="standard (default): each image's log-probability combinations; orthogonal: "
                "equal to them only on average over images",
            )
        if name != "compositional":
            sub.add_argument(
                "--ddim-steps",
                type=positive_int,
                default=DEFAULT_STEPS,
                help=f"DDIM steps each way (default {DEFAULT_STEPS}; interaction: generating "
                "the images of seeds)",
            )
        else:
            sub.add_argument(
                "--estimator",
                choices=["standard", "orthogonal"],
                help="with --fixed: the ranking score, standard (log p(x|caption) - log p(x); "
                "the default) or orthogonal (the paper's score; the default with --protocol "
                "paper); both are measured and shown",
            )
            sub.add_argument(
                "--fixed",
                action="store_true",
                help="--samples draws for every item, every caption and the unconditional: "
                "both scores and every caption's MI (implied by --protocol paper). Default: "
                "each item drawn in stages until its leader is decided (at most --samples; the "
                "standard score's margins, anytime-valid intervals)",
            )
            sub.add_argument(
                "--report-mi",
                action="store_true",
                help="without --fixed: also each caption's own MI (the true caption's, on two "
                "conditions' draws, plus the ranking's margins)",
            )
        _device_arguments(sub)
        sub.add_argument(
            "--skip-bad", action="store_true", help="record and skip bad items instead of stopping"
        )
        sub.add_argument(
            "--in-flight",
            type=positive_int,
            default=DEFAULT_IN_FLIGHT,
            metavar="K",
            help=f"items measured at once, their denoiser calls merged into full batches "
            f"(default {DEFAULT_IN_FLIGHT}; 1: one after another); rows agree to float rounding "
            "whatever K, a resume may use another",
        )
    summ = kinds.add_parser(
        "summarize",
        help="rebuild OUT/summary.json and OUT/report.html from the rows; print the table",
    )
    summ.add_argument("out", type=Path, help="an evaluation's output folder")


def run_eval(args: argparse.Namespace) -> int:
    from .ddim import DEFAULT_STEPS
    from .evaluate import EVALUATIONS, summarize
    from .evaluate.evaluation import evaluate

    if args.evaluation == "summarize":
        _quiet_libraries()
        summarize(args.out, log=print)
        print(f"report: {args.out / 'report.html'}")
        return 0
    _announce_device(args.device)
    writable_folder(args.out, marker="settings.json", files=None)
    _quiet_libraries()
    if args.compile and (note := _compile_note(args)):
        print(f"infodecomp: note: --compile: {note}", file=sys.stderr)
    summary = evaluate(
        args.evaluation,
        args.out,
        model=args.model,
        data=args.data,
        split=args.split,
        data_format=args.data_format,
        image_root=args.image_root,
        coco_captions=getattr(args, "coco_captions", None),
        limit=args.limit,
        sample=args.sample,
        protocol=args.protocol,
        sampling=_sampling(args),
        ddim_steps=getattr(args, "ddim_steps", DEFAULT_STEPS),
        estimator=getattr(args, "estimator", None),
        ranking="fixed" if getattr(args, "fixed", False) else None,
        report_mi=getattr(args, "report_mi", False),
        generated=getattr(args, "generated", False),
        device=args.device,
        dtype=DTYPES.get(args.dtype),
        compile=args.compile,
        skip_bad=args.skip_bad,
        in_flight=args.in_flight,
    )
    if summary is not None:
        print(EVALUATIONS[args.evaluation].table(summary))
        print(
            f"rows in {args.out}/rows*.jsonl; summary: {args.out / 'summary.json'}; "
            f"report: {args.out / 'report.html'}"
        )
    return 0


def _figure_arguments(sub: argparse.ArgumentParser) -> None:
    from .report.figures import FORMATS

    sub.add_argument(
        "--scale",
        choices=["word", "shared"],
        default="word",
        help="colour scale of each word's figure: its own (default; the range is written on it) "
        "or one shared by all words (grid.* always compares words on one scale)",
    )
    sub.add_argument(
        "--format",
        dest="figure_format",
        choices=FORMATS,
        default="png",
        help="figure files: png (300 dpi, default), or pdf / svg (vector, for papers)",
    )


def _model_names(exact: bool = True) -> str:
    """The names load_model knows, each with what it is, for a --model help (``exact``: with
    the exact world models)."""
    names = [n for n in MODEL_NAMES if exact or n not in EXACT_MODELS]
    return ", ".join(f"'{n}' ({MODEL_NAMES[n]})" for n in names)


def _model_arguments(
    sub: argparse.ArgumentParser, image: str | None = "required", exact: bool = True
) -> None:
    """--model and its loading options; --image ``"required"``, ``"optional"`` or absent;
    ``exact``: the command also takes the exact world models (they have no pipeline)."""
    sub.add_argument(
        "--model",
        required=True,
        help=f"{_model_names(exact)}, a diffusers folder or a Hugging Face id in the local cache",
    )
    if image:
        sub.add_argument("--image", required=image == "required", help="the image file")
    _device_arguments(sub)
    sub.add_argument(
        "--variant", help="weights variant, e.g. fp16 (default: found when it is the only one)"
    )
    sub.add_argument(
        "--image-size",
        type=positive_int,
        help="image side in pixels (default: the model's own; SD3 / Flux take multiples of 16)",
    )
    sub.add_argument(
        "--guidance",
        type=finite_float,
        default=FLUX_GUIDANCE,
        help="guidance value fed to a guidance-distilled model such as Flux-dev "
        f"(default {FLUX_GUIDANCE:g})",
    )


def _sampling_arguments(
    sub: argparse.ArgumentParser, draws: str, seed: str = "random seed of the draws"
) -> None:
    """The options every estimate shares; :func:`_sampling` makes them a :class:`Sampling`."""
    group = sub.add_argument_group("sampling")
    group.add_argument(
        "--samples",
        type=draws_int,
        default=DEFAULT_DRAWS,
        help=f"{draws} (default {DEFAULT_DRAWS})",
    )
    group.add_argument("--seed", type=seed_int, default=0, help=f"{seed} (default 0)")
    group.add_argument(
        "--target-se",
        type=positive_float,
        metavar="NATS",
        help="plan each image's draws for a standard error of at most NATS on every reported "
        "value (plus --target-rel times the value), --samples at most; planned from draws that "
        "are then spent, so values stay unbiased; values the plan left above it are flagged",
    )
    group.add_argument(
        "--target-rel",
        type=positive_float,
        metavar="R",
        help="plan each image's draws for a standard error of at most R times each value "
        "(e.g. 0.05), --samples at most (values near 0 then take --samples)",
    )
    group.add_argument(
        "--batch-size",
        type=positive_int,
        help="rows per denoiser call (default: what fits the device); never changes the numbers",
    )


def _sampling(args: argparse.Namespace) -> Sampling:
    return Sampling(
        draws=args.samples,
        seed=args.seed,
        batch_size=args.batch_size,
        target_se=args.target_se,
        target_rel=args.target_rel,
    )


def _device_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--device",
        default="auto",
        help="torch device: auto (default: CUDA when torch sees a GPU, else cpu), cpu, cuda, "
        "cuda:1, mps",
    )
    sub.add_argument("--dtype", choices=sorted(DTYPES), help="weights dtype (default float32)")
    sub.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the network, with fused attention and (UNets) channels-last "
        "weights: faster on a GPU for long runs, the same numbers to float rounding; the first "
        "calls compile (about a minute or more); attention maps are collected uncompiled",
    )


def _announce_device(name: str) -> str:
    """Check the device before any slow loading and say, in the first line, where it runs."""
    device = resolve_device(name)
    where = torch.cuda.get_device_name(device) if device.startswith("cuda") else None
    how = "chosen automatically" if name == "auto" else "as asked"
    print(
        f"infodecomp: running on {device}{f' ({where})' if where else ''}, {how}", file=sys.stderr
    )
    return device


def _load_model(args: argparse.Namespace) -> Any:
    if getattr(args, "image", None) is not None:  # (--prompts checks its images itself)
        load_image(args.image, 8)  # an unreadable image fails before the (slow) model load
    device = _announce_device(args.device)
    _quiet_libraries()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_model(
            args.model,
            device=device,
            dtype=DTYPES.get(args.dtype),
            variant=args.variant,
            image_size=args.image_size,
            guidance_scale=args.guidance,
            compile=args.compile,
        )
    for message in dict.fromkeys(str(w.message) for w in caught if _ours(w)):
        print(f"infodecomp: warning: {message}", file=sys.stderr)
    if args.compile and (note := _compile_note(args)):
        print(f"infodecomp: note: --compile: {note}", file=sys.stderr)
    return model


def _compile_note(args: argparse.Namespace) -> str | None:
    """Where --compile does not reach this command's network calls, or None."""
    if args.command == "generate":
        return (
            "the pipeline's own sampler calls its network uncompiled (fused attention and "
            "channels-last still apply)"
        )
    if args.command == "eval" and args.evaluation in ("localization", "intervention"):
        return (
            f"{args.evaluation} collects attention maps (its baseline) on every item, with the "
            "uncompiled network: this evaluation runs uncompiled"
        )
    if args.command == "heatmap" and not args.no_attention:
        return (
            "attention maps are collected with the uncompiled network, so these heat maps run "
            "uncompiled; add --no-attention to run them compiled"
        )
    return None


def _ours(caught: warnings.WarningMessage) -> bool:
    """A warning of infodecomp's (said in one line), not a library's loading chatter."""
    return "infodecomp" in caught.filename


def _quiet_libraries() -> None:
    import diffusers
    import transformers

    warnings.filterwarnings("ignore", module="huggingface_hub")
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def writable_folder(
    path: Path, marker: str = "result.json", files: Sequence[str] | None = OUR_FILES
) -> Path:
    """Check --out before the computation, not after it: new, empty or ours
    (:func:`~infodecomp.results.check_output_folder`), and writable."""
    check_output_folder(path, marker, files)
    # Probed where the folder is or would be created, creating nothing: a run that fails later
    # leaves no empty --out (and processes under Accelerate do not race on it).
    where = next(p for p in (path, *path.parents) if p.exists())
    try:
        if not where.is_dir():
            raise NotADirectoryError(20, "not a folder", str(where))
        probe = temporary(where / "write-test")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"cannot write into --out {str(path)!r}: {err.strerror or err}") from None
    return path


def run_heatmap(args: argparse.Namespace) -> int:
    if args.prompts is not None:
        return run_heatmap_prompts(args)
    if args.image is None:
        raise ValueError("--prompt needs --image (the image to explain)")
    writable_folder(args.out)
    words = None if args.words is None else [w for w in args.words.split(",") if w.strip()]
    if words == []:
        raise ValueError("--words names no word (leave it out to explain every word)")
    words_to_explain(check_text(args.prompt.strip()), words)  # before the (slow) model load
    model = _load_model(args)
    result = explain(
        model,
        args.image,
        args.prompt,
        words,
        sampling=_sampling(args),
        context=args.context,
        check_context=args.check_context,
        attention=not args.no_attention,
        _warn=False,
    )
    for line in context_warnings(result.context_check, args.context):
        print(f"infodecomp: warning: {line}", file=sys.stderr)
    result.estimate.settings["image"] = str(args.image)
    with output_folder(args.out) as folder:
        result.save(folder, scale=args.scale, fmt=args.figure_format)
    report = args.out / "report.html"
    labels = ["whole prompt (MI)", *(f"{word} | rest (CMI)" for word in result.words)]
    width = max(map(len, labels)) + 2
    print(f"{'':<{width}}nats [95% interval]")
    mi = result.entry()
    _print_entry(labels[0], mi, width)
    for label, word in zip(labels[1:], result.words, strict=True):
        _print_entry(label, result.entry(word), width, mi["value"])
    print(
        f"{result.estimate.n_evaluations} denoiser evaluations, seed {args.seed}; report: {report}"
    )
    return 0


def run_interaction(args: argparse.Namespace) -> int:
    from .interactions import ATOMS, interaction

    pairs = [_pair(text) for text in args.pair]
    prompt = check_text(args.prompt.strip())
    for w1, w2 in pairs:
        words_to_explain(prompt, [w1, w2])  # before the (slow) model load
    writable_folder(args.out)
    model = _load_model(args)
    result = interaction(
        model,
        args.image,
        prompt,
        pairs,
        estimator=args.estimator,
        sampling=_sampling(args),
        context=args.context,
    )
    for est in result.estimates.values():
        est.settings["image"] = str(args.image)
    with output_folder(args.out) as folder:
        result.save(folder, fmt=args.figure_format)
    rows = [
        ("i(x; w1 | rest)", "first"),
        ("i(x; w2 | rest)", "second"),
        ("i(x; w1, w2 | rest)", "joint"),
        ("interaction i(x; w1; w2 | rest)", "interaction"),
        ("i(x; w1 | rest, w2)", "first_given_second"),
        ("i(x; w2 | rest, w1)", "second_given_first"),
        *((f"PID {name.replace('_', ' ')}", name) for name in ATOMS),
    ]
    width = max(len(label) for label, _ in rows) + 2
    for p, (w1, w2) in enumerate(result.pairs):
        print(f"\nw1 = {w1}, w2 = {w2} ({args.estimator} estimator)")
        print(f"{'':<{width}}nats [95% interval]")
        for label, name in rows:
            _print_entry(label, result.entry(p, name), width)
    print(
        f"{result.estimates['joint'].n_evaluations} denoiser evaluations, seed {args.seed}; "
        f"report: {args.out / 'report.html'}"
    )
    return 0


def _pair(text: str) -> tuple[str, str]:
    """One --pair value as two words."""
    words = [w.strip() for w in text.split(",")]
    if len(words) != 2 or not all(words):
        raise ValueError(
            f"--pair takes two words separated by a comma, e.g. blue,triangle; got {text!r}"
        )
    return words[0], words[1]


def run_heatmap_prompts(args: argparse.Namespace) -> int:
    from .evaluate.prompts import explain_prompts, read_prompts, table

    items, data = read_prompts(args.prompts, image=args.image, seed=args.seed, words=args.words)
    writable_folder(args.out, marker="settings.json", files=None)
    summary = explain_prompts(
        _load_model(args),
        items,
        args.out,
        data=data,
        sampling=_sampling(args),
        context=args.context,
        check_context=args.check_context,
        attention=not args.no_attention,
        scale=args.scale,
        fmt=args.figure_format,
    )
    if summary is not None:
        print(table(summary))
        print(f"each prompt's files in {args.out}/<id>/; rows: {args.out / 'rows.jsonl'}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from .world.demo import run_demo as demo

    writable_folder(args.out)
    if args.image:
        load_image(args.image, 8)
    _announce_device("auto")
    _quiet_libraries()
    summary = demo(
        args.out,
        args.caption,
        args.image,
        sampling=_sampling(args),
        scale=args.scale,
        fmt=args.figure_format,
    )
    exact, gen = summary["world_model"], summary["generated"]
    print(
        f"Generated for {args.caption!r} (seed {args.seed}): objects "
        f"{'right' if gen['objects_fit_caption'] else 'WRONG'}, relation "
        f"{'right' if gen['fits_caption'] else 'wrong'} (world checker); see generated.png"
    )
    explained = "the given image" if args.image else "a draw of the world for the caption"
    print(
        f"Explained: {explained} (explained.png; it "
        f"{'fits' if exact['image_fits_caption'] else 'does NOT fit'} the caption, by the world "
        "checker). Nats [95% interval], orthogonal estimator: its mean over images, not each "
        "image's value, is the exact log-ratio"
    )
    print(f"{'':<16}{'bundled model':<24}{'exact world model':<24}exact log-ratio")
    rows = [("whole caption", summary["mi"], exact["mi"], None)]
    rows += [
        (f"{w} | rest", summary["cmi"][w], exact["cmi"][w], (summary["mi"], exact["mi"]))
        for w in summary["cmi"]
    ]
    for name, ours, truth, mis in rows:
        warnings = "".join(f"  ({w})" for w in entry_warnings(ours))
        ours_text = format_entry(ours, mis and mis[0]["value"], flags="none")
        truth_text = format_entry(truth, mis and mis[1]["value"], flags="none")
        ratio = format_entry(truth["exact_log_ratio"])
        print(f"{name:<16}{ours_text:<24}{truth_text:<24}{ratio:<15}{warnings}")
    print(
        f"{summary['n_evaluations']} + {exact['n_evaluations']} denoiser evaluations, seed "
        f"{args.seed}; report: {args.out / 'report.html'}"
    )
    return 0


def run_generate(args: argparse.Namespace) -> int:
    from .generation import GENERATED, generate_images

    prompts = [check_text(p.strip()) for p in args.prompt]
    if not all(prompts):
        raise ValueError("a prompt is empty")
    writable_folder(args.out, *GENERATED)
    model = _load_model(args)
    records = generate_images(
        model,
        prompts,
        args.out,
        seed=args.seed,
        steps=args.steps,
        guidance_scale=args.guidance_scale,
    )
    for record in records:
        print(f"{record['file']}: {record['prompt']!r}")
    return 0


def run_train_world(args: argparse.Namespace) -> int:
    from .world.train import train_world

    _quiet_libraries()
    model = train_world(
        args.out,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
    )
    print(f"trained model written to {model}")
    return 0


def run_score(args: argparse.Namespace) -> int:
    from .ranking import rank_captions

    prompts = [check_text(p.strip()) for p in args.prompt]
    if not all(prompts):
        raise ValueError("a prompt is empty")
    fixed = args.fixed or len(prompts) == 1  # one prompt: nothing to rank, its MI
    if args.report_mi and fixed:
        raise ValueError("--report-mi goes with the ranking in stages (--fixed reports every MI)")
    if not fixed and args.estimator is not None:
        raise ValueError(
            "--estimator picks the score of --fixed; the ranking in stages uses the standard "
            "score's log-likelihood ratios: add --fixed"
        )
    if not fixed and (args.target_se or args.target_rel):
        raise ValueError(
            "the ranking in stages draws until the leader is decided: --target-se and "
            "--target-rel go with --fixed (they set the precision of values)"
        )
    model = _load_model(args)
    if not fixed:
        return _score_sequentially(args, model, prompts)
    args.estimator = args.estimator or "standard"
    ranked = rank_captions(
        model, args.image, prompts, estimator=args.estimator, sampling=_sampling(args)
    )
    est, prompts = ranked.estimate, ranked.captions
    if args.json:
        doc = est.to_dict()
        doc.update(
            model=model.name,
            image=str(args.image),
            prompts=prompts,
            ranking=ranked.order,
            paired=ranked.paired,
            paired_estimator="standard",
        )
        print(json.dumps(doc, indent=2))
        return 0
    name = "i^s(x; prompt)" if args.estimator == "standard" else "i^o(x; prompt)"
    width = max(len("prompt"), *(len(p[:47]) for p in prompts)) + 2
    print(f"{'prompt':<{width}}{name} [95% interval]")
    for j in ranked.order:
        print(f"{prompts[j][:47]:<{width}}{format_entry(est.entry(0, j))}")
    if ranked.paired:
        print(
            "winner minus each other: log p(x|winner) - log p(x|other) [95% interval] "
            "(standard estimator, same draws)"
        )
        numbers = [format_entry(entry) for entry in ranked.paired]
        column = max(len(t) for t in numbers) + 2
        for entry, text in zip(ranked.paired, numbers, strict=True):
            other = prompts[entry["other"]][:47]
            print(f"{'- ' + other:<{width + 2}}{text:<{column}}{entry['verdict']}")
    print(
        f"nats, {args.estimator} estimator; {est.n_evaluations} denoiser evaluations, "
        f"seed {args.seed}"
    )
    return 0


def _score_sequentially(args: argparse.Namespace, model: Any, prompts: list[str]) -> int:
    from .explanation import as_text_denoiser
    from .sequential import caption_mi, margin_of, rank_sequentially

    model = as_text_denoiser(model)
    for prompt in prompts:
        if hasattr(model, "check_prompt"):
            model.check_prompt(prompt)
    x = model.encode_image(args.image)
    key = f"score:{args.image}"
    sampling = _sampling(args)
    ranked = rank_sequentially(model, x, prompts, sampling=sampling, key=key)
    if args.report_mi:
        ranked["mi"], rows = caption_mi(model, x, prompts, ranked, sampling=sampling, key=key)
        ranked["n_evaluations"] += rows
    if args.json:
        print(
            json.dumps(
                {"model": model.name, "image": str(args.image), "prompts": prompts, **ranked},
                indent=2,
            )
        )
        return 0
    n, leader, plausible = len(prompts), ranked["leader"], ranked["plausible"]

    def versus(c: int, ref: int) -> dict[str, Any]:
        return margin_of(ranked["margins"], c, ref)

    # The reference: the decided leader, else the plausible leader ahead of the others.
    ref = leader
    if ref is None:
        ref = max(plausible, key=lambda c: sum(versus(c, o)["value"] for o in plausible if o != c))
    verdict = {
        "decided": f"decided after {ranked['draws']} draws",
        "futile": f"undecided after {ranked['draws']} draws: a decision by --samples draws "
        "is unlikely",
        "maximum": f"undecided at the maximum, {ranked['draws']} draws (--samples)",
    }[ranked["decision"]]
    head = f"leader: {prompts[ref][:47]}" if leader is not None else "no single leader"
    print(f"{head} ({verdict})")
    width = max(len("prompt"), *(len(p[:47]) for p in prompts)) + 2
    rows = {c: versus(c, ref) for c in range(n) if c != ref}
    numbers = {c: format_entry(e, flags="none") for c, e in rows.items()}
    column = max([len("0 (reference)"), *(len(t) for t in numbers.values())]) + 2
    print(f"{'prompt':<{width}}{'log p(x|prompt) - log p(x|reference)':<{column}}")

    def _verdict(c: int) -> str:
        if prompts[c] == prompts[ref]:
            return "same text as the reference"
        if c in plausible:
            return "plausible leader: not decided"
        ahead = [b for b in range(n) if b != c and versus(b, c)["ci95"][0] > 0]
        if ref in ahead:
            return "behind, decided"
        return f"behind {prompts[ahead[0]][:30]!r}, decided"

    status = "leader" if leader is not None else "plausible leader"
    print(f"{prompts[ref][:47]:<{width}}{'0 (reference)':<{column}}{status}")
    for c in sorted(rows, key=lambda c: -rows[c]["value"]):
        print(f"{prompts[c][:47]:<{width}}{numbers[c]:<{column}}{_verdict(c)}")
    if args.report_mi:
        print(f"{'prompt':<{width}}i(x; prompt) [95% interval]")
        for prompt, entry in zip(prompts, ranked["mi"], strict=True):
            print(f"{prompt[:47]:<{width}}{format_entry(entry, flags='none')}")
    print(
        "nats, the standard estimator's margins on shared draws, anytime-valid 95% intervals; "
        f"{ranked['n_evaluations']} denoiser evaluations, seed {args.seed}"
    )
    return 0


def _print_entry(
    name: str, entry: dict[str, Any], width: int, reference: float | None = None
) -> None:
    """One table row: value, 95% interval and any warnings (nats)."""
    print(f"{name:<{width}}{format_entry(entry, reference)}")


def run_reference(args: argparse.Namespace) -> int:
    from .models.reference import reference_check

    if args.out is not None:
        writable_folder(args.out, *REFERENCE)
    check = reference_check(_sampling(args))
    if args.out:
        with output_folder(args.out, *REFERENCE) as folder:  # whole or not at all
            for name, est in check.estimates.items():
                est.save(folder / name)
    if args.json:
        table = [
            {
                "quantity": name,
                "estimate": est.value[0, j].item(),
                "stderr": est.stderr[0, j].item(),
                "exact": exact,
            }
            for name, est, j, exact in check.rows
        ]
        doc = {
            "x_label": check.label,
            "units": "nats",
            "table": table,
            "estimates": {name: est.to_dict() for name, est in check.estimates.items()},
        }
        print(json.dumps(doc, indent=2))
        return 0
    print(
        f"Reference model: 6-component Gaussian mixture in 8 dimensions; x drawn from {check.label}"
    )
    print(f"{'quantity':<26}{'estimate [95% interval]':<26}{'exact':>8}{'z':>7}")
    for name, est, j, exact in check.rows:
        value, se = est.value[0, j].item(), est.stderr[0, j].item()
        exact_txt = (
            f"{format_entry(exact):>8}{(value - exact) / se:>7.2f}" if exact is not None else ""
        )
        print(f"{name:<26}{format_entry(est.entry(0, j)):<26}{exact_txt}")
    print("(i^o has no pointwise target: its mean over x equals the mean of i^s)")
    nll = check.estimates["nll"]
    evaluations = sum(est.n_evaluations for est in (nll, check.estimates["standard"]))
    print(
        f"nats; {args.samples} draws per estimate, seed {args.seed}, "
        f"{evaluations} denoiser evaluations, log-SNR in "
        f"[{nll.settings['logsnr']['low']:.1f}, {nll.settings['logsnr']['high']:.1f}]"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
