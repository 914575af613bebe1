"""The reference models are the ground truth: check them against independent computations."""

import math

import pytest
import torch
from conftest import make_two_factor_mixture
from torch.distributions import (
    Categorical,
    Independent,
    MixtureSameFamily,
    MultivariateNormal,
    Normal,
)

import infodecomp as idc
from infodecomp.models import Gaussian, GaussianMixture

ALPHAS = [-20.0, -3.0, 0.0, 2.5, 8.0, 25.0]


def tweedie_eps(log_marginal, z: torch.Tensor, alpha: float) -> torch.Tensor:
    """E[eps | z] = -sqrt(sigmoid(-a)) * grad log p_a(z) (Tweedie), by autograd."""
    z = z.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(log_marginal(z).sum(), z)
    return -math.sqrt(torch.sigmoid(torch.tensor(-alpha)).item()) * grad


def noisy_mixture(m: GaussianMixture, cond, alpha: float) -> MixtureSameFamily:
    idx = m.components(cond)
    a2 = torch.sigmoid(torch.tensor(alpha, dtype=torch.float64))
    means = a2.sqrt() * m.means.flatten(1)[idx]
    scales = (a2 * m.variances[idx] + (1 - a2)).sqrt()
    return MixtureSameFamily(
        Categorical(logits=m.log_weights[idx]), Independent(Normal(means, scales), 1)
    )


@pytest.mark.parametrize("diagonal", [False, True])
@pytest.mark.parametrize("cond", [None, {"shape": "circle"}, {"shape": "square", "colour": "red"}])
def test_mixture_denoiser_matches_tweedie(diagonal, cond):
    m = make_two_factor_mixture(diagonal=diagonal)
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for alpha in ALPHAS:
        expected = tweedie_eps(noisy_mixture(m, cond, alpha).log_prob, z, alpha)
        got = m(z, torch.full((5,), alpha, dtype=torch.float64), [cond] * 5)
        torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-9)


def test_mixture_denoiser_is_finite_at_extreme_logsnr(mixture):
    z = 50 * torch.randn(4, 8, dtype=torch.float64)
    out = mixture(z, torch.tensor([-60.0, -30.0, 30.0, 60.0], dtype=torch.float64), [None] * 4)
    assert torch.isfinite(out).all()


def test_gaussian_denoiser_matches_tweedie(gaussian):
    z = torch.randn(4, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for alpha in ALPHAS:
        a2 = torch.sigmoid(torch.tensor(alpha, dtype=torch.float64))
        noisy = MultivariateNormal(
            a2.sqrt() * gaussian.mean, a2 * gaussian.cov + (1 - a2) * torch.eye(6)
        )
        expected = tweedie_eps(noisy.log_prob, z, alpha)
        got = gaussian(z, torch.full((4,), alpha, dtype=torch.float64), [None] * 4)
        torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-9)


def test_log_probs_match_torch_distributions(gaussian, mixture):
    x = gaussian.sample(7, seed=3)
    expected = MultivariateNormal(gaussian.mean, gaussian.cov).log_prob(x)
    torch.testing.assert_close(gaussian.log_prob(x), expected)
    y, _ = mixture.sample(7, seed=3)
    for cond in [None, {"colour": "blue"}]:
        torch.testing.assert_close(
            mixture.log_prob(y, cond), noisy_mixture(mixture, cond, 60.0).log_prob(y)
        )


def test_isotropic_and_diagonal_paths_agree(mixture):
    diag = GaussianMixture(mixture.means, mixture.variances.clone(), labels=mixture.labels)
    assert mixture.isotropic and not diag.isotropic
    z = torch.randn(6, 8, dtype=torch.float64)
    alpha = torch.linspace(-8, 12, 6, dtype=torch.float64)
    conds = [None, {"shape": "circle"}] * 3
    torch.testing.assert_close(mixture(z, alpha, conds), diag(z, alpha, conds))
    torch.testing.assert_close(mixture.log_prob(z), diag.log_prob(z))


