"""benchmarks/gpu_check.py runs end to end with tiny configs on the CPU (``--small``), and its
real-size configs fit together (built and run on the meta device: shapes only, no memory)."""

from __future__ import annotations

import importlib.util
import math
import re
import subprocess
import sys
import warnings
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
FAMILIES = ("sd15", "sdxl", "sd3", "flux")
NAME = "(" + "|".join(FAMILIES) + ")"
NUMBER = r"~?([-+0-9.eEnainf]+)\*?"
ROW = re.compile(
    rf"^{NAME}\s+(float16|bfloat16)\s+{NUMBER}\s+(\d+)\s+{NUMBER} \((\d+)\)\s+(\S+)"
    rf"\s+{NUMBER} ± {NUMBER}"
)
AGREEMENT = re.compile(
    rf"^{NAME}\s+(float32|bfloat16) vs (float16|bfloat16)\s+(\d+)\s+{NUMBER} ± {NUMBER}"
    rf"\s+{NUMBER} ± {NUMBER}\s+{NUMBER}\s+{NUMBER}"
)
RATIO = re.compile(
    rf"^{NAME}\s+ratio\s+(float16|bfloat16)\s+(plain|compiled \(\w+\))\s+batch (\d+)\s+"
    rf"draws (\d+)\s+estimator {NUMBER} rows/s, bare {NUMBER} rows/s: ratio {NUMBER} "
    rf"\(fill {NUMBER}; first call {NUMBER} s\)$"
)
SKIPPED = re.compile(rf"^{NAME}\s+(float16|bfloat16)\s+skipped: ")
TRACE = re.compile(
    rf"^{NAME}\s+trace\s+4-step generation at 16 px \(bfloat16\) in [0-9.]+ s; latent "
    r"\(4, 8, 8\), heat map of 'dog' \(8, 8\) from 4 attention rows, finite$"
)
OFFLOAD = re.compile(
    rf"^sd15\s+offload\s+explain\(\) under enable_model_cpu_offload\(device='cpu'\) .*: "
    rf"MI {NUMBER} vs {NUMBER} without, diff {NUMBER} "
)


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def small_run() -> str:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--small", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_small_prints_a_finite_row_per_pipeline_and_dtype(small_run: str) -> None:
    lines = small_run.splitlines()
    assert lines[0].startswith("gpu_check: torch ") and "diffusers" in lines[0]
    rows = {(m[1], m[2]): m for line in lines if (m := ROW.match(line))}
    skipped = {(m[1], m[2]) for line in lines if (m := SKIPPED.match(line))}
    for name in FAMILIES:
        assert (name, "bfloat16") in rows, small_run  # bfloat16 runs on any CPU
        # float16 runs, or its row says why not (some CPUs lack float16 kernels)
        assert (name, "float16") in rows or (name, "float16") in skipped, small_run
    for (_name, _dtype), m in rows.items():
        rate, batch, heat_s, draws, peak, cmi, se = m.groups()[2:]
        assert float(rate) > 0 and int(batch) >= 1 and int(draws) == 16
        assert math.isfinite(float(heat_s)) and float(heat_s) > 0
        assert peak == "n/a"  # no GPU memory on the CPU
        assert math.isfinite(float(cmi)) and math.isfinite(float(se)) and float(se) >= 0
    for name in ("sd3", "flux"):  # the T5 families say what their T5 and token count are
        assert any(
            line.startswith(f"  ({name} built in") and "16 T5 tokens" in line for line in lines
        ), small_run
    assert "not supported" not in small_run


@pytest.mark.slow
def test_small_prints_the_estimator_to_bare_loop_ratio(small_run: str) -> None:
    """Per pipeline the ratio with the plain network, and for sd15 (--compile-on's default)
    compiled too (backend eager with --small); bfloat16 on the CPU."""
    found = {(m[1], m[3]): m for line in small_run.splitlines() if (m := RATIO.match(line))}
    want = {(name, "plain") for name in FAMILIES} | {("sd15", "compiled (eager)")}
    assert set(found) == want, small_run
    for m in found.values():
        batch = 8 if m[1] in ("sd3", "flux") else 32  # transformers: TRANSFORMER_RATE_ROWS
        assert m[2] == "bfloat16" and int(m[4]) == batch and int(m[5]) == 16
        estimator, bare, ratio, fill, first = (float(v) for v in m.groups()[5:])
        assert estimator > 0 and bare > 0 and first >= 0
        assert ratio == pytest.approx(estimator / bare, rel=2e-3, abs=1e-3)
        assert 0 < fill <= 1


@pytest.mark.slow
def test_ratio_only(capsys: pytest.CaptureFixture[str]) -> None:
    gpu_check = _load()
    args = ["--small", "--device", "cpu", "--only", "sd15,sd3", "--ratio-only"]
    args += ["--compile-on", "sd3", "--draws", "8"]
    with warnings.catch_warnings():
        assert gpu_check.main(args) == 0
    out = capsys.readouterr().out
    found = [(m[1], m[3]) for line in out.splitlines() if (m := RATIO.match(line))]
    assert found == [("sd15", "plain"), ("sd3", "plain"), ("sd3", "compiled (eager)")], out
    assert not any(ROW.match(line) or TRACE.match(line) for line in out.splitlines()), out


