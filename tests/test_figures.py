"""Figures, the one number format, the log-SNR profile and the notebook API of Explanation."""

import io
import math
import xml.etree.ElementTree as ElementTree

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from infodecomp.sampling import Sampling

matplotlib.use("Agg")

import infodecomp as idc  # noqa: E402
from infodecomp.explanation import Explanation  # noqa: E402
from infodecomp.models import example_mixture  # noqa: E402
from infodecomp.report import figures  # noqa: E402
from infodecomp.results import Estimate, format_entry  # noqa: E402
from infodecomp.world.model import WorldModel  # noqa: E402
from infodecomp.world.scenes import sample  # noqa: E402

CAPTION = "a red circle left of a blue square"


@pytest.fixture(scope="module")
def world_result():
    """A real explanation: the exact world model (no attention), few draws."""
    data = sample(1, seed=4, split="test")
    res = idc.explain(
        WorldModel(),
        data.images[0].float(),
        data.captions[0],
        progress=False,
        sampling=Sampling(draws=64),
    )
    return res


def latent_result(words=("red", "dog"), image_size=32, map_size=8, seed=0):
    """An explanation shaped like a latent model's: maps at 1/4 of the image's side, attention
    and a traced generation's attention, one word flagged unreliable."""
    g = torch.Generator().manual_seed(seed)
    n = 1 + len(words)
    maps = torch.rand(1, n, map_size, map_size, generator=g, dtype=torch.float64) * 0.1
    maps[0, 1] *= 10  # one word carries far more than the others
    value = maps.sum((-1, -2))
    stderr = value * 0.1
    ci = torch.stack([value * 0.8, value * 1.3], -1)
    reliable = torch.ones(1, n, dtype=torch.bool)
    reliable[0, -1] = False
    est = Estimate(
        "conditional_mutual_info",
        value,
        stderr,
        1234,
        7,
        {"contexts": [None] * n},
        map=maps,
        map_stderr=maps * 0.05,
        ci95=ci,
        reliable=reliable,
        diagnostics={
            "profile": torch.rand(1, n, 24, generator=g),
            "profile_stderr": torch.rand(1, n, 24, generator=g) * 0.1,
        },
    )
    est.settings["profile_edges"] = np.linspace(-5, 5, 25).tolist()
    attention = {w: torch.rand(map_size, map_size, generator=g) + 2 for w in words}
    generation = {w: torch.rand(map_size, map_size, generator=g) for w in words}
    return Explanation(
        "a red dog",
        list(words),
        est,
        torch.rand(3, image_size, image_size, generator=g) * 2 - 1,
        attention,
        "tiny/latent",
        generation_attention=generation,
        image_note="centre-cropped 48x32 to 32x32",
    )


def texts_inside(fig):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    out = []
    drawn = list(fig.texts)
    for ax in fig.axes:
        drawn += [ax.title, *ax.texts]
        if ax.axison:  # (tick labels of an axis turned off are never drawn)
            drawn += [*ax.get_xticklabels(), *ax.get_yticklabels()]
            drawn += [ax.xaxis.label, ax.yaxis.label, ax.yaxis.offsetText]
    for text in drawn:
        if not text.get_visible() or not text.get_text().strip():
            continue
        extent = text.get_window_extent(renderer)
        inside = (
            extent.x0 >= box.x0 - 1
            and extent.x1 <= box.x1 + 1
            and extent.y0 >= box.y0 - 1
            and extent.y1 <= box.y1 + 1
        )
        out.append((text.get_text(), inside, text.get_fontsize()))
    return out


def colour_bars(fig):
    """Tick labels of each colour bar axes (a narrow axes with a y axis of ticks)."""
    return [
        [t.get_text() for t in ax.get_yticklabels()]
        for ax in fig.axes
        if ax.get_label() == "<colorbar>"
    ]


@pytest.mark.parametrize("kind_of", ["world", "latent"])
def test_word_figure_text_inside_ticks_distinct_and_scale_is_the_words(kind_of, world_result):
    res = world_result if kind_of == "world" else latent_result()
    for word in res.words:
        panels = figures._panels(res, word, "information", "word")
        panels += [
            figures._panels(res, word, k, "word")[1]
            for k in ("attention", "generation")
            if figures.explanation_maps(res, k)
        ]
        fig, axes = figures.word_figure(res.image, panels, f"{word} | rest", "a note")
        for text, inside, size in texts_inside(fig):
            assert inside, f"{text!r} is cut off"
            assert size >= 8, f"{text!r} is {size} pt"
        heat = res.heat_map(word, upsample=False)
        for labels in colour_bars(fig):
            assert len(labels) >= 2 and len(set(labels)) == len(labels), labels
            if heat.max() > 0:
                assert any(float(t) != 0 for t in labels), labels
        # The word's own scale: its maximum is the map's maximum (a map of exact zeros, a word
        # the exact model ignores, keeps a unit scale).
        _, vmax = axes[2].get_images()[0].get_clim()
        assert vmax == pytest.approx(heat.max().item() if heat.max() > 0 else 1.0, rel=1e-6)
        matplotlib.pyplot.close(fig)


