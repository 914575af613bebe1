"""The model shipped with the package, and the demo built on it."""

import json

import pytest
from conftest import error_line
from PIL import Image

from infodecomp.cli import main
from infodecomp.loading import load_model
from infodecomp.sampling import Sampling
from infodecomp.world.bundled_model import BUNDLED
from infodecomp.world.demo import run_demo
from infodecomp.world.model import WorldModel


@pytest.fixture(scope="module")
def bundled():
    return load_model("bundled")


def test_shipped_weights_are_safetensors_and_small():
    weights = list(BUNDLED.rglob("*.safetensors"))
    assert {w.parent.name for w in weights} == {"unet", "text_encoder"}
    assert sum(w.stat().st_size for w in weights) <= 25 * 2**20
    assert not list(BUNDLED.rglob("*.bin")) and not list(BUNDLED.rglob("*.pt"))


@pytest.mark.slow
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


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    summary = run_demo(
        tmp_path, "a green triangle above a red square", progress=False, sampling=Sampling(draws=8)
    )
    assert set(summary["cmi"]) == {"a", "green", "triangle", "above", "red", "square"}
    exact = summary["world_model"]["cmi"]
    assert abs(exact["a"]["value"]) < 1e-12  # "a" names nothing: the exact model gains nothing
    assert exact["green"]["value"] > 0 and summary["cmi"]["green"]["stderr"] > 0
    for name in [
        "result.json",
        "report.html",
        "grid.png",
        "green.heat_map.png",
        "maps.safetensors",
    ]:
        assert (tmp_path / name).stat().st_size > 0
    assert json.loads((tmp_path / "result.json").read_text())["model"].startswith("infodecomp/")
    report = (tmp_path / "report.html").read_text()
    assert report.count('"quantity":"i(x; ') == 7  # the whole caption, then one row per word
    for shown in ("exact world model [95% interval]", "exact log-ratio", "grid.png"):
        assert shown in report
    assert (tmp_path / "explained.png").exists() and (tmp_path / "generated.png").exists()
    assert summary["explained_image"].startswith("world draw")
    # The exact model scores the world's own draw (float64, its pixel noise beyond +-1 kept):
    # its exact log-ratio is that of the drawn image.
    world = WorldModel()
    drawn, _ = world.sample(1, seed=0, cond="a green triangle above a red square")
    assert (drawn.abs() > 1).any()
    caption = "a green triangle above a red square"
    ratio = (world.log_prob(drawn, caption) - world.log_prob(drawn, None)).item()
    assert summary["world_model"]["mi"]["exact_log_ratio"] == pytest.approx(ratio, abs=1e-9)
    for key in ("ci95", "reliable", "truncated"):
        assert key in summary["cmi"]["green"] and key in exact["green"]


@pytest.mark.slow
def test_demo_on_an_image_that_does_not_fit_the_caption(tmp_path, capsys):
    black = tmp_path / "black.png"
    Image.new("RGB", (16, 16)).save(black)
    argv = ["demo", "--image", str(black), "--samples", "4", "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    assert "does NOT fit" in capsys.readouterr().out
    assert (tmp_path / "out" / "grid.png").stat().st_size > 0


@pytest.mark.slow
def test_report_renders_in_a_browser(tmp_path):
    """The demo's report as a user sees it: a headless Chromium screenshot that is not blank."""
    import shutil
    import subprocess

    import numpy as np
    from PIL import Image

    browser = shutil.which("chromium-headless-shell") or shutil.which("chromium")
    if browser is None:
        pytest.skip("no headless Chromium (apt-get install chromium-headless-shell)")
    run_demo(tmp_path / "demo", "a red circle", progress=False, sampling=Sampling(draws=4))
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            browser,
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={shot}",
            "--window-size=1200,1600",
            (tmp_path / "demo" / "report.html").as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 20  # text, tables and maps, not an empty page
    assert (pixels < 100).mean() > 0.02  # dark map cells and text are there


def test_demo_command_rejects_words_outside_the_world(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--caption", "a red dog"]) == 2
    err = capsys.readouterr().err
    assert "no word 'dog'" in err and error_line(err)


@pytest.mark.slow
def test_demo_writes_vector_figures_and_reruns_into_its_folder(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["demo", "--caption", "a red circle", "--samples", "4", "--out", str(out)]
    assert main([*argv, "--format", "svg", "--scale", "shared"]) == 0
    assert (out / "red.heat_map.svg").read_text().lstrip().startswith("<?xml")
    assert (out / "grid.svg").exists() and not (out / "grid.png").exists()
    printed = capsys.readouterr().out
    assert "red | rest" in printed and " [" in printed  # values with their intervals
    assert main(argv) == 0  # an earlier run's folder, vector figures and all, is replaced
    assert (out / "grid.png").exists() and not (out / "grid.svg").exists()
