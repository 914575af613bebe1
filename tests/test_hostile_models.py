"""Hostile model and prompt inputs (issue 16): each refused with one line (exit 2 from the
command, ValueError / TypeError from the library), before the slow part where it can be."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from infodecomp.cli import main
from infodecomp.evaluate.evaluation import evaluate
from infodecomp.evaluate.items import BadItemError
from infodecomp.evaluate.prompts import read_prompts
from infodecomp.evaluate.runner import lone_accelerate_process, process_state
from infodecomp.explanation import explain
from infodecomp.loading import load_model, resolve_device
from infodecomp.models import example_mixture
from infodecomp.models.checks import MAX_SEED, check_device, check_seed
from infodecomp.models.diffusers import DiffusersModel
from infodecomp.sampling import Sampling
from infodecomp.words import check_text, words_to_explain
from infodecomp.world.bundled_model import BUNDLED

NON_UTF8 = "a red \udcff circle"  # what Python's argv holds for bash's $'a red \xff circle'


@pytest.fixture(scope="module")
def model():
    return load_model("bundled")


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "red.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(path)
    return path


def _one_error_line(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def test_non_utf8_prompt_refused_everywhere(model, image, tmp_path, capsys):
    heat = ["heatmap", "--model", "bundled", "--image", str(image), "--prompt", NON_UTF8]
    assert main([*heat, "--out", str(tmp_path / "h")]) == 2
    _one_error_line(capsys, "not valid UTF-8 text", "the byte 0xff")
    gen = ["generate", "--model", "bundled", "--prompt", NON_UTF8, "--out", str(tmp_path / "g")]
    assert main(gen) == 2
    _one_error_line(capsys, "not valid UTF-8 text")
    assert not (tmp_path / "h").exists() and not (tmp_path / "g").exists()
    # The library: explain, the model's prompt check, and any condition of the denoiser.
    for call in (
        lambda: explain(model, image, NON_UTF8, progress=False, sampling=Sampling(draws=4)),
        lambda: model.check_prompt(NON_UTF8),
        lambda: model(torch.zeros(1, *model.data_shape), torch.zeros(1), [NON_UTF8]),
        lambda: model.generate_with_pipeline(NON_UTF8, steps=2),
    ):
        with pytest.raises(ValueError, match="not valid UTF-8 text"):
            call()
    with pytest.raises(TypeError, match="must be a str"):
        check_text(b"a cat")


def test_prompt_without_words(model, image, tmp_path, capsys):
    argv = ["heatmap", "--model", "bundled", "--image", str(image), "--prompt", "!!! ... ???"]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    _one_error_line(capsys, "has no words (letters or digits) to explain")
    with pytest.raises(ValueError, match="has no words"):
        explain(model, image, "!!! ... ???", progress=False, sampling=Sampling(draws=4))
    with pytest.raises(ValueError, match="no words to explain in"):
        words_to_explain("a cat", [" "])


def test_multiline_prompt_refused_before_computing(model, image, tmp_path, capsys):
    # A caption is one line: refused with a line saying so, before the model loads (the
    # tokenizers would read the break as a space, the figures as two lines).
    argv = ["heatmap", "--model", "bundled", "--image", str(image), "--prompt", "a red\ncircle"]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    _one_error_line(capsys, "holds a line break", "join its lines with spaces")
    assert not (tmp_path / "o").exists()
    for text in ("a red\r\ncircle", "a red\u2028circle", "a red\x85circle"):
        with pytest.raises(ValueError, match="line break"):
            explain(model, image, text, progress=False, sampling=Sampling(draws=4))
    with pytest.raises(ValueError, match="control character"):
        check_text("a red\x00circle")
    assert check_text("a red circle\n".strip()) == "a red circle"  # ends are stripped first


def test_custom_pipeline_names_its_missing_folder(tmp_path):
    folder = tmp_path / "custom"
    folder.mkdir()
    for part in ("scheduler", "text_encoder", "tokenizer"):  # no unet
        (folder / part).symlink_to(BUNDLED / part)
    index = json.loads((BUNDLED / "model_index.json").read_text())
    index["_class_name"] = ["pipeline_custom", "CustomPipeline"]  # a custom pipeline's form
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"lacks the component folder\(s\) unet that") as err:
        DiffusersModel.from_pretrained(folder)
    assert "_class_name" not in str(err.value)
    (folder / "unet").symlink_to(BUNDLED / "unet")
    with pytest.raises(ValueError, match="is a custom pipeline .* DiffusersModel.from_pipeline"):
        DiffusersModel.from_pretrained(folder)


def test_one_seed_rule(model, image, tmp_path, capsys):
    # Every consumer takes [0, 2**64): torch's generator at the top, numpy's streams too.
    torch.Generator().manual_seed(MAX_SEED)
    np.random.default_rng([MAX_SEED, 1, 0])
    with pytest.raises((RuntimeError, ValueError)):
        torch.Generator().manual_seed(MAX_SEED + 1)
    for command in (
        ["generate", "--model", "bundled", "--prompt", "a red circle"],
        ["heatmap", "--model", "bundled", "--image", str(image), "--prompt", "a red circle"],
    ):
        with pytest.raises(SystemExit) as stop:
            main([*command, "--seed", str(2**70), "--out", str(tmp_path / "o")])
        assert stop.value.code == 2
        _one_error_line(capsys, "--seed: expected an integer from 0 to 2**64 - 1")
    with pytest.raises(ValueError, match=r"seed must be an integer from 0 to 2\*\*64 - 1"):
        model.generate(["a red circle"], seed=2**70, steps=2)
    with pytest.raises(ValueError, match="seed must be"):
        check_seed(True)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "a red circle", "seed": 2**70}) + "\n")
    with pytest.raises(BadItemError, match=r"p.jsonl:1: 'seed' must be an integer from 0 to 2"):
        read_prompts(prompts, image=image)


def test_non_finite_guidance_refused_and_json_strict(model, tmp_path, capsys):
    base = ["generate", "--model", "bundled", "--prompt", "a red circle"]
    for value in ("inf", "nan", "-inf"):
        with pytest.raises(SystemExit) as stop:
            main([*base, f"--guidance-scale={value}", "--out", str(tmp_path / "o")])
        assert stop.value.code == 2
        _one_error_line(capsys, "--guidance-scale: expected a finite number")
    with pytest.raises(SystemExit):
        main([*base, "--guidance", "nan", "--out", str(tmp_path / "o")])
    capsys.readouterr()
    for value in (math.inf, math.nan):
        with pytest.raises(ValueError, match="guidance_scale must be a finite number"):
            model.generate_with_pipeline("a red circle", steps=2, guidance_scale=value)
    # The top seed runs, and generate.json is strict JSON (no NaN could be written).
    out = tmp_path / "g"
    argv = [*base, "--seed", str(MAX_SEED), "--steps", "2", "--guidance-scale", "2", "--out"]
    assert main([*argv, str(out)]) == 0

    def refuse(constant):
        raise AssertionError(f"{constant} in generate.json")

    doc = json.loads((out / "generate.json").read_text(), parse_constant=refuse)
    assert doc["guidance_scale"] == 2 and doc["images"][0]["seed"] == MAX_SEED


def test_device_refused_in_the_library(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device 'cuda': this torch build sees no CUDA GPU"):
        DiffusersModel.from_pretrained(BUNDLED, device="cuda")
    with pytest.raises(ValueError, match="no CUDA"):
        check_device(torch.device("cuda", 0))
    with pytest.raises(ValueError, match="no CUDA"):
        resolve_device("cuda:1")  # the loader's check is the models' own
    assert check_device(None) is None and check_device("cpu") == "cpu"


def test_batch_and_conditions_must_match(model, image):
    x2 = torch.zeros(2, *model.data_shape)
    with pytest.raises(ValueError, match="the lengths must match: 2 input row"):
        model(x2, torch.zeros(2), ["a red circle"])
    with pytest.raises(ValueError, match="lengths must match"):
        model(x2, torch.zeros(1), ["a red circle", None])
    mixture = example_mixture()
    label = mixture.labels[0]
    with pytest.raises(ValueError, match="lengths must match"):
        mixture(torch.zeros(2, 8), torch.zeros(2), [label])
    with pytest.raises(ValueError, match=r"x must be one image's model input, \(1, \*data_shape\)"):
        explain(model, image, "a red circle", x=x2, sampling=Sampling(draws=4), progress=False)


def test_evaluate_batch_size_bool_is_named(tmp_path):
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got True"):
        sampling = Sampling(batch_size=True)
        evaluate("compositional", tmp_path / "o", model="exact", sampling=sampling, progress=False)
    assert not (tmp_path / "o").exists()


ACCELERATE_SINGLE = {"ACCELERATE_USE_CPU": "True", "ACCELERATE_MIXED_PRECISION": "no"}


@pytest.mark.parametrize(
    "env, lone",
    [
        # accelerate launch --num_processes 2 [--cpu] (no --multi_gpu): one process, no WORLD_SIZE
        ({**ACCELERATE_SINGLE, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}, True),
        (ACCELERATE_SINGLE, False),  # accelerate launch --num_processes 1
        ({"MASTER_ADDR": "127.0.0.1", "WORLD_SIZE": "2", "RANK": "0"}, False),  # --multi_gpu
        ({}, False),  # plain infodecomp
    ],
)
def test_accelerate_launch_without_multi_gpu_is_refused(monkeypatch, env, lone):
    for key in ("ACCELERATE_USE_CPU", "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert lone_accelerate_process() is lone
    if lone:
        with pytest.raises(ValueError, match="accelerate launch --multi_gpu --num_processes N"):
            process_state()
    elif "WORLD_SIZE" not in env:
        assert process_state()[:2] == (0, 1)
