"""Hostile evaluation data (issue 16's audit): each case is one line naming the file, entry and
field (exit 2 from the CLI, ``ValueError`` / ``BadItemError`` in Python), never a traceback and
never a silently wrong number."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from infodecomp.cli import main
from infodecomp.evaluate import compositional, read_rows, run, summarize
from infodecomp.evaluate.datasets import (
    CocoMask,
    crop_box,
    load_item_image_and_masks,
    load_mask,
    read_aro,
    read_coco,
    read_compositional,
)
from infodecomp.evaluate.items import BadItemError, CompositionalItem, LocalizationItem
from infodecomp.evaluate.prompts import PromptItem
from infodecomp.evaluate.runner import fingerprint
from infodecomp.sampling import Sampling

TRUE, FALSE = "a red circle left of a blue square", "a blue square left of a red circle"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Two different 16x16 images, a copy of the first, and a 16x16 mask of a square."""
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / name)
    shutil.copy(tmp_path / "a.png", tmp_path / "copy.png")
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 4:8] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    return tmp_path


def write_lines(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def aro_entry(**changes) -> dict:
    entry = {
        "image_path": "a.png",
        "bbox_x": 2,
        "bbox_y": 2,
        "bbox_w": 8,
        "bbox_h": 8,
        "true_caption": TRUE,
        "false_caption": FALSE,
        "relation_name": "left of",
    }
    return entry | changes


def aro_file(folder: Path, **changes) -> Path:
    path = folder / "aro.json"
    path.write_text(json.dumps([aro_entry(**changes)]))  # json writes Infinity and NaN as such
    return path


# ------------------------------------------------------------------------------------ ARO boxes


@pytest.mark.parametrize(
    ("value", "shown"), [(float("inf"), "Infinity"), (float("nan"), "NaN"), (10**400, "1000")]
)
def test_aro_box_must_be_finite(folder: Path, value, shown: str) -> None:
    path = aro_file(folder, bbox_w=value)
    with pytest.raises(
        BadItemError, match=rf"^{path}\[0\]: 'bbox_w' must be a finite number, got {shown}"
    ):
        read_aro(path, folder)


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ((100, 100, 8, 8), r"box \(x, y, w, h\) = \(100, 100, 8, 8\) lies off the 16x16 image"),
        ((0, 0, 1e12, 1e12), r"lies mostly off the 16x16 image"),  # was DecompressionBombError
        ((0, 0, float("inf"), 8), r"\(0, 0, inf, 8\) is not a box"),  # was OverflowError
        ((0, 0, 0.2, 0.2), r"holds no whole pixel"),
        (("a", 0, 1, 1), r"a box is four numbers"),
        ((0, 0, 1), r"a box is four numbers"),
    ],
)
def test_crop_box_refuses_boxes_off_the_image(folder: Path, box, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        crop_box(folder / "a.png", box)
    assert type(err.value) is ValueError


def test_crop_box_clips_a_box_partly_off_the_image(folder: Path) -> None:
    crop = crop_box(folder / "a.png", (6, 6, 12, 12))  # 10x10 of its 12x12 inside the image
    assert crop.size == (10, 10)
    assert crop.tobytes() == Image.open(folder / "a.png").crop((6, 6, 16, 16)).tobytes()
    inside = crop_box(folder / "a.png", (2, 3, 8, 5))  # a box inside: ARO's crop, unchanged
    assert inside.tobytes() == Image.open(folder / "a.png").crop((2, 3, 10, 8)).tobytes()


# ------------------------------------------------------------------------------------- captions


@pytest.mark.parametrize("other", [TRUE.upper(), TRUE.replace(" ", "  "), f" {TRUE.title()}"])
def test_captions_differing_in_case_or_spacing_are_refused(folder: Path, other: str) -> None:
    path = write_lines(
        folder / "c.jsonl", [{"image": "a.png", "captions": [TRUE, other], "true": 0}]
    )
    with pytest.raises(BadItemError, match=rf"^{path}:1: captions 0 and 1 are the same text"):
        read_compositional(path)


def test_bundled_tokenizer_ignores_case_and_spacing() -> None:
    """Why the check above holds for every model: the bundled model's CLIP tokenizer (as SD's)
    gives such captions the same tokens."""
    from transformers import CLIPTokenizer

    from infodecomp.world.bundled_model import BUNDLED

    tokenizer = CLIPTokenizer.from_pretrained(BUNDLED / "tokenizer")
    ids = {tuple(tokenizer(c).input_ids) for c in (TRUE, TRUE.upper(), TRUE.replace(" ", "  "))}
    assert len(ids) == 1


@pytest.mark.parametrize("false", [TRUE, TRUE.upper()])
def test_aro_identical_captions_are_kept(folder: Path, false: str) -> None:
    """ARO's own files hold such entries: read as released, the summary flags them (the JSONL
    reader above keeps refusing)."""
    items, bad = read_aro(aro_file(folder, false_caption=false), folder)
    assert not bad and items[0].captions == (false, TRUE) and items[0].true_index == 1


def test_compositional_captions_over_the_token_limit_are_bad_items(tmp_path: Path) -> None:
    """The model's own ``check_prompt`` (heatmap's and explain's rule) refuses a caption it would
    truncate: a bad item, skipped with ``skip_bad``."""

    def check_prompt(prompt: str) -> None:
        if len(prompt.split()) > 8:
            raise ValueError(
                f"prompt is {len(prompt.split())} tokens long, the model takes at most 8"
            )

    model = SimpleNamespace(denoiser=SimpleNamespace(check_prompt=check_prompt))
    item = CompositionalItem("long", "x.png", ("a red circle", f"{TRUE} {TRUE}"), 0, source="d:1")
    task = compositional.make_task(model, Sampling(draws=2), {})
    with pytest.raises(ValueError, match="^caption 1: prompt is 16 tokens long"):
        task.measure(item)
    settings = {"task": "compositional", "samples": 2}
    with pytest.raises(BadItemError, match="^d:1: caption 1: prompt is 16 tokens long"):
        run(task, [item], tmp_path / "a", settings, progress=False, log=lambda m: None)
    run(task, [item], tmp_path / "b", settings, skip_bad=True, progress=False, log=lambda m: None)
    assert read_rows(tmp_path / "b")[0]["skipped"].startswith("d:1: caption 1: prompt is 16")


# ---------------------------------------------------------------------------------- Winoground


@pytest.mark.parametrize("second", ["a.png", "./a.png", "copy.png"])
def test_winoground_group_of_one_image_is_refused(folder: Path, second: str) -> None:
    line = {"id": "g", "images": ["a.png", second], "captions": [TRUE, FALSE]}
    path = write_lines(folder / "w.jsonl", [line])
    with pytest.raises(BadItemError, match=rf"^{path}:1: 'images' are the same image"):
        read_compositional(path)
    line["images"] = ["a.png", "b.png"]
    assert len(read_compositional(write_lines(path, [line]))[0]) == 2


# ---------------------------------------------------------------------------------------- COCO


def coco_files(folder: Path, image: dict | None = None, segmentation=None) -> tuple[Path, Path]:
    info = {"id": 1, "file_name": "a.png", "height": 16, "width": 16} | (image or {})
    square = [[4, 4, 8, 4, 8, 8, 4, 8]]
    ann = {"id": 10, "image_id": 1, "category_id": 1, "segmentation": segmentation or square}
    instances = {"images": [info], "annotations": [ann], "categories": [{"id": 1, "name": "dog"}]}
    captions = {"images": [info], "annotations": [{"id": 5, "image_id": 1, "caption": "a dog"}]}
    (folder / "instances.json").write_text(json.dumps(instances))
    (folder / "captions.json").write_text(json.dumps(captions))
    return folder / "instances.json", folder / "captions.json"


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ({"height": None}, "'height' must be an integer, got null"),  # was TypeError
        ({"width": "16"}, "'width' must be an integer, got string"),
        ({"height": 0}, "is 0x16"),
    ],
)
def test_coco_image_size_must_be_positive_integers(folder: Path, image: dict, message: str) -> None:
    instances, captions = coco_files(folder, image=image)
    with pytest.raises(BadItemError, match=rf"^{captions}\[0\]: image 1 of {instances}.*{message}"):
        read_coco(instances, captions, folder)


