"""The two protocols: "paper" reproduces the published scoring, "ours" differs exactly where its
table says (ties, exclusions, image fit); clustered intervals; seeded subsets; resumes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from infodecomp.cli import main
from infodecomp.evaluate import metrics
from infodecomp.evaluate.compositional import item_flags, summarize, table
from infodecomp.evaluate.evaluation import random_subset
from infodecomp.evaluate.items import CompositionalItem
from infodecomp.evaluate.runner import read_rows
from infodecomp.evaluate.world_data import compositional_items


def _row(item_id, kind, scores, true_index=1, flags=None, cluster=None, captions=None):
    entry = {"scores": scores, "margin": {"verdict": "not significant"}}
    return {
        "id": item_id,
        "cluster": cluster or item_id,
        "type": kind,
        "captions": captions or ["b", "a"],
        "true_index": true_index,
        "group": None,
        "flags": flags or {},
        "scores": {"model": {"standard": entry, "orthogonal": entry}},
    }


SETTINGS = {"sampling": {"seed": 0}, "model_label": "m", "estimator": "standard"}


def test_paper_and_ours_differ_exactly_in_ties_and_exclusions():
    """VG-Relation-like rows (ARO's order: false caption first, true last): a won item, a lost
    one, an exact tie, an item whose captions are the same text, one of a symmetric relation,
    and a word-order item (true first) one of whose shuffles is the true caption again. "paper"
    scores all six as ARO's argmax does (ties fail) and leaves the symmetric relation out of the
    macro only; "ours" halves the tie, drops the copy from the order item's ranking, and leaves
    out the item with no distinct false caption and the symmetric relation."""
    same = {"identical_captions": "..."}
    rows = [
        _row("won", "on", [0.0, 1.0]),
        _row("lost", "on", [1.0, 0.0]),
        _row("tie", "under", [0.5, 0.5]),
        _row("same", "under", [0.5, 0.5], flags=same, captions=["a cat", "A  cat"]),
        _row("sym", "next to", [0.0, 1.0], flags={"symmetric_relation": "..."}),
        _row(
            "order",
            "order",
            [1.0, 0.5, 1.0, 0.2, 0.1],
            true_index=0,
            flags=same,
            captions=["x y", "y x", "x y", "z w", "w z"],
        ),
    ]
    ours = summarize(rows, SETTINGS | {"protocol": "ours"})
    paper = summarize(rows, SETTINGS | {"protocol": "paper"})
    o, p = ours["columns"]["model/standard"], paper["columns"]["model/standard"]
    # ours: won 1, lost 0, tie 1/2, order 1 (ranked without its copy): 2.5 / 4;
    # macro over on (1/2), under (1/2), order (1).
    assert ours["n_scored"] == 4 and o["accuracy"]["value"] == pytest.approx(0.625)
    assert o["macro_accuracy"]["value"] == pytest.approx(2 / 3)
    assert ours["chance"]["accuracy"]["value"] == pytest.approx((0.5 * 3 + 0.25) / 4)
    # paper: won and sym count; lost, tie, same and order (tied with its copy) fail: 2 / 6;
    # macro without the symmetric relation: on (1/2), under (0), order (0).
    assert paper["n_scored"] == 6 and p["accuracy"]["value"] == pytest.approx(1 / 3)
    assert p["macro_accuracy"]["value"] == pytest.approx(1 / 6)
    # One run prints both: each summary carries the other protocol's scoring of the same rows.
    assert ours["other"]["columns"]["model/standard"]["accuracy"]["value"] == pytest.approx(1 / 3)
    assert paper["other"]["columns"]["model/standard"]["accuracy"]["value"] == pytest.approx(0.625)
    assert ours["flags"] == {"identical_captions": 2, "symmetric_relation": 1}


def test_the_table_states_the_protocol_the_flags_and_the_other_scoring():
    rows = [
        _row("won", "on", [0.0, 1.0]),
        _row("sym", "next to", [0.0, 1.0], flags={"symmetric_relation": "."}),
    ]
    summary = summarize(rows, SETTINGS | {"protocol": "ours"})
    summary |= {
        "n_items": 2,
        "n_skipped": 0,
        "settings": SETTINGS | {"sampling": {"seed": 0, "draws": 8}},
    }
    text = table(summary)
    assert "protocol 'ours'" in text and "1 left out" in text
    assert "flagged: 1 items" in text and "left out under 'ours'" in text
    assert "scored as 'paper'" in text and "centre-cropped" in text


def test_wide_type_tables_are_folded_to_the_best_and_worst():
    rows = [
        _row(f"{t}-{k}", f"type{t:02d}", [0.0, 1.0] if k < t % 4 else [1.0, 0.0])
        for t in range(30)
        for k in range(4)
    ]
    summary = summarize(rows, SETTINGS | {"protocol": "ours"})
    assert len(summary["chance"]["per_type"]) == 30 and len(summary["types_shown"]) == 12
    summary |= {
        "n_items": len(rows),
        "n_skipped": 0,
        "settings": SETTINGS | {"sampling": {"seed": 0, "draws": 8}},
    }
    text = table(summary)
    assert "best and worst of 30 types" in text
    assert max(len(line) for line in text.splitlines()[:6]) < 400


def test_flags_of_degenerate_items_follow_the_image_fit():
    wide = CompositionalItem("w", "x.png", ("a b", "b a"), 1, type="next to", box=(0, 0, 300, 100))
    ours = item_flags(wide, {"format": "aro"}, 512)
    paper = item_flags(wide, {"format": "aro", "protocol": "paper"}, 512)
    assert "centre_crop" in ours and "33%" in ours["centre_crop"] and "squashed" not in ours
    assert "squashed" in paper and "centre_crop" not in paper
    assert "symmetric_relation" in ours  # ARO's list applies to ARO's files only
    assert "symmetric_relation" not in item_flags(wide, {"format": "jsonl"}, 512)
    tiny = CompositionalItem("t", "x.png", ("A  cat", "a cat"), 0, box=(0, 0, 20, 30))
    flags = item_flags(tiny, {}, 512)
    assert set(flags) == {"identical_captions", "small_box"}


def test_cluster_bootstrap_is_wider_than_the_item_bootstrap_for_five_captions_per_image():
    """COCO-like: 40 images x 5 captions, the captions of one image all right or all wrong."""
    rng = np.random.default_rng(3)
    per_image = rng.random(40) < 0.6
    credits = np.repeat(per_image.astype(float), 5)
    images = np.repeat(np.arange(40), 5)
    items = metrics.accuracy(credits, seed=0)
    clustered = metrics.accuracy(credits, seed=0, groups=images)
    assert items["value"] == clustered["value"]
    width = lambda m: m["ci95"][1] - m["ci95"][0]  # noqa: E731
    assert width(clustered) > 1.8 * width(items)  # sqrt(5) wider in theory
    macro = metrics.macro_accuracy(credits, ["t"] * 200, seed=0, groups=images)
    assert width(macro) > 1.8 * width(metrics.macro_accuracy(credits, ["t"] * 200, seed=0))


def test_random_subsets_are_seeded_nested_and_order_free():
    items = compositional_items("test", 30)
    five, ten = random_subset(items, 5, seed=1), random_subset(items, 10, seed=1)
    assert {i.id for i in five} <= {i.id for i in ten} and len(ten) == 10
    assert [i.id for i in random_subset(items[::-1], 5, seed=1)] == [i.id for i in five][::-1]
    assert {i.id for i in random_subset(items, 5, seed=2)} != {i.id for i in five}
    assert [i.id for i in five] != [i.id for i in items[:5]]


def _world_jsonl(folder, n=2):
    lines = []
    for item in compositional_items("test", n):
        name = f"{item.id}.png"
        pixels = ((item.image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(folder / name)
        lines.append(
            {"id": item.id, "image": name, "captions": list(item.captions), "true": item.true_index}
        )
    (folder / "data.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")


@pytest.mark.slow
def test_a_run_resumes_from_another_folder_with_other_relative_paths(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    _world_jsonl(data)
    (tmp_path / "elsewhere").mkdir()
    fast = ["--samples", "4", "--model", "bundled", "--fixed"]
    monkeypatch.chdir(tmp_path)
    args = ["eval", "compositional", "--out", "run", "--data", "data/data.jsonl", *fast]
    assert main([*args, "--image-root", "data", "--limit", "1"]) == 0
    monkeypatch.chdir(tmp_path / "elsewhere")
    args = ["eval", "compositional", "--out", "../run", "--data", str(data / "data.jsonl"), *fast]
    assert main([*args, "--image-root", "../data/", "--limit", "2"]) == 0
    assert len(read_rows(tmp_path / "run")) == 2
    settings = json.loads((tmp_path / "run" / "settings.json").read_text())
    assert settings["image_root"] == str(data) and settings["protocol"] == "ours"


def test_the_paper_protocol_ranks_by_the_orthogonal_score_unless_told(tmp_path):
    from infodecomp import Sampling
    from infodecomp.evaluate.evaluation import evaluate

    kw = {"model": "exact", "limit": 1, "sampling": Sampling(draws=8), "progress": False}
    paper = evaluate("compositional", tmp_path / "p", protocol="paper", **kw)
    assert paper["headline"] == "model/orthogonal" and paper["protocol"] == "paper"
    told = evaluate("compositional", tmp_path / "s", protocol="paper", estimator="standard", **kw)
    assert told["headline"] == "model/standard"
    fixed = evaluate("compositional", tmp_path / "o", ranking="fixed", **kw)
    assert fixed["headline"] == "model/standard"
    staged = evaluate("compositional", tmp_path / "f", **(kw | {"sampling": Sampling(16)}))
    assert staged["headline"] == "model/sequential"  # the default without the paper's protocol
    with pytest.raises(ValueError, match="unknown protocol"):
        evaluate("compositional", tmp_path / "x", protocol="theirs", **kw)


def test_sequential_credit_ranks_among_distinct_captions():
    """A sequential row whose false caption 2 is the true caption's text: under ours the copy
    leaves the ranking, and the true caption (ahead of caption 0 by its interval) wins."""
    margins = [
        {"pair": [0, 1], "value": -3.0, "ci95": [-5.0, -1.0]},  # 1 (true) beats 0
        {"pair": [0, 2], "value": -3.0, "ci95": [-5.0, -1.0]},
        {"pair": [1, 2], "value": -0.1, "ci95": [-0.2, -0.05]},  # the copy "ahead" (noise)
    ]
    entry = {"scores": [-3.0, 0.0, 0.1], "plausible": [2], "leader": 2, "margins": margins}
    entry |= {"margin": {"verdict": "not significant"}, "decision": "decided", "draws": 16}
    row = {
        "id": "r",
        "cluster": "r",
        "type": None,
        "captions": ["b a", "a b", "A b"],
        "true_index": 1,
        "group": None,
        "flags": {"identical_captions": "."},
        "scores": {"model": {"sequential": entry}},
    }
    settings = SETTINGS | {"ranking": "sequential"}
    ours = summarize([row], settings | {"protocol": "ours"})
    assert ours["columns"]["model/sequential"]["accuracy"]["value"] == 1.0
    paper = summarize([row], settings | {"protocol": "paper"})
    assert paper["columns"]["model/sequential"]["accuracy"]["value"] == 0.0


def test_runs_made_before_the_protocol_setting_resume(tmp_path):
    from infodecomp.evaluate.runner import _check_settings

    old = {"task": "compositional", "sampling": {"draws": 8}, "estimator": "standard"}
    (tmp_path / "settings.json").write_text(json.dumps(old))
    (tmp_path / "rows.jsonl").write_text('{"id": "a", "index": 0}\n')
    _check_settings(tmp_path, old | {"protocol": "ours", "ranking": "fixed", "sample": None})
    with pytest.raises(ValueError, match="protocol: 'ours' -> 'paper'"):
        _check_settings(tmp_path, old | {"protocol": "paper", "ranking": "fixed"})
