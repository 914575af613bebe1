"""The evaluation subsystem end to end: commands on world items, resume, shards, bad data."""

import fcntl
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import assert_rows_close, error_line
from PIL import Image

from infodecomp import ddim
from infodecomp.cli import main
from infodecomp.evaluate import read_rows, run, summarize
from infodecomp.evaluate.items import BadItemError, CompositionalItem
from infodecomp.evaluate.runner import Task
from infodecomp.evaluate.world_data import (
    compositional_items,
    intervention_items,
    localization_items,
)
from infodecomp.models import example_mixture
from infodecomp.world.model import WorldModel
from infodecomp.world.scenes import assignment, parse

FAST = ["--samples", "16", "--ddim-steps", "10"]


def rows_without_settings(out):
    return [{k: v for k, v in r.items() if k != "settings"} for r in read_rows(out)]


def test_world_compositional_items_have_known_truth():
    world = WorldModel()
    items = compositional_items("test", 9)
    assert [it.type for it in items[:3]] == ["relation", "attribute", "order"]
    for item in items:
        scene = world.classify(item.image[None].double())[0]
        fits = [assignment(scene, parse(c)) is not None for c in item.captions]
        assert fits[item.true_index] and sum(fits) == 1, item
    # Items do not depend on how many are asked for, nor on the other splits.
    again = compositional_items("test", 4)[3]
    assert again.captions == items[3].captions and torch.equal(again.image, items[3].image)
    assert not torch.equal(compositional_items("validation", 1)[0].image, items[0].image)


