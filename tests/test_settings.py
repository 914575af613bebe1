"""One settings object for the draws (Sampling), resolved against a model in one place, and one
default number of draws everywhere."""

import inspect

import pytest
import torch

import infodecomp as idc
from infodecomp.cli import main
from infodecomp.sampling import DEFAULT_DRAWS, MAX_SEED, Sampling


def test_sampling_is_validated_when_made():
    bad_ones = ({"draws": 1}, {"draws": 2.5}, {"draws": True}, {"seed": -1}, {"seed": MAX_SEED + 1})
    for bad in bad_ones:
        with pytest.raises(ValueError, match="draws|seed"):
            Sampling(**bad)
    with pytest.raises(ValueError, match="batch_size"):
        Sampling(batch_size=True)
    with pytest.raises(TypeError, match="stratified"):
        Sampling(stratified="iid")
    with pytest.raises(TypeError, match="TruncatedLogistic"):
        Sampling(logsnr=(-5, 5))
    with pytest.raises(TypeError, match="Sampling"):
        mixture = idc.models.example_mixture()
        idc.mutual_info(mixture, torch.zeros(1, 8), None, sampling={"draws": 8})


def test_resolve_takes_the_models_range_and_batch_size_and_describe_round_trips():
    mixture = idc.models.example_mixture()
    resolved = Sampling(draws=16).resolve(mixture)
    low, high = mixture.logsnr_range
    assert (resolved.logsnr.low, resolved.logsnr.high) == pytest.approx((low, high))
    assert resolved.batch_size == 256  # the mixture sizes no batch of its own
    given = Sampling(logsnr=idc.TruncatedLogistic(), batch_size=3).resolve(mixture)
    assert given.logsnr == idc.TruncatedLogistic() and given.batch_size == 3
    assert Sampling.from_description(resolved.describe()) == resolved
    est = idc.mutual_info(mixture, mixture.sample(1)[0], {"shape": "circle"}, sampling=resolved)
    assert {k: est.settings[k] for k in resolved.describe()} == resolved.describe()
    assert est.n_evaluations == resolved.rows(2)


def test_one_default_number_of_draws_everywhere(capsys):
    assert Sampling().draws == DEFAULT_DRAWS == 256
    for fn in (idc.log_likelihood, idc.mutual_info, idc.conditional_mutual_info, idc.explain):
        parameters = inspect.signature(fn).parameters
        assert "sampling" in parameters and "n_samples" not in parameters
    for command in ("reference", "heatmap", "score", "demo"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert f"(default {DEFAULT_DRAWS})" in capsys.readouterr().out
    for evaluation in ("compositional", "localization", "intervention"):
        with pytest.raises(SystemExit):
            main(["eval", evaluation, "--help"])
        assert f"(default {DEFAULT_DRAWS})" in capsys.readouterr().out