def test_shared_scale_is_the_maximum_over_words():
    res = latent_result(words=("red", "dog", "cat"))
    top = max(res.heat_map(w, upsample=False).max().item() for w in res.words)
    for word in res.words:
        fig, ax = res.plot(word, scale="shared", over=False)
        assert ax.get_images()[0].get_clim()[1] == pytest.approx(top, rel=1e-6)
        own = res.plot(word)[1].get_images()[-1].get_clim()[1]
        assert own == pytest.approx(res.heat_map(word, upsample=False).max().item(), rel=1e-6)
    matplotlib.pyplot.close("all")


def test_colour_ticks_are_exact_and_distinct():
    for low, high in [(0, 0.0592), (0, 2.3e-30), (0, 1.0), (0, 1.5e7), (-0.3, 1.2), (0, 0.238)]:
        ticks, labels = figures.colour_ticks(low, high)
        assert len(set(labels)) == len(labels) >= 2
        for t, label in zip(ticks, labels, strict=True):
            assert float(label) == pytest.approx(t, rel=1e-9, abs=1e-12 * (high - low))
            assert low - 1e-9 <= t <= high + 1e-9


@pytest.mark.slow
def test_grid_and_files_in_every_format(tmp_path):
    res = latent_result()
    fig, _ = res.plot_grid()
    for text, inside, size in texts_inside(fig):
        assert inside and size >= 8, text
    matplotlib.pyplot.close(fig)
    files = figures.explanation_figures(res, "word", "png")
    assert set(files) == {
        "prompt_mi.heat_map.png",
        "red.heat_map.png",
        "dog.heat_map.png",
        "grid.png",
    }
    for fmt in figures.FORMATS:
        data = figures.save_figure(res.plot("red")[0], fmt=fmt)
        if fmt == "png":
            picture = Image.open(io.BytesIO(data))
            assert picture.info["dpi"][0] == pytest.approx(300, abs=1)
        elif fmt == "pdf":
            assert data.startswith(b"%PDF") and data.rstrip().endswith(b"%%EOF")
        else:
            root = ElementTree.fromstring(data)
            assert root.tag.endswith("svg")
            assert b"<image" in data  # the map, embedded once, not a path per pixel


def test_numbers_one_format():
    entry = {"value": 1.2934, "ci95": [0.9612, 2.0912], "reliable": True, "truncated": False}
    assert format_entry(entry) == "1.29 [0.96, 2.09]"
    assert format_entry({"value": 0.0263, "ci95": [0.0181, 0.0432]}) == "0.026 [0.018, 0.043]"
    # Negligible against the prompt's MI: 0.
    assert format_entry({"value": 5.3e-31, "ci95": [0, 2.3e-30]}, reference=9.3) == "0 [0, 0]"
    assert format_entry({"value": 15020.4, "ci95": [7200.1, 22800.7]}) == "15000 [7200, 22800]"
    flagged = {"value": 0.4, "ci95": [0.089, 0.526], "reliable": False}
    assert format_entry(flagged, flags="short") == "0.40 [0.09, 0.53] (unreliable)"
    assert "take more" in format_entry(flagged)


def test_orthogonal_intervals_never_below_zero_and_profile_adds_up():
    model = example_mixture()
    x, _ = model.sample(6, seed=1)
    conds = [{"shape": "circle", "colour": "red"}] * 2
    contexts = [None, {"shape": "circle"}]
    est = idc.conditional_mutual_info(
        model, x, conds, contexts, sampling=Sampling(draws=64, seed=0)
    )
    assert (est.ci95[..., 0] >= 0).all()
    edges = np.array(est.settings["profile_edges"])
    profile = est.diagnostics["profile"]
    assert profile.shape == (*est.value.shape, len(edges) - 1)
    total = (profile * torch.from_numpy(np.diff(edges))).sum(-1)
    # The profile covers the sampled range; the value adds the tails beyond it.
    outside = est.diagnostics["outside_range"]
    torch.testing.assert_close(total + outside, est.value, rtol=1e-10, atol=1e-12)
    assert (est.diagnostics["profile_stderr"] >= 0).all()
    standard = idc.conditional_mutual_info(
        model, x, conds, contexts, estimator="standard", sampling=Sampling(draws=64, seed=0)
    )
    assert (standard.ci95[..., 0] < 0).any()  # a pointwise log-ratio may be negative


