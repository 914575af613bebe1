"""The diffusers adapter and the heat-map workflow, on tiny random-weight pipelines."""

import json
from types import SimpleNamespace

import pytest
import torch
from conftest import error_line
from diffusers import DDPMScheduler
from tiny_pipelines import sd_pipeline, sdxl_pipeline

import infodecomp as idc
from infodecomp.cli import main
from infodecomp.explanation import explain
from infodecomp.models import Gaussian
from infodecomp.models.diffusers import DiffusersModel, VPSchedule
from infodecomp.models.diffusers.text import _PaddingTokenizer
from infodecomp.sampling import Sampling
from infodecomp.words import distinct_words, occurrences, remove_spans, split_words

KINDS = {
    "sd-eps": lambda: sd_pipeline("epsilon"),
    "sd-v": lambda: sd_pipeline("v_prediction"),
    "sdxl": sdxl_pipeline,
    "pixel": lambda: sd_pipeline(pixel=True),
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each tiny pipeline saved with save_pretrained, as a user's local model folder."""
    root = tmp_path_factory.mktemp("models")
    for name, make in KINDS.items():
        make().save_pretrained(root / name)
    return root


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("images") / "photo.png"
    pixels = (torch.rand(24, 20, 3, generator=torch.Generator().manual_seed(0)) * 255).byte()
    Image.fromarray(pixels.numpy()).save(path)
    return path


@pytest.mark.parametrize("name", KINDS)
def test_loads_offline_with_its_range_and_shapes(saved, name):
    model = DiffusersModel.from_pretrained(saved / name, torch_dtype=torch.float32)
    abar = model.scheduler.alphas_cumprod.double()
    assert model.logsnr_range == pytest.approx(
        ((abar / (1 - abar)).log().min().item(), (abar / (1 - abar)).log().max().item())
    )
    assert model.schedule.prediction_type == ("v_prediction" if name == "sd-v" else "epsilon")
    assert model.family == ("sdxl" if name == "sdxl" else "sd")
    assert model.image_size == 16
    assert model.data_shape == ((3, 16, 16) if name == "pixel" else (4, 8, 8))
    x = model.encode_image(torch.zeros(3, 30, 20))
    assert x.shape == (1, *model.data_shape)


def test_unknown_model_is_one_clear_error(tmp_path):
    with pytest.raises(idc.models.diffusers.ModelNotFoundError, match="never downloads"):
        DiffusersModel.from_pretrained("no-such-user/no-such-model")
    with pytest.raises(ValueError, match="not found"):
        DiffusersModel.from_pretrained(tmp_path)


def test_timesteps_are_the_nearest_in_log_snr(saved):
    model = DiffusersModel.from_pretrained(saved / "sd-eps")
    grid = model.timestep_logsnr
    t = torch.arange(0, 999, 37)
    assert torch.equal(model.schedule.timesteps(grid[t]), t)
    near = 0.3 * grid[t] + 0.7 * grid[t + 1]  # closer to t + 1
    assert torch.equal(model.schedule.timesteps(near), t + 1)
    assert model.schedule.timesteps(torch.tensor([-50.0, 50.0])).tolist() == [999, 0]


class GaussianUNet(torch.nn.Module):
    """Exact predictions for data ~ N(mean, diag(var)) at each timestep's abar, in the
    scheduler's parameterisation: a UNet with a known answer."""

    def __init__(self, scheduler, mean, var):
        super().__init__()
        self.abar, self.mean, self.var = scheduler.alphas_cumprod.double(), mean, var
        self.kind = scheduler.config.prediction_type
        self.config = SimpleNamespace(in_channels=3, sample_size=4)
        self.device, self.dtype = torch.device("cpu"), torch.float32

    def forward(self, x, t, encoder_hidden_states=None, added_cond_kwargs=None, return_dict=True):
        a = self.abar[t].view(-1, 1, 1, 1)
        x = x.double()
        eps = (1 - a).sqrt() * (x - a.sqrt() * self.mean) / (a * self.var + 1 - a)
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        out = {"epsilon": eps, "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * x0, "sample": x0}[
            self.kind
        ]
        return (out.float(),)


def gaussian_model(kind: str, mean, var):
    """The Gaussian UNet behind the discrete VP schedule every UNet pipeline goes through."""
    scheduler = DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type=kind
    )
    unet, schedule = GaussianUNet(scheduler, mean, var), VPSchedule(scheduler.alphas_cumprod, kind)

    def denoiser(x, logsnr, conds):
        return schedule.denoise(lambda x, t, c: unet(x, t)[0], x, logsnr, conds)

    denoiser.schedule, denoiser.logsnr_range = schedule, schedule.logsnr_range
    return denoiser


