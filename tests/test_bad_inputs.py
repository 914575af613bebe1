"""Bad inputs get one clear error of the right type (issue: a new user's first hour)."""

import numpy as np
import pytest
import torch
from PIL import Image

import infodecomp as idc
from infodecomp.cli import main
from infodecomp.explanation import explain
from infodecomp.images import load_image
from infodecomp.loading import resolve_device
from infodecomp.models import example_mixture
from infodecomp.models.diffusers import DiffusersModel
from infodecomp.models.diffusers.load import check_dtype as _dtype
from infodecomp.words import file_name


def test_sixteen_bit_greyscale_keeps_its_levels(tmp_path):
    grey = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    x = load_image(tmp_path / "g16.png", 64)
    assert x.min() < -0.99 and x.max() > 0.99  # not read as a nearly white image
    assert abs(x.mean().item()) < 0.01


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (torch.zeros(3, 8, 8, dtype=torch.uint8), "floating point"),
        (torch.full((3, 8, 8), 255.0), "must lie in"),
        (torch.full((3, 8, 8), float("inf")), "NaN or inf"),
        (torch.zeros(3, 0, 32), "shape"),
        (torch.zeros(8, 8), "shape"),
    ],
)
def test_image_tensors_are_refused_not_clamped(tensor, message):
    with pytest.raises(ValueError, match=message):
        load_image(tensor, 8)


def test_world_like_tensors_are_kept_as_they_are():
    x = torch.full((3, 8, 8), 1.0)
    x[0, 0, 0] = 1.3  # pixel noise on a saturated colour
    assert torch.equal(load_image(x, 8), x)


def test_unreadable_files_say_why(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot read image .*cut.png"):
        load_image(tmp_path / "cut.png", 8)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 40x40 is then a "bomb"
    with pytest.raises(ValueError, match="decompression-bomb"):
        load_image(tmp_path / "ok.png", 8)
    with pytest.raises(ValueError, match="positive integer"):
        load_image(tmp_path / "ok.png", 0)


def test_python_api_errors_have_the_right_type():
    model = example_mixture()
    with pytest.raises(ValueError, match="empty"):
        idc.log_likelihood(model, torch.zeros(0, 8))
    with pytest.raises(ValueError, match="complex"):
        idc.log_likelihood(model, torch.zeros(2, 8, dtype=torch.complex64))
    with pytest.raises(TypeError, match="must be a denoiser"):
        idc.mutual_info(object(), torch.zeros(2, 8), None)
    with pytest.raises(ValueError, match="floating point"):
        load_image(torch.zeros(3, 8, 8, dtype=torch.complex64), 8)
    with pytest.raises(TypeError, match="text denoiser .* or a diffusers pipeline"):
        explain(object(), torch.zeros(3, 8, 8), "a cat")
    with pytest.raises(TypeError, match="floating torch dtype"):
        _dtype("int8")
    assert _dtype("float16") is torch.float16 and _dtype("torch.bfloat16") is torch.bfloat16


def test_explain_refuses_a_string_of_words(tiny_sd):
    with pytest.raises(TypeError, match=r"\['dog'\]"):
        explain(tiny_sd, torch.zeros(3, 32, 32), "a red dog", words="dog")
    with pytest.raises(ValueError, match="prompts"):
        tiny_sd(torch.zeros(1, *tiny_sd.data_shape), torch.zeros(1), [{"cat": 1}])


@pytest.fixture(scope="module")
def tiny_sd():
    from tiny_pipelines import sd_pipeline

    return DiffusersModel.from_pipeline(sd_pipeline())


def test_file_names_of_words_do_not_collide():
    assert file_name("cat") == "cat"
    assert file_name("cat's") != file_name("cat’s")


def test_devices_are_checked_before_loading(capsys):
    assert resolve_device("cpu") == "cpu" and resolve_device("auto") in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu9")
    with pytest.raises(ValueError, match="not supported"):
        resolve_device("meta")
    assert main(["eval", "compositional", "--out", "x", "--device", "tpu9"]) == 2
    assert capsys.readouterr().err.strip().startswith("infodecomp: error: unknown device")


@pytest.mark.parametrize("flag", ["--steps", "--batch-size", "--checkpoint-every"])
def test_train_world_refuses_zero_counts(flag, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train-world", "--out", str(tmp_path), flag, "0"])
    assert stop.value.code == 2 and "positive integer" in capsys.readouterr().err


def test_broken_model_folders_and_revisions_are_one_line(tmp_path):
    from tiny_pipelines import sd_pipeline

    sd_pipeline().save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="revision 'nonexistent' given for the local folder"):
        DiffusersModel.from_pretrained(tmp_path / "m", revision="nonexistent")
    (tmp_path / "m" / "unet" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="cannot load the diffusers model") as err:
        DiffusersModel.from_pretrained(tmp_path / "m")
    assert "\n" not in str(err.value)


def test_train_world_refuses_other_settings_on_resume(tmp_path):
    from infodecomp.world.train import train_world

    (tmp_path / "settings.json").write_text(
        '{"steps": 24, "batch_size": 64, "lr": 0.0005, "seed": 0, "ema_decay": 0.999}'
    )
    with pytest.raises(ValueError, match=r"other settings \(steps: 24 -> 10\)"):
        train_world(tmp_path, steps=10)


def test_prompt_with_dollars_draws_as_typed():
    from infodecomp.report.figures import Panel, plot_map, save_figure

    panel = Panel(r"a $\foo$ cat", torch.zeros(8, 8), 0.0, 1.0, "nats/pixel", over=True)
    fig, _ = plot_map(torch.zeros(3, 8, 8), panel)
    assert save_figure(fig)[:4] == b"\x89PNG"


def test_unwritable_out_fails_before_the_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    argv = ["demo", "--out", str(blocker / "sub")]
    assert main(argv) == 2
    assert "cannot write into --out" in capsys.readouterr().err


def test_dtype_is_applied_or_refused(tmp_path, capsys):
    from infodecomp.evaluate.common import load_evaluated as load_model

    assert load_model("bundled", dtype=torch.bfloat16).denoiser.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="float64"):
        load_model("exact", dtype=torch.float16)


