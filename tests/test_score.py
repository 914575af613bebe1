"""`infodecomp score` on the bundled model: by default the prompts ranked in stages until the
leader is decided; with --fixed (or one prompt) every prompt's MI, the winner first, then its
log-likelihood ratio over each other caption on the same draws, with an interval and a verdict."""

import json

import pytest
from PIL import Image

from infodecomp.cli import main
from infodecomp.world.model import WorldModel

TRUE = "a red circle above a blue square"
WRONG = "a green triangle"


@pytest.fixture(scope="module")
def world_image(tmp_path_factory):
    """A draw of the world from TRUE, as a 16x16 PNG."""
    x, _ = WorldModel().sample(1, seed=0, cond=TRUE)
    pixels = ((x[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    path = tmp_path_factory.mktemp("score") / "world.png"
    Image.fromarray(pixels).save(path)
    return path


def score(image, prompts, *extra):
    argv = ["score", "--model", "bundled", "--image", str(image), "--samples", "32"]
    for p in prompts:
        argv += ["--prompt", p]
    assert main([*argv, *extra]) == 0


@pytest.mark.slow
def test_winner_first_and_its_paired_differences(world_image, capsys):
    prompts = [WRONG, TRUE, "a blue square"]
    score(world_image, prompts, "--fixed", "--json")
    doc = json.loads(capsys.readouterr().out)
    values = doc["value"][0]
    assert len(values) == 3 + 3  # the prompts against nothing, then each pair of prompts
    assert doc["n_evaluations"] == (32 + 2 * 4) * 4  # the pairs cost no denoiser row
    ranking = doc["ranking"]
    assert sorted(ranking) == [0, 1, 2] and ranking[0] == 1
    assert [values[j] for j in ranking] == sorted(values[:3], reverse=True)
    assert doc["paired_estimator"] == "standard" and [p["other"] for p in doc["paired"]] == [
        ranking[1],
        ranking[2],
    ]
    for pair in doc["paired"]:
        # The standard integrand is linear in the two error terms: the pair's value is the
        # difference of the two scores, up to rounding (one pair negated, one not).
        difference = values[1] - values[pair["other"]]
        scale = max(abs(values[1]), abs(values[pair["other"]]))
        assert pair["value"] == pytest.approx(difference, rel=1e-6, abs=1e-6 * scale)
        low, high = pair["ci95"]
        assert low <= pair["value"] <= high and pair["stderr"] > 0
        assert set(pair) >= {"reliable", "truncated", "verdict"}
    wrong = next(p for p in doc["paired"] if p["other"] == 0)
    assert wrong["verdict"] == "winner ahead" and wrong["ci95"][0] > 0


def test_table_prints_winner_first_then_verdicts(world_image, capsys):
    score(world_image, [WRONG, TRUE], "--fixed")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("prompt") and "i^s(x; prompt) [95% interval]" in lines[0]
    assert lines[1].startswith(TRUE) and lines[2].startswith(WRONG)
    assert lines[3].startswith("winner minus each other") and "standard estimator" in lines[3]
    assert lines[4].startswith(f"- {WRONG}") and lines[4].endswith("winner ahead")
    assert "denoiser evaluations" in lines[5] and len(lines) == 6


def test_one_prompt_has_no_pairs_and_orthogonal_pairs_stay_standard(world_image, capsys):
    score(world_image, [TRUE], "--json")
    doc = json.loads(capsys.readouterr().out)
    assert doc["ranking"] == [0] and doc["paired"] == [] and len(doc["value"][0]) == 1
    score(world_image, [TRUE])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and "winner minus" not in "".join(lines)
    score(world_image, [TRUE, WRONG], "--fixed", "--estimator", "orthogonal")
    out = capsys.readouterr().out
    assert "i^o(x; prompt)" in out and "(standard estimator, same draws)" in out


def test_score_ranks_in_stages_by_default_and_decides_the_true_caption_first(world_image, capsys):
    prompts = [WRONG, TRUE]
    score(world_image, prompts, "--samples", "64", "--json")
    doc = json.loads(capsys.readouterr().out)
    assert doc["decision"] == "decided" and doc["leader"] == 1 and doc["plausible"] == [1]
    assert doc["n_evaluations"] == (8 + doc["draws"]) * 2 and doc["draws"] <= 64
    (margin,) = doc["margins"]  # log p(x|WRONG) - log p(x|TRUE), decided below 0
    assert margin["pair"] == [0, 1] and margin["ci95"][1] < 0
    score(world_image, prompts, "--samples", "64")
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0] == f"leader: {TRUE} (decided after {doc['draws']} draws)"
    assert lines[2].startswith(TRUE) and "0 (reference)" in lines[2]
    assert lines[3].startswith(WRONG) and lines[3].endswith("behind, decided")


def test_sequential_score_reports_each_prompts_mi_when_asked(world_image, capsys):
    prompts = [WRONG, TRUE]
    score(world_image, prompts, "--samples", "64", "--report-mi", "--json")
    doc = json.loads(capsys.readouterr().out)
    assert doc["n_evaluations"] == (8 + doc["draws"]) * 2 + (64 + 8) * 2
    (margin,) = doc["margins"]
    wrong, true = doc["mi"]  # the first prompt's MI measured, the other's through the margin
    assert wrong["value"] - true["value"] == pytest.approx(margin["value"])
    assert true["stderr"] > 0 and true["ci95"][0] < true["value"] < true["ci95"][1]
    score(world_image, prompts, "--samples", "64", "--report-mi")
    assert "i(x; prompt) [95% interval]" in capsys.readouterr().out
    argv = ["score", "--model", "bundled", "--image", str(world_image), "--report-mi"]
    assert main([*argv, "--prompt", TRUE]) == 2
    assert "--report-mi goes with the ranking in stages" in capsys.readouterr().err
    assert main([*argv, "--prompt", TRUE, "--prompt", WRONG, "--fixed"]) == 2
    assert "--report-mi goes with the ranking in stages" in capsys.readouterr().err


def test_a_prompt_given_twice_is_one_leader(world_image, capsys):
    score(world_image, [TRUE, TRUE, WRONG], "--samples", "64")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"leader: {TRUE}")
    assert lines[3].startswith(TRUE) and lines[3].endswith("same text as the reference")


def test_options_of_the_fixed_score_without_it_are_one_line_errors(world_image, capsys):
    argv = ["score", "--model", "bundled", "--image", str(world_image)]
    argv += ["--prompt", TRUE, "--prompt", WRONG]
    for extra, says in (
        (["--estimator", "orthogonal"], "--estimator picks the score of --fixed"),
        (["--target-se", "0.5"], "--target-se and --target-rel go with --fixed"),
    ):
        assert main([*argv, *extra]) == 2
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1
