import pytest
import torch

from infodecomp.models import Gaussian, GaussianMixture

SHAPES = ["circle", "square"]
COLOURS = ["red", "blue", "green"]


def make_two_factor_mixture(variance: float = 0.3, diagonal: bool = False) -> GaussianMixture:
    """Six components labelled by shape x colour; shape lives in coordinates 0-3, colour in 4-6,
    coordinate 7 carries nothing."""
    labels = [{"shape": s, "colour": c} for s in SHAPES for c in COLOURS]
    means = torch.zeros(len(labels), 8, dtype=torch.float64)
    for k, lab in enumerate(labels):
        sign = 1.0 if lab["shape"] == "circle" else -1.0
        means[k, :4] = sign * torch.tensor([1.0, -1.0, 1.0, -1.0])
        means[k, 4 + COLOURS.index(lab["colour"])] = 1.5
    if diagonal:
        variances = torch.full_like(means, variance)
        variances[:, 7] = 2 * variance  # a non-isotropic coordinate
        return GaussianMixture(means, variances, labels=labels)
    return GaussianMixture(means, torch.full((len(labels),), variance), labels=labels)


@pytest.fixture
def mixture() -> GaussianMixture:
    return make_two_factor_mixture()


@pytest.fixture
def gaussian() -> Gaussian:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 6, generator=g, dtype=torch.float64)
    cov = a @ a.T / 6 + 0.1 * torch.eye(6, dtype=torch.float64)
    return Gaussian(torch.randn(6, generator=g, dtype=torch.float64), cov)