def test_parser_errors_are_one_line(capsys):
    for argv in (["eval", "compositional", "--out", "x", "--limit", "0"], ["nope"]):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error:" in err


def test_output_folders_are_replaced_whole_or_left_alone(tmp_path):
    from infodecomp.results import output_folder

    out = tmp_path / "out"
    with output_folder(out) as folder:
        (folder / "result.json").write_text("{}")
        (folder / "old.png").write_bytes(b"1")
    with output_folder(out) as folder:  # a second run: nothing of the first stays
        (folder / "result.json").write_text('{"run": 2}')
    assert sorted(p.name for p in out.iterdir()) == ["result.json"]
    with pytest.raises(KeyboardInterrupt), output_folder(out) as folder:  # Ctrl-C mid-save
        (folder / "result.json").write_text('{"run": 3}')
        raise KeyboardInterrupt
    assert (out / "result.json").read_text() == '{"run": 2}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("")
    with pytest.raises(ValueError, match="not an output folder of ours"), output_folder(mine):
        pass
    (mine / "result.json").write_text("{}")  # ours by its marker, but it holds other files
    with pytest.raises(ValueError, match="not an output folder of ours"), output_folder(mine):
        pass
    assert (mine / "thesis.tex").exists()
    with pytest.raises(ValueError, match="current folder"), output_folder("."):
        pass


def test_fingerprints_of_pil_images_and_path_strings_are_by_content(tmp_path):
    from infodecomp.evaluate.items import CompositionalItem
    from infodecomp.evaluate.runner import fingerprint

    def item(image):
        return CompositionalItem("i", image, ("a", "b"), 0)

    assert fingerprint(item(Image.new("RGB", (4, 4)))) == fingerprint(
        item(Image.new("RGB", (4, 4)))
    )
    path = tmp_path / "x.png"
    Image.new("RGB", (4, 4)).save(path)
    before = fingerprint(item(str(path)))
    Image.new("RGB", (4, 4), "white").save(path)
    assert fingerprint(item(str(path))) != before


@pytest.mark.parametrize("delay", [0.25, 0.6, 1.5])
def test_ctrl_c_at_any_moment_is_one_line(tmp_path, delay):
    """Ctrl-C while the modules load or while the work runs: one line, exit 130."""
    import signal
    import subprocess
    import sys
    import time

    argv = [sys.executable, "-m", "infodecomp", "eval", "compositional", "--model", "exact"]
    argv += ["--limit", "400", "--samples", "64", "--out", str(tmp_path / "out")]
    # A terminal's Ctrl-C: SIGINT handled as a shell in the foreground leaves it (a job started
    # with `&` by a script, e.g. a test run in the background, inherits it ignored).
    proc = subprocess.Popen(
        argv,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    # 130, or ended by the signal itself at interpreter exit (-2): a shell shows both as 130.
    assert proc.returncode in (130, -signal.SIGINT), err[-500:]
    assert "Traceback" not in err and err.strip().endswith("infodecomp: interrupted"), err


def test_ctrl_c_while_the_parser_is_built_is_one_line(monkeypatch, capsys):
    """The parser imports matplotlib (figure formats) before any work: a Ctrl-C there (a cold
    start, as on a fresh clone) was a traceback."""
    import sys

    from infodecomp import _entry, cli

    def interrupted(sub):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_figure_arguments", interrupted)
    monkeypatch.setattr(sys, "argv", ["infodecomp", "reference"])
    assert _entry.main() == 130
    assert capsys.readouterr().err.strip() == "infodecomp: interrupted"
