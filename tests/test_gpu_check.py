"""benchmarks/gpu_check.py runs end to end with tiny configs on the CPU (``--small``)."""

from __future__ import annotations

import importlib.util
import math
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
NUMBER = r"~?([-+0-9.eEnainf]+)\*?"
ROW = re.compile(
    rf"^(sd15|sdxl)\s+(float16|bfloat16)\s+{NUMBER}\s+(\d+)\s+{NUMBER} \((\d+)\)\s+(\S+)"
    rf"\s+{NUMBER} ± {NUMBER}"
)
AGREEMENT = re.compile(
    rf"^(sd15|sdxl)\s+float32 vs (float16|bfloat16)\s+(\d+)\s+{NUMBER} ± {NUMBER}"
    rf"\s+{NUMBER} ± {NUMBER}\s+{NUMBER}\s+{NUMBER}"
)

SKIPPED = re.compile(r"^(sd15|sdxl)\s+(float16|bfloat16)\s+skipped: ")


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


def test_small_prints_a_finite_row_per_pipeline_and_dtype(small_run: str) -> None:
    lines = small_run.splitlines()
    assert lines[0].startswith("gpu_check: torch ") and "diffusers" in lines[0]
    rows = {(m[1], m[2]): m for line in lines if (m := ROW.match(line))}
    skipped = {(m[1], m[2]) for line in lines if (m := SKIPPED.match(line))}
    for name in ("sd15", "sdxl"):
        assert (name, "bfloat16") in rows, small_run  # bfloat16 runs on any CPU
        # float16 runs, or its row says why not (some CPUs lack float16 kernels)
        assert (name, "float16") in rows or (name, "float16") in skipped, small_run
    for (_name, _dtype), m in rows.items():
        rate, batch, heat_s, draws, peak, cmi, se = m.groups()[2:]
        assert float(rate) > 0 and int(batch) >= 1 and int(draws) == 16
        assert math.isfinite(float(heat_s)) and float(heat_s) > 0
        assert peak == "n/a"  # no GPU memory on the CPU
        assert math.isfinite(float(cmi)) and math.isfinite(float(se)) and float(se) >= 0
    assert any(line.startswith("sd3") and "not supported yet" in line for line in lines)


def test_small_prints_the_float32_agreement(small_run: str) -> None:
    found = {(m[1], m[2]): m for line in small_run.splitlines() if (m := AGREEMENT.match(line))}
    assert {name for name, _ in found} == {"sd15", "sdxl"}, small_run
    assert all((name, "bfloat16") in found for name in ("sd15", "sdxl")), small_run
    for (_name, dtype), m in found.items():
        numbers = [float(v) for v in m.groups()[3:]]
        assert all(math.isfinite(v) for v in numbers), m[0]
        v32, s32, v_low, s_low, diff, in_se = numbers
        assert s32 > 0 and s_low > 0 and int(m[3]) == 16
        assert diff == pytest.approx(v_low - v32, abs=1e-3)
        if dtype == "float16":  # same weights, latent and draws: well within the noise
            assert abs(in_se) < 1, m[0]
    assert re.search(r"^wall time \d+\.\d s$", small_run, re.M)


def test_real_sizes_are_refused_on_the_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    assert _load().main(["--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--small" in err
