"""DAAM's names on a trace: written as DAAM's users write them, on tiny random pipelines."""

import matplotlib
import pytest
import torch
import torch.nn.functional as F
from tiny_pipelines import flux_pipeline, sd_pipeline

import infodecomp as idc
import infodecomp.report.figures
from infodecomp.sampling import Sampling
from infodecomp.tracing import ATTENTION_UNIT

matplotlib.use("Agg")

FAMILIES = {"sd": sd_pipeline, "flux": flux_pipeline}
PROMPT = "a red dog left of a cat"


def upsampled(heat, side):
    return F.interpolate(heat[None, None], size=(side, side), mode="bilinear")[0, 0]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_daam_names_give_the_trace_maps_at_image_resolution(family):
    import matplotlib.pyplot as plt

    pipe = FAMILIES[family]()
    extra = {"max_sequence_length": 16} if family == "flux" else {}
    run = {"height": 16, "width": 16, "num_inference_steps": 2, "output_type": "pt", **extra}
    with idc.trace(pipe, image_size=16, **extra) as tc:
        with pytest.raises(ValueError, match="nothing was generated yet"):
            tc.compute_global_heat_map()
        image = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **run).images[0]
        # As DAAM's users write it: inside the block, right after the pipeline call.
        global_heat_map = tc.compute_global_heat_map()
        word_heat_map = global_heat_map.compute_word_heat_map("dog")
        with pytest.raises(ValueError, match="after its `with` block"):
            tc.explain(["dog"], sampling=Sampling(draws=4))
    assert global_heat_map.prompt == PROMPT and global_heat_map.heat_maps.shape[1:] == (8, 8)
    heat = word_heat_map.heatmap
    assert heat.shape == (16, 16) and word_heat_map.word == "dog" and word_heat_map.value is heat
    torch.testing.assert_close(heat, upsampled(tc.heat_map("dog"), 16))
    phrase = tc.compute_global_heat_map().compute_word_heat_map("red dog").heatmap
    torch.testing.assert_close(phrase, upsampled(tc.heat_map("red dog"), 16))

    pixels = image * 2 - 1  # the pipeline's [0, 1] as our [-1, 1]
    expanded = word_heat_map.expand_as(pixels)
    assert expanded.shape == (16, 16) and expanded.min() == 0 and expanded.max() == 1
    assert set(word_heat_map.expand_as(pixels, threshold=0.5).unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(word_heat_map.expand_as(pixels, absolute=True), heat)

    fig, ax = word_heat_map.plot_overlay(pixels)
    assert len(ax.images) == 2 and fig.axes[-1].get_ylabel() == ATTENTION_UNIT
    assert ax.images[1].get_cmap().name == idc.report.figures.MAP_CMAP
    plt.close(fig)
    fig, axes = plt.subplots(1, 2)
    assert word_heat_map.plot_overlay(pixels, ax=axes[1]) == (fig, axes[1])
    plt.close(fig)


def test_explain_of_a_trace_carries_the_generation_attention():
    pipe = sd_pipeline()
    with idc.trace(pipe, image_size=16) as tc:
        pipe(PROMPT, num_inference_steps=2, output_type="latent")
    res = tc.explain(["Red dog", "cat"], progress=False, announce=False, sampling=Sampling(draws=4))
    assert list(res.generation_attention) == res.words == ["red dog", "cat"]
    for word, heat in res.generation_attention.items():
        assert heat.shape == (8, 8)
        torch.testing.assert_close(heat, tc.heat_map(word))
    # The estimator's attention is another map: of the noisy inputs, not of the generation.
    assert not torch.equal(res.attention["cat"], res.generation_attention["cat"])
