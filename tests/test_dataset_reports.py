"""Dataset reports: every eval run and ``heatmap --prompts`` writes a self-contained
``report.html`` listing every item worst first, rebuilt on resume and by ``eval summarize``."""

import html
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_pipelines import sd_pipeline

from infodecomp.cli import main
from infodecomp.evaluate import evaluate, read_rows, run
from infodecomp.evaluate.items import CompositionalItem
from infodecomp.evaluate.metrics import PAPER_THRESHOLDS
from infodecomp.evaluate.runner import Task
from infodecomp.report import datasets
from infodecomp.report.datasets import item_path, read_item_pictures, write_item_pictures
from infodecomp.sampling import Sampling

FAST = ["--model", "exact", "--samples", "16", "--ddim-steps", "10"]


class Table(HTMLParser):
    """The item browser's body: per row, each cell's sort key (``data-v``) and text."""

    def __init__(self):
        super().__init__()
        self.rows, self.inside = [], False

    def handle_starttag(self, tag, attrs):
        if tag == "tbody":
            self.inside = True
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag == "td":
            self.rows[-1].append([dict(attrs).get("data-v"), ""])

    def handle_endtag(self, tag):
        if tag == "tbody":
            self.inside = False

    def handle_data(self, data):
        if self.inside and self.rows and self.rows[-1]:
            self.rows[-1][-1][1] += data


def browser(out):
    text = (out / "report.html").read_text()
    assert not re.search(r"https?://", text)  # self-contained: nothing from the network
    assert "<script src" not in text and "<link" not in text
    table = Table()
    table.feed(text)
    return text, table.rows


def test_localization_report_worst_first_updated_on_resume_and_by_summarize(tmp_path, capsys):
    out = tmp_path / "loc"
    assert main(["eval", "localization", *FAST, "--limit", "2", "--out", str(out)]) == 0
    assert f"report: {out / 'report.html'}" in capsys.readouterr().out
    text, rows = browser(out)
    measured = read_rows(out)
    words = [(r["id"], w) for r in measured for w in r["words"]]
    assert len(rows) == len(words) and all(f">{item}<" in text for item, _ in words)
    # Sorted by the CMI map's IoU at the paper's threshold, worst first.
    summary = json.loads((out / "summary.json").read_text())
    cmi = "information (CMI)"
    at = np.argmin(np.abs(PAPER_THRESHOLDS - summary["methods"][cmi]["paper"]["threshold"]))
    ious = {(r["id"], w): s[cmi]["iou"][at] for r in measured for w, s in r["words"].items()}
    shown = [float(row[3][0]) for row in rows]
    assert shown == sorted(shown) and sorted(shown) == pytest.approx(sorted(ious.values()))
    # Each word: its image, mask outline and map, as PNG data: URIs.
    assert text.count("data:image/png;base64,") == 2 * len(words)
    assert text.count("<path id=") == len(words)
    pictures = read_item_pictures(out, measured[0]["id"])
    word = next(iter(measured[0]["words"]))
    assert pictures["image"].shape == (16, 16, 3) and pictures["image"].dtype == np.uint8
    assert pictures[f"mask/{word}"].shape == pictures[f"map/{word}/{cmi}"].shape == (16, 16)

    # Resumed with a larger limit: the report lists the new item too.
    assert main(["eval", "localization", *FAST, "--limit", "3", "--out", str(out)]) == 0
    text, rows = browser(out)
    third = read_rows(out)[2]
    assert f">{third['id']}<" in text and len(rows) == len(words) + len(third["words"])

    # eval summarize rebuilds it as it was; a run from before item pictures gets numbers alone.
    before = text
    (out / "report.html").unlink()
    assert main(["eval", "summarize", str(out)]) == 0
    assert (out / "report.html").read_text() == before
    for path in (out / "items").iterdir():
        path.unlink()
    assert main(["eval", "summarize", str(out)]) == 0
    text, rows = browser(out)
    assert "data:image/png" not in text and len(rows) == len(words) + len(third["words"])
    assert not list(out.glob(".*tmp"))


def test_compositional_report_margins_and_verdicts(tmp_path):
    out = tmp_path / "comp"
    argv = [
        "eval",
        "compositional",
        "--model",
        "exact",
        "--samples",
        "16",
        "--limit",
        "3",
        "--fixed",
    ]
    assert main([*argv, "--out", str(out)]) == 0
    text, rows = browser(out)
    margins = [float(row[2][0]) for row in rows]
    assert margins == sorted(margins) and len(rows) == 3
    assert [row[0][0] for row in rows] == sorted(
        (r["id"] for r in read_rows(out)),
        key=lambda i: next(
            r["scores"]["model"]["standard"]["margin"]["value"]
            for r in read_rows(out)
            if r["id"] == i
        ),
    )
    assert text.count("right</span>") == 3  # the exact model ranks every item right
    assert "100% [100%, 100%]" in text  # accuracies as percentages
    assert "data:image/png" in text


