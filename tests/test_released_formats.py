"""Readers of published benchmarks in their released layouts: Winoground's examples.jsonl, ARO's
JSON and its parquet copies, COCO-/Flickr30k-Order (Karpathy test JSON with ARO's
perturbations), and telling the formats apart by content."""

from __future__ import annotations

import json
from collections import Counter
from itertools import permutations
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from infodecomp.evaluate.datasets import crop_box, read_aro
from infodecomp.evaluate.items import BadItemError
from infodecomp.evaluate.perturbations import (
    ADJECTIVE_TAGS,
    NOUN_TAGS,
    perturbation_rng,
    pre_caption,
    shuffle_allbut_nouns_and_adj,
    shuffle_nouns_and_adj,
    shuffle_trigrams,
    shuffle_within_trigrams,
    trigrams,
)
from infodecomp.evaluate.released import (
    ParquetImage,
    detect_format,
    read_aro_order,
    read_aro_parquet,
    read_winoground,
)
from infodecomp.images import load_image

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def png(path: Path, seed: int, size: tuple[int, int] = (12, 10)) -> Path:
    """A small random RGB image (``size`` = (width, height)), saved by its suffix's format."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def lines(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


# ------------------------------------------------------------------------------------ Winoground


def wino_line(i: int, **changes) -> dict:
    line = {
        "id": i,
        "caption_0": "an old person kisses a young person",
        "caption_1": "a young person kisses an old person",
        "image_0": f"ex_{i}_img_0",
        "image_1": f"ex_{i}_img_1",
        "tag": "Object",
        "secondary_tag": "",
        "num_main_preds": 1,
        "collapsed_tag": "Object",
    }
    return {k: v for k, v in (line | changes).items() if v is not None}


@pytest.fixture
def winoground(tmp_path: Path) -> Path:
    """Winoground's released layout: data/examples.jsonl, data/images/ex_{i}_img_{k}.png."""
    for i in range(2):
        for k in range(2):
            png(tmp_path / "data" / "images" / f"ex_{i}_img_{k}.png", 10 * i + k)
    return lines(tmp_path / "data" / "examples.jsonl", [wino_line(0), wino_line(1, tag="Both")])


def test_read_winoground(winoground: Path) -> None:
    items, bad = read_winoground(winoground)
    assert not bad and [it.id for it in items] == ["0/0", "0/1", "1/0", "1/1"]
    images = winoground.parent / "images"
    for it in items:
        group, k = it.id.split("/")
        assert it.image == images / f"ex_{group}_img_{k}.png" and it.true_index == int(k)
        assert it.group == it.cluster == group and it.box is None
        assert it.captions == (wino_line(0)["caption_0"], wino_line(0)["caption_1"])
    assert [it.type for it in items] == ["Object", "Object", "Both", "Both"]
    assert items[2].source == f"{winoground}:2"
    # image_root given: the images are looked up there
    assert read_winoground(winoground, image_root=images)[0] == items


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image_1": "ex_9_img_1"}, "image_1 file missing: "),
        ({"caption_0": None}, "missing key 'caption_0'"),
        ({"image_0": None}, "missing key 'image_0'"),
    ],
)
def test_winoground_bad_lines(winoground: Path, change: dict, message: str) -> None:
    lines(winoground, [wino_line(0), wino_line(1, **change)])
    with pytest.raises(BadItemError) as err:
        read_winoground(winoground)
    text = str(err.value)
    assert text.startswith(f"{winoground}:2: ") and message in text and "\n" not in text
    items, bad = read_winoground(winoground, skip_bad=True)
    assert len(items) == 2 and bad == [(f"{winoground}:2", text)]


