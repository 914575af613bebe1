"""The model shipped with the package, and the demo built on it."""

import json

import pytest

from infodecomp.cli import main
from infodecomp.world.demo import BUNDLED, load_bundled, run_demo
from infodecomp.world.model import WorldModel


@pytest.fixture(scope="module")
def bundled():
    return load_bundled()


def test_shipped_weights_are_safetensors_and_small():
    weights = list(BUNDLED.rglob("*.safetensors"))
    assert {w.parent.name for w in weights} == {"unet", "text_encoder"}
    assert sum(w.stat().st_size for w in weights) <= 25 * 2**20
    assert not list(BUNDLED.rglob("*.bin")) and not list(BUNDLED.rglob("*.pt"))


def test_shipped_model_draws_what_it_is_told(bundled):
    captions = [
        "a red circle",
        "a blue triangle",
        "a green square left of a red circle",
        "a blue circle above a green triangle",
        "a red square right of a blue square",
        "a green circle below a red triangle",
    ]
    images = bundled.generate(captions, seed=0)
    assert images.shape == (6, 3, 16, 16)
    fits = WorldModel().fits(images, captions, relation=False)  # colour and shape of each object
    assert fits.sum() >= 5, fits


def test_demo_runs_end_to_end(tmp_path):
    summary = run_demo(tmp_path, "a green triangle above a red square", n_samples=8, progress=False)
    assert set(summary["cmi"]) == {"a", "green", "triangle", "above", "red", "square"}
    exact = summary["world_model"]["cmi"]
    assert abs(exact["a"]["value"]) < 1e-12  # "a" names nothing: the exact model gains nothing
    assert exact["green"]["value"] > 0 and summary["cmi"]["green"]["stderr"] > 0
    for name in [
        "result.json",
        "report.html",
        "grid.png",
        "world_comparison.png",
        "green.heat_map.png",
        "maps.safetensors",
    ]:
        assert (tmp_path / name).stat().st_size > 0
    assert json.loads((tmp_path / "result.json").read_text())["model"].startswith("infodecomp/")


def test_demo_command_rejects_words_outside_the_world(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--caption", "a red dog"]) == 2
    err = capsys.readouterr().err
    assert "no word 'dog'" in err and err.count("\n") == 1
