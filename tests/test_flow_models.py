"""Flow-matching transformers (SD3, Flux): the flow channel is the VP channel, exactly; the tiny
random-weight SD3 and Flux pipelines run the heat-map workflow as the UNet families do."""

import json

import pytest
import torch
from tiny_pipelines import flux_pipeline, sd3_pipeline, sd_pipeline, sdxl_pipeline

import infodecomp as idc
from infodecomp.cli import main
from infodecomp.explanation import explain
from infodecomp.models import example_mixture
from infodecomp.models.diffusers import DiffusersModel, FlowSchedule, PaddedPrompt
from infodecomp.sampling import Sampling

FAMILIES = {
    "sd": sd_pipeline,
    "sdxl": sdxl_pipeline,
    "sd3": sd3_pipeline,
    "flux": flux_pipeline,
}


class FlowMixture:
    """A rectified-flow velocity network v(x_t, time_scale * t, label) built from the exact
    mixture denoiser, written in the flow's own terms: x0_hat from the VP posterior mean."""

    def __init__(self, mixture, time_scale):
        self.mixture, self.time_scale = mixture, time_scale

    def __call__(self, x_t, timestep, conds):
        t = (timestep / self.time_scale).to(torch.float64).view(-1, 1)
        s = ((1 - t) ** 2 + t**2).sqrt()
        a = 2 * ((1 - t) / t).log()
        x_a = x_t.to(torch.float64) / s
        eps = self.mixture(x_a, a.flatten(), conds)
        x0 = (x_a - torch.sigmoid(-a).sqrt() * eps) / torch.sigmoid(a).sqrt()
        return eps - x0


def test_flow_matching_wrapper_gives_the_vp_numbers():
    mixture = example_mixture()
    schedule = FlowSchedule(time_scale=1000.0)
    net = FlowMixture(mixture, 1000.0)

    def flow(x, logsnr, conds):
        return schedule.denoise(net, x, logsnr, conds)

    x, (label,) = mixture.sample(3, seed=0)[0], mixture.sample(1, seed=0)[1]
    a = torch.linspace(-9, 9, 3, dtype=torch.float64)
    torch.testing.assert_close(flow(x, a, [None] * 3), mixture(x, a, [None] * 3), rtol=0, atol=1e-9)
    run = {"sampling": Sampling(draws=128, seed=3, logsnr=idc.TruncatedLogistic.from_range(-9, 9))}
    conds, contexts = [label, label], [None, {"shape": label["shape"]}]
    for fn in (idc.conditional_mutual_info, idc.mutual_info):
        args = (conds, contexts) if fn is idc.conditional_mutual_info else (conds,)
        vp, fm = fn(mixture, x, *args, **run), fn(flow, x, *args, **run)
        torch.testing.assert_close(fm.value, vp.value, rtol=0, atol=1e-9)
        torch.testing.assert_close(fm.stderr, vp.stderr, rtol=0, atol=1e-9)
    vp, fm = idc.log_likelihood(mixture, x, **run), idc.log_likelihood(flow, x, **run)
    torch.testing.assert_close(fm.value, vp.value, rtol=0, atol=1e-9)


def test_flow_time_is_continuous_and_exact():
    a = torch.tensor([-13.8, -2.0, 0.0, 3.5, 13.8], dtype=torch.float64)
    t = FlowSchedule.time(a)
    torch.testing.assert_close(2 * ((1 - t) / t).log(), a, rtol=0, atol=1e-12)
    assert FlowSchedule(num_train_timesteps=1000).logsnr_range == pytest.approx((-13.8, 13.8), 1e-3)


