"""The evaluations on data in the published benchmarks' released layouts, made from the world.

Writes small datasets in the layouts their authors release (ARO's VG-Relation JSON with
``images/`` and boxes, ARO's COCO-Order from BLIP's Karpathy test JSON, Winoground's
``examples.jsonl`` with ``images/``, COCO instances and captions JSON with polygon and RLE masks)
into a temporary folder, from the shapes world so every answer is known; runs
``infodecomp.evaluate.evaluate`` on each with the bundled model on the CPU under both protocols;
prints one table: dataset / format, protocol, items, seconds per item (wall time of ``evaluate``
over its items, measured in this run, on this machine) and the headline with its 95% interval.

    python benchmarks/released_data.py [--items 8] [--samples N] [--out DIR]

On a machine whose cores other jobs share, run it with ``OMP_NUM_THREADS=1``: with torch's
default of one thread per core, the small denoiser batches here ran 5-10x slower whenever
another process held a core (results/released_data.txt was measured with one thread).

The world's images are 16x16; they are written 2x larger (nearest neighbour, so the model's
resize to 16 gives them back up to rounding) and, for ARO, pasted into a 48x40 canvas of grey
noise with the box around them, so ARO's box crop is exercised. Pixels are clamped to [-1, 1]
and rounded to 8 bits when written, as any image file must be (the world's draws are not
clamped). COCO-Order's perturbations need a POS tagger: ``evaluate(tagger=...)`` gets the
world's (colour words JJ, shape words NN, the rest DT or IN) instead of spaCy's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from infodecomp.evaluate import evaluate
from infodecomp.evaluate import world_data as wd
from infodecomp.evaluate.common import load_evaluated
from infodecomp.evaluate.metrics import format_metric
from infodecomp.sampling import Sampling
from infodecomp.world.scenes import (
    COLOURS,
    PIXEL_NOISE,
    SHAPES,
    SIZE,
    all_scenes,
    assignment,
    captions,
    object_mask,
    parse,
    render,
)

SCALE = 2  # the world's 16x16 images are written at 32x32
CANVAS = (48, 40)  # ARO's photos: (width, height); the 32x32 image pasted at BOX's corner
BOX = (8, 4, 32, 32)  # (x, y, w, h)
PROTOCOLS = ("ours", "paper")


# ------------------------------------------------------------------------------------- images


def to_pil(image: torch.Tensor, scale: int = SCALE) -> Image.Image:
    """A world image ``(3, H, W)`` in [-1, 1] as an 8-bit RGB image, ``scale`` times larger."""
    pixels = ((image.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    picture = Image.fromarray(pixels)
    return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)


def world_tagger(text: str) -> list[tuple[str, str]]:
    """Penn Treebank tags of a world caption: colours JJ, shapes NN, "a" DT, the rest IN."""
    tags = []
    for token in text.replace(".", " .").split():
        word = token.lower()
        tag = "JJ" if word in COLOURS else "NN" if word in SHAPES else "DT" if word == "a" else "IN"
        tags.append((token, tag))
    return tags


def other_phrasing(caption: str) -> str:
    """The world's other caption of a two-object scene: "A left of B" -> "B right of A"."""
    for word, back in (("left of", "right of"), ("right of", "left of"), ("above", "below"),
                       ("below", "above")):  # fmt: skip
        if f" {word} " in caption:
            first, second = caption.split(f" {word} ")
            return f"{second} {back} {first}"
    raise ValueError(f"not a two-object caption: {caption!r}")


def relation_of(caption: str) -> str:
    return next(r for r in ("left of", "right of", "above", "below") if f" {r} " in caption)


def draw_for(caption: str, seed: int) -> torch.Tensor:
    """A world image (render plus pixel noise) of a scene ``caption`` describes."""
    rng = np.random.default_rng([9, seed])
    parsed = parse(caption)
    fits = [s for s in all_scenes() if assignment(s, parsed) is not None]
    scene = fits[rng.integers(len(fits))]
    noise = torch.from_numpy(rng.standard_normal((3, SIZE, SIZE)).astype(np.float32))
    return render(scene) + PIXEL_NOISE * noise


def true_and_false(item: Any) -> tuple[str, list[str]]:
    k = item.true_index
    return item.captions[k], [c for j, c in enumerate(item.captions) if j != k]


def compositional_of(kinds: tuple[str, ...], n: int, split: str) -> list[Any]:
    """The first ``n`` world compositional items of the given kinds."""
    per_cycle = len(wd.COMPOSITIONAL_KINDS)
    items = wd.compositional_items(split, per_cycle * n)
    return [it for it in items if it.type in kinds][:n]