def test_winoground_parquet_gives_the_jsonl_items(winoground: Path, tmp_path: Path) -> None:
    """The hub's parquet copy (data/test-*.parquet: id, image_0, image_1 as {bytes, path},
    caption_0, caption_1, tag, ...) reads as examples.jsonl + images/ does."""
    from infodecomp.evaluate.released import detect_format, read_winoground_parquet

    from_jsonl, _ = read_winoground(winoground)
    records = [json.loads(line) for line in winoground.read_text().splitlines()]
    for record in records:
        for k in range(2):
            name = f"{record[f'image_{k}']}.png"
            data = (winoground.parent / "images" / name).read_bytes()
            record[f"image_{k}"] = {"bytes": data, "path": name}
    shards = tmp_path / "hub" / "data"
    shards.mkdir(parents=True)
    for k, record in enumerate(records):  # two shards, one row each
        pq.write_table(pa.Table.from_pylist([record]), shards / f"test-0000{k}-of-00002.parquet")
    assert detect_format(shards, "compositional") == "winoground-parquet"
    items, bad = read_winoground_parquet(shards)
    assert not bad and [it.id for it in items] == [it.id for it in from_jsonl]
    for a, b in zip(items, from_jsonl, strict=True):
        assert (a.captions, a.true_index, a.type, a.group, a.cluster) == (
            b.captions, b.true_index, b.type, b.group, b.cluster
        )  # fmt: skip
        assert np.array_equal(np.asarray(a.image.open()), np.asarray(Image.open(b.image)))


# ------------------------------------------------------------------------------------ ARO JSON


def aro_entries() -> list[dict]:
    base = {"bbox_x": 1, "bbox_y": 2, "bbox_w": 6, "bbox_h": 5}
    return [
        base
        | {
            "image_path": "1.jpg",
            "relation_name": "on",
            "true_caption": "the cup is on the table",
            "false_caption": "the table is on the cup",
        },  # fmt: skip
        base
        | {
            "image_path": "1.jpg",
            "relation_name": "next to",
            "true_caption": "the cat is next to the dog",
            "false_caption": "the dog is next to the cat",
        },  # fmt: skip
        base
        | {
            "image_path": "2.jpg",
            "relation_name": "on",
            "true_caption": "a hat",
            "false_caption": "a hat",
        },  # fmt: skip
    ]


@pytest.fixture
def aro_root(tmp_path: Path) -> Path:
    """ARO's layout: root_dir/visual_genome_relation.json and root_dir/images/."""
    png(tmp_path / "images" / "1.jpg", 1)
    png(tmp_path / "images" / "2.jpg", 2)
    (tmp_path / "visual_genome_relation.json").write_text(json.dumps(aro_entries()))
    return tmp_path


def test_read_aro_keeps_every_entry_in_aros_order(aro_root: Path) -> None:
    items, bad = read_aro(aro_root / "visual_genome_relation.json")  # images/ found by default
    assert not bad and [it.id for it in items] == ["entry0", "entry1", "entry2"]
    assert items[0].captions == ("the table is on the cup", "the cup is on the table")
    assert all(it.true_index == 1 for it in items)
    assert [it.type for it in items] == ["on", "next to", "on"]  # symmetric relation kept
    assert items[2].captions == ("a hat", "a hat")  # kept: the summary flags it
    assert [it.cluster for it in items] == ["1.jpg", "1.jpg", "2.jpg"]
    assert items[0].image == aro_root / "images" / "1.jpg" and items[0].box == (1, 2, 6, 5)


# --------------------------------------------------------------------------------- ARO parquet


