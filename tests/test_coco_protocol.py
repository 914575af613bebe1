"""COCO and localization under the paper's protocol and ours: items, fits, flags, clusters and
threshold grids."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from infodecomp.evaluate import localization, metrics
from infodecomp.evaluate.common import EvalModel
from infodecomp.evaluate.datasets import (
    CocoMask,
    load_item_image_and_masks,
    load_mask,
    read_coco,
    read_coco_interventions,
)
from infodecomp.evaluate.runner import PICTURES
from infodecomp.images import load_image, prepare_image
from infodecomp.sampling import Sampling

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools, NumPy 2

SIZE = 10
H, W = 20, 40  # a wide image: the centre crop cuts 10 columns a side (5 after the resize)


def box(top: int, bottom: int, left: int, right: int, shape=(H, W)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[top:bottom, left:right] = True
    return mask


def rle(mask: np.ndarray) -> dict[str, Any]:
    """Uncompressed COCO RLE of a bool mask (column-major runs, zeros first)."""
    flat = mask.flatten(order="F").astype(np.uint8)
    runs, last, n = [], 0, 0
    for value in flat:
        if value != last:
            runs.append(n)
            last, n = value, 0
        n += 1
    runs.append(n)
    return {"counts": [int(r) for r in runs], "size": list(mask.shape)}


def square(x0: int, y0: int, x1: int, y1: int) -> list[list[float]]:
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


@pytest.fixture
def coco(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Released layout: instances (polygons, RLE, a crowd one) and captions of three images."""
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "one.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "two.png")
    bright = box(4, 12, 16, 24)  # a centre rectangle, drawn white on black
    Image.fromarray(np.repeat(bright[..., None], 3, 2).astype(np.uint8) * 255).save(
        tmp_path / "wide.png"
    )
    images = [
        {"id": 1, "file_name": "one.png", "height": 8, "width": 8},
        {"id": 2, "file_name": "two.png", "height": 8, "width": 8},
        {"id": 3, "file_name": "wide.png", "height": H, "width": W},
    ]
    categories = [
        {"id": 1, "name": "dog"},
        {"id": 2, "name": "person"},
        {"id": 3, "name": "mouse"},
        {"id": 4, "name": "goose"},
        {"id": 5, "name": "cat"},
    ]
    annotations = [
        {"id": 11, "image_id": 1, "category_id": 2, "segmentation": square(0, 5, 2, 8)},
        {"id": 12, "image_id": 1, "category_id": 1, "segmentation": square(0, 0, 3, 3)},
        {
            "id": 13,
            "image_id": 1,
            "category_id": 1,
            "segmentation": rle(box(5, 8, 5, 8, (8, 8))),
            "iscrowd": 1,
        },
        {"id": 14, "image_id": 1, "category_id": 3, "segmentation": square(4, 0, 6, 2)},
        {"id": 15, "image_id": 1, "category_id": 5, "segmentation": square(2, 2, 6, 6)},
        {"id": 21, "image_id": 2, "category_id": 4, "segmentation": square(1, 1, 6, 6)},
        {"id": 31, "image_id": 3, "category_id": 1, "segmentation": rle(bright)},
        {"id": 32, "image_id": 3, "category_id": 5, "segmentation": rle(box(4, 12, 0, 8))},
        {"id": 33, "image_id": 3, "category_id": 3, "segmentation": rle(box(4, 12, 2, 12))},
    ]
    captions = [
        {"id": 101, "image_id": 1, "caption": "A Dog and a man."},
        {"id": 102, "image_id": 1, "caption": "Two dogs near the mice."},
        {"id": 103, "image_id": 1, "caption": "A person with a cat."},
        {"id": 201, "image_id": 2, "caption": "Geese on a lake."},
        {"id": 202, "image_id": 2, "caption": "three geese swim"},
        {"id": 301, "image_id": 3, "caption": "a dog, a cat and a mouse"},
    ]
    instances = {"images": images, "categories": categories, "annotations": annotations}
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    (tmp_path / "captions.json").write_text(json.dumps({"images": images, "annotations": captions}))
    return tmp_path / "instances.json", tmp_path / "captions.json", tmp_path