def _record(module):
    """Wrap ``module.forward`` to keep the keyword arguments of each call."""
    calls, forward = [], module.forward

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return forward(*args, **kwargs)

    module.forward = recording
    return calls


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_the_network_is_called_as_the_pipeline_calls_it(family):
    pipe = FAMILIES[family]()
    model = DiffusersModel.from_pipeline(pipe, image_size=16, max_sequence_length=16)
    calls = _record(pipe.transformer)
    g = torch.Generator().manual_seed(0)
    pipe(
        "a red dog",
        num_inference_steps=4,
        height=16,
        width=16,
        generator=g,
        max_sequence_length=16,
        guidance_scale=1.0,
        output_type="latent",
    )
    # A step at an interior time 0 < t < 1 (at t = 1 any time map would agree).
    step = next(i for i, t in enumerate(pipe.scheduler.sigmas.tolist()) if 0.05 < t < 0.95)
    seen, t = calls[step], pipe.scheduler.sigmas[step].item()
    x_t = seen["hidden_states"][:1]
    if family == "flux":  # unpack 2x2 tokens to (C, h, w)
        x_t = x_t.view(1, 4, 4, 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(1, 4, 8, 8)
    s = ((1 - t) ** 2 + t**2) ** 0.5
    a = torch.tensor([2 * torch.log(torch.tensor((1 - t) / t)).item()])
    calls.clear()
    model(x_t.double() / s, a, ["a red dog"])
    ours = calls[0]
    for key in ("hidden_states", "timestep", "encoder_hidden_states", "pooled_projections"):
        torch.testing.assert_close(ours[key].float(), seen[key][:1].float(), rtol=1e-5, atol=1e-5)
    if family == "flux":
        for key in ("img_ids", "txt_ids"):
            torch.testing.assert_close(ours[key], seen[key])


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.slow
def test_heatmap_and_attention_on_every_family(family):
    kwargs = {"image_size": 16, "max_sequence_length": 16} if family in ("sd3", "flux") else {}
    model = DiffusersModel.from_pipeline(FAMILIES[family](), **kwargs)
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    runs = [
        explain(
            model,
            image,
            "a red dog left of a cat",
            ["red", "dog", "red dog"],
            progress=False,
            sampling=Sampling(draws=8, batch_size=b),
        )
        for b in (5, 64)
    ]
    res = runs[0]
    torch.testing.assert_close(runs[1].estimate.value, res.estimate.value, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        res.heat_map(upsample=False).sum().item(), res.mi[0], rtol=1e-5, atol=1e-6
    )
    for word in res.words:
        torch.testing.assert_close(
            res.heat_map(word, upsample=False).sum().item(), res.cmi(word)[0], rtol=1e-5, atol=1e-6
        )
        attn = res.attention_map(word, upsample=False)
        assert attn.shape == (8, 8) and (attn >= 0).all() and attn.sum() > 0
    # A phrase is one unit: removed together, attention summed over its tokens.
    assert res.estimate.settings["contexts"][3] == "a left of a cat"
    torch.testing.assert_close(
        res.attention_map("red dog", False),
        res.attention_map("red", False) + res.attention_map("dog", False),
    )
    assert res.estimate.settings["family"] == family


@pytest.mark.parametrize("family", ["sd", "sdxl", "sd3", "flux"])
def test_padding_a_word(family):
    kwargs = {"image_size": 16, "max_sequence_length": 16} if family in ("sd3", "flux") else {}
    model = DiffusersModel.from_pipeline(FAMILIES[family](), **kwargs)
    text = model.network.text
    plain = text(["a red dog"], model.device, torch.float32)
    same = text([PaddedPrompt("a red dog", ())], model.device, torch.float32)
    for key in plain:
        torch.testing.assert_close(same[key], plain[key], rtol=0, atol=0)
    padded = PaddedPrompt("a red dog", ((2, 5),))
    if family in ("sd3", "flux"):  # the pooled CLIP-L vector would stop at the padding
        with pytest.raises(ValueError, match="context='pad' is not available"):
            text([padded], model.device, torch.float32)
    else:
        hidden = text([padded], model.device, torch.float32)["hidden"][0]
        assert torch.equal(hidden[:2], plain["hidden"][0][:2])  # CLIP is causal: before "red"
        assert not torch.allclose(hidden[2:], plain["hidden"][0][2:])
    positions = model.token_positions("a red dog", (2, 5))
    assert positions == ([2, 17] if family == "sd3" else [1] if family == "flux" else [2])


def test_distilled_models_are_flagged_and_the_guidance_recorded():
    with pytest.warns(UserWarning, match="guidance-distilled"):
        model = DiffusersModel.from_pipeline(
            flux_pipeline(guidance_embeds=True), image_size=16, guidance_scale=2.5
        )
    assert model.guidance_scale == 2.5 and "guidance 2.5" in model.distilled
    res = explain(
        model, torch.zeros(3, 16, 16), "a dog", progress=False, sampling=Sampling(draws=4)
    )
    assert res.estimate.settings["guidance_scale"] == 2.5
    assert "guidance-distilled" in res.estimate.settings["distilled"]
    assert DiffusersModel.from_pipeline(sd3_pipeline(), name="sd3.5-large-turbo").distilled
    assert DiffusersModel.from_pipeline(sd3_pipeline()).distilled is None


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """SD3 and Flux saved as users' folders; SD3 only as an fp16 variant."""
    root = tmp_path_factory.mktemp("flow-models")
    sd3_pipeline().to(torch.float16).save_pretrained(root / "sd3-fp16", variant="fp16")
    flux_pipeline().save_pretrained(root / "flux")
    return root


def test_fp16_variant_loads_in_the_dtype_asked(saved):
    model = DiffusersModel.from_pretrained(saved / "sd3-fp16", torch_dtype=torch.float32)
    assert model.variant == "fp16" and model.dtype == torch.float32
    assert model.family == "sd3" and model.image_size == 16
    half = DiffusersModel.from_pretrained(saved / "sd3-fp16", dtype="float16", variant="fp16")
    assert half.dtype == torch.float16


def test_missing_components_are_named(saved, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(saved / "flux", broken)
    shutil.rmtree(broken / "text_encoder_2")
    with pytest.raises(ValueError, match="lacks the component folder.*text_encoder_2"):
        DiffusersModel.from_pretrained(broken)
    shutil.copytree(saved / "flux" / "text_encoder_2", broken / "text_encoder_2")
    for weights in (broken / "transformer").glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(ValueError, match="no weights .* in transformer"):
        DiffusersModel.from_pretrained(broken)
    index = json.loads((broken / "model_index.json").read_text())
    del index["transformer"]
    (broken / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="names no unet or transformer"):
        DiffusersModel.from_pretrained(broken)
    (broken / "model_index.json").write_text("{not json")
    with pytest.raises(ValueError, match="model_index.json is not valid JSON"):
        DiffusersModel.from_pretrained(broken)


@pytest.mark.parametrize("name", ["sd3-fp16", "flux"])
@pytest.mark.slow
def test_heatmap_and_generate_commands(saved, tmp_path, name, capsys):
    from PIL import Image

    image = tmp_path / "x.png"
    Image.new("RGB", (20, 16), (200, 30, 30)).save(image)
    model = ["--model", str(saved / name), "--image-size", "16"]
    out = tmp_path / "gen"
    assert (
        main(["generate", *model, "--prompt", "a red dog", "--steps", "2", "--out", str(out)]) == 0
    )
    assert Image.open(out / "image_000.png").size == (16, 16)
    assert json.loads((out / "generate.json").read_text())["family"] == name.split("-")[0]
    args = ["heatmap", *model, "--image", str(image), "--prompt", "a red dog", "--samples", "4"]
    assert main([*args, "--words", "red dog,a", "--out", str(tmp_path / "h")]) == 0
    doc = json.loads((tmp_path / "h" / "result.json").read_text())
    assert set(doc["cmi"]) == {"red dog", "a"} and doc["settings"]["family"] == name[:4].rstrip("-")
    err = capsys.readouterr().err
    assert ("not exact information" in err) == (name == "flux")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_trace_keeps_the_generation_and_explains_its_latent(family, capsys):
    pipe = FAMILIES[family]()
    extra = {"max_sequence_length": 16} if family in ("sd3", "flux") else {}
    prompt = "a red dog left of a cat"

    def generate():
        g = torch.Generator().manual_seed(7)
        size = {"height": 16, "width": 16, "num_inference_steps": 3, "output_type": "pt"}
        return pipe(prompt, generator=g, **size, **extra).images[0]

    plain = generate()
    with idc.trace(pipe, image_size=16, **extra) as tc:
        image = generate()
    torch.testing.assert_close(image, plain)  # tracing changes nothing
    assert tc.prompt == prompt and tc.seed == 7 and tc.latent.shape == (1, 4, 8, 8)
    # The kept latent is the generated image's: decoding it gives the pipeline's output.
    torch.testing.assert_close(tc.model.decode(tc.latent)[0], image * 2 - 1, rtol=0, atol=1e-5)
    # Attention of the prompt's rows only (not the negative prompt's under guidance): one per step.
    assert tc.attention.n_rows == 3
    car = tc.heat_map("red dog")
    assert car.shape == (8, 8) and (car > 0).all()
    res = tc.explain(["red dog", "cat"], progress=False, sampling=Sampling(draws=8, seed=tc.seed))
    assert "64 denoiser rows" in capsys.readouterr().err  # the cost, announced first
    assert res.estimate.seed == 7 and res.estimate.n_evaluations == 64
    direct = explain(
        tc.model,
        res.image,
        prompt,
        ["red dog", "cat"],
        progress=False,
        x=tc.latent,
        sampling=Sampling(draws=8, seed=7),
    )
    torch.testing.assert_close(direct.estimate.value, res.estimate.value)
    # The pipeline is as before.
    assert "encode_prompt" not in vars(pipe) and "step" not in vars(pipe.scheduler)


def test_vae_upcast_where_its_config_asks():
    pipe = sd_pipeline()
    pipe.vae.register_to_config(force_upcast=True)
    pipe.to(torch.float16)  # as from_pretrained(torch_dtype=float16) loads it
    model = DiffusersModel.from_pipeline(pipe)
    assert pipe.vae.dtype == torch.float16  # wrapping changes nothing
    seen = []
    pipe.vae.encoder.register_forward_pre_hook(lambda m, a: seen.append(a[0].dtype))
    x = model.encode_image(torch.zeros(3, 16, 16))
    assert seen == [torch.float32] and x.dtype == torch.float32 and x.isfinite().all()
    assert pipe.vae.dtype == torch.float16  # back as it was


def test_text_embeddings_are_cached_within_a_bound(monkeypatch):
    import infodecomp.models.diffusers.text as text

    monkeypatch.setattr(text, "CACHED_CONDITIONS", 3)
    model = DiffusersModel.from_pipeline(sd_pipeline())
    x = torch.zeros(5, 4, 8, 8)
    first = model(x, torch.zeros(5), ["a", "b", "c", "dog", "a"])  # all five rows kept
    assert list(model.network.text._cache) == ["a", "b", "c", "dog"]
    model(x[:1], torch.zeros(1), ["red"])
    assert list(model.network.text._cache) == ["c", "dog", "red"]
    torch.testing.assert_close(model(x, torch.zeros(5), ["a", "b", "c", "dog", "a"]), first)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_joint_attention_maps_are_the_blocks_own_attention(family, monkeypatch):
    """Each joint block's map equals softmax over the text keys of the queries and keys the
    block's own processor attends with (norms and, in Flux, rotary positions applied)."""
    import diffusers.models.transformers.transformer_flux as flux_module

    from infodecomp.models.diffusers.attention import AttentionCollector

    model = DiffusersModel.from_pipeline(FAMILIES[family](), image_size=16, max_sequence_length=16)
    x = torch.randn(2, *model.data_shape, generator=torch.Generator().manual_seed(0))
    model(x, torch.tensor([0.5, 0.5]), ["a red dog"] * 2)  # text encoded (and cached) first
    ours, used = [], []
    add = AttentionCollector.add
    monkeypatch.setattr(AttentionCollector, "add", lambda self, p: (ours.append(p), add(self, p)))
    if family == "sd3":  # (B, heads, [image, text], D)
        sdpa = torch.nn.functional.scaled_dot_product_attention
        monkeypatch.setattr(
            torch.nn.functional,
            "scaled_dot_product_attention",
            lambda q, k, v, **kw: (used.append((q, k)), sdpa(q, k, v, **kw))[1],
        )
    else:  # (B, [text, image], heads, D)
        dispatch = flux_module.dispatch_attention_fn
        monkeypatch.setattr(
            flux_module,
            "dispatch_attention_fn",
            lambda q, k, v, **kw: (
                used.append((q.transpose(1, 2), k.transpose(1, 2))),
                dispatch(q, k, v, **kw),
            )[1],
        )
    with model.collect_attention("a red dog"):
        model(x, torch.tensor([0.5, 0.5]), ["a red dog", "a red dog"])
    n_text = 16 + (16 if family == "sd3" else 0)
    assert len(ours) == (2 if family == "sd3" else 1) and len(used) >= len(ours)
    for probs, (q, k) in zip(ours, used, strict=False):
        if family == "sd3":
            q_img, k_txt = q[:, :, :-n_text], k[:, :, -n_text:]
        else:
            q_img, k_txt = q[:, :, n_text:], k[:, :, :n_text]
        scores = q_img.float() @ k_txt.float().transpose(-1, -2) / q.shape[-1] ** 0.5
        torch.testing.assert_close(probs, scores.softmax(-1).sum(1), rtol=1e-4, atol=1e-5)


def test_trace_of_a_float16_pipeline():
    pipe = sd3_pipeline().to(torch.float16)
    with idc.trace(pipe, image_size=16, max_sequence_length=16) as tc:
        image = pipe(
            "a red dog",
            num_inference_steps=2,
            height=16,
            width=16,
            max_sequence_length=16,
            output_type="pt",
        ).images[0]
    assert image.dtype == torch.float16 and pipe.vae.dtype == torch.float16
    res = tc.explain(["dog"], progress=False, announce=False, sampling=Sampling(draws=4))
    assert res.estimate.settings["dtype"] == "float16" and torch.isfinite(res.estimate.value).all()


def test_trace_of_latent_output_and_of_a_pixel_pipeline():
    pipe = sd3_pipeline()
    run = {"num_inference_steps": 2, "height": 16, "width": 16, "max_sequence_length": 16}
    with idc.trace(pipe, image_size=16, max_sequence_length=16) as tc:
        latent = pipe("a red dog", output_type="latent", **run).images
    torch.testing.assert_close(tc.latent, latent.float())  # the returned latent itself
    pixel = sd_pipeline(pixel=True)  # no VAE: diffusers' __call__ cannot decode; latents can
    with idc.trace(pixel) as tc:
        image = pixel("a red dog", num_inference_steps=2, output_type="latent").images
    assert tc.latent.shape == (1, 3, 16, 16)
    torch.testing.assert_close(tc.latent, image.float())
    res = tc.explain(["dog"], progress=False, announce=False, sampling=Sampling(draws=4))
    assert torch.isfinite(res.estimate.value).all()


@pytest.mark.parametrize("family", ["sd", "sd3", "flux"])
def test_trace_follows_the_generated_size_and_settings(family):
    pipe = FAMILIES[family]()
    t5 = {"max_sequence_length": 8} if family in ("sd3", "flux") else {}
    with idc.trace(pipe) as tc:  # no image_size: read from the generation
        pipe("a red dog", height=32, width=32, num_inference_steps=2, output_type="latent", **t5)
    assert tc.model.image_size == 32 and tc.latent.shape == (1, 4, 16, 16)
    assert tc.heat_map("dog").shape == (16, 16)
    if t5:
        assert tc.model.network.text.max_sequence_length == 8
    res = tc.explain(["dog"], progress=False, announce=False, sampling=Sampling(draws=4))
    assert res.estimate.settings["image_size"] == 32


def test_trace_refuses_what_it_cannot_follow_and_restores_the_pipeline():
    pipe = sd_pipeline()
    run = {"num_inference_steps": 2, "output_type": "latent"}
    with pytest.raises(ValueError, match="one generation"), idc.trace(pipe):
        pipe("a red dog", **run)
        pipe("a cat", **run)
    with pytest.raises(ValueError, match="one square image"), idc.trace(pipe):
        pipe("a red dog", num_images_per_prompt=2, **run)
    with idc.trace(pipe) as outer:
        with idc.trace(pipe) as inner:
            pipe("a red dog", **run)
        assert "encode_prompt" in vars(pipe)  # the outer trace's wrapper is back
    assert inner.prompt == "a red dog" and outer.prompt == "a red dog"
    assert not {"encode_prompt", "prepare_latents"} & set(vars(pipe))
    assert "step" not in vars(pipe.scheduler)
    with idc.trace(pipe) as tc, pytest.raises(ValueError, match="after its `with` block"):
        tc.heat_map("dog")


def test_generate_reruns_into_its_folder_and_failures_leave_no_folder(tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "gen"
    args = ["generate", "--model", "bundled", "--prompt", "a red circle", "--steps", "2"]
    for _ in range(2):
        assert main([*args, "--guidance-scale", "0", "--out", str(out)]) == 0
    doc = json.loads((out / "generate.json").read_text())
    assert doc["steps"] == 2 and doc["guidance_scale"] == 0
    assert Image.open(out / "image_000.png").size == (16, 16)
    image = tmp_path / "x.png"
    Image.new("RGB", (16, 16)).save(image)
    failing = ["heatmap", "--model", "bundled", "--image", str(image), "--prompt", "a dog"]
    assert main([*failing, "--words", "cat", "--out", str(tmp_path / "new" / "h")]) == 2
    assert not (tmp_path / "new").exists()
    assert "not in the prompt" in capsys.readouterr().err
