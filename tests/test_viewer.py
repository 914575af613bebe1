"""report.html, the offline viewer of one explanation: self-contained, escaped, exact maps, and
(where a browser is installed) usable: pick a word, slider, scale toggle, hover read-out."""

from __future__ import annotations

import base64
import json
import re
import shutil

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from infodecomp.explanation import Explanation
from infodecomp.report.viewer import viewer_html
from infodecomp.results import Estimate, _format_values

HOSTILE = 'a "red" <b>circle</b> </script><script>alert(1)</script> & $5 — café'
WORDS = ["red", "circle", "café"]


def fake_explanation(
    prompt: str = HOSTILE, words: list[str] = WORDS, size: int = 48, latent: int = 12
) -> Explanation:
    """An explanation with known random maps (``latent`` x ``latent`` over a ``size`` px image),
    profiles and flags, made without a model."""
    g = torch.Generator().manual_seed(0)
    n = 1 + len(words)
    maps = torch.rand(1, n, latent, latent, generator=g) ** 3 * 0.05
    value = maps.double().flatten(2).sum(-1)
    stderr = 0.2 * value + 0.01
    edges = np.linspace(-10.0, 12.0, 25)
    profile = torch.rand(1, n, 24, generator=g, dtype=torch.float64)
    profile *= value[..., None] / (profile * torch.from_numpy(np.diff(edges))).sum(-1, True)
    estimate = Estimate(
        quantity="conditional_mutual_info",
        value=value,
        stderr=stderr,
        n_evaluations=1234,
        seed=7,
        settings={
            "estimator": "orthogonal",
            "profile_edges": edges.tolist(),
            "contexts": [None, *(prompt.replace(w, "").strip() for w in words)],
        },
        map=maps,
        map_stderr=maps * 0.3 + 1e-4,
        reliable=torch.tensor([[True, False, *[True] * (n - 2)]]),
        truncated=torch.tensor([[False, False, True, *[False] * (n - 3)]]),
        diagnostics={
            "profile": profile,
            "profile_stderr": profile * 0.2,
            "outside_range": value * 0.01,
            "outside_range_stderr": value * 0.002,
        },
    )
    attention = {w: torch.rand(latent, latent, generator=g) for w in words}
    daam = {w: torch.rand(latent, latent, generator=g) * 3 for w in words}
    image = torch.rand(3, size, size, generator=g) * 2 - 1
    return Explanation(
        prompt=prompt,
        words=words,
        estimate=estimate,
        image=image,
        attention=attention,
        model_name="fake/model",
        generation_attention=daam,
        image_note="centre-cropped 64x48 to 48x48",
    )


def page_data(page: str) -> dict:
    found = re.search(r'<script type="application/json" id=data>(.*?)</script>', page, re.S)
    assert found is not None
    return json.loads(found.group(1))


def test_report_is_one_file_with_no_url_to_fetch(tmp_path):
    page = fake_explanation().save(tmp_path).read_text(encoding="utf-8")
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", page, re.I)
    assert not re.search(r"<(link|iframe|object|embed)\b|\bsrc=(?![\"']?data:)", page, re.I)
    for shown in ("centre-cropped 64x48 to 48x48", "fake/model", "1,234", "seed 7"):
        assert shown in page
    assert "unreliable: rests on a few draws" in page and "truncated:" in page


def test_hostile_prompt_is_escaped():
    page = viewer_html(fake_explanation())
    assert page.count("<script") == 2 and page.count("</script>") == 2  # data and viewer only
    assert "<b>circle" not in page and "alert(1)</script>" not in page
    assert "&lt;b&gt;circle&lt;/b&gt;" in page  # the title and heading, as text
    assert page_data(page)["prompt"] == HOSTILE  # the data, unchanged once parsed


def test_embedded_maps_are_the_saved_float32_values(tmp_path):
    res = fake_explanation()
    page = res.save(tmp_path).read_text(encoding="utf-8")
    saved = load_file(str(tmp_path / "maps.safetensors"))
    kinds = {k["key"]: k for k in page_data(page)["kinds"]}

    def decoded(b64: str) -> np.ndarray:
        return np.frombuffer(base64.b64decode(b64), "<f4").reshape(12, 12)

    for k, word in enumerate(res.words, start=1):
        for kind, part, key in [
            ("cmi", "maps", "cmi_map"),
            ("cmi", "stderr", "cmi_map_stderr"),
            ("attention", "maps", "attention_map"),
        ]:
            assert np.array_equal(decoded(kinds[kind][part][k]), saved[f"{key}/{word}"])
        assert np.array_equal(decoded(kinds["daam"]["maps"][k]), res.generation_attention[word])
    assert np.array_equal(decoded(kinds["cmi"]["maps"][0]), saved["mi_map"])


def test_report_without_attention_or_profile_still_builds():
    res = fake_explanation(prompt="a dog", words=["dog"])
    res.attention = res.generation_attention = None
    res.estimate.diagnostics = {}
    data = page_data(viewer_html(res))
    assert [k["key"] for k in data["kinds"]] == ["cmi"] and data["profile"] is None


