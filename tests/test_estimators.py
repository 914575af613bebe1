"""The estimators against exact answers, within 4 standard errors (fixed seeds)."""

import math

import numpy as np
import pytest
import torch
from conftest import make_two_factor_mixture

import infodecomp as idc
from infodecomp.models import Gaussian
from infodecomp.sampling import Sampling


def gaussian_nll_by_quadrature(g: Gaussian, x: torch.Tensor, low: float, high: float):
    """-log p(x) from the I-MMSE integral restricted to [low, high], by quadrature of the
    closed-form expected errors (no sampling): the estimators' exact target."""
    lam = g.eigvals.numpy()
    proj = ((x.flatten(1) - g.mean.flatten()) @ g.eigvecs).numpy()  # (n, d)
    alpha = np.linspace(low, high, 200001)[:, None, None]
    a2, b2 = 1 / (1 + np.exp(-alpha)), 1 / (1 + np.exp(alpha))
    mmse = ((a2 * lam / (a2 * lam + b2)) ** 2 + a2 * b2 * proj**2 / (a2 * lam + b2) ** 2).sum(-1)
    sq = (x.flatten(1) ** 2).sum(1).numpy()
    mmse_ref = x.shape[1] * a2[..., 0] ** 2 + a2[..., 0] * b2[..., 0] * sq
    integral = np.trapezoid(mmse - mmse_ref, alpha[:, 0, 0], axis=0)
    return 0.5 * x.shape[1] * math.log(2 * math.pi) + 0.5 * sq + 0.5 * integral


def z_scores(est: idc.Estimate, exact: torch.Tensor) -> torch.Tensor:
    return (est.value - exact) / est.stderr


def assert_calibrated(z: torch.Tensor) -> None:
    """All within 4 SE, no shared bias (the mean z of independent rows within 4 of its SE), and
    errors really of standard-error size (not inflated SEs)."""
    assert z.abs().max() < 4, z
    assert z.mean().abs() < 4 / math.sqrt(len(z)), z.mean()
    assert 0.3 < (z**2).mean() < 2.5, (z**2).mean()


@pytest.mark.parametrize("sampling", ["stratified", "iid"])
def test_nll_of_gaussian_matches_exact(gaussian, sampling):
    x = gaussian.sample(12, seed=1)
    est = idc.log_likelihood(
        gaussian, x, sampling=Sampling(draws=3000, stratified=sampling == "stratified")
    )
    low, high = est.settings["logsnr"]["low"], est.settings["logsnr"]["high"]
    truncated = torch.from_numpy(gaussian_nll_by_quadrature(gaussian, x, low, high))
    assert_calibrated(z_scores(est, truncated))
    # Truncation bias of the default range (the model's covering range, +-12 beyond its scales):
    # measured 3.1e-5 nats at most here, far below the standard error.
    full = torch.from_numpy(gaussian_nll_by_quadrature(gaussian, x, -60, 60))
    torch.testing.assert_close(full, -gaussian.log_prob(x), rtol=0, atol=1e-6)
    assert (full - truncated).abs().max() < 1e-4
    # A narrow range misses about 0.8 nats of the integral (the quadrature's truncation bias);
    # the tails extrapolated beyond it bring the estimate back to the full value (measured:
    # 0.04 nats off on average at 20000 draws, against 0.82 without them).
    narrow = idc.log_likelihood(
        gaussian, x, sampling=Sampling(draws=3000, logsnr=idc.TruncatedLogistic(1, 1, 3))
    )
    narrow_exact = torch.from_numpy(gaussian_nll_by_quadrature(gaussian, x, -2, 4))
    assert (narrow_exact - full).abs().mean() > 0.5
    assert_calibrated(z_scores(narrow, full))
    outside, outside_se = (
        narrow.diagnostics["outside_range"],
        narrow.diagnostics["outside_range_stderr"],
    )
    assert ((outside + (narrow_exact - full)).abs() < 4 * outside_se).all()


@pytest.mark.parametrize("diagonal", [False, True])
def test_nll_of_mixture_matches_exact(diagonal):
    m = make_two_factor_mixture(diagonal=diagonal)
    x, _ = m.sample(10, seed=2)
    for cond in [None, {"shape": "circle"}]:
        est = idc.log_likelihood(m, x, cond, sampling=Sampling(draws=3000, seed=1))
        assert_calibrated(z_scores(est, -m.log_prob(x, cond)))
    bpd = idc.log_likelihood(m, x[:1], sampling=Sampling(draws=100)).bits_per_dim
    assert bpd.shape == (1,) and torch.isfinite(bpd).all()


