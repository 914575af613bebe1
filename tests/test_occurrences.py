"""One occurrence of a repeated word ("a#2"), and the check of a word's two contexts (removed,
padded) that warns where a removal leaves a prompt out of the model's distribution."""

import json
import warnings

import pytest
import torch
from conftest import error_line
from PIL import Image

from infodecomp.cli import main
from infodecomp.evaluate.datasets import InvalidLine
from infodecomp.evaluate.prompts import read_prompts
from infodecomp.explanation import (
    OCCURRENCES,
    ContextWarning,
    Explanation,
    explain,
    word_contexts,
    word_token_positions,
)
from infodecomp.loading import load_model
from infodecomp.models.diffusers.text import PaddedPrompt
from infodecomp.sampling import Sampling
from infodecomp.words import file_name, word_spans, words_to_explain

CAPTION = "a red circle above a blue triangle"
# The acceptance case of issue 19: on this world image (the exact model's draw for CAPTION,
# seed 1) the bundled model gives "a | rest" about 4 nats removed, under 1 padded (exact: 0).
# Over 6 images x 2 seeds the check warned 11 times in 12 at 128 draws (10 in 12 at 64); this
# image and seed keep a wide margin (removed interval from about 3.1, padded up to about 0.9),
# and the numbers are a deterministic function of them.
IMAGE_SEED, DRAWS, SEED = 1, 128, 1


@pytest.fixture(scope="module")
def bundled():
    return load_model("bundled")


@pytest.fixture(scope="module")
def world():
    return load_model("exact")


@pytest.fixture(scope="module")
def image(world):
    x, _ = world.sample(1, seed=IMAGE_SEED, cond=CAPTION)
    return x[0]


def test_word_spans_names_every_occurrence_or_one():
    assert word_spans(CAPTION, "a") == ((0, 1), (19, 20))
    assert word_spans(CAPTION, "a#1") == ((0, 1),)
    assert word_spans(CAPTION, "a#2") == ((19, 20),)
    assert word_spans(CAPTION, "A #2") == ((19, 20),)
    assert word_spans("a red car and a red car", "red car#2") == ((16, 23),)
    assert word_spans(CAPTION, "blue#1") == word_spans(CAPTION, "blue")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("a#3", f"'a#3': 'a' occurs 2 times in {CAPTION!r}"),
        ("blue#2", f"'blue#2': 'blue' occurs 1 time in {CAPTION!r}"),
        ("a#0", "'a#0': name one occurrence of a word as word#k, k counted from 1 (e.g. 'a#2')"),
        ("a#x", "'a#x': name one occurrence"),
        ("a#", "'a#': name one occurrence"),
        ("#2", "'#2': name one occurrence"),
        ("a#1#2", "'a#1#2': name one occurrence"),
        ("dog#1", "word 'dog' is not in the prompt"),
    ],
)
def test_a_bad_occurrence_is_one_line(spec, message):
    with pytest.raises(ValueError) as err:
        word_spans(CAPTION, spec)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="^'|^word"):  # checked where the words are chosen
        words_to_explain(CAPTION, [spec])


def test_contexts_take_out_only_the_named_occurrence():
    removed = word_contexts(CAPTION, ["a", "a#1", "a#2"])
    assert removed == [
        "red circle above blue triangle",
        "red circle above a blue triangle",
        "a red circle above blue triangle",
    ]
    assert word_contexts(CAPTION, ["a#2"], "pad") == [PaddedPrompt(CAPTION, ((19, 20),))]
    # '#' is no word character: a word's file name with one is safe and its own
    assert file_name("a#2") not in (file_name("a_2"), file_name("a2"), file_name("a#1"))
    assert "#" not in file_name("a#2")


def test_one_occurrence_explained_saved_and_loaded(bundled, image, tmp_path):
    res = explain(
        bundled, image.float(), CAPTION, ["a", "a#1", "A#2"], sampling=Sampling(draws=8),
        progress=False,
    )  # fmt: skip
    assert res.words == ["a", "a#1", "a#2"]
    assert res.estimate.settings["contexts"][1:] == word_contexts(CAPTION, res.words)
    assert res.estimate.settings["occurrences"] == OCCURRENCES
    assert res.estimate.settings["check_context"] is False and res.context_check is None
    # attention of one occurrence: its own tokens; the two add up to the word's
    first, second = (word_token_positions(bundled, CAPTION, w) for w in ("a#1", "a#2"))
    assert first and second and not set(first) & set(second)
    assert sorted(first + second) == sorted(word_token_positions(bundled, CAPTION, "a"))
    both = res.attention_map("a#1", upsample=False) + res.attention_map("a#2", upsample=False)
    torch.testing.assert_close(both, res.attention_map("a", upsample=False))
    assert not torch.equal(res.attention_map("a#1"), res.attention_map("a#2"))

    res.save(tmp_path)
    doc = json.loads((tmp_path / "result.json").read_text())
    assert list(doc["cmi"]) == ["a", "a#1", "a#2"]
    assert doc["cmi"]["a#2"]["context"] == "a red circle above blue triangle"
    assert doc["settings"]["occurrences"].startswith("every occurrence")
    assert (tmp_path / f"{file_name('a#2')}.heat_map.png").exists()
    back = Explanation.load(tmp_path)
    assert back.words == res.words and back.cmi("a#2") == res.cmi("a#2")


