"""Interaction.save: result.json, maps.safetensors, a figure per pair (png, pdf, svg) and the
pair viewer report.html (self-contained; in a browser, where one is installed, no console
error); Interaction.load round-trips values and maps."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
import torch
from test_figures import texts_inside
from test_viewer import _browser, _page_errors_and_requests

import infodecomp as idc
from infodecomp.interactions import ATOMS, LINEAR, Interaction, interaction, quantities
from infodecomp.report import figures
from infodecomp.words import file_name
from infodecomp.world.scenes import sample

PAIRS = [("red", "triangle"), ("triangle", "square")]


@pytest.fixture(scope="module")
def result() -> Interaction:
    s = sample(8, seed=3, split="test")
    model = idc.load_model("exact")
    caption = s.captions[1]
    assert all(w in caption.split() for pair in PAIRS for w in pair), caption
    # The package's function, whatever was imported before (its module is `interactions`).
    assert idc.interaction is interaction
    return idc.interaction(
        model, s.images[1], caption, PAIRS, sampling=idc.Sampling(draws=64), progress=False
    )


@pytest.fixture(scope="module")
def saved(result, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pairs")
    for fmt in ("pdf", "svg", "png"):
        result.save(folder, fmt=fmt)
    return folder


def test_save_writes_every_file(result, saved):
    names = {p.name for p in saved.iterdir()}
    assert {"result.json", "maps.safetensors", "report.html"} <= names
    for w1, w2 in result.pairs:
        stem = f"{file_name(w1)}__{file_name(w2)}.interaction"
        assert {f"{stem}.png", f"{stem}.pdf", f"{stem}.svg"} <= names
        assert (saved / f"{stem}.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        assert (saved / f"{stem}.pdf").read_bytes().startswith(b"%PDF-")
        svg = (saved / f"{stem}.svg").read_text()
        assert "<svg" in svg and svg.rstrip().endswith("</svg>")
    doc = json.loads((saved / "result.json").read_text())
    assert doc["prompt"] == result.prompt and len(doc["pairs"]) == len(PAIRS)


def test_report_holds_the_pairs_atoms_and_note_and_nothing_to_fetch(result, saved):
    page = (saved / "report.html").read_text()
    assert result.prompt in page
    assert "do not sum to the image" in page
    for w1, w2 in result.pairs:
        assert f"{w1} &amp; {w2}" in page
    for atom in ATOMS:
        assert atom in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "http" not in "".join(re.findall(r"""(?:src|href)\s*=\s*["'][^"']*""", page))
    data = json.loads(
        re.search(r'<script type="application/json" id=data>(.*?)</script>', page, re.S).group(1)
    )
    totals = data["pairs"][0]["pixelTotals"]
    assert totals == result.to_dict()["pairs"][0]["pixel_atoms_total"]


def test_load_round_trips_values_and_maps(result, saved):
    back = Interaction.load(saved)
    assert back.prompt == result.prompt and back.pairs == result.pairs
    for p in range(len(PAIRS)):
        for name in [*LINEAR, *ATOMS]:
            a, b = back.entry(p, name), result.entry(p, name)
            assert a["value"] == pytest.approx(b["value"], rel=1e-12, abs=1e-15)
            assert a["ci95"] == pytest.approx(b["ci95"], rel=1e-12, abs=1e-15)
            torch.testing.assert_close(back.heat_map(p, name), result.heat_map(p, name))
    torch.testing.assert_close(back.image, result.image.float())


def test_a_pair_asked_the_other_way_round_swaps_the_words_roles(result):
    """("triangle", "red") of a result that measured ("red", "triangle"): each quantity is the
    one of the swapped definitions, value, interval and map."""
    w1, w2 = result.pairs[0]
    direct = {name: result.entry(0, name) for name in [*LINEAR, *ATOMS]}
    swapped = {name: result.entry((w2, w1), name) for name in [*LINEAR, *ATOMS]}
    exact = quantities(
        direct["second"]["value"], direct["first"]["value"], direct["joint"]["value"]
    )
    for name in [*LINEAR, *ATOMS]:
        assert swapped[name]["value"] == pytest.approx(exact[name], abs=1e-9), name
        low, high = swapped[name]["ci95"]
        assert low <= swapped[name]["value"] <= high, name
    assert (
        swapped["first"] == direct["second"] and swapped["unique_second"] == direct["unique_first"]
    )
    assert swapped["first_given_second"] == direct["second_given_first"]
    for name in ("joint", "interaction", "redundancy", "synergy"):
        assert swapped[name] == direct[name]
    assert swapped["difference"]["ci95"] == [
        -direct["difference"]["ci95"][1],
        -direct["difference"]["ci95"][0],
    ]
    assert swapped["difference"]["stderr"] == direct["difference"]["stderr"]
    torch.testing.assert_close(
        result.heat_map((w2, w1), "difference"), -result.heat_map(0, "difference")
    )
    torch.testing.assert_close(result.heat_map((w2, w1), "second"), result.heat_map(0, "first"))
    assert direct["difference"]["value"] != 0  # the sign is tested
    with pytest.raises(ValueError, match="was not measured"):
        result.entry(("red", "square"))


def test_pair_figure_text_inside_and_readable(result):
    for p in range(len(PAIRS)):
        fig, axes = figures.plot_interaction(result, p)
        for text, inside, size in texts_inside(fig):
            assert inside, f"{text!r} is cut off"
            assert size >= 8, f"{text!r} is {size} pt"
        # The interaction's scale is symmetric about 0, in the diverging colour map.
        image = axes["interaction"].images[-1]
        low, high = image.get_clim()
        assert low == -high and image.get_cmap().name == figures.DIVERGING_CMAP
        words = {t.get_text() for ax in fig.axes for t in ax.texts}
        assert {"redundant", "synergistic"} <= words
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_pair_chart_numbers_of_long_negative_intervals_stay_inside(result):
    """Long negative values and intervals (many digits, flagged): the chart's column of numbers
    grows to hold them, inside the figure; its axis has plain tick numbers, no offset."""
    import matplotlib.pyplot as plt

    estimates = {}
    for name, est in result.estimates.items():
        ends = (-987654.0, 5000.0) if name in ("synergy", "joint") else (-12346.9, -12344.1)
        estimates[name] = replace(
            est,
            value=torch.full_like(est.value, -12345.678),
            ci95=torch.tensor(ends, dtype=est.ci95.dtype).expand_as(est.ci95).clone(),
            reliable=torch.zeros_like(est.reliable),
        )
    fig, axes = figures.plot_interaction(replace(result, estimates=estimates), 0)
    numbers = [t.get_text() for t in axes["chart"].texts]
    assert "-12345.7 [-12346.9, -12344.1]*" in numbers
    for text, inside, size in texts_inside(fig):
        assert inside, f"{text!r} is cut off"
        assert size >= 8, f"{text!r} is {size} pt"
    assert not axes["chart"].xaxis.get_offset_text().get_text()
    plt.close(fig)


def test_interaction_sign_words():
    sign = figures.interaction_sign
    assert sign({"value": 0.4, "ci95": [0.1, 0.8]}) == "redundant"
    assert sign({"value": -0.4, "ci95": [-0.8, -0.1]}) == "synergistic"
    assert sign({"value": -0.1, "ci95": [-0.5, 0.3]}).startswith("leans synergistic")


def test_pair_viewer_in_a_browser(saved):
    """Select the second pair, hover the interaction map: the read-out shows a value in nats
    per pixel with its SE; no console error, no network request."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver = _browser()
    try:
        driver.get((saved / "report.html").as_uri())
        driver.find_element(By.ID, "pair-1").click()
        assert "triangle & square" in driver.find_element(By.ID, "selected-label").text
        canvas = driver.find_element(By.CSS_SELECTOR, "figure[data-quantity=interaction] canvas")
        ActionChains(driver).move_to_element(canvas).perform()
        read = driver.find_element(By.CSS_SELECTOR, "#readout .ro-interaction").text
        assert "nats per pixel" in read and "SE" in read
        assert len(driver.find_elements(By.CSS_SELECTOR, "#atom-rows tr")) == 4
        errors, requested = _page_errors_and_requests(driver)
        assert not errors, errors
        assert all(u.startswith(("file:", "data:")) for u in requested), requested
    finally:
        driver.quit()
