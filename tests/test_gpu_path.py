"""The GPU path (fused attention, channels-last, torch.compile) on tiny random-weight pipelines:
the same numbers as the plain network to float rounding, attention maps still collected (and
from the uncompiled network), the commands' --compile.

torch.compile runs here with a counting backend that hands dynamo's graphs back to be run
eagerly: dynamo traces and guards the network exactly as with inductor, without a C compiler's
minute per shape on the CPU (inductor itself was checked by hand on the tiny UNet: 63 s to
compile, outputs within 1e-6). Tolerance: network outputs within 1e-5 relative, 1e-6
absolute; estimates within a thousandth of their standard error (channels-last changes the
convolutions' summation order, and the integrand squares differences of two outputs: measured
6e-5 nats = 2e-5 SE on the tiny SD pipeline; compile alone changed nothing, bit for bit).
"""

from __future__ import annotations

import json

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
from PIL import Image
from tiny_pipelines import flux_pipeline, sd3_pipeline, sd_pipeline

from infodecomp.cli import main
from infodecomp.estimators import mutual_info
from infodecomp.explanation import explain
from infodecomp.loading import load_model
from infodecomp.models.diffusers import DiffusersModel
from infodecomp.models.diffusers import speed as fast
from infodecomp.sampling import Sampling

RTOL, ATOL = 1e-5, 1e-6
IN_SE = 1e-3  # estimates: |difference| <= IN_SE x standard error


def assert_same_estimate(value, want, stderr) -> None:
    value, want, stderr = (torch.as_tensor(v, dtype=torch.float64) for v in (value, want, stderr))
    assert ((value - want).abs() <= IN_SE * stderr + 1e-9).all(), (value, want, stderr)


FLOW = {"image_size": 16, "max_sequence_length": 16}
PROMPT = "a red dog left of a cat"


class CountingBackend:
    """A torch.compile backend that counts the graphs dynamo gives it and the calls of them,
    and runs them as they are."""

    __name__ = "counting"

    def __init__(self) -> None:
        self.graphs = 0
        self.calls = 0

    def __call__(self, graph: torch.fx.GraphModule, example_inputs: list) -> object:
        self.graphs += 1

        def run(*args: object) -> object:
            self.calls += 1
            return graph.forward(*args)

        return run


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _image() -> torch.Tensor:
    return torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1


def test_accelerate_fuses_attention_and_sets_channels_last():
    pipe = sd_pipeline()
    pipe.unet.set_attn_processor(AttnProcessor())  # the classic, unfused processors
    model = DiffusersModel.from_pipeline(pipe)
    assert fast.attention_kind(pipe.unet) == "classic"
    speed = model.accelerate()
    assert speed == {"attention": "fused (SDPA)", "channels_last": True, "compile": None}
    assert all(isinstance(p, AttnProcessor2_0) for p in pipe.unet.attn_processors.values())
    weight = pipe.unet.conv_in.weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    # A transformer keeps its layout (its work is in linear layers).
    flux = DiffusersModel.from_pipeline(flux_pipeline(), **FLOW)
    assert flux.accelerate()["channels_last"] is False


@pytest.mark.parametrize(
    ("make", "kwargs"),
    [(sd_pipeline, {}), (sd3_pipeline, FLOW), (flux_pipeline, FLOW)],
    ids=["sd", "sd3", "flux"],
)
def test_compiled_channels_last_network_gives_the_same_estimate(make, kwargs):
    plain = DiffusersModel.from_pipeline(make(), **kwargs)
    fast_model = DiffusersModel.from_pipeline(make(), **kwargs)  # the same seeded weights
    backend = CountingBackend()
    fast_model.accelerate(compile=True, backend=backend)
    x = plain.encode_image(_image())
    # 5 rows a call: the last call of each stage is partial (a second compiled shape).
    run = {"sampling": Sampling(draws=8, seed=0, batch_size=5), "progress": False}
    conds = [PROMPT, "a blue cat"]
    want = mutual_info(plain, x, conds, **run)
    got = mutual_info(fast_model, x, conds, **run)
    assert backend.graphs >= 1 and backend.calls >= 1  # the compiled network ran
    assert_same_estimate(got.value, want.value, want.stderr)
    assert_same_estimate(got.stderr, want.stderr, want.stderr)


