import json

import pytest
import torch

import infodecomp as idc
from infodecomp.cli import main
from infodecomp.sampling import Sampling


def test_reference_command_prints_estimates_beside_exact_values(capsys):
    assert main(["reference", "--samples", "400", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "-log p(x | label)" in out and "i^o(x; colour | shape)" in out
    assert "seed 3" in out and "denoiser evaluations" in out


def test_reference_command_json_is_within_four_standard_errors(capsys, tmp_path):
    assert main(["reference", "--samples", "2000", "--json", "--out", str(tmp_path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    checked = [row for row in doc["table"] if row["exact"] is not None]
    assert len(checked) == 4
    for row in checked:
        assert abs(row["estimate"] - row["exact"]) < 4 * row["stderr"], row
    assert doc["estimates"]["nll"]["seed"] == 0
    assert (tmp_path / "orthogonal.json").exists()


@pytest.mark.parametrize("argv", [["reference", "--samples", "1"], ["reference", "--seed", "-1"]])
def test_bad_input_is_one_line_and_exit_code_2(argv, capsys):
    with pytest.raises(SystemExit) as stop:  # the parser refuses it, before any work
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("infodecomp reference: error:") and err.count("\n") == 1


def test_estimate_saves_and_loads_with_maps_and_provenance(mixture, tmp_path):
    x, _ = mixture.sample(2, seed=0)
    est = idc.mutual_info(
        mixture, x, [{"shape": "circle"}, None], per_dim=True, sampling=Sampling(draws=16)
    )
    path = est.save(tmp_path / "mi")
    assert path.name == "mi.json" and (tmp_path / "mi.safetensors").exists()
    doc = json.loads(path.read_text())
    # 2 rows x (16 draws and 4 at each end of the range) x 2 conditions.
    assert doc["units"] == "nats" and doc["seed"] == 0 and doc["n_evaluations"] == 2 * 24 * 2
    assert len(doc["ci95"]) == 2 and len(doc["ci95"][0][0]) == 2 and "NaN" not in path.read_text()
    assert doc["settings"]["conditions"] == [{"shape": "circle"}, None]
    assert doc["settings"]["logsnr"]["clip"] == 3.0
    back = idc.Estimate.load(path)
    assert torch.equal(back.value, est.value) and torch.equal(back.map, est.map)
    assert torch.equal(back.ci95, est.ci95) and torch.equal(back.reliable, est.reliable)
    assert torch.equal(back.truncated, est.truncated)
    assert set(back.diagnostics) == set(est.diagnostics)
    assert back.settings == est.settings
    assert "mutual_info" in repr(est) and "nats" in repr(est)