@pytest.mark.slow
def test_compositional_on_the_exact_model(tmp_path, capsys):
    out = tmp_path / "comp"
    args = ["eval", "compositional", "--model", "exact", "--limit", "6", "--samples", "64"]
    args.append("--fixed")
    assert main([*args, "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "exact world model: standard" in table and "orthogonal (paper)" in table
    rows = read_rows(out)
    assert len(rows) == 6 and [r["index"] for r in rows] == list(range(6))
    for r in rows:
        s = r["scores"]["model"]
        assert s["exact"]["credit"] == 1.0  # the world's own answer
        assert s["standard"]["credit"] == 1.0  # the log-likelihood ratio ranks right ...
        assert s["orthogonal"]["credit"] == 0.0  # ... the paper's score ranks a false one first
        assert s["standard"]["margin"]["verdict"] == "true caption significantly ahead"
        k = r["true_index"]
        exact, est, se = (
            s["exact"]["scores"][k],
            s["standard"]["scores"][k],
            s["standard"]["stderr"][k],
        )
        assert abs(est - exact) < 5 * se + 0.5
        assert r["settings"]["sampling"]["draws"] == 64 and r["settings"]["versions"]["torch"]
    summary = json.loads((out / "summary.json").read_text())
    cols = summary["columns"]
    assert cols["model/standard"]["accuracy"]["value"] == 1.0
    assert cols["model/orthogonal"]["accuracy"]["value"] == 0.0
    assert summary["chance"]["accuracy"]["value"] == pytest.approx(
        np.mean([1 / len(r["captions"]) for r in rows])
    )
    assert set(cols["model/standard"]["per_type"]) == {"relation", "attribute", "order"}
    assert summary["headline"] == "model/standard" and "standard *" in table
    # --estimator picks the headline; both scores are measured either way.
    other = tmp_path / "orth"
    assert main([*args, "--estimator", "orthogonal", "--out", str(other)]) == 0
    assert "orthogonal (paper) *" in capsys.readouterr().out
    again = json.loads((other / "summary.json").read_text())
    assert again["headline"] == "model/orthogonal" and again["columns"] == cols


@pytest.mark.slow
def test_each_command_runs_on_the_bundled_model(tmp_path, capsys):
    for name in ("compositional", "localization", "intervention"):
        extra = FAST if name != "compositional" else ["--samples", "16"]
        out = tmp_path / name
        assert main(["eval", name, "--limit", "2", *extra, "--out", str(out)]) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["n_items"] == 2 and summary["settings"]["model"] == "bundled"
    table = capsys.readouterr().out
    assert "DAAM (DDIM inversion)" in table and "attention + information" in table
    assert "exact world model CMI" in table and "bundled model, pixel level, CMI" in table
    row = read_rows(tmp_path / "localization")[0]
    word = next(iter(row["words"]))
    assert len(row["words"][word]["information (CMI)"]["iou"]) == 50
    assert "cmi" in row and "reference" in row  # numbers of both models, with standard errors


def test_localization_maps_beat_the_whole_image_on_the_exact_model(tmp_path):
    out = tmp_path / "loc"
    assert (
        main(
            ["eval", "localization", "--model", "exact", "--limit", "12", *FAST, "--out", str(out)]
        )
        == 0
    )
    methods = json.loads((out / "summary.json").read_text())["methods"]
    cmi, whole = methods["information (CMI)"], methods["whole image"]
    assert cmi["paper"]["miou"]["value"] > whole["paper"]["miou"]["value"] + 0.1
    assert (
        cmi["honest"]["miou"]["n"]
        == cmi["paper"]["miou"]["n"]
        == 12 * 0 + sum(len(r["words"]) for r in read_rows(out))
    )
    assert cmi["map"]["value"] > whole["map"]["value"]


class Counting:
    """A task over plain items whose rows are a function of the item; it can be told to stop
    (as a kill would) after some items."""

    def __init__(self, stop_after=None):
        self.measured, self.stop_after = [], stop_after

    def task(self):
        def measure(item):
            if self.stop_after is not None and len(self.measured) == self.stop_after:
                raise KeyboardInterrupt
            self.measured.append(item.id)
            if item.captions[0] == "bad":
                raise BadItemError(f"{item.source}: unreadable image")
            return {"value": len(item.id) * 1.5, "nan": float("nan")}

        return Task("compositional", measure, lambda item: 3)


def plain_items(n, bad=()):
    return [
        CompositionalItem(f"i{k}", None, ("bad" if k in bad else "a", "b"), 0, source=f"f:{k + 1}")
        for k in range(n)
    ]


SAMPLING = {"draws": 4, "seed": 0}
SETTINGS = {"task": "compositional", "sampling": SAMPLING, "model_label": "m", "limit": None}


def test_interrupted_run_resumes_without_losing_or_repeating(tmp_path, monkeypatch):
    monkeypatch.setattr("infodecomp.evaluate.compositional.summarize", lambda rows, s: {})
    whole = Counting()
    run(whole.task(), plain_items(7), tmp_path / "whole", SETTINGS, progress=False, log=print)

    out = tmp_path / "resumed"
    first = Counting(stop_after=3)
    with pytest.raises(KeyboardInterrupt):
        run(first.task(), plain_items(7), out, SETTINGS, progress=False, log=print)
    with (out / "rows.jsonl").open("a") as f:
        f.write('{"index": 3, "id": "i3", "val')  # a kill in the middle of a write
    second = Counting()
    run(second.task(), plain_items(7), out, SETTINGS, progress=False, log=print)
    assert first.measured == ["i0", "i1", "i2"] and second.measured == ["i3", "i4", "i5", "i6"]
    assert (out / "rows.jsonl").read_text() == (tmp_path / "whole" / "rows.jsonl").read_text()
    assert read_rows(out)[0]["nan"] is None  # strict JSON

    third = Counting()
    run(third.task(), plain_items(7), out, SETTINGS, progress=False, log=print)
    assert third.measured == []  # all done: nothing repeated
    with (out / ".lock").open("w") as held:  # another run is writing into the folder
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ValueError, match="another run is writing"):
            run(third.task(), plain_items(7), out, SETTINGS, log=print)
    with pytest.raises(ValueError, match=r"other settings \(sampling: "):
        run(
            third.task(),
            plain_items(7),
            out,
            SETTINGS | {"sampling": SAMPLING | {"draws": 8}},
            log=print,
        )
    run(third.task(), plain_items(9), out, SETTINGS | {"limit": 9}, progress=False, log=print)
    assert third.measured == ["i7", "i8"]  # a larger limit extends the run
    with pytest.raises(ValueError, match="rows of 4 items that this run does not have"):
        run(third.task(), plain_items(5), out, SETTINGS | {"limit": 5}, log=print)


def test_bad_items_stop_the_run_or_are_recorded(tmp_path, monkeypatch):
    monkeypatch.setattr("infodecomp.evaluate.compositional.summarize", lambda rows, s: {})
    with pytest.raises(BadItemError, match="f:2: unreadable image"):
        run(Counting().task(), plain_items(3, bad={1}), tmp_path / "a", SETTINGS, log=print)
    summary = run(
        Counting().task(),
        plain_items(3, bad={1}),
        tmp_path / "b",
        SETTINGS,
        skip_bad=True,
        progress=False,
        log=print,
    )
    assert summary["n_items"] == 2 and summary["n_skipped"] == 1
    assert read_rows(tmp_path / "b")[1]["skipped"] == "f:2: unreadable image"


def test_bad_data_files_exit_2_naming_file_and_line(tmp_path, capsys):
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)
    data = tmp_path / "data.jsonl"
    good = {"image": "x.png", "captions": ["a red circle", "a blue circle"], "true": 0}
    data.write_text(json.dumps(good) + "\n" + '{"image": "missing.png", "captions"\n')
    base = ["eval", "compositional", "--model", "exact", "--samples", "8", "--fixed"]
    base += ["--data", str(data)]
    assert main([*base, "--out", str(tmp_path / "o1")]) == 2
    err = capsys.readouterr().err
    assert f"{data}:2: malformed JSON line" in err and "Traceback" not in err
    assert main([*base, "--skip-bad", "--out", str(tmp_path / "o2")]) == 0
    assert f"skipped {data}:2" in capsys.readouterr().err
    assert len(read_rows(tmp_path / "o2")) == 1
    with pytest.raises(SystemExit) as stop:  # refused by the parser, in one line
        main([*base, "--out", str(tmp_path / "o3"), "--samples", "1"])
    assert stop.value.code == 2
    assert error_line(capsys.readouterr().err)
    assert main(["eval", "summarize", str(tmp_path / "nothing")]) == 2
    assert not (tmp_path / "o1").exists()  # a run that failed before its work leaves no --out
    assert json.loads((tmp_path / "o2" / "summary.json").read_text())["n_skipped"] == 1
    # A folder whose run stopped before any row (settings written, no rows) takes other ones.
    (tmp_path / "o1").mkdir()
    (tmp_path / "o1" / "settings.json").write_text('{"task": "compositional", "seed": 9}')
    assert main([*base, "--skip-bad", "--seed", "3", "--out", str(tmp_path / "o1")]) == 0
    assert json.loads((tmp_path / "o1" / "settings.json").read_text())["sampling"]["seed"] == 3
    # Fixed data: no skipped line left over from the earlier run.
    data.write_text(json.dumps(good) + "\n")
    assert main([*base, "--out", str(tmp_path / "o2")]) == 0
    assert json.loads((tmp_path / "o2" / "summary.json").read_text())["n_skipped"] == 0
    # A folder of another kind (train-world's settings.json) is not taken for an evaluation.
    (tmp_path / "tw").mkdir()
    (tmp_path / "tw" / "settings.json").write_text('{"steps": 10}')
    assert main([*base, "--out", str(tmp_path / "tw")]) == 2
    assert "not an evaluation's folder" in capsys.readouterr().err
    data.write_text(json.dumps(good) + "\n" + '{"image": "missing.png", "captions"\n')

    # An image that exists but cannot be read: named by file and line, or skipped and recorded.
    (tmp_path / "bad.png").write_bytes(b"not a png")
    data.write_text(json.dumps(good) + "\n" + json.dumps(good | {"image": "bad.png"}) + "\n")
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "o4")]) == 2
    assert f"{data}:2: cannot read image" in capsys.readouterr().err
    assert main([*base, "--skip-bad", "--out", str(tmp_path / "o5")]) == 0
    summary = json.loads((tmp_path / "o5" / "summary.json").read_text())
    assert summary["n_items"] == 1 and summary["n_skipped"] == 1
    # Fixed, the skipped item is measured on the next run; its new row replaces the skipped one.
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "bad.png")
    assert main([*base, "--skip-bad", "--out", str(tmp_path / "o5")]) == 0
    summary = json.loads((tmp_path / "o5" / "summary.json").read_text())
    assert summary["n_items"] == 2 and summary["n_skipped"] == 0

    # A damaged rows file is named.
    rows_file = tmp_path / "o5" / "rows.jsonl"
    intact = rows_file.read_text()
    rows_file.write_text(intact + '{"index": 9}\n')
    assert main(["eval", "summarize", str(tmp_path / "o5")]) == 2
    assert "rows.jsonl:4: damaged row" in capsys.readouterr().err
    rows_file.write_text(intact)
    # The data changed under an id that has a row: refused, not silently mixed.
    changed = good | {"captions": ["a red square", "a blue circle"]}
    data.write_text(json.dumps(changed) + "\n" + json.dumps(good | {"image": "bad.png"}) + "\n")
    assert main([*base, "--out", str(tmp_path / "o5")]) == 2
    assert "not the item whose row" in capsys.readouterr().err