def test_one_component_mixture_is_a_gaussian():
    mean = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    var = torch.tensor([[0.2, 1.0, 3.0]], dtype=torch.float64)
    m, g = GaussianMixture(mean, var), Gaussian(mean[0], torch.diag(var[0]))
    z, alpha = torch.randn(5, 3, dtype=torch.float64), torch.linspace(-5, 9, 5, dtype=torch.float64)
    torch.testing.assert_close(m(z, alpha, [None] * 5), g(z, alpha, [None] * 5))
    torch.testing.assert_close(m.log_prob(z), g.log_prob(z))


def test_conditioning_restricts_components(mixture):
    assert mixture.components({"shape": "circle"}).tolist() == [0, 1, 2]
    assert mixture.components({"colour": "blue"}).tolist() == [1, 4]
    assert mixture.components({"shape": "square", "colour": "green"}).tolist() == [5]
    assert len(mixture.components(None)) == 6
    with pytest.raises(ValueError, match="no component"):
        mixture.components({"shape": "hexagon"})
    labelled = GaussianMixture(torch.zeros(2, 1), torch.ones(2), labels=["a", "b"])
    assert labelled.components("b").tolist() == [1]


def test_sample_is_deterministic_and_labelled(mixture):
    x1, l1 = mixture.sample(100, seed=4)
    x2, l2 = mixture.sample(100, seed=4)
    assert torch.equal(x1, x2) and l1 == l2
    circles = torch.tensor([lab["shape"] == "circle" for lab in l1])
    assert (x1[circles, 0] > 0).float().mean() > 0.9 and (x1[~circles, 0] < 0).float().mean() > 0.9
    x3, l3 = mixture.sample(50, seed=5, cond={"colour": "red"})
    assert all(lab["colour"] == "red" for lab in l3)


def test_exact_mutual_info_of_separated_mixture_is_label_entropy():
    # Far-apart components: the label is a function of x, so I(X;Y) = H(Y) = log K.
    means = 20.0 * torch.eye(4, dtype=torch.float64)
    m = GaussianMixture(means, torch.ones(4), weights=[1, 1, 2, 4])
    p = torch.tensor([1, 1, 2, 4], dtype=torch.float64) / 8
    est = m.mutual_info(n_samples=4000, seed=0)
    assert abs(est.value.item() - (-(p * p.log()).sum().item())) < 4 * est.stderr.item()
    uniform = GaussianMixture(means, torch.ones(4)).mutual_info(n_samples=500)
    assert abs(uniform.value.item() - math.log(4)) < 1e-9 and uniform.stderr.item() < 1e-9
    # Identical components: the label says nothing.
    same = GaussianMixture(torch.zeros(3, 2), torch.ones(3))
    assert abs(same.mutual_info(n_samples=500).value.item()) < 1e-12


def test_exact_conditional_mutual_info_of_independent_factors(mixture):
    # Colour lives in its own coordinates: I(X; colour | shape) = I(X; colour).
    a = mixture.mutual_info("colour", given="shape", n_samples=20000, seed=1)
    b = mixture.mutual_info("colour", n_samples=20000, seed=2)
    assert abs(a.value - b.value).item() < 4 * math.hypot(a.stderr.item(), b.stderr.item())


def test_invalid_reference_models():
    with pytest.raises(ValueError, match="positive definite"):
        Gaussian(torch.zeros(2), torch.tensor([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="variances must have shape"):
        GaussianMixture(torch.zeros(3, 2), torch.ones(2))
    with pytest.raises(ValueError, match="one label per component"):
        GaussianMixture(torch.zeros(3, 2), torch.ones(3), labels=["a"])
    with pytest.raises(ValueError, match=r"data shape \(3,\), the model expects \(2,\)"):
        idc.log_likelihood(Gaussian(torch.zeros(2), torch.eye(2)), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="unconditional"):
        Gaussian(torch.zeros(2), torch.eye(2))(torch.zeros(1, 2), torch.zeros(1), ["a"])