@pytest.mark.parametrize(
    ("make", "kwargs"), [(sd_pipeline, {}), (flux_pipeline, FLOW)], ids=["sd", "flux"]
)
def test_attention_maps_are_collected_uncompiled_and_agree(make, kwargs):
    plain = DiffusersModel.from_pipeline(make(), **kwargs)
    fast_model = DiffusersModel.from_pipeline(make(), **kwargs)
    backend = CountingBackend()
    fast_model.accelerate(compile=True, backend=backend)
    run = {"sampling": Sampling(draws=4, seed=0, batch_size=6), "progress": False}
    want = explain(plain, _image(), PROMPT, ["red", "dog"], **run)
    got = explain(fast_model, _image(), PROMPT, ["red", "dog"], **run)
    assert backend.calls == 0  # every call collected maps: none ran compiled
    assert_same_estimate(got.estimate.value, want.estimate.value, want.estimate.stderr)
    for word in ("red", "dog"):
        a, b = got.attention_map(word, False), want.attention_map(word, False)
        assert a.sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # Back to the compiled network after the block, its processors the fused ones again.
    assert fast_model.network.eager is False
    assert not any(
        type(p).__name__ == "_CollectingProcessor"
        for p in fast_model.network.module.attn_processors.values()
    )
    x = fast_model.encode_image(_image())
    out = fast_model(x.repeat(2, 1, 1, 1), torch.zeros(2), [PROMPT, None])
    assert backend.calls > 0
    torch.testing.assert_close(
        out, plain(x.repeat(2, 1, 1, 1), torch.zeros(2), [PROMPT, None]), rtol=RTOL, atol=ATOL
    )


def test_load_model_compile(monkeypatch):
    made = []

    def compiled(module, backend="inductor", mode=None, dynamic=None):
        made.append(backend)
        return torch.compile(module, backend="eager")

    monkeypatch.setattr(fast, "compiled", compiled)
    model = load_model("bundled", device="cpu", compile=True)
    assert made == ["inductor"] and model.speed["compile"]["backend"] == "inductor"
    assert model.speed["channels_last"] is True
    assert load_model("bundled", device="cpu").speed["compile"] is None
    with pytest.warns(UserWarning, match="exact world model .* ignored"):
        load_model("exact", compile=True)


def test_compile_option_of_the_commands(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fast, "compiled", lambda module, *a: torch.compile(module, backend="eager"))
    folder = tmp_path / "sd"
    sd_pipeline().save_pretrained(folder)
    image = tmp_path / "image.png"
    Image.fromarray(((_image().permute(1, 2, 0) + 1) * 127.5).byte().numpy()).save(image)
    common = ["--model", str(folder), "--image", str(image), "--device", "cpu", "--samples", "4"]
    score = ["score", *common, "--prompt", "a red dog", "--prompt", "a blue cat", "--fixed"]
    score += ["--json"]
    assert main(score) == 0
    plain = capsys.readouterr().out
    assert main([*score, "--compile"]) == 0
    compiled = capsys.readouterr()
    assert "note" not in compiled.err  # score runs compiled throughout
    a, b = json.loads(plain), json.loads(compiled.out)
    assert_same_estimate(b["value"], a["value"], a["stderr"])
    heat = ["heatmap", *common, "--prompt", "a red dog", "--out", str(tmp_path / "h")]
    assert main([*heat, "--compile"]) == 0
    err = capsys.readouterr().err
    assert "note: --compile: attention maps are collected with the uncompiled network" in err
    assert main([*heat, "--compile", "--no-attention"]) == 0
    assert "note" not in capsys.readouterr().err


def test_compile_notes_say_where_it_does_not_reach():
    from argparse import Namespace

    from infodecomp.cli import _compile_note

    assert _compile_note(Namespace(command="score")) is None
    assert _compile_note(Namespace(command="eval", evaluation="compositional")) is None
    for kind in ("localization", "intervention"):
        note = _compile_note(Namespace(command="eval", evaluation=kind))
        assert note is not None and "runs uncompiled" in note
    assert "own sampler" in _compile_note(Namespace(command="generate"))
    assert _compile_note(Namespace(command="heatmap", no_attention=True)) is None