def test_intervention_report_before_after_and_change(tmp_path):
    out = tmp_path / "int"
    assert main(["eval", "intervention", *FAST, "--limit", "1", "--out", str(out)]) == 0
    text, rows = browser(out)
    row = read_rows(out)[0]
    words = list(row["models"]["model"]["words"])
    assert len(rows) == len(words)
    pictures = read_item_pictures(out, row["id"])
    assert {"image", "with"} | {f"without/{w}" for w in words} <= set(pictures)
    assert all(f"change/{w}" in pictures and f"cmi/{w}" in pictures for w in words)
    # Per word: image, with, without, change map, information map.
    assert text.count("data:image/png;base64,") == 5 * len(words)
    correlations = [float(r[5][0]) for r in rows if r[5][0] is not None]
    assert correlations == sorted(correlations)


def test_interaction_report_groups_pairs_and_maps(tmp_path):
    out = tmp_path / "pairs"
    sampling = Sampling(draws=32)
    kw = {"model": "exact-correlated", "data": "world-correlated", "limit": 4}
    evaluate("interaction", out, **kw, sampling=sampling)
    text, rows = browser(out)
    summary = json.loads((out / "summary.json").read_text())
    measured = read_rows(out)
    # The group table: each group's pairs and images, the means with intervals, the share in %.
    groups = summary["models"]["model"]["groups"]
    assert "<h3>exact correlated-world model</h3>" in text and "redundancy share" in text
    for group, g in groups.items():
        cells = [
            html.escape(group),
            g["n_pairs"],
            g["n_images"],
            datasets._metric(g["interaction"]),
        ]
        assert "</td><td class=n>".join(map(str, cells)) in text
        assert datasets._metric(g["redundancy_share"], percent=True) in text
    # The definitions, the estimator and the pixel atoms' caveat.
    assert "i(x; w1; w2 | rest) = i(x; w1 | rest) + i(x; w2 | rest) - i(x; w1, w2 | rest)" in text
    assert "Estimator: standard" in text and "do not add up to them" in text
    # One unit per (item, pair), most synergistic first: image and interaction map.
    pairs = [(r["id"], p) for r in measured for p in r["pairs"]]
    assert len(rows) == len(pairs) >= 4
    assert all(f"<b>{w1}</b> &amp; <b>{w2}</b>" in text for _, (w1, w2) in pairs)
    values = [float(row[4][0]) for row in rows]
    expected = [e["interaction"]["value"] for r in measured for e in r["models"]["model"]["pairs"]]
    assert values == sorted(values) and values == pytest.approx(sorted(expected))
    assert text.count("data:image/png;base64,") == 2 * len(pairs)
    assert "exact:" not in text  # no reference model
    assert any(s in text for s in ("<i>redundant</i>", "<i>synergistic</i>", "<i>leans "))
    pictures = read_item_pictures(out, measured[0]["id"])
    assert {"image", "interaction/0", "interaction/0/range"} <= set(pictures)
    # Beside a reference: its table and its values under the model's.
    summary["models"]["reference"] = summary["models"]["model"] | {"label": "the reference"}
    for r in measured:
        r["models"]["reference"] = r["models"]["model"]
    text = datasets.report_html(summary, measured, lambda item_id: None)
    assert "<h3>the reference</h3>" in text and text.count("exact:&nbsp;") == 6 * len(pairs)


@pytest.mark.slow
def test_latent_model_reports_prompts_and_interventions(tmp_path):
    """A latent (VAE) model: ``heatmap --prompts`` links each prompt's own report; an
    intervention's regenerations are decoded to pictures."""
    sd_pipeline().save_pretrained(tmp_path / "model")
    pixels = torch.rand(24, 20, 3, generator=torch.Generator().manual_seed(0)) * 255
    Image.fromarray(pixels.byte().numpy()).save(tmp_path / "img.png")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red dog\n")
    out = tmp_path / "out"
    argv = ["heatmap", "--model", str(tmp_path / "model"), "--prompts", str(prompts)]
    argv += ["--image", str(tmp_path / "img.png"), "--samples", "4"]
    assert main([*argv, "--out", str(out)]) == 0
    text, rows = browser(out)
    item = read_rows(out)[0]["id"]
    assert f'href="{item}/report.html"' in text and (out / item / "report.html").exists()
    assert len(rows) == 1 and text.count("data:image/png;base64,") == 2  # thumbnail, top map

    data = tmp_path / "int.jsonl"
    data.write_text(json.dumps({"image": "img.png", "caption": "a red dog", "words": ["dog"]}))
    out = tmp_path / "int"
    argv = ["eval", "intervention", "--model", str(tmp_path / "model"), "--data", str(data)]
    assert main([*argv, "--samples", "4", "--ddim-steps", "2", "--out", str(out)]) == 0
    text, rows = browser(out)
    pictures = read_item_pictures(out, read_rows(out)[0]["id"])
    size = pictures["image"].shape
    assert pictures["with"].shape == pictures["without/dog"].shape == size
    assert pictures["change/dog"].shape == pictures["cmi/dog"].shape == size[:2]
    assert len(rows) == 1 and "no picture" not in text