@pytest.mark.slow
def test_removing_the_article_warns_on_the_bundled_model(bundled, image, tmp_path):
    with pytest.warns(ContextWarning) as caught:
        res = explain(
            bundled, image.float(), CAPTION, ["a"], sampling=Sampling(draws=DRAWS, seed=SEED),
            check_context=True, attention=False, progress=False,
        )  # fmt: skip
    check = res.context_check["a"]
    removed, padded = check["remove"], check["pad"]
    assert not check["overlap"] and removed["ci95"][0] > padded["ci95"][1]
    assert 2 < removed["value"] < 8 and padded["value"] < 1.5  # exact: 0
    line = str(caught[0].message)
    assert line == check["warning"] and "\n" not in line
    assert line.startswith("'a': removing it gives ") and "compare context='pad'" in line
    # the explanation itself holds the chosen context's pairs only, as without the check
    assert res.estimate.value.shape == (1, 2) and len(res.estimate.settings["contexts"]) == 2
    assert res.estimate.map.shape[1] == 2
    assert res.cmi("a") == (removed["value"], removed["stderr"])
    res.save(tmp_path)
    doc = json.loads((tmp_path / "result.json").read_text())
    assert doc["settings"]["check_context"] is True
    assert doc["context_check"]["a"] == check
    assert Explanation.load(tmp_path).context_check == {"a": check}


def test_the_exact_model_never_warns(world, image):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ContextWarning)
        for context in ("remove", "pad"):
            res = explain(
                world, image, CAPTION, ["a", "a#2", "red", "blue triangle"],
                sampling=Sampling(draws=32), context=context, check_context=True,
                progress=False,
            )  # fmt: skip
            for check in res.context_check.values():  # padding is removal, exactly
                assert check["remove"] == check["pad"] and check["overlap"]
                assert check["warning"] is None


@pytest.mark.slow
def test_command_warns_in_one_line_and_records_the_check(image, tmp_path, capsys):
    path = tmp_path / "image.png"
    pixels = ((image.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0)
    Image.fromarray(pixels.numpy()).save(path)
    argv = ["heatmap", "--model", "bundled", "--image", str(path), "--prompt", CAPTION]
    out = tmp_path / "out"
    extra = ["--samples", str(DRAWS), "--seed", str(SEED), "--no-attention", "--out", str(out)]
    assert main([*argv, "--words", "a", "--check-context", *extra]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(err) == 1, err
    assert err[0].startswith("infodecomp: warning: 'a': removing it gives ")
    assert err[0].endswith("compare --context pad")
    doc = json.loads((out / "result.json").read_text())
    assert doc["settings"]["check_context"] is True
    assert doc["settings"]["occurrences"].startswith("every occurrence")
    assert not doc["context_check"]["a"]["overlap"]


def test_command_refuses_a_bad_occurrence_in_one_line(image, tmp_path, capsys):
    path = tmp_path / "image.png"
    Image.new("RGB", (16, 16)).save(path)
    argv = ["heatmap", "--model", "bundled", "--image", str(path), "--prompt", CAPTION]
    assert main([*argv, "--words", "red,a#3", "--out", str(tmp_path / "out")]) == 2
    line = error_line(capsys.readouterr().err)
    assert line == f"infodecomp: error: 'a#3': 'a' occurs 2 times in {CAPTION!r}"
    assert not (tmp_path / "out").exists()


def test_prompts_file_words_name_occurrences(tmp_path):
    Image.new("RGB", (16, 16)).save(tmp_path / "i.png")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": CAPTION, "image": "i.png", "words": "a#2"}) + "\n")
    items, _ = read_prompts(prompts)
    assert items[0].words == ("a#2",)
    prompts.write_text(json.dumps({"prompt": CAPTION, "image": "i.png", "words": ["a#3"]}) + "\n")
    with pytest.raises((ValueError, InvalidLine), match="'a#3': 'a' occurs 2 times"):
        read_prompts(prompts)


@pytest.mark.slow
def test_prompts_file_checks_contexts_per_row(image, tmp_path, capsys):
    path = tmp_path / "image.png"
    pixels = ((image.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0)
    Image.fromarray(pixels.numpy()).save(path)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": CAPTION, "words": "a#2,red", "id": "one"}) + "\n")
    argv = ["heatmap", "--model", "bundled", "--image", str(path), "--prompts", str(prompts)]
    out = tmp_path / "out"
    extra = ["--samples", "8", "--no-attention", "--check-context", "--out", str(out)]
    assert main([*argv, *extra]) == 0
    row = json.loads((out / "rows.jsonl").read_text())
    assert set(row["context_check"]) == {"a#2", "red"}
    assert json.loads((out / "settings.json").read_text())["check_context"] is True
    doc = json.loads((out / "one" / "result.json").read_text())
    assert doc["context_check"]["a#2"]["remove"] == row["cmi"]["a#2"]
    warned = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert all(line.startswith("infodecomp: warning: one: '") for line in warned)