@pytest.mark.parametrize(
    ("segmentation", "message"),
    [
        ("abc", "'segmentation' must be polygons .* got string"),  # was AttributeError
        ([[1, 2, "a", 4, 5, 6]], r"'segmentation'\[0\] must be a polygon"),
        ([[1, 2, 1e12, 4, 5, 6]], r"'segmentation'\[0\] has a point far off"),  # pycocotools died
        (
            {"counts": [1, 2], "size": [16, 16]},
            "'segmentation' RLE 'counts' must be run lengths summing to 256",
        ),
        (
            {"counts": "abc", "size": [8, 8]},
            r"'segmentation' RLE 'size' must be the image's \[16, 16\]",
        ),
        (
            {"counts": 7, "size": [16, 16]},
            "'segmentation' RLE 'counts' must be a compressed string",
        ),
    ],
)
def test_coco_segmentation_is_checked_when_read(folder: Path, segmentation, message: str) -> None:
    instances, captions = coco_files(folder, segmentation=segmentation)
    where = rf"^{captions}\[0\]: instance 10 of {instances}: "
    with pytest.raises(BadItemError, match=where + message):
        read_coco(instances, captions, folder)
    with pytest.raises(ValueError, match=message):  # a CocoMask built by hand: the same rule
        CocoMask(16, 16, (json.dumps(segmentation),)).array()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools under NumPy 2
def test_coco_mask_that_cannot_be_decoded_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="a segmentation cannot be decoded"):
        CocoMask(16, 16, (json.dumps({"counts": "abc", "size": [16, 16]}),)).array()