def _browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if browser is None or driver_path is None:
        pytest.skip("no chromium + chromedriver (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(driver_path))


def _page_errors_and_requests(driver) -> tuple[list, list[str]]:
    """The console's errors and warnings, and every URL the page requested, so far."""
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    requested = [
        json.loads(e["message"])["message"]["params"]["request"]["url"]
        for e in driver.get_log("performance")
        if '"Network.requestWillBeSent"' in e["message"]
    ]
    return errors, requested


def _close_enough(text: str, exact: float) -> bool:
    """``text`` (a number as the viewer prints it) is ``exact`` up to its last printed digit."""
    decimals = len(text.split(".")[1]) if "." in text else 0
    return abs(float(text) - exact) <= 0.5 * 10**-decimals * (1 + 1e-9)


def test_viewer_in_a_browser(tmp_path):
    """Pick a word, move the slider, toggle the scale, hover a pixel: the read-out is the value
    of maps.safetensors there; no console error, no network request."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    res = fake_explanation()
    report = res.save(tmp_path)
    saved = load_file(str(tmp_path / "maps.safetensors"))
    driver = _browser()
    try:
        driver.get(report.as_uri())
        find = driver.find_element

        find(By.ID, "word-1").click()  # "red"
        assert find(By.ID, "selected-label").text == "red"
        assert "unreliable" in find(By.ID, "selected-value").text
        find(By.ID, "word-list").send_keys(Keys.ARROW_DOWN)  # keyboard: on to "circle"
        assert find(By.ID, "word-2").get_attribute("aria-selected") == "true"
        find(By.ID, "word-list").send_keys(Keys.ARROW_UP)
        assert find(By.ID, "selected-label").text == "red"

        slider = find(By.ID, "opacity")
        slider.send_keys(*[Keys.ARROW_LEFT] * 10)
        assert slider.get_attribute("value") == "50" and find(By.ID, "opacity-out").text == "50%"

        caption = find(By.CSS_SELECTOR, "[data-kind=cmi] .colorbar > div:last-child")
        assert "per-word scale" in caption.text
        own = _format_values([float(saved["cmi_map/red"].max())], None, None)[0]
        assert f"–{own} nats per latent pixel" in caption.text
        find(By.CSS_SELECTOR, "input[name=scale][value=shared]").click()
        shared = [v for k, v in saved.items() if k.startswith("cmi_map/")]  # the words
        every = max(float(v.max()) for v in shared)
        assert f"–{_format_values([every], None, None)[0]} nats" in caption.text
        assert "shared scale" in caption.text

        canvas = find(By.CSS_SELECTOR, "[data-kind=cmi] canvas")
        width, height = canvas.size["width"], canvas.size["height"]
        row, col = 4, 9
        dx = round((col + 0.5) / 12 * width - width / 2)
        dy = round((row + 0.5) / 12 * height - height / 2)
        ActionChains(driver).move_to_element_with_offset(canvas, dx, dy).perform()
        assert f"row {row}, column {col} of 12×12" in find(By.CSS_SELECTOR, ".ro-where").text
        assert "image pixels rows 16–19, columns 36–39" in find(By.CSS_SELECTOR, ".ro-where").text
        value = find(By.CSS_SELECTOR, ".ro-cmi .value").text
        se = find(By.CSS_SELECTOR, ".ro-cmi .se").text
        assert _close_enough(value, float(saved["cmi_map/red"][row, col])), value
        assert _close_enough(se, float(saved["cmi_map_stderr/red"][row, col])), se
        share = 100 * saved["cmi_map/red"][row, col] / saved["cmi_map/red"].astype(float).sum()
        shown = find(By.CSS_SELECTOR, ".ro-cmi .share").text
        assert shown.startswith(f"{_format_values([float(share)], None, None)[0]}%")
        attention = find(By.CSS_SELECTOR, ".ro-attention .value").text
        assert _close_enough(attention, float(saved["attention_map/red"][row, col]))

        # The page's formatter is Python's, digit for digit.
        cases = [
            ([1.2345, 0.9, 2.1], 0.6, None),
            ([0.000123, 0.0001, 0.0002], 0.00005, 5.0),
            ([3.14159e-8, 0.0], None, None),
            ([123456.0, 120000.0], 3000.0, None),
            ([0.5], None, 2.0),
        ]
        for values, half, reference in cases:
            js = driver.execute_script(
                "return window.infodecompViewer.formatValues(...arguments)",
                values,
                half,
                reference,
            )
            assert js == _format_values(values, half, reference), (values, js)

        errors, requested = _page_errors_and_requests(driver)
        assert errors == []
        assert all(u.startswith(("file:", "data:")) for u in requested), requested
        assert len([u for u in requested if u.startswith("file:")]) == 1  # the page alone
        loaded = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        assert all(u.startswith("data:") for u in loaded), loaded
    finally:
        driver.quit()
