"""`infodecomp eval interaction`: word pairs over a dataset through the evaluation runner."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from infodecomp.cli import main
from infodecomp.evaluate import evaluate, read_rows
from infodecomp.evaluate.datasets import read_interaction
from infodecomp.evaluate.world_data import interaction_items
from infodecomp.sampling import Sampling
from infodecomp.world.model import WorldModel

DRAWS = Sampling(draws=64, seed=2)


def test_world_items_are_colour_and_shape_pairs_of_the_caption():
    items = interaction_items("test", 12, prior="correlated")
    assert len({item.id for item in items}) == 12
    for item in items:
        words = item.caption.split()
        for colour, shape in item.pairs:
            assert words.count(colour) == 1 and words.count(shape) == 1
    # The first items do not change with the number asked for.
    assert [i.id for i in interaction_items("test", 4, prior="correlated")] == [
        i.id for i in items[:4]
    ]


def test_exact_model_run_follows_the_correlation_and_resumes(tmp_path):
    """On the correlated world the exact model's mean interaction information of a colour
    with its preferred shape is positive (redundant: exact log(3 * 0.9) = 0.99 nats for a
    one-object image); a rerun measures nothing again."""
    out = tmp_path / "run"
    args = {"model": "exact-correlated", "data": "world-correlated", "limit": 8}
    summary = evaluate("interaction", out, sampling=DRAWS, progress=False, **args)
    groups = summary["models"]["model"]["groups"]
    preferred = [
        g
        for name, g in groups.items()
        if name in ("blue & triangle", "red & circle", "green & square") and g["n_pairs"] > 1
    ]
    assert preferred
    assert all(g["interaction"]["ci95"][0] > 0 for g in preferred)
    assert all(0 < g["redundancy_share"]["value"] < 1 for g in preferred)
    rows = read_rows(out)
    assert len(rows) == 8
    first = rows[0]["models"]["model"]["pairs"][0]
    assert {"interaction", "redundancy", "synergy", "joint", "pixel_atoms_total"} <= set(first)
    messages: list[str] = []
    evaluate("interaction", out, sampling=DRAWS, progress=False, log=messages.append, **args)
    assert any("0 to measure" in m for m in messages)


def test_rows_do_not_depend_on_the_items_in_flight(tmp_path):
    args = {"model": "exact", "data": "world", "limit": 4, "sampling": DRAWS, "progress": False}
    evaluate("interaction", tmp_path / "a", in_flight=1, **args)
    evaluate("interaction", tmp_path / "b", **args)
    for a, b in zip(read_rows(tmp_path / "a"), read_rows(tmp_path / "b"), strict=True):
        pa, pb = a["models"]["model"]["pairs"], b["models"]["model"]["pairs"]
        for x, y in zip(pa, pb, strict=True):
            assert x["interaction"]["value"] == pytest.approx(y["interaction"]["value"], abs=1e-9)


def _world_image(path, caption: str = "a blue triangle") -> None:
    """An image of the world for ``caption``, saved as a PNG."""
    model = WorldModel()
    index = int(model.components(caption)[0])
    pixels = model.means[index].clamp(-1, 1)
    array = ((pixels + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(array).save(path)


def test_jsonl_items_with_images_and_seeds(tmp_path):
    _world_image(tmp_path / "tri.png")
    lines = [
        {"image": "tri.png", "caption": "a blue triangle", "pair": ["blue", "triangle"]},
        {"seed": 3, "prompt": "a red circle", "pair": ["red", "circle"], "group": "circles"},
        {"image": "tri.png", "caption": "a blue triangle", "pair": ["blue", "square"]},
        {"image": "tri.png", "seed": 1, "caption": "a blue triangle", "pair": ["a", "blue"]},
        {"image": "tri.png", "caption": "a blue triangle", "pair": ["blue", "blue"]},
        {"image": "tri.png", "caption": "a blue triangle", "pairs": [["a", "blue"], ["A", "blue"]]},
        {"image": "tri.png", "caption": "a blue triangle", "pair": ["a", "triangle"]},
    ]
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    items, bad = read_interaction(data, skip_bad=True)
    assert [i.pairs for i in items] == [
        (("blue", "triangle"),),
        (("red", "circle"),),
        (("a", "triangle"),),
    ]
    assert items[1].seed == 3 and items[1].image is None and items[1].group == "circles"
    # Lines on one image are one cluster of the bootstrap; a generated image its own.
    assert items[0].cluster == items[2].cluster != items[1].cluster
    assert len(bad) == 4 and all("\n" not in message for _, message in bad)
    assert "two different words" in bad[2][1] and "twice" in bad[3][1]
    assert "not in the prompt" in bad[0][1]
    assert "'image'" in bad[1][1] and "'seed'" in bad[1][1]
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(json.dumps(line) for line in [*lines[:2], lines[-1]]) + "\n")
    summary = evaluate(
        "interaction",
        tmp_path / "run",
        model="exact",
        data=str(good),
        sampling=DRAWS,
        ddim_steps=10,
        progress=False,
    )
    groups = summary["models"]["model"]["groups"]
    assert set(groups) == {"blue & triangle", "circles", "a & triangle"}
    assert groups["blue & triangle"]["n_images"] == 1
    rows = read_rows(tmp_path / "run")
    generated = next(r for r in rows if "seed" in r)
    # The generated image's rows: the DDIM steps plus the draws' conditions.
    assert generated["models"]["model"]["n_evaluations"] > 10
    assert np.isfinite(groups["circles"]["interaction"]["value"])


def test_cli_runs_and_says_bad_data_in_one_line(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(
        [
            "eval",
            "interaction",
            "--model",
            "exact",
            "--limit",
            "2",
            "--samples",
            "32",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "Word-pair interactions" in printed and "redundancy share" in printed
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "none.png", "caption": "a cat", "pair": ["a", "cat"]}\n')
    code = main(["eval", "interaction", "--data", str(bad), "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert len([line for line in err.splitlines() if "error" in line]) == 1


def test_every_model_name_the_loader_knows_is_in_each_model_help(tmp_path, capsys, monkeypatch):
    """The --model help of every command that loads a model lists each name load_model takes
    (generate: those with a pipeline), and generate says in one line that the exact world
    model has none."""
    from infodecomp.loading import EXACT_MODELS, MODEL_NAMES, load_model

    assert set(MODEL_NAMES) == {"bundled", *EXACT_MODELS}
    for name in EXACT_MODELS:
        assert load_model(name, device="cpu").prior == EXACT_MODELS[name]
    with pytest.raises(ValueError, match="'exact-correlated'"):
        load_model(" ")
    monkeypatch.setenv("COLUMNS", "1000")  # one line per option: no name broken at a hyphen
    commands = [[c] for c in ("heatmap", "interaction", "score", "generate")]
    commands += [
        ["eval", e] for e in ("compositional", "localization", "intervention", "interaction")
    ]
    for command in commands:
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        line = next(
            s
            for s in capsys.readouterr().out.splitlines()
            if s.lstrip().startswith("--model MODEL ")
        )
        for name in MODEL_NAMES:
            listed = f"'{name}' (" in line
            assert listed == (command != ["generate"] or name not in EXACT_MODELS), (command, name)
    code = main(
        ["generate", "--model", "exact", "--prompt", "a red circle", "--out", str(tmp_path)]
    )
    err = capsys.readouterr().err
    assert code == 2 and "no pipeline to generate with" in err and "Traceback" not in err


def test_report_states_ddim_steps_only_for_images_generated_from_seeds(tmp_path):
    def lead(out) -> str:
        page = (out / "report.html").read_text()
        return re.search(r"<p class=lead>(.*?)</p>", page, re.S).group(1)

    args = {"model": "exact", "sampling": DRAWS, "ddim_steps": 10, "progress": False}
    evaluate("interaction", tmp_path / "world", data="world", limit=2, **args)
    assert "DDIM" not in lead(tmp_path / "world")  # the world's images are rendered
    _world_image(tmp_path / "tri.png")
    lines = [
        {"image": "tri.png", "caption": "a blue triangle", "pair": ["blue", "triangle"]},
        {"seed": 3, "caption": "a red circle", "pair": ["red", "circle"]},
    ]
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    evaluate("interaction", tmp_path / "seeded", data=str(data), **args)
    assert "1 image generated from a seed in 10 DDIM steps" in lead(tmp_path / "seeded")


def test_summary_counts_the_values_flagged_unreliable(tmp_path, capsys):
    out = tmp_path / "few"
    argv = ["eval", "interaction", "--model", "exact", "--limit", "3", "--samples", "8"]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    pairs = [p for r in read_rows(out) for p in r["models"]["model"]["pairs"]]
    names = [q for q in pairs[0] if isinstance(pairs[0][q], dict) and "reliable" in pairs[0][q]]
    flagged = sum(not p[q]["reliable"] for p in pairs for q in names)
    assert flagged > 0  # 8 draws: the case the test is about occurs
    counted = summary["models"]["model"]["unreliable"]
    assert (
        counted["values"] == flagged and counted["of"] == len(pairs) * len(names) == len(pairs) * 11
    )
    assert counted["n_pairs"] == len(pairs) and sum(counted["by_quantity"].values()) == flagged
    line = f"unreliable: {flagged} of {counted['of']} values"
    assert line in printed and line in (out / "report.html").read_text()