def test_paper_items_are_coco_it_and_ours_per_caption(coco) -> None:
    instances, captions, root = coco
    paper, bad = read_coco(instances, captions, root, protocol="paper")
    assert bad == []
    # One item per (image, category), in the order of the image's instance annotations; the
    # first caption naming the category (case-sensitive: "Dog" and "Geese" do not count, nor
    # does the synonym "man"); its plural, by inflect ("mice", "geese"), when that occurs.
    got = [(item.id, item.caption, list(item.masks), item.cluster) for item in paper]
    assert got == [
        ("1/2", "A person with a cat.", ["person"], "1"),
        ("1/1", "Two dogs near the mice.", ["dogs"], "1"),
        ("1/3", "Two dogs near the mice.", ["mice"], "1"),
        ("1/5", "A person with a cat.", ["cat"], "1"),
        ("2/4", "three geese swim", ["geese"], "2"),
        ("3/1", "a dog, a cat and a mouse", ["dog"], "3"),
        ("3/5", "a dog, a cat and a mouse", ["cat"], "3"),
        ("3/3", "a dog, a cat and a mouse", ["mouse"], "3"),
    ]
    assert paper[1].source == f"{captions}[1]"
    # The mask is the union of all the category's instances, the crowd one included.
    dogs = paper[1].masks["dogs"]
    assert isinstance(dogs, CocoMask) and len(dogs.segmentations) == 2
    assert dogs.array()[5:8, 5:8].all() and dogs.array()[1, 1]

    ours, bad = read_coco(instances, captions, root)
    assert bad == []
    got = [(item.id, list(item.masks), item.cluster) for item in ours]
    assert got == [
        ("1/101", ["Dog", "man"], "1"),  # any case, synonyms
        ("1/102", ["dogs", "mice"], "1"),  # the irregular plural from inflect
        ("1/103", ["person", "cat"], "1"),
        ("2/201", ["Geese"], "2"),
        ("2/202", ["geese"], "2"),
        ("3/301", ["dog", "cat", "mouse"], "3"),
    ]
    with pytest.raises(ValueError, match="no synonyms"):
        read_coco(instances, captions, root, synonyms={"dog": ["puppy"]}, protocol="paper")
    with pytest.raises(ValueError, match="unknown protocol"):
        read_coco(instances, captions, root, protocol="theirs")
    assert [i.id for i in read_coco(instances, captions, root, protocol="paper", limit=3)[0]] == [
        "1/2",
        "1/1",
        "1/3",
    ]

    for protocol, items in (("paper", paper), ("ours", ours)):
        edits, _ = read_coco_interventions(instances, captions, root, protocol=protocol)
        assert [(e.id, e.caption, e.words, e.cluster, e.source) for e in edits] == [
            (i.id, i.caption, tuple(i.masks), i.cluster, i.source) for i in items
        ]


def test_squash_and_crop_align_masks_with_images(coco) -> None:
    instances, captions, root = coco
    (item,) = [i for i in read_coco(instances, captions, root)[0] if i.id == "3/301"]
    expected = {
        # rows 4-12 of 20 -> 2-6 of 10 either way; columns 16-24 of 40 -> 8-12 of 20, minus the
        # 5 cropped, or -> 4-6 of 10 squashed.
        "crop": box(2, 6, 3, 7, (SIZE, SIZE)),
        "squash": box(2, 6, 4, 6, (SIZE, SIZE)),
    }
    for fit, where in expected.items():
        image, masks, flags = load_item_image_and_masks(item, SIZE, fit=fit)
        assert torch.equal(masks["dog"], torch.from_numpy(where)), fit
        assert torch.equal(load_mask(item.masks["dog"], SIZE, fit), masks["dog"])
        grey = image.mean(0)
        assert grey[masks["dog"]].mean() > 0.5 and (grey[~masks["dog"]] < 0).float().mean() > 0.8
        assert torch.equal(image, load_image(root / "wide.png", SIZE, fit))
        # The bright pixels' centre is the mask's.
        weight = (grey + 1).clamp(min=0)
        ys, xs = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
        centre = [float((weight * c).sum() / weight.sum()) for c in (ys, xs)]
        mask_centre = [float(c[masks["dog"]].float().mean()) for c in (ys, xs)]
        assert centre == pytest.approx(mask_centre, abs=0.3), fit
    assert prepare_image(root / "wide.png", SIZE, "squash")[1] == "squashed 40x20 to 10x10"
    with pytest.raises(ValueError, match="unknown fit"):
        load_image(root / "wide.png", SIZE, "stretch")