@pytest.mark.slow
def test_profile_stderr_matches_the_spread_over_rows():
    """Each bin of the profile is a mean of draws: its SE matches its spread over rows."""
    model = example_mixture()
    x, labels = model.sample(1, seed=2)
    est = idc.conditional_mutual_info(
        model,
        x.expand(120, -1),
        labels * 120,
        None,
        keys=list(range(120)),
        sampling=Sampling(draws=48, seed=0, adaptive=False),
    )
    # Averaged over many independent rows, each bin is unbiased for the row's bin integral:
    # rows share x, so the mean profile estimates one curve; its bins' z-scores are moderate.
    profile = est.diagnostics["profile"]
    mean = profile.mean(0)
    se = profile.std(0) / math.sqrt(profile.shape[0])
    one_row_se = est.diagnostics["profile_stderr"].mean(0)
    ratio = (one_row_se / (se * math.sqrt(profile.shape[0])))[mean > 0.01]
    # Each row's own SE of a bin agrees with the spread of that bin over rows (within 35%).
    assert ratio.median().item() == pytest.approx(1.0, abs=0.35)


@pytest.mark.slow
def test_explanation_round_trip_repr_and_numpy(tmp_path, world_result):
    res = world_result
    res.save(tmp_path / "out")
    back = Explanation.load(tmp_path / "out")
    assert back.prompt == res.prompt and back.words == res.words
    assert back.image_note == res.image_note
    for word in [None, *res.words]:
        assert back.entry(word) == res.entry(word)
        torch.testing.assert_close(
            back.heat_map(word, upsample=False), res.heat_map(word, upsample=False)
        )
    torch.testing.assert_close(back.estimate.map_stderr.float(), res.estimate.map_stderr.float())
    for name, t in res.estimate.diagnostics.items():
        torch.testing.assert_close(back.estimate.diagnostics[name], t)
    assert back.estimate.settings == res.estimate.settings
    saved = load_file(str(tmp_path / "out" / "maps.safetensors"))
    for word, array in res.to_numpy().items():
        assert isinstance(array, np.ndarray)
        np.testing.assert_array_equal(array, saved[f"cmi_map/{word}"].numpy())
    for word, array in res.to_numpy("stderr").items():
        np.testing.assert_array_equal(array, saved[f"cmi_map_stderr/{word}"].numpy())
    assert res.to_numpy("attention") == {}
    text = repr(res)
    assert "\n" not in text and len(text) < 400 and "nats" in text
    page = res._repr_html_()
    assert all(w in page for w in res.words) and "data:image/png;base64" in page
    latent = latent_result()
    latent.save(tmp_path / "latent", fmt="svg")
    again = Explanation.load(tmp_path / "latent")
    assert set(again.generation_attention) == set(latent.words)
    torch.testing.assert_close(again.attention["red"], latent.attention["red"])
    assert (tmp_path / "latent" / "red.heat_map.svg").exists()
    with pytest.raises(ValueError, match="cannot read an explanation"):
        Explanation.load(tmp_path / "missing")
    (tmp_path / "out" / "result.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="cannot read an explanation"):
        Explanation.load(tmp_path / "out")


def test_flags_and_crop_note_are_drawn():
    res = latent_result()
    files = figures.explanation_figures(res)
    assert len(files) == 4
    fig, _ = res.plot("dog")  # the unreliable word
    texts = [t.get_text() for t in fig.findobj(matplotlib.text.Text)]
    assert any("unreliable" in t for t in texts)
    value = format_entry(res.entry("dog"), res.entry()["value"], flags="none")
    assert any(
        "dog | rest" in t and value in " ".join(t.split()) for t in texts
    )  # the word and its value
    matplotlib.pyplot.close(fig)
    panels = figures._panels(res, "dog", "information", "word")
    fig, _ = figures.word_figure(res.image, panels, "dog", "input centre-cropped 48x32 to 32x32")
    assert any("centre-cropped" in t.get_text() for t in fig.findobj(matplotlib.text.Text))
    matplotlib.pyplot.close(fig)
    assert "latent pixel (4x4 px)" in figures.map_unit(res, "information")