def test_standard_pointwise_mi_matches_log_ratio(mixture):
    z = []
    for label in mixture.labels[::2]:
        x, _ = mixture.sample(8, seed=3, cond=label)
        est = idc.mutual_info(
            mixture, x, label, estimator="standard", sampling=Sampling(draws=2000)
        )
        z.append(z_scores(est, mixture.log_prob(x, label) - mixture.log_prob(x)))
    assert_calibrated(torch.cat(z))


def test_standard_pointwise_cmi_matches_log_ratio(mixture):
    z = []
    for label in mixture.labels[1::2]:
        x, _ = mixture.sample(8, seed=4, cond=label)
        context = {"shape": label["shape"]}
        est = idc.conditional_mutual_info(
            mixture, x, label, context, estimator="standard", sampling=Sampling(draws=2000)
        )
        z.append(z_scores(est, mixture.log_prob(x, label) - mixture.log_prob(x, context)))
    assert_calibrated(torch.cat(z))


def joint_mean(mixture, estimator, context_of) -> tuple[float, float]:
    """Mean of pointwise estimates over joint draws (x, label), and its standard error."""
    x, labels = mixture.sample(300, seed=5)
    values = torch.empty(len(labels), dtype=torch.float64)
    for label in mixture.labels:  # one call per label: the condition is shared by its rows
        rows = torch.tensor([i for i, lab in enumerate(labels) if lab == label])
        est = idc.conditional_mutual_info(
            mixture,
            x[rows],
            label,
            context_of(label),
            estimator=estimator,
            sampling=Sampling(draws=200),
        )
        values[rows] = est.value
    return values.mean().item(), values.std().item() / math.sqrt(len(values))


@pytest.mark.parametrize("estimator", ["orthogonal", "standard"])
def test_mean_mi_over_joint_samples_matches_exact_mi(mixture, estimator):
    exact = mixture.mutual_info(n_samples=20000, seed=6)
    mean, se = joint_mean(mixture, estimator, lambda label: None)
    assert abs(mean - exact.value.item()) < 4 * math.hypot(se, exact.stderr.item())


@pytest.mark.parametrize("estimator", ["orthogonal", "standard"])
def test_mean_cmi_over_joint_samples_matches_exact_cmi(mixture, estimator):
    exact = mixture.mutual_info("colour", given="shape", n_samples=20000, seed=7)
    mean, se = joint_mean(mixture, estimator, lambda label: {"shape": label["shape"]})
    assert abs(mean - exact.value.item()) < 4 * math.hypot(se, exact.stderr.item())


def test_orthogonal_is_nonnegative_and_lower_variance(mixture):
    x, _ = mixture.sample(20, seed=8)
    label = mixture.labels[0]
    o = idc.mutual_info(mixture, x, label, per_dim=True, sampling=Sampling(draws=500))
    s = idc.mutual_info(mixture, x, label, estimator="standard", sampling=Sampling(draws=500))
    assert (o.value >= 0).all() and (o.map >= 0).all()
    assert o.stderr.mean() < s.stderr.mean()


@pytest.mark.parametrize(
    "call",
    [
        lambda m, x: idc.log_likelihood(m, x, [None, {"shape": "circle"}], per_dim=True),
        lambda m, x: idc.mutual_info(m, x, {"colour": "red"}, per_dim=True),
        lambda m, x: idc.mutual_info(m, x, {"colour": "red"}, estimator="standard", per_dim=True),
        lambda m, x: idc.conditional_mutual_info(
            m, x, {"colour": "red", "shape": "circle"}, {"shape": "circle"}, per_dim=True
        ),
    ],
)
def test_maps_sum_to_totals(mixture, call):
    x, _ = mixture.sample(3, seed=9)
    est = call(mixture, x)
    assert est.map.shape == est.value.shape + (8,)
    torch.testing.assert_close(est.map.sum(-1), est.value, rtol=1e-12, atol=1e-10)
    assert est.map_stderr.shape == est.map.shape and (est.map_stderr >= 0).all()


