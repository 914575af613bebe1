"""The adaptive proposal fitted to the estimator asked, and the tails added to information values
(issue 18, part 5), against exact answers of Gaussian mixtures with exact denoisers."""

import math

import pytest
import torch
from conftest import by_label

import infodecomp as idc
from infodecomp.models import GaussianMixture
from infodecomp.models.reference import example_mixture
from infodecomp.sampling import Sampling


def four_components(seed: int, dims: int = 8) -> GaussianMixture:
    """Four overlapping components, labels {"a", "b"} (two factors of two values)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(4, dims, generator=g, dtype=torch.float64) * math.sqrt(2 / dims)
    variances = 0.1 + 0.4 * torch.rand(4, generator=g, dtype=torch.float64)
    return GaussianMixture(means, variances, labels=[{"a": k % 2, "b": k // 2} for k in range(4)])


@pytest.mark.parametrize("quantity", ["mi", "cmi"])
def test_standard_estimator_alone_fits_its_own_integrand_and_is_unbiased(quantity):
    m = four_components(31)
    x, labels = m.sample(32, seed=32)
    errors, stderrs = [], []
    for label, rows in by_label(labels).values():
        context = None if quantity == "mi" else {"b": label["b"]}
        est = idc.conditional_mutual_info(
            m,
            x[rows],
            label,
            context,
            estimator="standard",
            sampling=Sampling(draws=128, seed=3),
            progress=False,
        )
        assert est.settings["proposal_fitted_to"] == "standard"
        truth = m.log_prob(x[rows], label) - m.log_prob(x[rows], context)
        errors.append(est.value - truth)
        stderrs.append(est.stderr)
    error, stderr = torch.cat(errors), torch.cat(stderrs)
    # The mean error over 32 independent points, within 4 of its standard errors.
    assert error.mean().abs() < 4 * stderr.pow(2).sum().sqrt() / len(error)
    assert ((error / stderr) ** 2).mean() < 2  # and each SE about right


def test_the_estimator_listed_first_sets_the_proposal():
    m = four_components(41)
    x, _ = m.sample(3, seed=42)
    conds = [{"a": 0, "b": 0}, {"a": 1, "b": 1}]
    run = {"sampling": Sampling(draws=128, seed=7), "progress": False}
    alone = {name: idc.mutual_info(m, x, conds, estimator=name, **run) for name in idc_names()}
    for order in (("standard", "orthogonal"), ("orthogonal", "standard")):
        both = idc.mutual_info(m, x, conds, estimator=order, **run)
        first, second = order
        # The first listed: bit for bit its own run; the second rides on the first's draws.
        for field in ("value", "stderr", "ci95"):
            assert torch.equal(getattr(both[first], field), getattr(alone[first], field))
        assert not torch.equal(both[second].value, alone[second].value)
        assert {e.settings["proposal_fitted_to"] for e in both.values()} == {first}
        assert both[second].n_evaluations == alone[second].n_evaluations
    # A fixed proposal (fewer than 64 draws, or adaptive=False) fits nothing: all agree.
    few = {"sampling": Sampling(draws=32, seed=7), "progress": False}
    both = idc.mutual_info(m, x, conds, estimator=("standard", "orthogonal"), **few)
    orth = idc.mutual_info(m, x, conds, estimator="orthogonal", **few)
    assert torch.equal(both["orthogonal"].value, orth.value)
    assert orth.settings["proposal_fitted_to"] is None


def idc_names() -> tuple[str, ...]:
    from infodecomp.estimators import ESTIMATORS

    return ESTIMATORS


def test_orthogonal_sampled_part_is_the_old_code_paths():
    # Measured with the code before the change (proposal fitted to the orthogonal integrand,
    # tails not added): the orthogonal estimate's sampled part is unchanged up to the float
    # rounding of adding and removing the tails; its SE gains the tails' SE in quadrature.
    m = example_mixture()
    x, _ = m.sample(3, seed=2)
    est = idc.mutual_info(
        m,
        x,
        [{"shape": "circle"}, {"colour": "red"}],
        sampling=Sampling(draws=128, seed=5, logsnr=idc.TruncatedLogistic()),
        progress=False,
    )
    old_value = [
        [24.04982352324098, 6.116214481023487],
        [0.2796590603144784, 0.5663340916687004],
        [24.59328036902297, 5.960940986230173],
    ]
    old_stderr = [
        [0.5944099678813864, 0.14265313929747606],
        [0.07729833251750685, 0.08713015951257873],
        [0.5544492140978907, 0.17349348145828827],
    ]
    tails, tails_se = est.diagnostics["outside_range"], est.diagnostics["outside_range_stderr"]
    old = torch.tensor(old_value, dtype=torch.float64)
    torch.testing.assert_close(est.value - tails, old, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        est.stderr**2 - tails_se**2, torch.tensor(old_stderr, dtype=torch.float64) ** 2
    )
    assert (tails > 0).all()
    assert est.settings["proposal_fitted_to"] == "orthogonal"
    assert est.settings["tails"] == "added"


@pytest.mark.parametrize("estimator", ["standard", "orthogonal"])
def test_tails_are_added_and_shrink_the_bias_of_a_cut_range(estimator):
    # Two wide components 12 apart in 4-D (variance 4): the paper's range [-5, 7] misses what
    # arrives below -5 (about 0.09 of 0.69 nats, where the integrand already decays about like
    # exp(a), as the tails assume). Truth: the exact log-ratio (standard); for the orthogonal
    # estimator (no closed form pointwise), its estimate over a range covering everything.
    n = 96
    means = torch.tensor([[6.0, 0, 0, 0], [-6.0, 0, 0, 0]], dtype=torch.float64)
    m = GaussianMixture(means, torch.full((2,), 4.0), labels=["left", "right"])
    x, _ = m.sample(n, seed=6, cond="left")
    cut = idc.TruncatedLogistic()  # the paper's: [-5, 7]
    run = {"estimator": estimator, "per_dim": True, "progress": False}
    est = idc.mutual_info(m, x, "left", sampling=Sampling(draws=256, seed=1, logsnr=cut), **run)
    if estimator == "standard":
        truth, truth_se = m.log_prob(x, "left") - m.log_prob(x), torch.zeros(n)
    else:
        wide = idc.mutual_info(m, x, "left", sampling=Sampling(draws=512, seed=2), **run)
        assert wide.diagnostics["outside_range"].abs().max() < 1e-3
        truth, truth_se = wide.value, wide.stderr
    tails, tails_se = est.diagnostics["outside_range"], est.diagnostics["outside_range_stderr"]
    sampled = est.value - tails
    sampled_se = (est.stderr**2 - tails_se**2).sqrt()

    def z(value: torch.Tensor, se: torch.Tensor) -> float:
        """Mean error over the points, in its standard errors."""
        return ((value - truth).mean() / ((se**2 + truth_se**2).sum().sqrt() / n)).item()

    assert z(sampled, sampled_se) < -4  # the sampled part alone is biased low
    assert abs(z(est.value, est.stderr)) < 4  # the tails remove most of it
    assert (est.value - truth).mean().abs() < 0.5 * (sampled - truth).mean().abs()
    # The flag keeps its meaning: tails larger than the sampled part's SE (the 0.09 nats are
    # about one SE per point here).
    assert torch.equal(est.truncated, tails.abs() > sampled_se)
    assert 0.2 < est.truncated.double().mean() < 1
    # The map still splits the value exactly, tails included.
    torch.testing.assert_close(est.map.flatten(1).sum(1), est.value, rtol=1e-9, atol=1e-9)


def test_a_covering_range_adds_next_to_nothing_and_flags_nothing():
    m = four_components(51)
    x, labels = m.sample(4, seed=52)
    est = idc.mutual_info(
        m, x, labels[0], estimator=("standard", "orthogonal"), progress=False,
        sampling=Sampling(draws=128, seed=1),
    )  # fmt: skip
    for e in est.values():
        assert not e.truncated.any()
        assert (e.diagnostics["outside_range"].abs() < 1e-2 * e.stderr + 1e-4).all()