# ------------------------------------------------------------------------------------ writers


def write_aro_relation(root: Path, n: int, split: str) -> dict[str, Any]:
    """ARO's VG-Relation: ``visual_genome_relation.json`` and ``images/``."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(3)
    entries = []
    for i, item in enumerate(compositional_of(("relation",), n, split)):
        true, (false,) = true_and_false(item)
        background = rng.integers(96, 160, (CANVAS[1], CANVAS[0], 3), dtype=np.uint8)
        canvas = Image.fromarray(background)
        canvas.paste(to_pil(item.image), BOX[:2])
        name = f"vg_{i}.png"
        canvas.save(root / "images" / name)
        x, y, w, h = BOX
        entries.append(
            {"image_path": name, "relation_name": relation_of(true), "true_caption": true,
             "false_caption": false, "bbox_x": x, "bbox_y": y, "bbox_w": w, "bbox_h": h}
        )  # fmt: skip
    path = root / "visual_genome_relation.json"
    path.write_text(json.dumps(entries))
    return {"data": str(path)}


def write_coco_order(root: Path, n: int, split: str) -> dict[str, Any]:
    """BLIP's ``coco_karpathy_test.json`` beside ``val2014/`` (ARO's COCO root_dir): the
    world's two captions of each two-object image."""
    (root / "val2014").mkdir(parents=True)
    entries = []
    for i, item in enumerate(compositional_of(wd.COMPOSITIONAL_KINDS, (n + 1) // 2, split)):
        true, _ = true_and_false(item)
        name = f"val2014/COCO_val2014_{i:012d}.png"
        to_pil(item.image).save(root / name)
        entries.append({"image": name, "caption": [true, other_phrasing(true)]})
    path = root / "coco_karpathy_test.json"
    path.write_text(json.dumps(entries))
    return {"data": str(path)}


def write_winoground(root: Path, n: int, split: str) -> dict[str, Any]:
    """Winoground's ``examples.jsonl`` and ``images/``: each group an item's true caption and
    its swap (relation words: tag "Relation"; colours: tag "Object"), image 0 the item's, image
    1 a world image of the swapped caption."""
    (root / "images").mkdir(parents=True)
    lines = []
    for g, item in enumerate(compositional_of(("relation", "attribute"), (n + 1) // 2, split)):
        caption_0, (caption_1,) = true_and_false(item)
        for k, image in enumerate((item.image, draw_for(caption_1, g))):
            to_pil(image).save(root / "images" / f"ex_{g}_img_{k}.png")
        tag = "Relation" if item.type == "relation" else "Object"
        lines.append(
            {"id": g, "caption_0": caption_0, "caption_1": caption_1, "image_0": f"ex_{g}_img_0",
             "image_1": f"ex_{g}_img_1", "tag": tag, "secondary_tag": "", "num_main_preds": 1,
             "collapsed_tag": tag}
        )  # fmt: skip
    path = root / "examples.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return {"data": str(path)}


def _polygon(obj: Any) -> list[list[float]]:
    """The object's outline at the written scale (squares and triangles)."""
    cx, cy = obj.cx * SCALE, obj.cy * SCALE
    if obj.shape == "square":
        r = 2.6 * SCALE
        points = [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    else:
        top, bottom, half = cy - 3 * SCALE, cy + 3 * SCALE, 3.3 * SCALE
        points = [(cx, top), (cx + half, bottom), (cx - half, bottom)]
    return [[round(v, 2) for point in points for v in point]]


def _rle(mask: torch.Tensor) -> dict[str, Any]:
    """Compressed COCO RLE of a world mask at the written scale."""
    from pycocotools import mask as mask_utils

    big = mask.repeat_interleave(SCALE, 0).repeat_interleave(SCALE, 1).numpy()
    rle = mask_utils.encode(np.asfortranarray(big.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def write_coco(root: Path, n: int, split: str) -> dict[str, Any]:
    """COCO's ``instances_val2014.json`` and ``captions_val2014.json`` with ``val2014/``: the
    world's localization images, one instance per object (category: its shape; squares and
    triangles as polygons, circles as compressed RLE), the image's captions (both phrasings of
    a pair)."""
    (root / "val2014").mkdir(parents=True)
    side = SIZE * SCALE
    categories = [{"id": k + 1, "name": s, "supercategory": "shape"} for k, s in enumerate(SHAPES)]
    images, instances, texts = [], [], []
    for i, item in enumerate(wd.localization_items(split, n)):
        scene, image, caption = wd._draw(wd._rng(split, "localization", i), two_objects=False)
        assert torch.equal(image, item.image) and caption == item.caption  # the same draw
        image_id = i + 1
        name = f"COCO_val2014_{image_id:012d}.png"
        to_pil(image).save(root / "val2014" / name)
        images.append({"id": image_id, "file_name": name, "height": side, "width": side})
        for obj in scene.objects:
            mask = object_mask(obj)
            segmentation = _rle(mask) if obj.shape == "circle" else _polygon(obj)
            ys, xs = torch.nonzero(mask, as_tuple=True)
            x0, y0 = float(xs.min()), float(ys.min())
            w, h = float(xs.max()) - x0 + 1, float(ys.max()) - y0 + 1
            box = [x0 * SCALE, y0 * SCALE, w * SCALE, h * SCALE]
            instances.append(
                {"id": len(instances) + 1, "image_id": image_id,
                 "category_id": SHAPES.index(obj.shape) + 1, "segmentation": segmentation,
                 "area": float(mask.sum()) * SCALE**2, "bbox": box, "iscrowd": 0}
            )  # fmt: skip
        for text in dict.fromkeys(captions(scene) if len(scene.objects) == 2 else [caption]):
            texts.append({"id": 1000 + len(texts), "image_id": image_id, "caption": text})
    info = {"description": "shapes world in COCO's layout", "version": "1.0"}
    common = {"info": info, "licenses": [], "images": images}
    instances_path = root / "annotations" / "instances_val2014.json"
    captions_path = root / "annotations" / "captions_val2014.json"
    instances_path.parent.mkdir()
    instances_path.write_text(json.dumps(common | {"annotations": instances,
                                                   "categories": categories}))  # fmt: skip
    captions_path.write_text(json.dumps(common | {"annotations": texts}))
    return {
        "data": str(instances_path),
        "coco_captions": str(captions_path),
        "image_root": str(root / "val2014"),
        "data_format": "coco",
    }


# (name in the table, task, writer, folder)
DATASETS = (
    ("ARO VG-Relation (aro)", "compositional", write_aro_relation, "aro"),
    ("COCO-Order (aro-order)", "compositional", write_coco_order, "coco_order"),
    ("Winoground (winoground)", "compositional", write_winoground, "winoground"),
    ("COCO localization (coco)", "localization", write_coco, "coco"),
    ("COCO intervention (coco)", "intervention", write_coco, "coco"),
)


# ----------------------------------------------------------------------------------- headline


def headline(task: str, summary: dict[str, Any]) -> tuple[str, str]:
    """``(what, value [interval])`` of a summary's headline, and notes."""
    if task == "compositional":
        key = summary["headline"]
        column = summary["columns"][key]
        text = f"acc {format_metric(column['accuracy'], 3)}"
        notes = []
        other = summary["columns"].get("model/orthogonal")
        if other and key != "model/orthogonal":
            notes.append(f"orthogonal acc {format_metric(other['accuracy'], 3)}")
        wino = column.get("winoground")
        if wino:
            notes.append(
                "text/image/group "
                + "/".join(
                    f"{wino[k]['value']:.2f}" for k in ("text", "image", "group") if k in wino
                )
            )
        if summary.get("flags"):
            notes.append("flags " + ", ".join(f"{k} {v}" for k, v in summary["flags"].items()))
        left_out = summary["n_items"] - summary.get("n_scored", summary["n_items"])
        if left_out:
            notes.append(f"{left_out} left out")
        return text, "; ".join(notes)
    if task == "localization":
        methods = summary.get("methods", {})
        name = next((m for m in methods if "CMI" in m), next(iter(methods), None))
        if name is None:
            return "n/a", "no method scored"
        entry = methods[name]
        which = "paper" if summary.get("protocol") == "paper" else "honest"
        if which not in entry:  # too few images for two folds: our wide grid's best
            which = "ours"
        at = entry[which].get("threshold", entry[which].get("thresholds"))
        at = "/".join(f"{t:.2f}" for t in at) if isinstance(at, list) else f"{at:.2f}"
        text = f"mIoU {format_metric(entry[which]['miou'], 3)} (t {at})"
        notes = [f"{name}, {which} threshold", f"{summary.get('n_words', '?')} words"]
        if summary.get("flags"):
            notes.append(
                "flags " + ", ".join(f"{k} {v['words']}" for k, v in summary["flags"].items())
            )
        return text, "; ".join(notes)
    model = summary["models"]["model"]
    pearson = model["image_level"]["pearson_cmi"]
    notes = f"image-level Pearson(CMI, change); {model['n_pairs']} pairs"
    return f"r {format_metric(pearson, 2)}", notes


# ------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=8, help="items per evaluation (default 8)")
    parser.add_argument("--samples", type=int, default=None, help="draws per item (default 256)")
    parser.add_argument("--out", default=None, help="keep the data and runs in this folder")
    parser.add_argument("--split", default="test", help="the world's split (default test)")
    parser.add_argument(
        "--only", default=None, help="comma-separated folders to run (aro,coco_order,...)"
    )
    args = parser.parse_args()
    sampling = Sampling() if args.samples is None else Sampling(draws=args.samples)
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="released_data_"))
    root.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(",")) if args.only else None

    cores = os.cpu_count()
    print(
        f"released_data: torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{cores} cores (torch threads {torch.get_num_threads()}), device cpu; seconds are for "
        "this machine, measured in this run"
    )
    start = time.perf_counter()
    load_evaluated("bundled", device="cpu")  # warm: imports and the first read of the weights
    cold = time.perf_counter() - start
    start = time.perf_counter()
    load_evaluated("bundled", device="cpu")
    warm = time.perf_counter() - start
    print(
        f"bundled model: load {cold:.1f} s first, {warm:.2f} s again (each evaluate call loads "
        f"it: included in its s/item); {sampling.draws} draws per item; {args.items} items "
        f"per run; data in {root}"
    )

    written: dict[str, dict[str, Any]] = {}
    rows, problems = [], []
    for label, task, writer, folder in DATASETS:
        if only and folder not in only:
            continue
        if folder not in written:
            start = time.perf_counter()
            written[folder] = writer(root / "data" / folder, args.items, args.split)
            print(f"wrote {folder} in {time.perf_counter() - start:.1f} s", flush=True)
        for protocol in PROTOCOLS:
            out = root / "runs" / f"{folder}-{task}-{protocol}"
            if out.exists():
                shutil.rmtree(out)  # time a fresh run, not a resumed one
            messages: list[str] = []
            kwargs = dict(written[folder])
            try:
                start = time.perf_counter()
                summary = evaluate(
                    task,
                    out,
                    model="bundled",
                    limit=args.items,
                    sampling=sampling,
                    protocol=protocol,
                    device="cpu",
                    progress=False,
                    log=messages.append,
                    **({"tagger": world_tagger} if folder == "coco_order" else {}),
                    **kwargs,
                )
                seconds = time.perf_counter() - start
            except Exception as err:  # noqa: BLE001 - reported in the table, the rest still run
                problems.append(f"{label} / {protocol}: {type(err).__name__}: {err}")
                rows.append((label, protocol, "-", "-", "FAILED", type(err).__name__))
                print(f"{label} / {protocol}: FAILED {type(err).__name__}: {err}", flush=True)
                continue
            assert summary is not None
            n = summary["n_items"]
            text, notes = headline(task, summary)
            if summary.get("n_skipped"):
                notes = f"{summary['n_skipped']} skipped; {notes}"
            fmt = summary["settings"].get("format")
            rows.append((label, protocol, str(n), f"{seconds / max(n, 1):.2f}", text, notes))
            problems += [f"{label} / {protocol}: {m}" for m in messages if "skipped" in m]
            print(
                f"{label} / {protocol} ({fmt}): {n} items in {seconds:.1f} s: {text}; {notes}",
                flush=True,
            )

    heads = ("dataset / format", "protocol", "items", "s/item", "headline [95% CI]", "notes")
    widths = [max(len(h), *(len(r[k]) for r in rows)) for k, h in enumerate(heads)]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip())
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    print(
        "s/item: wall time of evaluate() (model load, reading the data, every item, the summary) "
        "over its items. Headline: compositional accuracy of the model's headline score "
        "(ours: the standard log-likelihood ratio, the orthogonal one in the notes; paper: the "
        "orthogonal score, as Kong et al.); localization mIoU "
        "of the CMI maps at the protocol's threshold (paper: the paper's grid; ours: honest, "
        "cross-fitted); intervention Pearson correlation over (image, word) pairs of the CMI "
        "with the change on removing the word."
    )
    for problem in problems:
        print(f"problem: {problem}")
    if not args.out:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