def aro_parquet(path: Path, root: Path, entries: list[dict], image_path: bool = False) -> Path:
    """A parquet copy as on the hub (gowitheflow/ARO-Visual-Relation): image struct {bytes,
    path}, true_caption, false_caption, relation_name, bbox struct {x, y, w, h} float32."""
    images = []
    for e in entries:
        data = (root / "images" / e["image_path"]).read_bytes()
        images.append({"bytes": data, "path": e["image_path"]})
    box = pa.struct([(k, pa.float32()) for k in "xywh"])
    columns = {
        "image": pa.array(images, pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        "true_caption": pa.array([e["true_caption"] for e in entries]),
        "false_caption": pa.array([e["false_caption"] for e in entries]),
        "relation_name": pa.array([e["relation_name"] for e in entries]),
        "bbox": pa.array([{k: e[f"bbox_{k}"] for k in "xywh"} for e in entries], box),
    }
    if image_path:
        columns["image_path"] = pa.array([e["image_path"] for e in entries])
    pq.write_table(pa.table(columns), path, row_group_size=2)
    return path


def test_read_aro_parquet_gives_read_aros_items(aro_root: Path) -> None:
    path = aro_parquet(aro_root / "test-00000-of-00001.parquet", aro_root, aro_entries())
    items, bad = read_aro_parquet(path)
    expected, _ = read_aro(aro_root / "visual_genome_relation.json")
    assert not bad and len(items) == 3
    for it, ex in zip(items, expected, strict=True):
        assert (it.id, it.captions, it.true_index, it.type) == (
            ex.id,
            ex.captions,
            ex.true_index,
            ex.type,
        )
        assert it.box == ex.box and it.cluster == ex.cluster  # the stored image's path
        assert it.source == f"{path}[{ex.id.removeprefix('entry')}]"
        assert isinstance(it.image, ParquetImage)
        # the stored image is the file's, cropped alike
        assert crop_box(it.image, it.box).tobytes() == crop_box(ex.image, ex.box).tobytes()
        np.testing.assert_array_equal(load_image(it.image, 8), load_image(ex.image, 8))
    text = str(items[0].image)
    assert text.startswith("test-00000-of-00001.parquet[0]:sha256:") and str(aro_root) not in text
    assert str(items[0].image).split(":")[-1] == str(items[1].image).split(":")[-1]  # one photo


def test_aro_parquet_shards_count_rows_across_files(aro_root: Path) -> None:
    folder = aro_root / "data"
    folder.mkdir()
    entries = aro_entries()
    aro_parquet(folder / "test-00000-of-00002.parquet", aro_root, entries[:2])
    aro_parquet(folder / "test-00001-of-00002.parquet", aro_root, entries[2:])
    items, bad = read_aro_parquet(folder)
    assert not bad and [it.id for it in items] == ["entry0", "entry1", "entry2"]
    assert items[2].source == f"{folder / 'test-00001-of-00002.parquet'}[0]"
    assert detect_format(folder, "compositional") == "aro-parquet"


def test_aro_parquet_bad_rows_and_files(aro_root: Path) -> None:
    entries = aro_entries()
    entries[1]["bbox_w"] = 0
    path = aro_parquet(aro_root / "a.parquet", aro_root, entries, image_path=True)
    with pytest.raises(BadItemError, match=rf"^{path}\[1\]: empty box: width 0, height 5$"):
        read_aro_parquet(path)
    items, bad = read_aro_parquet(path, skip_bad=True)
    assert [it.id for it in items] == ["entry0", "entry2"] and bad[0][0] == f"{path}[1]"
    assert items[1].cluster == "2.jpg"  # the image_path column
    table = pq.read_table(path).drop_columns(["true_caption"])
    pq.write_table(table, path)
    with pytest.raises(BadItemError, match=r"not an ARO parquet copy: no column 'true_caption'"):
        read_aro_parquet(path)
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(BadItemError, match=rf"^{path}: not a parquet file"):
        read_aro_parquet(path)


def test_parquet_image_without_bytes_is_a_bad_row(aro_root: Path) -> None:
    path = aro_parquet(aro_root / "a.parquet", aro_root, aro_entries())
    table = pq.read_table(path)
    images = table.column("image").to_pylist()
    images[0] = {"bytes": None, "path": "1.jpg"}
    kind = table.schema.field("image").type
    table = table.set_column(0, "image", pa.array(images, kind))
    pq.write_table(table, path)
    with pytest.raises(BadItemError, match=r"\[0\]: image missing: no image bytes .*'1.jpg'"):
        read_aro_parquet(path)
    assert ParquetImage(path, 1, "image", "x").open().size == (12, 10)
    images[1] = {"bytes": b"not an image", "path": None}
    pq.write_table(table.set_column(0, "image", pa.array(images, kind)), path)
    with pytest.raises(ValueError, match=r"^cannot read image a.parquet\[1\]:sha256:x: "):
        ParquetImage(path, 1, "image", "x").open()


# ------------------------------------------------------------------------------ perturbations

WORDS = {
    "a": "DT",
    "the": "DT",
    "man": "NN",
    "dog": "NN",
    "park": "NN",
    "ball": "NN",
    "red": "JJ",
    "small": "JJ",
    "happy": "JJ",
    "with": "IN",
    "in": "IN",
    "plays": "VBZ",
    "and": "CC",
    ".": ".",
}


def tagger(text: str) -> list[tuple[str, str]]:
    """A fixed tagger: words (and the full stop) split by spaces, tagged from ``WORDS``."""
    return [(t, WORDS.get(t.lower(), "NN")) for t in text.replace(".", " .").split()]


CAPTION = "A happy man plays with a small dog and a red ball in the park ."
TAGGED = tagger(CAPTION)


def positions(tags: frozenset) -> list[int]:
    return [i for i, (_, tag) in enumerate(TAGGED) if tag in tags]


@pytest.mark.parametrize("seed", range(5))
def test_nouns_and_adjectives_move_only_among_their_places(seed: int) -> None:
    rng = np.random.default_rng(seed)
    out = shuffle_nouns_and_adj(TAGGED, rng).split(" ")
    tokens = [t for t, _ in TAGGED]
    assert Counter(out) == Counter(tokens)
    for tags in (NOUN_TAGS, ADJECTIVE_TAGS):
        where = positions(tags)
        assert sorted(out[i] for i in where) == sorted(tokens[i] for i in where)
    held = set(range(len(tokens))) - set(positions(NOUN_TAGS | ADJECTIVE_TAGS))
    assert all(out[i] == tokens[i] for i in held)
    out = shuffle_allbut_nouns_and_adj(TAGGED, rng).split(" ")
    assert Counter(out) == Counter(tokens)
    assert all(out[i] == tokens[i] for i in positions(NOUN_TAGS | ADJECTIVE_TAGS))


def test_trigram_shuffles_keep_the_trigrams() -> None:
    tokens = [t for t, _ in TAGGED]
    assert trigrams(tokens[:7]) == [tokens[0:3], tokens[3:6], tokens[6:7]]
    groups = trigrams(tokens)  # 16 tokens: five trigrams and a last one-token group
    assert [len(g) for g in groups] == [3, 3, 3, 3, 3, 1]
    orders = [sum(order, []) for order in permutations(groups)]
    seen = set()
    for seed in range(8):
        out = shuffle_within_trigrams(TAGGED, np.random.default_rng(seed)).split(" ")
        assert [sorted(g) for g in trigrams(out)] == [sorted(g) for g in groups]
        out = shuffle_trigrams(TAGGED, np.random.default_rng(seed)).split(" ")
        assert out in orders  # the trigrams in some order, each one whole
        seen.add(tuple(out))
    assert len(seen) > 1  # the order does change with the seed


def test_perturbations_are_seeded_by_item_and_function() -> None:
    a = perturbation_rng("img.jpg#0", "shuffle_trigrams").integers(1 << 30, size=4)
    b = perturbation_rng("img.jpg#0", "shuffle_trigrams").integers(1 << 30, size=4)
    c = perturbation_rng("img.jpg#1", "shuffle_trigrams").integers(1 << 30, size=4)
    d = perturbation_rng("img.jpg#0", "shuffle_within_trigrams").integers(1 << 30, size=4)
    assert (a == b).all() and not (a == c).all() and not (a == d).all()


def test_pre_caption_is_blips() -> None:
    assert pre_caption('A Man (on) a  bike!! #fun: yes; ok~ "q" *x*.') == (
        "a man on a bike fun yes ok q x"
    )
    assert pre_caption("  Tabs\tand\n\nlines.  ") == "tabs\tand lines"  # one white space kept
    assert pre_caption("a, b's c-d? e/f") == "a, b's c-d? e/f"  # these are not touched
    long = " ".join(f"w{i}" for i in range(40))
    assert pre_caption(long, 30) == " ".join(f"w{i}" for i in range(30))


# ---------------------------------------------------------------------- COCO- and Flickr30k-Order


@pytest.fixture
def karpathy(tmp_path: Path) -> Path:
    """BLIP's coco_karpathy_test.json beside val2014/ (ARO's COCO root_dir)."""
    png(tmp_path / "val2014" / "COCO_val2014_000000000001.jpg", 1)
    png(tmp_path / "val2014" / "COCO_val2014_000000000002.jpg", 2)
    entries = [
        {"image": "val2014/COCO_val2014_000000000001.jpg", "caption": [CAPTION, "Dogs."]},
        {"image": "val2014/COCO_val2014_000000000002.jpg", "caption": ["The red ball."]},
    ]
    path = tmp_path / "coco_karpathy_test.json"
    path.write_text(json.dumps(entries))
    return path


def test_read_aro_order(karpathy: Path) -> None:
    items, bad = read_aro_order(karpathy, tagger=tagger)
    name = "val2014/COCO_val2014_000000000001.jpg"
    assert not bad and [it.id for it in items] == [f"{name}#0", f"{name}#1", "val2014/" +
        "COCO_val2014_000000000002.jpg#0"]  # fmt: skip
    first = items[0]
    assert first.true_index == 0 and first.type is None and first.cluster == name
    assert first.image == karpathy.parent / name and first.source == f"{karpathy}[0].caption[0]"
    assert len(first.captions) == 5 and first.captions[0] == pre_caption(CAPTION)
    true_words = Counter(first.captions[0].split())
    assert all(Counter(c.split()) == true_words for c in first.captions[1:])
    again, _ = read_aro_order(karpathy, tagger=tagger)
    assert again == items  # seeded: the same false captions every run
    # a one-word caption's perturbations are the caption itself: kept (the summary flags it)
    assert items[1].captions == ("dogs",) * 5


def test_aro_order_bad_entries(karpathy: Path) -> None:
    entries = json.loads(karpathy.read_text())
    entries[1]["image"] = "val2014/gone.jpg"
    entries[0]["caption"][1] = "..."
    karpathy.write_text(json.dumps(entries))
    with pytest.raises(BadItemError, match=rf"^{karpathy}\[0\]\.caption\[1\]: caption '...' is"):
        read_aro_order(karpathy, tagger=tagger)
    items, bad = read_aro_order(karpathy, tagger=tagger, skip_bad=True)
    assert len(items) == 1 and [b[0] for b in bad] == [
        f"{karpathy}[0].caption[1]",
        f"{karpathy}[1]",
    ]
    assert "image file missing: " in bad[1][1] and "\n" not in bad[1][1]


# ------------------------------------------------------------------------------------ formats


def test_detect_format_by_content(tmp_path: Path, winoground, aro_root, karpathy) -> None:
    assert detect_format(winoground, "compositional") == "winoground"
    assert detect_format(aro_root / "visual_genome_relation.json", "compositional") == "aro"
    attribution = tmp_path / "attr.data"
    attribution.write_text(json.dumps([{"attributes": ["red", "blue"]}], indent=2))
    assert detect_format(attribution, "compositional") == "aro"
    assert detect_format(karpathy, "compositional") == "aro-order"
    plain = lines(tmp_path / "c.json", [{"image": "a.png", "captions": ["a", "b"], "true": 0}])
    assert detect_format(plain, "compositional") == "jsonl"  # the name does not decide
    group = {"id": "g", "images": ["a.png", "b.png"], "captions": ["a", "b"]}  # a 2x2 line
    assert detect_format(lines(tmp_path / "g.jsonl", [group]), "compositional") == "jsonl"
    coco = tmp_path / "instances.json"
    coco.write_text(json.dumps({"info": {}, "images": [], "annotations": []}))
    assert detect_format(coco, "localization") == "coco"
    coco.write_text(json.dumps({"info": {"x": "y" * 70000}, "images": []}))  # one long line
    assert detect_format(coco, "localization") == "coco"
    coco.write_text(json.dumps({"images": [], "annotations": []}, indent=2))
    assert detect_format(coco, "localization") == "coco"
    parquet = aro_parquet(tmp_path / "x.bin", aro_root, aro_entries()[:1])
    assert detect_format(parquet, "compositional") == "aro-parquet"
    odd = tmp_path / "odd.json"
    for text in ("[1, 2]", "hello", '[{"x": 1}]'):
        odd.write_text(text)
        with pytest.raises(ValueError) as err:
            detect_format(odd, "compositional")
        message = str(err.value)
        assert str(odd) in message and "\n" not in message
        assert (
            "--format (jsonl, aro, aro-order, aro-parquet, winoground, winoground-parquet)"
            in message
        )


# ----------------------------------------------------------------------------------- end to end


def test_winoground_end_to_end_on_world_images(tmp_path: Path) -> None:
    """The whole path, detection to summary, on world-made images and the bundled model."""
    from infodecomp import Sampling
    from infodecomp.evaluate import evaluate, read_rows
    from infodecomp.evaluate.world_data import compositional_items

    comp = compositional_items("test", 2)
    images = tmp_path / "data" / "images"
    images.mkdir(parents=True)
    for k, item in enumerate(comp):
        pixels = ((item.image.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(images / f"ex_0_img_{k}.png")
    c0, c1 = (it.captions[it.true_index] for it in comp)
    line = wino_line(0, caption_0=c0, caption_1=c1)
    data = lines(tmp_path / "data" / "examples.jsonl", [line])
    summary = evaluate(
        "compositional",
        tmp_path / "out",
        model="bundled",
        data=str(data),
        sampling=Sampling(draws=8),
        limit=2,
        device="cpu",
        progress=False,
        log=lambda _: None,
    )
    assert summary is not None and summary["n_items"] == 2
    assert summary["settings"]["format"] == "winoground"
    rows = read_rows(tmp_path / "out")
    assert {r["cluster"] for r in rows} == {"0"} and {r["id"] for r in rows} == {"0/0", "0/1"}


def test_parquet_image_str_is_cheap_and_content_based(aro_root: Path, tmp_path: Path) -> None:
    a = aro_parquet(aro_root / "a.parquet", aro_root, aro_entries())
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    b = aro_parquet(moved / "a.parquet", aro_root, aro_entries())
    first, _ = read_aro_parquet(a)
    second, _ = read_aro_parquet(b)
    assert [str(it.image) for it in first] == [str(it.image) for it in second]


def test_missing_libraries_are_named_in_one_line(monkeypatch, karpathy: Path, capsys) -> None:
    import sys

    from infodecomp.evaluate import perturbations

    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # import fails
    with pytest.raises(ImportError, match=r"^reading parquet files needs pyarrow: pip install"):
        read_aro_parquet(karpathy)
    monkeypatch.setitem(sys.modules, "spacy", None)
    monkeypatch.setattr(perturbations, "_SPACY", [])
    with pytest.raises(ImportError, match=r"pip install spacy && python -m spacy download en_"):
        read_aro_order(karpathy)
    # The command line says it in one line, exit 2.
    from infodecomp.cli import main

    argv = ["eval", "compositional", "--data", str(karpathy), "--model", "exact"]
    assert main([*argv, "--out", str(karpathy.parent / "out")]) == 2
    err = capsys.readouterr().err
    assert "pip install spacy" in err and "Traceback" not in err