class StubModel(EvalModel):
    """An exact-style model whose CMI map of a word is its mask, seen as the model sees it."""

    is_exact = True  # the exact path: word_information only

    def __init__(self, masks: dict[str, torch.Tensor]) -> None:
        super().__init__(None, "stub", "stub", None, SIZE)
        self.masks = masks
        self.calls: list[list[str]] = []

    def word_information(self, key, image, caption, words, sampling) -> Any:
        self.calls.append(list(words))
        maps = torch.stack([torch.ones(SIZE, SIZE)] + [self.masks[w].float() for w in words])

        class Est:
            map = maps[None]
            n_evaluations = 1

            @staticmethod
            def entry(i: int, k: int) -> dict[str, Any]:
                return {"value": 1.0, "stderr": 0.1}

        return Est()


def test_masks_cut_by_the_crop_are_flagged_and_counted(coco) -> None:
    instances, captions, root = coco
    (item,) = [i for i in read_coco(instances, captions, root)[0] if i.id == "3/301"]
    _, masks, flags = load_item_image_and_masks(item, SIZE)
    assert flags == {
        "cat": "mask empty after the centre crop (kept 0 of 16 pixels)",  # columns 0-8 of 40
        "mouse": "mask mostly cut off by the centre crop (kept 4 of 20 pixels)",  # 2-12
    }
    assert load_item_image_and_masks(item, SIZE, fit="squash")[2] == {}

    sampling = Sampling(draws=4)
    settings = {"sampling": {"seed": 0, "draws": 4}, "ddim_steps": 2}
    model = StubModel(masks)
    task = localization.make_task(model, sampling, settings)
    row = task.measure(item)
    row.pop(PICTURES)
    assert model.calls == [["dog", "mouse"]]  # the unscored word is not measured
    assert row["words"]["cat"] == {"flag": flags["cat"]}
    assert row["words"]["mouse"]["flag"] == flags["mouse"]
    cmi = row["words"]["mouse"]["information (CMI)"]
    assert len(cmi["iou"]) == 50 and len(cmi["iou_wide"]) == 49 and max(cmi["iou"]) == 1.0

    rows = [row | {"id": item.id, "cluster": item.cluster}]
    summary = localization.summarize(rows, settings)
    assert summary["flags"] == {
        "mask empty after the centre crop": {"words": 1, "scored": False},
        "mask mostly cut off by the centre crop": {"words": 1, "scored": True},
    }
    assert summary["n_words"] == 2 and summary["n_clusters"] == 1
    assert summary["cluster"] == "image" and summary["fit"] == "crop"
    text = localization.table(summary | {"settings": settings, "n_items": 1, "n_skipped": 0})
    assert "\n  mask empty after the centre crop: 1 (not scored)\n" in text
    assert "\n  mask mostly cut off by the centre crop: 1\n" in text and "1 images" in text
    assert "under our protocol" in text and "mIoU, honest *" in text

    # The paper's protocol squashes: nothing is cut off, every word is scored.
    paper = localization.make_task(model, sampling, settings | {"protocol": "paper"})
    row = paper.measure(item)
    assert all("flag" not in scores for scores in row["words"].values())
    assert model.calls[-1] == ["dog", "cat", "mouse"]