def test_prediction_types_give_the_exact_denoiser():
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(3, 4, 4, generator=g, dtype=torch.float64)
    var = torch.rand(3, 4, 4, generator=g, dtype=torch.float64) + 0.2
    exact = Gaussian(mean, torch.diag(var.flatten()))
    models = {k: gaussian_model(k, mean, var) for k in ("epsilon", "v_prediction", "sample")}
    x = exact.sample(4, seed=1).float()
    # On the timestep grid the adapter is exact, whatever the parameterisation.
    alpha = models["epsilon"].schedule.timestep_logsnr[torch.tensor([5, 300, 700, 990])]
    expected = exact(x.double(), alpha, [None] * 4)
    for model in models.values():
        torch.testing.assert_close(
            model(x, alpha.float(), [None] * 4).double(), expected, rtol=1e-4, atol=1e-4
        )
    # Off the grid (nearest timestep), the log-likelihood on shared draws moves by a
    # discretisation error far below the standard error (measured 0.011 nats; SE 0.36). A fixed
    # proposal: an adaptive one, fitted to each model's own integrand, would move the draws.
    run = {
        "sampling": Sampling(
            draws=1000, seed=2, logsnr=idc.TruncatedLogistic.from_range(-5.3, 7), adaptive=False
        )
    }
    reference = idc.log_likelihood(exact, x.double(), **run)
    for model in models.values():
        est = idc.log_likelihood(model, x, **run)
        assert (est.value - reference.value).abs().max() < 0.02
        assert (est.value - reference.value).abs().max() < 0.1 * reference.stderr.min()


def test_words_and_contexts():
    prompt = "A dog-like cat, left of a dog!"
    assert [w.text for w in split_words(prompt)] == [
        "A",
        "dog-like",
        "cat",
        "left",
        "of",
        "a",
        "dog",
    ]
    assert distinct_words(prompt) == ["a", "dog-like", "cat", "left", "of", "dog"]
    assert [(o.start, o.end) for o in occurrences(prompt, "a")] == [(0, 1), (24, 25)]
    assert remove_spans(prompt, [(11, 14)]) == "A dog-like, left of a dog!"
    assert remove_spans(prompt, [(0, 1), (24, 25)]) == "dog-like cat, left of dog!"
    with pytest.raises(ValueError, match="not in the prompt"):
        occurrences(prompt, "bird")


def test_word_to_token_mapping(saved):
    model = DiffusersModel.from_pretrained(saved / "sd-eps")
    tok = model.pipeline.tokenizer
    prompt = "a squarish dog, a dog"
    ids = tok(prompt, padding="max_length", max_length=16, return_tensors="pt").input_ids[0]
    pieces = tok.convert_ids_to_tokens(ids.tolist())
    squarish = model.token_positions(prompt, (2, 10))
    assert len(squarish) > 1 and "".join(pieces[i] for i in squarish) == "squarish</w>"
    dog = [
        p
        for o in occurrences(prompt, "dog")
        for p in model.token_positions(prompt, (o.start, o.end))
    ]
    assert [pieces[i] for i in dog] == ["dog</w>", "dog</w>"]  # not the comma
    padding = _PaddingTokenizer(tok, ((11, 14), (18, 21)))
    padded = padding(prompt, padding="max_length", max_length=16, return_tensors="pt")
    assert (padded.attention_mask[0][dog] == 0).all()
    padded = padded.input_ids[0]
    assert (padded[dog] == tok.pad_token_id).all()
    rest = [i for i in range(len(ids)) if i not in dog]
    assert torch.equal(padded[rest], ids[rest])
    with pytest.raises(ValueError, match="tokens long"):
        model.check_prompt("a dog " * 10)


@pytest.mark.parametrize("name", ["sd-eps", "sdxl"])
@pytest.mark.slow
def test_explain_maps_sum_to_the_estimates_and_ignore_batch_size(saved, name):
    model = DiffusersModel.from_pretrained(saved / name)
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    runs = [
        explain(model, image, "a red dog left of a cat", sampling=Sampling(draws=8, batch_size=b))
        for b in (3, 64)
    ]
    res = runs[0]
    assert res.words == ["a", "red", "dog", "left", "of", "cat"]
    torch.testing.assert_close(runs[1].estimate.value, res.estimate.value, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        res.heat_map(upsample=False).sum().item(), res.mi[0], rtol=1e-5, atol=1e-6
    )
    for word in res.words:
        assert res.heat_map(word, upsample=False).shape == (8, 8)
        torch.testing.assert_close(
            res.heat_map(word, upsample=False).sum().item(), res.cmi(word)[0], rtol=1e-5, atol=1e-6
        )
        assert res.heat_map(word).shape == (16, 16)
        torch.testing.assert_close(
            res.heat_map(word).sum(), res.heat_map(word, False).sum(), rtol=1e-4, atol=1e-6
        )
        assert (res.heat_map(word, upsample=False) >= 0).all() and res.cmi(word)[1] > 0
    # (2 + one context per word) rows per draw.
    assert res.estimate.n_evaluations == (8 + 8) * (2 + 6)  # 4 draws at each end of the range
    assert res.estimate.settings["contexts"][1] == "red dog left of cat"


