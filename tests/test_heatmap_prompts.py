"""``infodecomp heatmap --prompts FILE``: many prompts, each into its own folder, resumable."""

import json

import pytest
import torch
from conftest import error_line
from PIL import Image
from tiny_pipelines import sd_pipeline

from infodecomp.cli import main
from infodecomp.evaluate.prompts import read_prompts

SAMPLES = "8"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny SD pipeline saved as a local model folder, and two images."""
    root = tmp_path_factory.mktemp("prompts")
    sd_pipeline().save_pretrained(root / "model")
    for k in range(2):
        pixels = torch.rand(24, 20, 3, generator=torch.Generator().manual_seed(k)) * 255
        Image.fromarray(pixels.byte().numpy()).save(root / f"img{k}.png")
    return root


def heatmap(files, prompts, out, *extra):
    argv = ["heatmap", "--model", str(files / "model"), "--prompts", str(prompts)]
    return main([*argv, "--samples", SAMPLES, "--out", str(out), *extra])


def rows(out):
    return [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_text_file_explains_each_prompt_and_resumes(files, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# captions\na red dog\n\n  a blue cat left of a dog  \n")
    out = tmp_path / "out"
    image = str(files / "img0.png")
    assert heatmap(files, prompts, out, "--image", image) == 0
    table = capsys.readouterr().out
    first = rows(out)
    assert [r["prompt"] for r in first] == ["a red dog", "a blue cat left of a dog"]
    assert [r["source"].rsplit(":", 1)[1] for r in first] == ["2", "4"]
    for r in first:
        assert r["id"] in table and r["folder"] == r["id"]
        assert set(r["cmi"]) <= {"a", "red", "dog", "blue", "cat", "left", "of"}
        assert r["n_evaluations"] > 0 and r["seed"] == 0
        assert len(r["mi"]["ci95"]) == 2 and r["mi"]["stderr"] > 0
        doc = json.loads((out / r["id"] / "result.json").read_text())
        assert doc["mi"] == r["mi"] and doc["prompt"] == r["prompt"]
        for name in ("maps.safetensors", "report.html", "grid.png", "dog.heat_map.png"):
            assert (out / r["id"] / name).stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "prompts" and summary["n_items"] == 2
    assert summary["mean_mi"]["n"] == 2

    # A kill after the first row: the rerun measures only the second, the first stays as it was.
    lines = (out / "rows.jsonl").read_text().splitlines(keepends=True)
    (out / "rows.jsonl").write_text(lines[0] + lines[1][:20])  # and half a line
    assert heatmap(files, prompts, out, "--image", image) == 0
    assert "1 already done; 1 to measure" in capsys.readouterr().err
    again = rows(out)
    assert again[0] == first[0]
    assert again[1]["mi"]["value"] == pytest.approx(first[1]["mi"]["value"], rel=1e-9)
    assert heatmap(files, prompts, out, "--image", image) == 0
    assert "2 already done; 0 to measure" in capsys.readouterr().err
    assert rows(out) == again

    # Other settings into the same folder: refused with one line, nothing measured.
    assert heatmap(files, prompts, out, "--image", image, "--context", "pad") == 2
    err = capsys.readouterr().err
    assert error_line(err).startswith("infodecomp: error:") and "other settings" in err
    assert error_line(err) and rows(out) == again


def test_jsonl_lines_take_their_image_seed_and_words_and_equal_a_single_heatmap(
    files, tmp_path, capsys
):
    data = tmp_path / "data"
    data.mkdir()
    (data / "photo.png").write_bytes((files / "img1.png").read_bytes())
    prompts = data / "prompts.jsonl"
    lines = [
        {"prompt": "a red dog", "image": "photo.png", "seed": 3, "words": "dog", "id": "first"},
        {"prompt": "a blue cat", "words": ["cat", "blue"]},
    ]
    prompts.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "out"
    assert heatmap(files, prompts, out, "--image", str(files / "img0.png"), "--seed", "5") == 0
    one, two = rows(out)
    assert (one["id"], one["seed"], list(one["cmi"])) == ("first", 3, ["dog"])
    assert one["image"] == str(data / "photo.png")
    assert two["seed"] == 5 and list(two["cmi"]) == ["cat", "blue"]
    assert two["image"] == str(files / "img0.png") and two["id"].startswith("p")
    assert (out / "first" / "result.json").exists() and (out / two["id"]).is_dir()

    # The same image, prompt, words and seed through a single heatmap give the same numbers.
    single = tmp_path / "single"
    argv = ["heatmap", "--model", str(files / "model"), "--image", str(data / "photo.png")]
    argv += ["--prompt", "a red dog", "--words", "dog", "--seed", "3", "--samples", SAMPLES]
    assert main([*argv, "--out", str(single)]) == 0
    doc = json.loads((single / "result.json").read_text())
    listed = json.loads((out / "first" / "result.json").read_text())
    assert doc["mi"] == one["mi"] and doc["cmi"]["dog"] == listed["cmi"]["dog"]
    assert doc["n_evaluations"] == one["n_evaluations"]


def test_ids_are_stable_when_the_file_is_reordered(files, tmp_path):
    image = files / "img0.png"
    forward, backward = tmp_path / "a.txt", tmp_path / "b.txt"
    forward.write_text("a red dog\na blue cat\n")
    backward.write_text("a blue cat\n# a comment\na red dog\n")
    ids = [item.id for item in read_prompts(forward, image=image)[0]]
    assert [item.id for item in read_prompts(backward, image=image)[0]] == ids[::-1]
    assert len(set(ids)) == 2
    assert read_prompts(forward, image=image, seed=1)[0][0].id != ids[0]  # the seed counts


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not found"),
        ("# only a comment\n\n", "holds no prompts"),
        ('{"prompt": "a dog"}\n{"prompt": "a cat"\n', "prompts.txt:2: malformed JSON"),
        ('{"prompt": "  "}\n', "prompts.txt:1: the prompt is empty"),
        ('{"prompt": "a dog"}\n{"prompt": "a cat", "image": "bad.png"}\n', ":2: cannot read"),
        ('{"prompt": "a dog", "image": "none.png"}\n', ":1: cannot read image"),
        ('{"prompt": "a dog"}\n{"prompt": "a cat", "words": "bird"}\n', ":2: word 'bird' is"),
        ('{"prompt": "a dog", "seed": -1}\n', ":1: 'seed' must be an integer from 0 to 2"),
        ('{"prompt": "a dog", "sed": 1}\n', ":1: unknown key 'sed'"),
        ('{"prompt": "a dog", "id": "../x"}\n', ":1: id '../x' cannot name a folder"),
        ("a dog\na cat\na dog\n", ":3: repeats"),
        ("a dog\n" + "a dog " * 10 + "\n", ":2: prompt is 22 tokens long"),
    ],
)
def test_bad_files_stop_before_any_work_with_one_line(files, tmp_path, capsys, content, message):
    prompts = tmp_path / "prompts.txt"
    if content is not None:
        prompts.write_text(content)
    (tmp_path / "bad.png").write_text("not a png")
    out = tmp_path / "out"
    assert heatmap(files, prompts, out, "--image", str(files / "img0.png")) == 2
    err = capsys.readouterr().err
    assert error_line(err).startswith("infodecomp: error:") and message in err
    assert not (out / "rows.jsonl").exists()


def test_a_line_without_an_image_needs_image(files, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red dog\n")
    assert heatmap(files, prompts, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "prompts.txt:1: no image" in err and error_line(err)
    # --prompt still needs --image, and takes no --prompts beside it.
    argv = ["heatmap", "--model", str(files / "model"), "--out", str(tmp_path / "o")]
    assert main([*argv, "--prompt", "a dog"]) == 2
    assert "--prompt needs --image" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--prompt", "a dog", "--prompts", str(prompts)])
    assert stop.value.code == 2 and "not allowed with" in capsys.readouterr().err