def _rows(n_images: int, per_image: int, seed: int = 0) -> list[dict[str, Any]]:
    """Rows of ``per_image`` items per image whose items of one image have the same map: one
    image's words are perfectly correlated."""
    rng = np.random.default_rng(seed)
    mask = box(1, 4, 1, 4, (6, 6))
    rows = []
    for i in range(n_images):
        heat = rng.random((6, 6)) + mask * rng.random() * 2
        scores = {"information (CMI)": localization._scores(heat, mask)}
        for k in range(per_image):
            rows.append({"id": f"{i}/{k}", "cluster": str(i), "words": {"w": scores}})
    return rows


def test_the_bootstrap_resamples_images(monkeypatch) -> None:
    settings = {"sampling": {"seed": 0}}
    rows = _rows(30, 5)
    clustered = localization.summarize(rows, settings)
    by_item = localization.summarize([r | {"cluster": None} for r in rows], settings)
    assert clustered["n_clusters"] == 30 and by_item["n_clusters"] == 150

    def width(summary: dict[str, Any], *keys: str) -> float:
        m = summary["methods"]["information (CMI)"]
        for key in keys:
            m = m[key]
        lo, hi = m["ci95"]
        return hi - lo

    for keys in (("paper", "miou"), ("ours", "miou"), ("map",)):
        assert width(clustered, *keys) > 1.6 * width(by_item, *keys), keys
    seg = ("imagenet_segmentation", "miou")
    assert width(clustered, *seg) > 1.6 * width(by_item, *seg)

    # The honest threshold's folds are the images': no image on both sides.
    seen = []
    real = metrics.cross_fitted_thresholds
    monkeypatch.setattr(
        metrics, "cross_fitted_thresholds", lambda c, f: seen.append(f) or real(c, f)
    )
    localization.summarize(rows, settings)
    folds = seen[0]
    for i in range(30):
        assert len(set(folds[5 * i : 5 * i + 5])) == 1
    split = [len({metrics.fold_of(r["id"]) for r in rows[5 * i : 5 * i + 5]}) for i in range(30)]
    assert max(split) == 2  # folds by item id would split images


def test_the_wide_grid_finds_thresholds_below_the_papers() -> None:
    """A map whose object sits at 0.07 of its range: the paper's grid (from 0.10) misses it."""
    mask = box(2, 5, 2, 5, (8, 8))
    heat = np.full((8, 8), 0.03)
    heat[mask] = 0.07
    heat[0, 0], heat[7, 7] = 0.0, 1.0  # the range; one hot pixel outside the object
    rows = [
        {"id": str(i), "words": {"w": {"CMI": localization._scores(heat, mask)}}} for i in range(4)
    ]
    e = localization.summarize(rows, {"sampling": {"seed": 0}})["methods"]["CMI"]
    assert e["paper"]["threshold"] == 0.1 and e["paper"]["at_edge"]
    assert e["paper"]["miou"]["value"] == 0.0
    assert e["ours"]["threshold"] == pytest.approx(0.04) and not e["ours"]["at_edge"]
    assert e["ours"]["miou"]["value"] == pytest.approx(9 / 10)
    assert e["honest"]["thresholds"] == [pytest.approx(0.04)] * 2


def test_paper_word_inside_one_of_ours_is_measured_as_that_word(coco) -> None:
    """The paper's regex finds "goose" in "goose's" (an apostrophe ends its word, not ours):
    the item is kept and the word measured is ours, "goose's"."""
    instances, captions, root = coco
    doc = json.loads(captions.read_text())
    doc["annotations"][3]["caption"] = "a goose's wing on a lake"
    captions.write_text(json.dumps(doc))
    paper, bad = read_coco(instances, captions, root, protocol="paper")
    assert bad == []
    goose = [item for item in paper if item.id == "2/4"]
    assert [(g.caption, list(g.masks)) for g in goose] == [
        ("a goose's wing on a lake", ["goose's"])
    ]