@pytest.mark.slow
def test_small_traces_a_generation_of_each_pipeline(small_run: str) -> None:
    traced = {m[1] for line in small_run.splitlines() if (m := TRACE.match(line))}
    assert traced == set(FAMILIES), small_run


@pytest.mark.slow
def test_small_explains_under_cpu_offload_as_without(small_run: str) -> None:
    found = [m for line in small_run.splitlines() if (m := OFFLOAD.match(line))]
    assert len(found) == 1, small_run
    offloaded, plain, diff = (float(v) for v in found[0].groups())
    assert math.isfinite(plain) and offloaded == pytest.approx(plain, abs=1e-5)
    assert abs(diff) <= 1e-5


@pytest.mark.slow
def test_small_prints_the_float32_agreement(small_run: str) -> None:
    found = {(m[1], m[3]): m for line in small_run.splitlines() if (m := AGREEMENT.match(line))}
    assert {name for name, _ in found} == set(FAMILIES), small_run
    assert all((name, "bfloat16") in found for name in FAMILIES), small_run
    for (_name, dtype), m in found.items():
        assert m[2] == "float32"  # float32 fits wherever there is no GPU to run out of
        numbers = [float(v) for v in m.groups()[4:]]
        assert all(math.isfinite(v) for v in numbers), m[0]
        v32, s32, v_low, s_low, diff, in_se = numbers
        assert s32 > 0 and s_low > 0 and int(m[4]) == 16
        assert diff == pytest.approx(v_low - v32, abs=1e-3)
        if dtype == "float16":  # same weights, latent and draws: well within the noise
            assert abs(in_se) < 1, m[0]
    assert re.search(r"^wall time \d+\.\d s$", small_run, re.M)


@pytest.mark.slow
def test_bfloat16_is_the_reference_where_float32_does_not_fit(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gpu_check = _load()
    monkeypatch.setattr(gpu_check, "float32_unfit", lambda *a: "float32 weights do not fit")
    monkeypatch.setattr(gpu_check, "trace_check", lambda *a: "(trace)")  # tested above
    args = ["--small", "--device", "cpu", "--only", "flux", "--draws", "8"]
    with warnings.catch_warnings():
        assert gpu_check.main(args) == 0
    out = capsys.readouterr().out
    assert "flux: float32 weights do not fit: the reference CMI is bfloat16's" in out
    rows = {m[2] for line in out.splitlines() if (m := ROW.match(line))}
    assert "bfloat16" in rows, out
    # The same (bfloat16) weights in float16: the only comparison, no float32 anywhere.
    compared = [line for line in out.splitlines() if re.match(r"flux\s+\w+ vs ", line)]
    assert len(compared) == 1 and re.match(r"flux\s+bfloat16 vs float16 ", compared[0]), out
    if m := AGREEMENT.match(compared[0]):  # (or a line saying why float16 failed on this CPU)
        assert int(m[4]) == 8 and abs(float(m.groups()[-1])) < 1, m[0]


@pytest.mark.slow
def test_real_size_configs_fit_together() -> None:
    """The real-size pipelines, on the meta device: the published parameter counts, and one
    denoiser call of each (every width and token count agreeing) at the real input size."""
    gpu_check = _load()
    denoiser = {"sd15": 859.5, "sdxl": 2567.5, "sd3": 2028.3, "flux": 11901.4}  # millions
    latents = {"sd15": (4, 64, 64), "sdxl": (4, 128, 128)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Flux-dev's config is guidance-distilled
        for name in FAMILIES:
            pipe = gpu_check.build(name, False, "meta")
            net = pipe.unet if name in latents else pipe.transformer
            assert sum(p.numel() for p in net.parameters()) / 1e6 == pytest.approx(
                denoiser[name], abs=0.1
            )
            settings = gpu_check.model_settings(name, False)
            model = gpu_check.DiffusersModel.from_pipeline(pipe, **settings)
            assert model.data_shape == latents.get(name, (16, 128, 128))
            assert model.image_size == (512 if name == "sd15" else 1024)
            x = torch.zeros(2, *model.data_shape, device="meta")
            out = model(x, torch.zeros(2), [gpu_check.PROMPT, None])
            assert out.shape == x.shape
            if name in ("sd3", "flux"):
                t5 = pipe.text_encoder_3 if name == "sd3" else pipe.text_encoder_2
                assert t5.config.d_model == 4096 and t5.config.num_layers == gpu_check.T5_LAYERS
                assert model.network.text.max_sequence_length == {"sd3": 256, "flux": 512}[name]


def test_real_sizes_are_refused_on_the_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    assert _load().main(["--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--small" in err