def test_large_runs_show_the_worst_and_best(monkeypatch):
    monkeypatch.setattr(datasets, "SHOWN", 3)

    def row(k, margin):
        interval = [margin - 1, margin + 1]
        scored = {
            "scores": [margin, 0.0],
            "stderr": [0.5, 0.5],
            "ci95": [interval, [-1, 1]],
            "reliable": [True, True],
            "credit": float(margin > 0),
            "margin": {"value": margin, "stderr": 0.5, "ci95": interval, "verdict": "x"},
        }
        return {
            "id": f"i{k}",
            "index": k,
            "captions": ["a", "b"],
            "true_index": 0,
            "type": None,
            "scores": {"model": {"standard": scored}},
        }

    rows = [row(k, float(k - 5)) for k in range(10)]
    summary = {"task": "compositional", "headline": "model/standard", "columns": {}}
    text = datasets.report_html(summary, rows, lambda item: None)
    table = Table()
    table.feed(text)
    assert [r[0][0] for r in table.rows] == ["i0", "i1", "i2", "i7", "i8", "i9"]
    assert "10 items: the 3 worst and the 3 best are shown" in text
    assert text.count("'v undecided'>undecided<") == 6  # no significant verdict: undecided


def test_item_files_are_distinct_and_written_whole(tmp_path, monkeypatch):
    names = {item_path(tmp_path, i).name for i in ("a/b", "a_b", "A_b", "x" * 300)}
    assert len(names) == 4 and all(len(n) < 90 for n in names)
    write_item_pictures(tmp_path, "a/b", {"image": np.zeros((2, 2, 3), np.uint8)})
    assert read_item_pictures(tmp_path, "a/b")["image"].shape == (2, 2, 3)
    assert read_item_pictures(tmp_path, "missing") is None
    item_path(tmp_path, "bad").write_bytes(b"not a zip")  # damaged: the item has no pictures
    assert read_item_pictures(tmp_path, "bad") is None

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", full)
    with pytest.raises(OSError, match="No space"):
        write_item_pictures(tmp_path, "c", {"image": np.zeros((2, 2, 3), np.uint8)})
    assert sorted(p.name for p in (tmp_path / "items").iterdir()) == sorted(
        item_path(tmp_path, i).name for i in ("a/b", "bad")
    )


def test_a_report_that_cannot_be_drawn_does_not_fail_the_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("infodecomp.evaluate.compositional.summarize", lambda rows, s: {})
    items = [CompositionalItem(f"i{k}", None, ("a", "b"), 0, source=f"f:{k}") for k in range(2)]
    task = Task("compositional", lambda item: {"value": 1.0}, lambda item: 1)
    settings = {"task": "compositional", "sampling": {"draws": 4, "seed": 0}, "limit": None}
    (tmp_path / "report.html").write_text("an older report")
    summary = run(task, items, tmp_path, settings, progress=False, log=print)
    assert summary["n_items"] == 2 and (tmp_path / "summary.json").exists()
    assert not (tmp_path / "report.html").exists()  # no stale report that looks current
    assert "report.html not written (KeyError: 'scores')" in capsys.readouterr().err


@pytest.mark.slow
def test_dataset_report_in_a_browser(tmp_path):
    """A compositional report as a user opens it: sorting by the margin column (click, then
    the keyboard) reorders the rows; no console error, no network request."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from test_viewer import _browser, _page_errors_and_requests

    out = tmp_path / "comp"
    argv = ["eval", "compositional", "--model", "bundled", "--samples", "16", "--limit", "4"]
    assert main([*argv, "--out", str(out)]) == 0
    driver = _browser()
    try:
        driver.get((out / "report.html").as_uri())

        def margins():
            cells = driver.find_elements(By.CSS_SELECTOR, "table.items tbody tr td:nth-child(3)")
            return [float(c.get_attribute("data-v")) for c in cells]

        assert margins() == sorted(margins()) and len(margins()) == 4  # worst first
        button = driver.find_element(By.CSS_SELECTOR, "table.items thead th:nth-child(3) button")
        button.click()
        assert margins() == sorted(margins(), reverse=True)
        button.send_keys(Keys.ENTER)  # the keyboard sorts too
        assert margins() == sorted(margins())
        errors, requested = _page_errors_and_requests(driver)
        assert errors == [] and all(u.startswith(("file:", "data:")) for u in requested)
    finally:
        driver.quit()