def test_channel_summed_maps():
    m = make_two_factor_mixture()
    images = GaussianMixtureView(m)  # data shaped (2 channels, 2, 2)
    x, _ = m.sample(2, seed=10)
    x = x.view(2, 2, 2, 2)
    full = idc.mutual_info(
        images, x, {"shape": "circle"}, per_dim=True, sampling=Sampling(draws=64)
    )
    summed = idc.mutual_info(
        images, x, {"shape": "circle"}, per_dim=True, sum_channels=True, sampling=Sampling(draws=64)
    )
    assert full.map.shape == (2, 2, 2, 2) and summed.map.shape == (2, 2, 2)
    torch.testing.assert_close(summed.map, full.map.sum(1))
    torch.testing.assert_close(summed.map.flatten(1).sum(1), summed.value)


class GaussianMixtureView:
    """The 8-dimensional mixture seen as 2-channel 2x2 images."""

    def __init__(self, m):
        self.m, self.logsnr_range = m, m.logsnr_range

    def __call__(self, x_noisy, logsnr, conds):
        return self.m(x_noisy.flatten(1), logsnr, conds).view_as(x_noisy)


def test_maps_localise_the_informative_coordinates(mixture):
    # Colour differs only in coordinates 4-6, shape only in 0-3; coordinate 7 carries nothing.
    x, _ = mixture.sample(4, seed=11, cond={"shape": "square", "colour": "green"})
    colour = idc.conditional_mutual_info(
        mixture,
        x,
        {"shape": "square", "colour": "green"},
        {"shape": "square"},
        per_dim=True,
        sampling=Sampling(draws=400),
    )
    share = colour.map[:, 4:7].sum(1) / colour.map.sum(1)
    assert (share > 0.999).all(), share
    shape = idc.mutual_info(
        mixture, x, {"shape": "square"}, per_dim=True, sampling=Sampling(draws=400)
    )
    assert (shape.map[:, :4].sum(1) / shape.map.sum(1) > 0.9).all()
    standard = idc.mutual_info(
        mixture,
        x,
        {"shape": "square"},
        estimator="standard",
        per_dim=True,
        sampling=Sampling(draws=2000),
    )
    assert (standard.map[:, 7].abs() < 4 * standard.map_stderr[:, 7]).all()


def test_same_seed_same_numbers_other_seed_other_numbers(mixture):
    x, _ = mixture.sample(3, seed=12)
    a = idc.mutual_info(mixture, x, {"shape": "circle"}, sampling=Sampling(draws=64, seed=5))
    b = idc.mutual_info(mixture, x, {"shape": "circle"}, sampling=Sampling(draws=64, seed=5))
    c = idc.mutual_info(mixture, x, {"shape": "circle"}, sampling=Sampling(draws=64, seed=6))
    assert torch.equal(a.value, b.value) and torch.equal(a.stderr, b.stderr)
    assert not torch.allclose(a.value, c.value)


