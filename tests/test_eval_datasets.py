"""Readers of evaluation data: items, errors with file and line, COCO masks, mask alignment."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from infodecomp.evaluate.datasets import (
    CocoMask,
    check_mask_size,
    crop_box,
    load_item_image_and_masks,
    load_mask,
    read_aro,
    read_coco,
    read_compositional,
    read_localization,
)
from infodecomp.evaluate.items import BadItemError, CompositionalItem, LocalizationItem
from infodecomp.images import load_image


def save_png(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` (uint8 (H, W) or (H, W, 3), or uint16 (H, W)) as a PNG."""
    Image.fromarray(array).save(path)
    return path


def write_lines(path: Path, lines: list) -> Path:
    """A JSON-lines file: dicts are dumped, strings written as they are."""
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Two 8x8 images, an 8x8 mask and an 8x9 mask."""
    rng = np.random.default_rng(0)
    save_png(tmp_path / "a.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    save_png(tmp_path / "b.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    square = np.zeros((8, 8), np.uint8)
    square[2:5, 3:6] = 255
    save_png(tmp_path / "m.png", square)
    save_png(tmp_path / "wide.png", np.zeros((8, 9), np.uint8))
    return tmp_path


GOOD = {"image": "a.png", "captions": ["a dog on a mat", "a mat on a dog"], "true": 0}


# ------------------------------------------------------------------------------ compositional


def test_read_compositional_items_and_2x2(folder: Path) -> None:
    path = write_lines(
        folder / "c.jsonl",
        [
            {**GOOD, "id": "first", "type": "relation", "group": "g"},
            "",
            {"image": "b.png", "captions": ["x", "y", "z"], "true": 2},
            {"id": 7, "images": ["a.png", "b.png"], "captions": ["c0", "c1"], "type": "order"},
        ],
    )
    items, bad = read_compositional(path)
    assert bad == []
    assert [item.id for item in items] == ["first", "line3", "7/0", "7/1"]
    first = items[0]
    assert first == CompositionalItem(
        id="first",
        image=folder / "a.png",
        captions=("a dog on a mat", "a mat on a dog"),
        true_index=0,
        type="relation",
        group="g",
        source=f"{path}:1",
    )
    assert items[1].captions == ("x", "y", "z") and items[1].true_index == 2
    assert items[1].source == f"{path}:3" and items[1].type is None
    for k in range(2):
        pair = items[2 + k]
        assert pair.group == "7" and pair.true_index == k and pair.type == "order"
        assert pair.image == folder / ("a.png", "b.png")[k]
        assert pair.captions == ("c0", "c1") and pair.source == f"{path}:4"


def test_relative_paths_resolve_against_image_root(folder: Path, tmp_path_factory) -> None:
    elsewhere = tmp_path_factory.mktemp("data")
    path = write_lines(elsewhere / "c.jsonl", [GOOD])
    with pytest.raises(BadItemError, match="image file missing"):
        read_compositional(path)
    items, _ = read_compositional(path, image_root=folder)
    assert items[0].image == folder / "a.png"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"image": "a.png", "captions": ', "malformed JSON line"),
        ("[1, 2]", "expected a JSON object, got array"),
        ({"image": "a.png", "true": 0}, "missing key 'captions'"),
        ({**GOOD, "true": "0"}, "'true' must be an integer, got string"),
        ({**GOOD, "captions": "a dog"}, "'captions' must be an array of strings"),
        ({**GOOD, "image": "nope.png"}, "image file missing"),
        ({**GOOD, "true": 2}, "true index 2 out of range for 2 captions"),
        ({**GOOD, "true": -1}, "true index -1 out of range"),
        ({**GOOD, "captions": ["only one"]}, "fewer than two captions"),
        ({**GOOD, "captions": ["a dog", "  "]}, "caption 1 is empty"),
        ({**GOOD, "id": ["x"]}, "'id' must be a string or integer"),
        ({"images": ["a.png"], "captions": ["c0", "c1"]}, "'images' must hold two images"),
    ],
)
def test_compositional_errors_name_file_and_line(folder: Path, line, expected: str) -> None:
    path = write_lines(folder / "c.jsonl", [GOOD, line])
    with pytest.raises(BadItemError) as error:
        read_compositional(path)
    message = str(error.value)
    assert message.startswith(f"{path}:2: ") and expected in message
    assert "\n" not in message


def test_skip_bad_returns_good_items_and_bad_list(folder: Path) -> None:
    path = write_lines(folder / "c.jsonl", [GOOD, {**GOOD, "true": 5}, "{oops", GOOD])
    items, bad = read_compositional(path, skip_bad=True)
    assert [item.id for item in items] == ["line1", "line4"]
    assert [source for source, _ in bad] == [f"{path}:2", f"{path}:3"]
    assert bad[0][1].startswith(f"{path}:2: true index 5")
    assert "malformed JSON line" in bad[1][1]


def test_duplicate_ids_refused(folder: Path) -> None:
    path = write_lines(folder / "c.jsonl", [{**GOOD, "id": "x"}, {**GOOD, "id": "x"}])
    with pytest.raises(BadItemError, match=rf"^{path}:2: duplicate id 'x' \(first at {path}:1\)"):
        read_compositional(path)
    pair = {"id": "p", "images": ["a.png", "b.png"], "captions": ["c0", "c1"]}
    path = write_lines(folder / "d.jsonl", [pair, {**GOOD, "id": "p/1"}])
    items, bad = read_compositional(path, skip_bad=True)
    assert [item.id for item in items] == ["p/0", "p/1"]
    assert "duplicate id 'p/1'" in bad[0][1]


# ------------------------------------------------------------------------------------------ ARO


def aro_entry(**changes) -> dict:
    entry = {
        "image_path": "a.png",
        "bbox_x": 1,
        "bbox_y": 2,
        "bbox_w": 4,
        "bbox_h": 3,
        "relation_name": "on",
        "true_caption": "the cup is on the table",
        "false_caption": "the table is on the cup",
    }
    entry.update(changes)
    return {key: value for key, value in entry.items() if value is not None}


def test_read_aro_relation_and_attribution(folder: Path) -> None:
    attribution = aro_entry(relation_name=None, attributes=["white", "black"])
    path = folder / "aro.json"
    path.write_text(json.dumps([aro_entry(), attribution]))
    items, bad = read_aro(path, image_root=folder)
    assert bad == []
    assert items[0] == CompositionalItem(  # ARO's order: the false caption first
        id="entry0",
        image=folder / "a.png",
        captions=("the table is on the cup", "the cup is on the table"),
        true_index=1,
        type="on",
        box=(1.0, 2.0, 4.0, 3.0),
        source=f"{path}[0]",
        cluster="a.png",
    )
    assert items[1].type == "white_black" and items[1].source == f"{path}[1]"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"true_caption": None}, "missing key 'true_caption'"),
        ({"relation_name": None}, "missing key 'relation_name' (VG-Relation) or 'attributes'"),
        ({"bbox_w": "4"}, "'bbox_w' must be a number, got string"),
        ({"bbox_h": 0}, "empty box"),
        ({"image_path": "gone.jpg"}, "image file missing"),
        ({"false_caption": ""}, "'false_caption' is empty"),
    ],
)
def test_aro_errors_name_file_and_entry(folder: Path, change: dict, expected: str) -> None:
    path = folder / "aro.json"
    path.write_text(json.dumps([aro_entry(), aro_entry(**change)]))
    with pytest.raises(BadItemError) as error:
        read_aro(path, image_root=folder)
    assert str(error.value).startswith(f"{path}[1]: ") and expected in str(error.value)
    items, bad = read_aro(path, image_root=folder, skip_bad=True)
    assert len(items) == 1 and bad[0][0] == f"{path}[1]"


def test_aro_file_errors(folder: Path) -> None:
    path = folder / "aro.json"
    with pytest.raises(BadItemError, match=rf"^{path}: cannot read the file"):
        read_aro(path, image_root=folder)
    path.write_text('[\n{"image_path": }\n]')
    with pytest.raises(BadItemError, match=rf"^{path}:2: malformed JSON"):
        read_aro(path, image_root=folder)
    path.write_text("{}")
    with pytest.raises(BadItemError, match="expected a JSON array"):
        read_aro(path, image_root=folder)


def test_crop_box_as_aro(folder: Path) -> None:
    pixels = np.asarray(Image.open(folder / "a.png").convert("RGB"))
    crop = crop_box(folder / "a.png", (1, 2, 4, 3))
    assert crop.size == (4, 3) and crop.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(crop), pixels[2:5, 1:5])


# --------------------------------------------------------------------------------- localization


def test_read_localization_both_forms(folder: Path) -> None:
    path = write_lines(
        folder / "l.jsonl",
        [
            {"image": "a.png", "caption": "A dog on a mat.", "word": "Dog", "mask": "m.png"},
            {
                "id": "two",
                "image": "b.png",
                "caption": "a red ball near a big dog",
                "masks": {"red ball": "m.png", "dog": str(folder / "wide.png")},
            },
        ],
    )
    items, bad = read_localization(path)
    assert bad == []
    assert items[0] == LocalizationItem(
        id="line1",
        image=folder / "a.png",
        caption="A dog on a mat.",
        masks={"Dog": folder / "m.png"},
        source=f"{path}:1",
    )
    assert items[1].id == "two" and items[1].masks == {
        "red ball": folder / "m.png",
        "dog": folder / "wide.png",
    }


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ({"word": "cat"}, "word 'cat' is not in the caption 'a dog on a mat'"),
        ({"word": "big dog"}, "word 'big' of 'big dog' is not in the caption"),
        ({"mask": "nope.png"}, "mask ('dog') file missing"),
        ({"image": "nope.png"}, "image file missing"),
        ({"caption": 3}, "'caption' must be a string, got integer"),
        ({"word": None, "mask": None}, "missing key 'masks'"),
        ({"mask": None}, "missing key 'mask'"),
        ({"masks": {"dog": "m.png"}}, "not both"),
    ],
)
def test_localization_errors(folder: Path, line: dict, expected: str) -> None:
    record = {"image": "a.png", "caption": "a dog on a mat", "word": "dog", "mask": "m.png"}
    record.update(line)
    record = {key: value for key, value in record.items() if value is not None}
    path = write_lines(folder / "l.jsonl", ["", record])
    with pytest.raises(BadItemError) as error:
        read_localization(path)
    assert str(error.value).startswith(f"{path}:2: ") and expected in str(error.value)


# ----------------------------------------------------------------------------------------- COCO


def square(x0: int, y0: int, x1: int, y1: int) -> list[list[float]]:
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


@pytest.fixture
def coco_files(folder: Path) -> tuple[Path, Path]:
    save_png(folder / "c.png", np.zeros((8, 10, 3), np.uint8))
    images = [
        {"id": 1, "file_name": "a.png", "height": 8, "width": 8},
        {"id": 2, "file_name": "c.png", "height": 8, "width": 10},
    ]
    instances = {
        "images": images,
        "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "person"}],
        "annotations": [
            {"id": 11, "image_id": 1, "category_id": 1, "segmentation": square(0, 0, 3, 3)},
            {"id": 12, "image_id": 1, "category_id": 1, "segmentation": square(4, 4, 8, 8)},
            {"id": 13, "image_id": 1, "category_id": 2, "segmentation": square(0, 5, 2, 8)},
            # Uncompressed RLE, column-major: columns 2-4 of an 8x10 image.
            {
                "id": 14,
                "image_id": 2,
                "category_id": 2,
                "segmentation": {"counts": [16, 24, 40], "size": [8, 10]},
                "iscrowd": 1,
            },
        ],
    }
    captions = {
        "images": images,
        "annotations": [
            {"id": 201, "image_id": 2, "caption": "A Woman standing, no dog here."},
            {"id": 101, "image_id": 1, "caption": "Two dogs and a man on grass."},
            {"id": 102, "image_id": 1, "caption": "A red car parked."},
            {"id": 103, "image_id": 1, "caption": "A puppy sleeping."},
        ],
    }
    (folder / "instances.json").write_text(json.dumps(instances))
    (folder / "captions.json").write_text(json.dumps(captions))
    return folder / "instances.json", folder / "captions.json"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools under NumPy 2
def test_read_coco_items_union_and_plurals(folder: Path, coco_files) -> None:
    from pycocotools.coco import COCO

    instances, captions = coco_files
    items, bad = read_coco(instances, captions, folder)
    assert bad == []
    assert [item.id for item in items] == ["1/101", "2/201"]
    first, second = items
    assert first.image == folder / "a.png" and first.source == f"{captions}[1]"
    assert list(first.masks) == ["dogs", "man"]
    assert list(second.masks) == ["Woman"]  # the dog is not annotated in image 2
    assert all(isinstance(mask, CocoMask) for mask in first.masks.values())

    coco = COCO(str(instances))
    union = coco.annToMask(coco.anns[11]).astype(bool) | coco.annToMask(coco.anns[12]).astype(bool)
    dogs = first.masks["dogs"].array()
    assert dogs.shape == (8, 8) and dogs.sum() > 0
    np.testing.assert_array_equal(dogs, union)
    np.testing.assert_array_equal(second.masks["Woman"].array(), coco.annToMask(coco.anns[14]) > 0)
    assert second.masks["Woman"].array()[:, 2:5].all()
    assert torch.equal(load_mask(first.masks["dogs"], 8), torch.from_numpy(union))


def test_read_coco_synonyms_limit_and_bad(folder: Path, coco_files) -> None:
    instances, captions = coco_files
    items, _ = read_coco(instances, captions, folder, synonyms={"dog": ["puppy"]})
    assert [item.id for item in items] == ["1/101", "1/103", "2/201"]
    assert list(items[1].masks) == ["puppy"]
    items, _ = read_coco(instances, captions, folder, synonyms={"dog": ["puppy"]}, limit=2)
    assert [item.id for item in items] == ["1/101", "1/103"]
    with pytest.raises(ValueError, match="categories not in"):
        read_coco(instances, captions, folder, synonyms={"cat": ["kitten"]})

    (folder / "c.png").unlink()
    with pytest.raises(BadItemError, match=rf"^{captions}\[0\]: image file missing"):
        read_coco(instances, captions, folder)
    items, bad = read_coco(instances, captions, folder, skip_bad=True)
    assert [item.id for item in items] == ["1/101"] and bad[0][0] == f"{captions}[0]"


# ---------------------------------------------------------------------------------------- masks


@pytest.mark.parametrize(
    ("shape", "box", "size", "exact"),
    [
        ((16, 24), (4, 12, 8, 16), 8, True),  # halved, then 2 columns cropped each side
        ((24, 16), (6, 14, 4, 10), 8, True),  # halved, then 2 rows cropped each side
        ((24, 30), (3, 15, 4, 19), 8, True),  # a third: pixel centres, not corners, sampled
        ((10, 14), (2, 7, 4, 8), 7, False),  # scale 0.7: edges fall inside pixels
    ],
)
def test_load_mask_aligned_with_load_image(
    tmp_path: Path, shape: tuple, box: tuple, size: int, exact: bool
) -> None:
    top, bottom, left, right = box
    inside = np.zeros(shape, bool)
    inside[top:bottom, left:right] = True
    image = save_png(tmp_path / "i.png", np.repeat(inside[..., None], 3, 2).astype(np.uint8) * 255)
    mask = save_png(tmp_path / "mask.png", inside.astype(np.uint8) * 255)
    pixels = load_image(image, size).mean(0)
    loaded = load_mask(mask, size)
    assert loaded.dtype == torch.bool and loaded.shape == (size, size)
    assert loaded.any() and not loaded.all()
    # The mask covers the bright pixels and none of the dark ones.
    assert loaded[pixels > 0.5].all() and not loaded[pixels < -0.5].any()
    if exact:
        assert torch.equal(loaded, pixels > 0)
    assert torch.equal(load_mask(inside, size), loaded)
    assert torch.equal(load_mask(torch.from_numpy(inside), size), loaded)


def test_load_mask_16_bit_and_palette(tmp_path: Path) -> None:
    values = np.zeros((6, 6), np.uint16)
    values[1, 2], values[3, 4], values[5, 5] = 1, 300, 65535
    path = save_png(tmp_path / "deep.png", values)
    assert Image.open(path).mode.startswith("I")
    assert torch.equal(load_mask(path, 6), torch.from_numpy(values != 0))

    indices = np.zeros((6, 6), np.uint8)
    indices[2:4, 1:3] = 1
    palette = Image.frombytes("P", (6, 6), indices.tobytes())
    palette.putpalette([0, 0, 0, 1, 0, 0] + [0] * 762)  # index 1 is a barely red
    palette.save(tmp_path / "palette.png")
    assert torch.equal(load_mask(tmp_path / "palette.png", 6), torch.from_numpy(indices != 0))


def test_load_mask_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must be 2-D"):
        load_mask(np.zeros((4, 4, 3)), 4)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ValueError, match="cannot read mask .*not an image"):
        load_mask(tmp_path / "text.png", 4)
    with pytest.raises(ValueError, match="cannot read mask"):
        load_mask(tmp_path / "missing.png", 4)


def test_load_item_image_and_masks_checks_sizes(folder: Path) -> None:
    path = write_lines(
        folder / "l.jsonl",
        [
            {"image": "a.png", "caption": "a dog", "word": "dog", "mask": "m.png"},
            {"image": "a.png", "caption": "a dog", "word": "dog", "mask": "wide.png"},
        ],
    )
    (good, wide), _ = read_localization(path)
    image, masks, flags = load_item_image_and_masks(good, 4)
    assert flags == {}
    assert image.shape == (3, 4, 4) and masks["dog"].shape == (4, 4)
    assert masks["dog"].dtype == torch.bool
    with pytest.raises(BadItemError, match=rf"^{path}:2: mask of 'dog' is 8x9, image is 8x8$"):
        load_item_image_and_masks(wide, 4)
    with pytest.raises(BadItemError, match=r"^mask is 3x3, image is 8x8$"):
        check_mask_size(np.zeros((3, 3)), (8, 8))
    check_mask_size(CocoMask(8, 8, ()), (8, 8))
    (folder / "a.png").write_text("broken")
    with pytest.raises(BadItemError, match=rf"^{path}:1: cannot read image"):
        load_item_image_and_masks(good, 4)
