import math

import pytest
import torch

from infodecomp.models import Gaussian, GaussianMixture, example_mixture


def make_two_factor_mixture(diagonal: bool = False) -> GaussianMixture:
    """The example world (shape in coordinates 0-3, colour in 4-6, nothing in 7); with
    ``diagonal`` the same means with per-coordinate variances (coordinate 7 twice as wide)."""
    m = example_mixture()
    if not diagonal:
        return m
    variances = m.variances.clone()
    variances[:, 7] *= 2
    return GaussianMixture(m.means, variances, labels=m.labels)


@pytest.fixture
def mixture() -> GaussianMixture:
    return make_two_factor_mixture()


@pytest.fixture
def gaussian() -> Gaussian:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 6, generator=g, dtype=torch.float64)
    cov = a @ a.T / 6 + 0.1 * torch.eye(6, dtype=torch.float64)
    return Gaussian(torch.randn(6, generator=g, dtype=torch.float64), cov)


def error_line(err: str) -> str:
    """The one line of a command's error on standard error (beside the line that says where it
    runs, printed before the model loads)."""
    lines = [line for line in err.splitlines() if not line.startswith("infodecomp: running on ")]
    assert len(lines) == 1, err
    return lines[0]


def assert_rows_close(got, expected, rtol: float = 1e-5, atol: float = 1e-8, where: str = "rows"):
    """``got`` equals ``expected`` (JSON-like: dicts, lists, numbers, strings) but for floats,
    which agree to float rounding: what another packing of the denoiser's batches changes
    (several items in flight, a resumed run, a shard)."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys(), where
        for key in expected:
            assert_rows_close(got[key], expected[key], rtol, atol, f"{where}[{key!r}]")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), where
        for k, (g, e) in enumerate(zip(got, expected, strict=True)):
            assert_rows_close(g, e, rtol, atol, f"{where}[{k}]")
    elif isinstance(expected, float) and not isinstance(got, bool):
        assert isinstance(got, (int, float)), where
        assert math.isclose(got, expected, rel_tol=rtol, abs_tol=atol), (
            f"{where}: {got} != {expected}"
        )
    else:
        assert got == expected, f"{where}: {got!r} != {expected!r}"


def by_label(labels: list) -> dict[str, tuple[dict, list[int]]]:
    """Rows of a mixture sample grouped by label: ``{repr(label): (label, [row, ...])}``."""
    groups: dict[str, tuple[dict, list[int]]] = {}
    for i, lab in enumerate(labels):
        groups.setdefault(repr(lab), (lab, []))[1].append(i)
    return groups