def test_numbers_do_not_depend_on_batch_size(mixture):
    x, _ = mixture.sample(3, seed=13)
    conds = [{"shape": "circle"}, {"colour": "red"}, {"shape": "square", "colour": "red"}]
    runs = [
        idc.mutual_info(mixture, x, conds, per_dim=True, sampling=Sampling(draws=33, batch_size=bs))
        for bs in (1, 2, 7, 10_000)
    ]
    for r in runs[1:]:
        torch.testing.assert_close(r.value, runs[0].value, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(r.map, runs[0].map, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("keyed", [False, True])
def test_a_row_alone_equals_the_same_row_among_others(mixture, keyed):
    """Streams are keyed by (seed, item key): neighbours, position and batch size do not matter.
    Alone, reordered or across batch sizes, values agree to float rounding (a row's draws meet
    other neighbours in each call, and the denoiser's matrix kernels depend on the batch)."""
    x, _ = mixture.sample(5, seed=21)
    keys = ["a", "b", "c", "d", "e"] if keyed else None
    conds = [{"shape": "circle"}, {"colour": "red"}]
    base, run = Sampling(draws=64, seed=3), {"per_dim": True}
    together = {
        bs: idc.mutual_info(
            mixture, x, conds, keys=keys, **run, sampling=base.replace(batch_size=bs)
        )
        for bs in (1, 7, 256)
    }
    for k in (0, 2, 4):
        alone = idc.mutual_info(
            mixture,
            x[k : k + 1],
            conds,
            keys=keys and keys[k : k + 1],
            **run,
            sampling=base.replace(batch_size=7),
        )
        torch.testing.assert_close(alone.value[0], together[7].value[k], rtol=1e-12, atol=0)
        torch.testing.assert_close(alone.stderr[0], together[7].stderr[k], rtol=1e-12, atol=0)
    reordered = idc.mutual_info(
        mixture,
        x.flip(0),
        conds,
        keys=keys and keys[::-1],
        **run,
        sampling=base.replace(batch_size=7),
    )
    torch.testing.assert_close(reordered.value.flip(0), together[7].value, rtol=1e-12, atol=0)
    for bs in (1, 256):
        torch.testing.assert_close(together[bs].value, together[7].value, rtol=1e-12, atol=0)
        torch.testing.assert_close(together[bs].map, together[7].map, rtol=1e-12, atol=1e-12)
    # Different rows (or keys) get different draws: the keys do name the streams.
    assert len(set(together[7].stderr[:, 0].tolist())) == 5


def test_given_keys_name_the_streams_whatever_the_content(mixture):
    x, _ = mixture.sample(2, seed=22)
    same = torch.cat([x[:1], x[:1]])
    by_content = idc.mutual_info(mixture, same, {"shape": "circle"}, sampling=Sampling(draws=16))
    assert by_content.value[0] == by_content.value[1]  # equal rows, equal streams
    keyed = idc.mutual_info(
        mixture, same, {"shape": "circle"}, keys=["p", "q"], sampling=Sampling(draws=16)
    )
    assert keyed.value[0] != keyed.value[1]
    with pytest.raises(ValueError, match="keys for 2 rows"):
        idc.mutual_info(mixture, x, {"shape": "circle"}, keys=["p"], sampling=Sampling(draws=16))
    with pytest.raises(ValueError, match="str or int item id"):
        idc.mutual_info(
            mixture, x, {"shape": "circle"}, keys=[1.5, 2.5], sampling=Sampling(draws=16)
        )


def test_denoiser_calls_are_full_batches(mixture):
    rows = []

    def counting(x_noisy, logsnr, conds):
        rows.append(len(conds))
        return mixture(x_noisy, logsnr, conds)

    counting.logsnr_range = mixture.logsnr_range
    x, _ = mixture.sample(3, seed=13)
    conds = [{"shape": "circle"}, {"colour": "red"}, {"shape": "square", "colour": "red"}]
    est = idc.mutual_info(counting, x, conds, sampling=Sampling(draws=33, batch_size=6))
    # 33 draws and 4 at each end of the range; 3 conditions and the null one.
    assert sum(rows) == est.n_evaluations == 3 * (33 + 8) * 4
    assert rows == [6] * (est.n_evaluations // 6)  # never a part-filled call


def test_several_conditions_share_draws_and_evaluations(mixture):
    x, _ = mixture.sample(2, seed=14)
    circle, red = {"shape": "circle", "colour": "red"}, {"colour": "red"}
    together = idc.conditional_mutual_info(
        mixture, x, circle, [None, red, {"shape": "circle"}], sampling=Sampling(draws=96)
    )
    alone = idc.conditional_mutual_info(mixture, x, circle, red, sampling=Sampling(draws=96))
    assert together.value.shape == (2, 3) and together.settings["stages"]["pilot"] == 8
    # 4 distinct conditions (the caption once, plus 3 contexts) per draw, not 6; 4 draws at
    # each end of the range besides the 96.
    assert together.n_evaluations == 2 * 104 * 4
    assert alone.n_evaluations == 2 * 104 * 2
    # The adaptive proposal is fitted to all pairs of a call: among others, a pair is the same
    # estimate on other draws.
    assert not torch.equal(together.value[:, 1], alone.value)
    diff = together.value[:, 1] - alone.value
    assert (diff.abs() < 4 * (together.stderr[:, 1] ** 2 + alone.stderr**2).sqrt()).all()
    # On a fixed proposal, a pair measured among others sees the very same draws as alone.
    run = {"sampling": Sampling(draws=96, adaptive=False)}
    fixed = idc.conditional_mutual_info(mixture, x, circle, [None, red, {"shape": "circle"}], **run)
    fixed_alone = idc.conditional_mutual_info(mixture, x, circle, red, **run)
    torch.testing.assert_close(fixed.value[:, 1], fixed_alone.value, rtol=1e-12, atol=1e-12)


def test_default_range_comes_from_the_model(mixture, gaussian):
    est = idc.log_likelihood(gaussian, gaussian.sample(1), sampling=Sampling(draws=4))
    assert est.settings["logsnr"]["low"] == pytest.approx(gaussian.logsnr_range[0])
    assert est.settings["logsnr"]["high"] == pytest.approx(gaussian.logsnr_range[1])
    assert est.settings["logsnr"]["clip"] == 3.0

    def plain(x_noisy, logsnr, conds):  # a bare function is a denoiser too, with no range
        return torch.zeros_like(x_noisy)

    est = idc.log_likelihood(plain, torch.zeros(1, 3), sampling=Sampling(draws=4))
    assert (est.settings["logsnr"]["loc"], est.settings["logsnr"]["scale"]) == (1.0, 2.0)


def test_truncated_logistic_weights_integrate_its_range():
    dist = idc.TruncatedLogistic.from_range(-7.0, 11.0)
    assert (dist.low, dist.high, dist.clip) == pytest.approx((-7.0, 11.0, 3.0))
    rng = np.random.default_rng(0)
    for stratified in (True, False):
        a = dist.sample(20000, rng, stratified)
        assert a.min() >= -7.0 and a.max() <= 11.0
        assert dist.weight(a).mean() == pytest.approx(18.0, rel=0.02)  # integral of 1
    strata = dist.sample(10, rng, stratified=True)
    assert np.all(np.diff(strata) > 0)


class Broken:
    logsnr_range = (-5.0, 5.0)

    def __init__(self, output):
        self.output = output

    def __call__(self, x_noisy, logsnr, conds):
        return self.output(x_noisy)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda m, x: idc.log_likelihood(m, x[0]), ValueError, "batch axis"),
        (
            lambda m, x: idc.log_likelihood(m, x, sampling=Sampling(draws=1)),
            ValueError,
            "draws",
        ),
        (lambda m, x: idc.mutual_info(m, x, "a", estimator="fancy"), ValueError, "estimator"),
        (lambda m, x: idc.mutual_info(m, x, "a", sampling="sobol"), TypeError, "Sampling"),
        (
            lambda m, x: idc.mutual_info(m, x, "a", sampling=Sampling(batch_size=0)),
            ValueError,
            "batch_size",
        ),
        (lambda m, x: idc.log_likelihood(m, x * float("nan")), ValueError, "NaN"),
        (lambda m, x: idc.conditional_mutual_info(m, x, ["a", "b"], ["c"]), ValueError, "length"),
        (lambda m, x: idc.mutual_info(m, x, []), ValueError, "no conditions"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, error, message):
    with pytest.raises(error, match=message):
        call(Broken(lambda z: z), torch.zeros(2, 3))


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (lambda z: z[:, :2], r"returned \(\d+, 2\) for noisy inputs of shape"),
        (lambda z: z.numpy(), "returned ndarray"),
        (lambda z: torch.where(z > 0, float("nan"), z), "NaN or inf at log-SNR"),
    ],
)
def test_bad_denoiser_outputs_raise_clear_errors(output, message):
    with pytest.raises(idc.DenoiserOutputError, match=message):
        idc.mutual_info(Broken(output), torch.ones(2, 3), "a", sampling=Sampling(draws=4))


def test_both_estimators_from_one_pass_equal_separate_runs(mixture):
    x, _ = mixture.sample(2, seed=23)
    conds = [{"shape": "circle"}, {"colour": "red"}]
    both = idc.mutual_info(
        mixture, x, conds, estimator=("standard", "orthogonal"), sampling=Sampling(draws=32)
    )
    for name in ("standard", "orthogonal"):
        alone = idc.mutual_info(mixture, x, conds, estimator=name, sampling=Sampling(draws=32))
        assert torch.equal(both[name].value, alone.value)
        assert both[name].settings["estimator"] == name
        assert both[name].n_evaluations == alone.n_evaluations
    assert not torch.equal(both["standard"].value, both["orthogonal"].value)
    with pytest.raises(ValueError, match="unknown estimator"):
        idc.mutual_info(mixture, x, conds, estimator=("standard", "nope"))