# --------------------------------------------------------------------------------------- masks


@pytest.mark.parametrize(
    ("where", "flag"),
    [
        ("nowhere", "mask empty in the annotation (no pixel inside)"),
        ("in the cropped margin", "mask empty after the centre crop (kept 0 of 32 pixels)"),
    ],
)
def test_empty_localization_mask_is_flagged(tmp_path: Path, where: str, flag: str) -> None:
    """A word with no region has IoU 0 but no average precision: flagged (and left unscored),
    not half counted, and not fatal to the item."""
    Image.new("RGB", (24, 16)).save(tmp_path / "wide.png")  # load_image crops 4 columns a side
    mask = np.zeros((16, 24), np.uint8)
    if where != "nowhere":
        mask[:, :2] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    item = LocalizationItem("i", tmp_path / "wide.png", "a dog", {"dog": tmp_path / "m.png"}, "d:3")
    _, masks, flags = load_item_image_and_masks(item, 16)
    assert flags == {"dog": flag} and not masks["dog"].any()
    if where != "nowhere":  # squashed, nothing is cut off
        _, masks, flags = load_item_image_and_masks(item, 16, fit="squash")
        assert flags == {} and masks["dog"][:, :1].all()


def test_load_mask_refuses_nan() -> None:
    nan = np.full((4, 4), np.nan)
    for mask in (nan, torch.from_numpy(nan), torch.from_numpy(nan).bfloat16()):
        with pytest.raises(ValueError, match="a mask must not hold NaN"):
            load_mask(mask, 4)
    assert load_mask(np.eye(4), 4).sum() == 4  # numbers other than NaN: non-zero inside


# ---------------------------------------------------------------------------- output and paths


def test_binary_rows_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "settings.json").write_text(json.dumps({"task": "compositional"}))
    (tmp_path / "rows.jsonl").write_bytes(bytes(range(128, 256)) + b"\n")
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'rows.jsonl'}:1: damaged row"):
        read_rows(tmp_path)
    (tmp_path / "settings.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'settings.json'}: damaged"):
        summarize(tmp_path)


def test_long_strings_are_never_probed_as_paths(folder: Path) -> None:
    """A caption, prompt or id over the file system's 255-byte name limit is text: fingerprinted
    as text (only image, mask and noise fields are read as files), not an OSError."""
    long = " ".join([TRUE] * 8)  # 279 characters
    item = CompositionalItem("x" * 300, folder / "a.png", (long, TRUE), 0)
    assert fingerprint(item) != fingerprint(
        CompositionalItem("x" * 300, folder / "b.png", (long, TRUE), 0)
    )
    prompt = PromptItem("p", long, folder / "a.png", 0)
    assert len(fingerprint(prompt)) == 16
    path = write_lines(
        folder / "c.jsonl", [{"image": "y" * 300, "captions": [TRUE, FALSE], "true": 0}]
    )
    with pytest.raises(
        BadItemError, match=rf"^{path}:1: image file unusable \(File name too long\)"
    ):
        read_compositional(path)


# ------------------------------------------------------------------------------------------ CLI


def test_cli_long_id_and_caption_run(folder: Path, capsys) -> None:
    data = write_lines(
        folder / "d.jsonl",
        [{"id": "i" * 300, "image": "a.png", "captions": [TRUE, FALSE], "true": 0}],
    )
    argv = ["eval", "compositional", "--model", "exact", "--samples", "4", "--fixed"]
    argv += ["--data", str(data)]
    assert main([*argv, "--out", str(folder / "out")]) == 0
    assert "File name too long" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("changes", "message", "skip_code"),
    [  # refused when measured (skipped with --skip-bad), or when read (then no items are left)
        ({"bbox_x": 100, "bbox_y": 100}, "lies off the 16x16 image", 0),
        ({"bbox_w": 1e12, "bbox_h": 1e12}, "lies mostly off the 16x16 image", 0),
        ({"bbox_w": float("inf")}, "'bbox_w' must be a finite number, got Infinity", 2),
    ],
)
def test_cli_hostile_aro_is_one_line_and_exit_2(
    folder: Path, capsys, changes: dict, message: str, skip_code: int
) -> None:
    data = aro_file(folder, **changes)
    argv = ["eval", "compositional", "--model", "exact", "--samples", "4", "--fixed"]
    argv += ["--data", str(data)]
    argv += ["--image-root", str(folder)]
    assert main([*argv, "--out", str(folder / "out")]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and f"{data}[0]: " in errors[0] and message in errors[0], err
    assert "Traceback" not in err
    assert main([*argv, "--out", str(folder / "skip"), "--skip-bad"]) == skip_code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if skip_code == 0:  # the item's row records why it was skipped
        assert message in read_rows(folder / "skip")[0]["skipped"]
    else:  # skipped when read, and no item is left to evaluate
        assert f"skipped {data}[0]: " in err and message in err