def test_summarize_rebuilds_the_summary(tmp_path, capsys):
    out = tmp_path / "c"
    assert (
        main(
            [
                "eval",
                "compositional",
                "--model",
                "exact",
                "--limit",
                "3",
                "--samples",
                "16",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    before = (out / "summary.json").read_text()
    (out / "summary.json").unlink()
    capsys.readouterr()
    assert main(["eval", "summarize", str(out)]) == 0
    assert "Compositional tests: 3 items" in capsys.readouterr().out
    assert (out / "summary.json").read_text() == before
    assert summarize(out)["n_items"] == 3


def cli(*args, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "infodecomp", *args], env=env, **kwargs)


@pytest.mark.slow
def test_kill_9_then_rerun_gives_the_uninterrupted_rows(tmp_path):
    args = ["eval", "compositional", "--limit", "8", "--samples", "16"]
    killed = tmp_path / "killed"
    proc = cli(*args, "--out", str(killed), stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    rows = killed / "rows.jsonl"
    deadline = time.monotonic() + 120
    while not (rows.exists() and rows.read_text().count("\n") >= 2):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert rows.read_text().count("\n") < 8  # killed in the middle
    for out in (killed, tmp_path / "whole"):
        assert cli(*args, "--out", str(out), stderr=subprocess.DEVNULL).wait() == 0
    # The rerun measures the rest with other items in flight: to float rounding.
    assert_rows_close(read_rows(killed), read_rows(tmp_path / "whole"))


@pytest.mark.slow
def test_two_processes_give_the_rows_of_one(tmp_path):
    pytest.importorskip("accelerate")
    args = ["eval", "compositional", "--model", "exact", "--limit", "5", "--samples", "16"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert cli(*args, "--out", str(one), stderr=subprocess.DEVNULL).wait() == 0
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",  # torchrun's launcher; without CUDA the processes join over gloo
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "infodecomp",
        *args,
        "--out",
        str(two),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in two.glob("rows*.jsonl")) == ["rows.0.jsonl", "rows.1.jsonl"]
    # Each process batches its own items in flight: to float rounding.
    assert_rows_close(read_rows(two), read_rows(one))
    summary = json.loads((two / "summary.json").read_text())
    assert_rows_close(summary, json.loads((one / "summary.json").read_text()))
    # Refused in every process alike: one line each, no traceback of ours.
    launch[launch.index("16")] = "32"
    done = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert done.stderr.count("holds a run with other settings") == 2
    assert "gloo" not in done.stderr and "Connection closed" not in done.stderr


@pytest.mark.slow
def test_ddim_inversion_reconstructs_on_an_exact_model():
    model = example_mixture()
    x, labels = model.sample(4, seed=3)
    errors = []
    for steps in (10, 40, 160):
        noise = ddim.invert(model, x, labels[0], steps)
        errors.append((ddim.sample(model, noise, [labels[0]] * 4, steps) - x).pow(2).mean().item())
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.01 * x.pow(2).mean().item()
    with pytest.raises(ValueError, match="steps"):
        ddim.logsnr_grid(model, 1)


def test_world_items_for_localization_and_intervention():
    loc = localization_items("test", 5)
    assert all(set(it.masks) <= set(it.caption.split()) for it in loc)
    assert all(m.any() for it in loc for m in it.masks.values())
    inter = intervention_items("test", 5)
    assert all(w in it.caption.split() for it in inter for w in it.words)


def world_png(tmp_path, name, image):
    """A world image saved as an 8-bit PNG (as a user's file would be)."""
    pixels = ((image.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    path = tmp_path / name
    Image.fromarray(pixels).save(path)
    return path


@pytest.mark.slow
def test_user_files_through_every_command(tmp_path, capsys):
    comp = compositional_items("test", 2)
    a, b = (world_png(tmp_path, f"{k}.png", it.image) for k, it in enumerate(comp))
    c0, c1 = comp[0].captions[comp[0].true_index], comp[1].captions[comp[1].true_index]
    (tmp_path / "comp.jsonl").write_text(
        json.dumps({"id": "g", "images": [a.name, b.name], "captions": [c0, c1]})
        + "\n"
        + json.dumps(
            {"image": a.name, "captions": list(comp[0].captions), "true": comp[0].true_index}
        )
        + "\n"
    )
    aro = [
        {
            "image_path": a.name,
            "bbox_x": 0,
            "bbox_y": 0,
            "bbox_w": 16,
            "bbox_h": 16,
            "true_caption": c0,
            "false_caption": c1,
            "relation_name": "left of",
        }
    ]
    (tmp_path / "aro.json").write_text(json.dumps(aro))
    loc = localization_items("test", 1)[0]
    image = world_png(tmp_path, "loc.png", loc.image)
    word, mask = next(iter(loc.masks.items()))
    Image.fromarray(mask.numpy().astype(np.uint8) * 255).save(tmp_path / "mask.png")
    phrase = " ".join(loc.caption.split()[1:3])  # "red circle": a phrase is one unit
    masks = {word: "mask.png", phrase: "mask.png"}
    line = {"image": image.name, "caption": loc.caption, "masks": masks}
    (tmp_path / "loc.jsonl").write_text(json.dumps(line) + "\n")
    line = {"image": image.name, "caption": loc.caption, "words": [word]}
    (tmp_path / "int.jsonl").write_text(json.dumps(line) + "\n")

    runs = [
        ("compositional", "comp.jsonl", []),
        ("compositional", "aro.json", ["--image-root", str(tmp_path), "--fixed"]),
        ("localization", "loc.jsonl", ["--ddim-steps", "4"]),
        ("intervention", "int.jsonl", ["--ddim-steps", "4"]),
    ]
    for k, (name, data, extra) in enumerate(runs):
        out = tmp_path / f"out{k}"
        argv = ["eval", name, "--data", str(tmp_path / data), "--samples", "8", "--out", str(out)]
        assert main([*argv, *extra]) == 0, capsys.readouterr().err
        summary = json.loads((out / "summary.json").read_text())
        assert summary["n_items"] >= 1 and summary["settings"]["data"].endswith(data)
        assert "reference_label" in summary["settings"]  # no exact model beside user data
        assert summary["settings"]["reference_label"] is None
    assert set(read_rows(tmp_path / "out2")[0]["words"]) == {word, phrase}
    group = json.loads((tmp_path / "out0" / "summary.json").read_text())["columns"]
    assert group["model/standard"]["winoground"]["text"]["n"] == 1
    assert "Winoground" in capsys.readouterr().out


def test_aro_macro_rules(tmp_path):
    """The reader keeps ARO's symmetric relations (the summary decides); VG-Attribution is
    averaged over pairs with at least 25 items."""
    from infodecomp.evaluate.compositional import summarize as comp_summary
    from infodecomp.evaluate.datasets import ARO_SYMMETRIC_RELATIONS, read_aro

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    entry = {"image_path": "a.png", "bbox_x": 0, "bbox_y": 0, "bbox_w": 8, "bbox_h": 8}
    entry |= {"true_caption": "the cup is on the table", "false_caption": "the table is on the cup"}
    entries = [entry | {"relation_name": "on"}, entry | {"relation_name": "next to"}]
    (tmp_path / "rel.json").write_text(json.dumps(entries))
    items, bad = read_aro(tmp_path / "rel.json", tmp_path)
    assert [it.type for it in items] == ["on", "next to"] and items[0].id == "entry0" and not bad
    assert "next to" in ARO_SYMMETRIC_RELATIONS

    def row(kind, credit, k):
        scores = [1.0, 0.0] if credit else [0.0, 1.0]
        score = {"scores": scores, "credit": credit, "margin": {"verdict": "not significant"}}
        cols = {"standard": score, "orthogonal": score}
        return {
            "id": f"{kind}{k}",
            "type": kind,
            "captions": ["a", "b"],
            "true_index": 0,
            "group": None,
            "scores": {"model": cols},
        }

    rows = [row("big_small", 1.0, k) for k in range(25)] + [
        row("red_blue", 0.0, k) for k in range(3)
    ]
    settings = {"sampling": {"seed": 0}, "model_label": "m", "estimator": "standard"}
    settings["macro_min_items"] = 25
    col = comp_summary(rows, settings)["columns"]["model/standard"]
    assert col["macro_accuracy"]["value"] == 1.0  # the 3-item pair is left out of the macro
    assert col["per_type"]["red_blue"]["value"] == 0.0 and col["accuracy"]["n"] == 28


@pytest.mark.parametrize("name", ["localization", "intervention"])
@pytest.mark.slow
def test_extending_a_run_gives_the_rows_of_one_run(tmp_path, name):
    base = ["eval", name, "--model", "exact", *FAST]
    assert main([*base, "--limit", "1", "--out", str(tmp_path / "grown")]) == 0
    assert main([*base, "--limit", "3", "--out", str(tmp_path / "grown")]) == 0
    assert main([*base, "--limit", "3", "--out", str(tmp_path / "once")]) == 0
    assert read_rows(tmp_path / "grown") == read_rows(tmp_path / "once")
    assert len(read_rows(tmp_path / "once")) == 3


@pytest.mark.slow
def test_generated_interventions_start_from_the_recorded_noise(tmp_path, capsys):
    out = tmp_path / "gen"
    argv = ["eval", "intervention", "--generated", "--model", "exact", "--limit", "2", *FAST]
    assert main([*argv, "--out", str(out)]) == 0
    assert "generated from recorded noise" in capsys.readouterr().out
    rows = read_rows(out)
    assert all(r["models"]["model"]["reconstruction_mse"] < 1e-12 for r in rows)  # no inversion
    inverted = tmp_path / "inv"
    assert (
        main(
            [
                "eval",
                "intervention",
                "--model",
                "exact",
                "--limit",
                "2",
                *FAST,
                "--out",
                str(inverted),
            ]
        )
        == 0
    )
    assert all(r["models"]["model"]["reconstruction_mse"] > 1e-9 for r in read_rows(inverted))
    from infodecomp.evaluate.evaluation import evaluate

    with pytest.raises(ValueError, match="generated applies to interventions"):
        evaluate("compositional", tmp_path / "x", generated=True)