def test_attention_maps_have_the_right_shape_and_sum(saved):
    model = DiffusersModel.from_pretrained(saved / "sd-eps")
    x = model.encode_image(torch.zeros(3, 16, 16))
    alpha = torch.linspace(-4, 6, 6)
    conds = ["a red dog", None, "a red dog", "a dog", "a red dog", None]
    plain = model(x.repeat(6, 1, 1, 1), alpha, conds)
    with model.collect_attention("a red dog") as collector:
        collected = model(x.repeat(6, 1, 1, 1), alpha, conds)
    assert torch.equal(plain, collected)  # the model's outputs are untouched
    assert collector.n_rows == 3
    maps = collector.token_maps()
    assert maps.shape == (16, 8, 8)
    # Attention sums to one over tokens in every head of every layer: 4 layers x 4 heads.
    torch.testing.assert_close(
        maps.sum(0), torch.full((8, 8), 16.0, dtype=torch.float64), rtol=2e-2, atol=0
    )
    # Only the prompt's rows are collected: the same rows alone give the same maps.
    alone = [0, 2, 4]
    with model.collect_attention("a red dog") as only:
        model(x.repeat(3, 1, 1, 1), alpha[alone], ["a red dog"] * 3)
    torch.testing.assert_close(only.token_maps(), maps, rtol=1e-4, atol=1e-6)
    assert (
        model.network.module.attn_processors == model.network.module.attn_processors
    )  # restored and usable
    assert not any(
        type(p).__name__ == "_CollectingProcessor"
        for p in model.network.module.attn_processors.values()
    )


def test_nan_from_the_model_is_a_clear_error(saved, monkeypatch):
    model = DiffusersModel.from_pretrained(saved / "pixel")
    monkeypatch.setattr(model.network.module, "forward", lambda x, *a, **k: (x * float("nan"),))
    with pytest.raises(idc.DenoiserOutputError, match="NaN or inf"):
        explain(model, torch.zeros(3, 16, 16), "a dog", attention=False, sampling=Sampling(draws=2))


@pytest.mark.parametrize("name", KINDS)
def test_heatmap_command_end_to_end(saved, image_file, tmp_path, name, capsys):
    out = tmp_path / "out"
    argv = [
        "heatmap",
        "--model",
        str(saved / name),
        "--image",
        str(image_file),
        "--prompt",
        "a photo of a red squarish dog",
        "--words",
        "red,squarish",
        "--samples",
        "4",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "squarish | rest (CMI)" in printed
    doc = json.loads((out / "result.json").read_text())
    assert set(doc["cmi"]) == {"red", "squarish"} and doc["units"] == "nats"
    assert doc["model"] == str(saved / name) and doc["seed"] == 0
    assert doc["settings"]["logsnr"]["clip"] == 3.0 and doc["n_evaluations"] == (4 + 8) * 4
    for f in [
        "red.heat_map.png",
        "squarish.heat_map.png",
        "grid.png",
        "prompt_mi.heat_map.png",
        "maps.safetensors",
        "report.html",
    ]:
        assert (out / f).stat().st_size > 0
    assert "data:image/png;base64" in (out / "report.html").read_text()


def test_score_command_json(saved, image_file, capsys):
    argv = [
        "score",
        "--model",
        str(saved / "sd-v"),
        "--image",
        str(image_file),
        "--prompt",
        "a red dog",
        "--prompt",
        "a blue cat",
        "--samples",
        "4",
        "--fixed",
        "--json",
    ]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["prompts"] == ["a red dog", "a blue cat"]
    assert len(doc["value"][0]) == 2 + 1 and doc["ranking"] in ([0, 1], [1, 0])  # and their pair
    assert doc["n_evaluations"] == (4 + 8) * 3  # 4 draws and 4 at each end
    assert doc["settings"]["estimator"] == "standard"  # the log-likelihood ratio ranks captions


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--image": "missing.png"}, "cannot read image"),
        ({"--image": "bad"}, "not an image"),
        ({"--prompt": "  "}, "prompt is empty"),
        ({"--words": "bird"}, "not in the prompt"),
        ({"--prompt": "a dog " * 10}, "tokens long"),
        ({"--model": "no-such-user/no-such-model"}, "not found"),
    ],
)
def test_bad_inputs_exit_2_with_one_line(saved, image_file, tmp_path, change, message, capsys):
    bad = tmp_path / "bad.png"
    bad.write_text("not a png")
    args = {
        "--model": str(saved / "sd-eps"),
        "--image": str(image_file),
        "--prompt": "a dog",
        "--samples": "2",
        "--out": str(tmp_path / "o"),
    }
    args.update(change)
    if args["--image"] == "bad":
        args["--image"] = str(bad)
    assert main(["heatmap", *[t for kv in args.items() for t in kv]]) == 2
    err = capsys.readouterr().err
    assert error_line(err).startswith("infodecomp: error:") and message in err
