"""Precision targets (issue 18, part 2): each row takes the draws its values need for a target
standard error, planned from draws that are then spent, so values stay unbiased; checked against
exact answers of Gaussian mixtures with exact denoisers."""

import subprocess
import sys

import pytest
import torch
from conftest import by_label

import infodecomp as idc
from infodecomp.models.reference import example_mixture
from infodecomp.results import entry_warnings
from infodecomp.sampling import MIN_TARGETED_DRAWS, Sampling


def test_sampling_validates_targets_and_describes_them_only_when_set():
    for bad in (0, -0.1, float("nan"), float("inf"), "0.1", True):
        with pytest.raises(ValueError, match="target_se must be a positive number"):
            Sampling(target_se=bad)
    with pytest.raises(ValueError, match=f"at least {MIN_TARGETED_DRAWS}"):
        Sampling(draws=MIN_TARGETED_DRAWS - 1, target_rel=0.1)
    assert "target_se" not in Sampling().describe()  # runs without a target resume as before
    s = Sampling(draws=512, target_se=0.2, target_rel=0.05)
    assert s.targeted and not Sampling().targeted
    assert Sampling.from_description(s.describe()) == s


def test_rows_take_the_draws_their_own_values_need():
    g = example_mixture()
    x, labels = g.sample(8, seed=3)
    label = labels[0]
    sampling = Sampling(draws=1024, seed=4, target_se=0.3)
    est = idc.mutual_info(g, x, label, estimator="standard", sampling=sampling, progress=False)
    draws = est.diagnostics["draws"]
    assert draws.min() >= 64 and draws.max() <= 1024 - 32 and len(set(draws.tolist())) > 1
    spent = 2 * sampling.edge_draws + 16 + 16  # the range's ends, the pilot and the probe
    assert est.n_evaluations == int((draws + spent).sum()) * 2  # the label and the null
    # A row's numbers depend on the row alone, not on the rows beside it.
    for i in (0, 5):
        alone = idc.mutual_info(
            g, x[i : i + 1], label, estimator="standard", sampling=sampling, progress=False
        )
        assert alone.diagnostics["draws"][0] == draws[i]
        torch.testing.assert_close(alone.value[0], est.value[i])
        torch.testing.assert_close(alone.stderr[0], est.stderr[i])
    # Every entry says its target and draws; the values above it are named.
    entry = est.entry(0)
    assert entry["target"] == 0.3 and entry["draws"] == draws[0]
    imprecise = [est.entry(i)["stderr"] > 0.3 for i in range(8)]
    flagged = [any("imprecise" in w for w in entry_warnings(est.entry(i))) for i in range(8)]
    assert imprecise == flagged


def test_a_tighter_target_takes_more_draws_and_reaches_a_smaller_error():
    g = example_mixture()
    x, labels = g.sample(48, seed=5)
    label, rows = max(by_label(labels).values(), key=lambda group: len(group[1]))
    runs = {}
    for target in (0.4, 0.1):
        sampling = Sampling(draws=2048, seed=6, target_se=target)
        runs[target] = idc.mutual_info(
            g, x[rows], label, estimator="orthogonal", sampling=sampling, progress=False
        )
    loose, tight = runs[0.4], runs[0.1]
    assert tight.n_evaluations > 2 * loose.n_evaluations
    assert tight.stderr.median() < 0.5 * loose.stderr.median()


@pytest.mark.parametrize("quantity", ["mi", "cmi"])
def test_targeted_values_are_unbiased_and_cover(quantity):
    """Over 96 points of the example mixture, the standard estimator's values under a target
    (i^s = log p(x|y) - log p(x|context), exact here): mean error within 4 standard errors of 0,
    and the 95% intervals cover as fixed-size runs do."""
    g = example_mixture()
    x, labels = g.sample(96, seed=11)
    errors, ses, covered = [], [], []
    for label, rows in by_label(labels).values():
        context = None if quantity == "mi" else {"shape": label["shape"]}
        est = idc.conditional_mutual_info(
            g,
            x[rows],
            label,
            context,
            estimator="standard",
            sampling=Sampling(draws=512, seed=12, target_se=0.25),
            progress=False,
        )
        truth = g.log_prob(x[rows], label) - g.log_prob(x[rows], context)
        errors.append(est.value - truth)
        ses.append(est.stderr)
        covered.append((est.ci95[:, 0] <= truth) & (truth <= est.ci95[:, 1]))
    errors, ses, covered = torch.cat(errors), torch.cat(ses), torch.cat(covered)
    mean_se = errors.std() / len(errors) ** 0.5
    assert errors.mean().abs() < 4 * mean_se, (errors.mean(), mean_se)
    assert covered.double().mean() >= 0.88
    assert (ses <= 0.25).double().mean() >= 0.5  # the plan errs long, but not always


def test_command_line_targets_are_checked_in_one_line():
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "infodecomp", *args], capture_output=True, text=True
        )

    bad = cli("reference", "--target-se", "0")
    assert bad.returncode == 2 and "expected a number above 0" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) <= 3 and "Traceback" not in bad.stderr
    short = cli("reference", "--target-rel", "0.1", "--samples", "50")
    assert short.returncode != 0 and "Traceback" not in short.stderr
    assert f"at least {MIN_TARGETED_DRAWS}" in short.stderr
    ok = cli("reference", "--target-rel", "0.2", "--samples", "256", "--json")
    assert ok.returncode == 0, ok.stderr


def test_eval_refuses_a_target_where_draws_are_not_the_values(tmp_path):
    from infodecomp.evaluate.evaluation import evaluate

    targeted = Sampling(draws=128, target_se=0.2)
    kw = {"model": "exact", "limit": 1, "sampling": targeted, "progress": False}
    with pytest.raises(ValueError, match="sequential ranking draws until"):
        evaluate("compositional", tmp_path / "s", ranking="sequential", **kw)
    with pytest.raises(ValueError, match="paper's protocol takes the same draws"):
        evaluate("compositional", tmp_path / "p", protocol="paper", **kw)


def test_every_estimator_reported_is_planned_for():
    g = example_mixture()
    x, labels = g.sample(24, seed=5)
    label, rows = max(by_label(labels).values(), key=lambda group: len(group[1]))
    sampling = Sampling(draws=2048, seed=6, target_se=0.15)
    both = idc.mutual_info(
        g, x[rows], label, estimator=("orthogonal", "standard"), sampling=sampling, progress=False
    )
    alone = idc.mutual_info(
        g, x[rows], label, estimator="orthogonal", sampling=sampling, progress=False
    )
    # The standard estimator's larger variance on the same draws asks for more of them.
    assert both["standard"].n_evaluations > alone.n_evaluations
