"""Continuous batching in the evaluation runner (issue 18, part 3): items in flight, their
denoiser calls merged into full batches; numbers bit for bit at one packing and to float rounding
across packings; bad items, errors, Ctrl-C and resume as when items ran one by one."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import torch
from conftest import assert_rows_close

from infodecomp.batching import BatchedDenoiser, Scheduler, batched
from infodecomp.cli import main
from infodecomp.estimators import DenoiserOutputError
from infodecomp.evaluate import compositional, localization, read_rows, run
from infodecomp.evaluate.common import load_evaluated
from infodecomp.evaluate.items import BadItemError, CompositionalItem
from infodecomp.evaluate.runner import Task
from infodecomp.evaluate.world_data import compositional_items, localization_items
from infodecomp.sampling import Sampling

SHAPE = (2, 3)  # a tiny model input


class Echo:
    """A denoiser whose output for a row depends on that row alone (so merging changes no bit),
    recording the conditions of every call; it fails on the condition ``fail_on``."""

    def __init__(self, fail_on: str | None = None, error: type[BaseException] = RuntimeError):
        self.calls: list[list[str]] = []
        self.fail_on, self.error = fail_on, error
        self.threads: set[str] = set()

    def __call__(self, x, logsnr, conds):
        self.calls.append(list(conds))
        self.threads.add(threading.current_thread().name)
        if self.fail_on in conds:
            raise self.error(f"the denoiser fails on {self.fail_on}")
        return 2 * x + logsnr.view(-1, 1, 1)

    def scale(self) -> float:  # a method: forwarded, under the model's lock
        return 2.0


def items(n: int, bad: set[int] = frozenset()) -> list[CompositionalItem]:
    return [
        CompositionalItem(f"i{k}", None, ("bad" if k in bad else "a", "b"), 0, source=f"f:{k + 1}")
        for k in range(n)
    ]


def echo_task(model: BatchedDenoiser, batch_size: int, fail_after_first: bool = False) -> Task:
    """Each item asks for a few requests of a few rows (its own sizes, from its id) and checks
    every row it gets back."""

    def measure(item: CompositionalItem) -> dict:
        rng = np.random.default_rng(int(item.id[1:]))
        total = 0.0
        for n_call in range(int(rng.integers(1, 6))):
            rows = int(rng.integers(1, 2 * batch_size))
            x = torch.from_numpy(rng.standard_normal((rows, *SHAPE)))
            a = torch.from_numpy(rng.standard_normal(rows))
            out = model(x, a, [item.id] * rows)
            assert torch.equal(out, 2 * x + a.view(-1, 1, 1)), item.id  # its own rows, in order
            total += float(out.sum())
            if n_call == 0 and item.captions[0] == "bad":
                raise BadItemError(f"{item.source}: unreadable image")
        return {"value": total, "scale": model.scale()}

    return Task("compositional", measure, lambda item: 1, {"model": model}, batch_size)


SETTINGS = {"task": "compositional", "sampling": {"draws": 4, "seed": 0}, "model_label": "m"}


@pytest.fixture
def plain_summary(monkeypatch):
    monkeypatch.setattr("infodecomp.evaluate.compositional.summarize", lambda rows, s: {})


def test_merged_calls_are_full_and_the_same_every_time(tmp_path, plain_summary):
    """Rows of many items share calls of exactly the batch size (all but the last few), each
    item gets its own rows back, and what each call holds is the same in two runs."""
    runs = []
    for name in ("a", "b"):
        echo = Echo()
        run(
            echo_task(batched(echo), 16),
            items(24),
            tmp_path / name,
            SETTINGS,
            progress=False,
            log=print,
            in_flight=8,
        )
        runs.append(echo.calls)
    assert runs[0] == runs[1]
    sizes = [len(call) for call in runs[0]]
    assert max(sizes) == 16 and sum(s < 16 for s in sizes) <= 4
    stats = json.loads((tmp_path / "a" / "batching.json").read_text())
    assert stats["in_flight"] == 8 and stats["calls"] == len(sizes)
    assert stats["rows"] == sum(sizes) and stats["fill"] > 0.9
    assert {len(set(call)) for call in runs[0]} - {1}  # calls do hold several items' rows
    assert read_rows(tmp_path / "a") == read_rows(tmp_path / "b")
    one = Echo()
    run(
        echo_task(batched(one), 16),
        items(24),
        tmp_path / "one",
        SETTINGS,
        progress=False,
        log=print,
        in_flight=1,
    )
    assert {len(set(call)) for call in one.calls} == {1}  # one item at a time
    assert one.threads == {threading.current_thread().name}  # in the runner's thread
    assert read_rows(tmp_path / "one") == read_rows(tmp_path / "a")  # rows alone: same bits


def test_a_bad_item_is_skipped_or_stops_the_run_as_one_by_one(tmp_path, plain_summary):
    kwargs = {"progress": False, "log": print, "in_flight": 4}
    summary = run(
        echo_task(batched(Echo()), 8),
        items(9, bad={3}),
        tmp_path / "skip",
        SETTINGS,
        skip_bad=True,
        **kwargs,
    )
    assert summary["n_items"] == 8 and summary["n_skipped"] == 1
    assert read_rows(tmp_path / "skip")[3]["skipped"] == "f:4: unreadable image"
    with pytest.raises(BadItemError, match="f:4: unreadable image"):
        run(echo_task(batched(Echo()), 8), items(9, bad={3}), tmp_path / "stop", SETTINGS, **kwargs)
    # The items before the bad one are written, none after it (as when items ran one by one).
    assert [r["id"] for r in read_rows(tmp_path / "stop")] == ["i0", "i1", "i2"]
    # Two bad items failing in the same round: the first is the error, nothing after it written.
    with pytest.raises(BadItemError, match="f:2: unreadable image"):
        run(
            echo_task(batched(Echo()), 8),
            items(9, bad={1, 3}),
            tmp_path / "two",
            SETTINGS,
            **kwargs,
        )
    assert [r["id"] for r in read_rows(tmp_path / "two")] == ["i0"]


def within(seconds: float, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``'s result or exception, failing if it takes over ``seconds``."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as err:
            box["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    return box


@pytest.mark.parametrize("error", [RuntimeError, DenoiserOutputError, ValueError])
def test_an_error_in_one_items_call_is_that_items_alone(tmp_path, plain_summary, error):
    """A merged call that fails is sent again item by item: the error is the failing item's
    (raised at once, in one line, no other item hangs), and --skip-bad skips that item only."""
    kwargs = {"progress": False, "log": print, "in_flight": 4}
    task = echo_task(batched(Echo(fail_on="i5", error=error)), 8)
    box = within(30, run, task, items(10), tmp_path / "stop", SETTINGS, **kwargs)
    err = box["error"]
    expected = BadItemError if error is ValueError else error
    assert isinstance(err, expected) and "the denoiser fails on i5" in str(err)
    assert len(str(err).splitlines()) == 1
    assert [r["id"] for r in read_rows(tmp_path / "stop")] == [f"i{k}" for k in range(5)]
    if error is ValueError:
        task = echo_task(batched(Echo(fail_on="i5", error=error)), 8)
        box = within(30, run, task, items(10), tmp_path / "skip", SETTINGS, skip_bad=True, **kwargs)
        rows = read_rows(tmp_path / "skip")
        assert [r["id"] for r in rows if "skipped" in r] == ["i5"] and len(rows) == 10


def test_ctrl_c_stops_every_item_and_leaves_whole_rows(tmp_path, plain_summary):
    """Ctrl-C reaches the runner's thread, here inside a merged call half-way through the run:
    it is raised at once, the items' threads end, rows.jsonl holds whole rows only, and a rerun
    resumes."""
    kwargs = {"progress": False, "log": print, "in_flight": 4}
    whole = Echo()
    run(echo_task(batched(whole), 8), items(12), tmp_path / "whole", SETTINGS, **kwargs)

    class Interrupting(Echo):
        def __call__(self, x, logsnr, conds):
            if len(self.calls) == len(whole.calls) // 2:
                raise KeyboardInterrupt
            return super().__call__(x, logsnr, conds)

    before = set(threading.enumerate())
    task = echo_task(batched(Interrupting()), 8)
    box = within(30, run, task, items(12), tmp_path / "out", SETTINGS, **kwargs)
    assert isinstance(box["error"], KeyboardInterrupt)
    deadline = time.monotonic() + 10
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not set(threading.enumerate()) - before  # no item left running
    text = (tmp_path / "out" / "rows.jsonl").read_text()
    assert 0 < text.count("\n") < 12 and text.endswith("\n")
    run(echo_task(batched(Echo()), 8), items(12), tmp_path / "out", SETTINGS, **kwargs)
    assert read_rows(tmp_path / "out") == read_rows(tmp_path / "whole")


def test_the_scheduler_refuses_a_bad_count_and_runs_alone_without_denoisers():
    with pytest.raises(ValueError, match="in_flight"):
        Scheduler({}, 8, 0)
    assert Scheduler({}, 8, 4).in_flight == 1  # nothing to merge: one at a time
    proxy = batched(Echo())
    assert batched(proxy) is proxy and proxy.scale() == 2.0 and not hasattr(proxy, "missing")


# --- the world's evaluations ---------------------------------------------------------------


@pytest.fixture(scope="module")
def exact():
    return load_evaluated("exact", device="cpu")


def compositional_run(
    out, model, reference=None, n=6, in_flight=4, ranking="fixed", draws=64, batch_size=64
):
    sampling = Sampling(draws=draws, batch_size=batch_size).resolve(model.denoiser)
    settings = {
        "task": "compositional",
        "data": "world",
        "sampling": sampling.describe(),
        "estimator": "standard",
        "ranking": ranking,
        "model_label": model.label,
        "limit": n,
    }
    task = compositional.make_task(model, sampling, settings, reference)
    items_ = compositional_items("test", n)
    run(task, items_, out, settings, progress=False, log=lambda m: None, in_flight=in_flight)
    return read_rows(out), json.loads((out / "batching.json").read_text())


def test_exact_model_rows_agree_across_packings_and_repeat_bit_for_bit(tmp_path, exact):
    one, _ = compositional_run(tmp_path / "one", exact, in_flight=1)
    four, stats = compositional_run(tmp_path / "four", exact, in_flight=4)
    again, _ = compositional_run(tmp_path / "again", exact, in_flight=4)
    assert_rows_close(four, one)
    assert (tmp_path / "four" / "rows.jsonl").read_bytes() == (
        tmp_path / "again" / "rows.jsonl"
    ).read_bytes()
    assert stats["fill"] > 0.8 and stats["models"]["model"]["calls"] == stats["calls"]


def test_sixteen_items_in_flight_fill_the_calls(tmp_path, exact):
    _, stats = compositional_run(tmp_path / "out", exact, n=16, in_flight=16, batch_size=256)
    assert stats["fill"] >= 0.9, stats
    _, alone = compositional_run(tmp_path / "alone", exact, n=16, in_flight=1, batch_size=256)
    assert alone["fill"] < 0.6 and alone["rows"] == stats["rows"]


def test_a_resumed_or_extended_run_gives_the_rows_of_one_run(tmp_path, exact):
    compositional_run(tmp_path / "grown", exact, n=3)
    grown, _ = compositional_run(tmp_path / "grown", exact, n=8)
    once, _ = compositional_run(tmp_path / "once", exact, n=8)
    assert_rows_close(grown, once)


@pytest.fixture(scope="module")
def bundled():
    return load_evaluated("bundled", device="cpu")


@pytest.mark.slow
def test_sequential_ranking_in_flight_on_the_bundled_model(tmp_path, bundled, exact):
    """The bundled model's sequential rankings stop at different stages: rows of items at
    different stages share calls, and agree with one at a time."""
    args = {"reference": exact, "n": 8, "ranking": "sequential", "draws": 64}
    one, alone = compositional_run(tmp_path / "one", bundled, in_flight=1, **args)
    four, stats = compositional_run(tmp_path / "four", bundled, in_flight=4, **args)
    again, _ = compositional_run(tmp_path / "again", bundled, in_flight=4, **args)
    assert_rows_close(four, one, rtol=1e-4, atol=1e-5)
    assert four == again
    draws = {r["scores"]["model"]["sequential"]["draws"] for r in four}
    assert len(draws) > 1  # items did stop at different stages
    assert stats["fill"] > alone["fill"] + 0.2 and stats["models"].keys() == {"model", "reference"}


@pytest.mark.slow
def test_localization_with_attention_in_flight(tmp_path, bundled, exact):
    """The bundled model's attention maps are recorded while other items are in flight: their
    calls are made alone (the recorder would see other rows), nothing waits forever, and the
    rows agree with one at a time."""
    sampling = Sampling(draws=16, batch_size=64).resolve(bundled.denoiser)
    settings = {
        "task": "localization",
        "data": "world",
        "sampling": sampling.describe(),
        "ddim_steps": 10,
        "model_label": bundled.label,
    }
    rows = []
    for k in (1, 3):
        task = localization.make_task(bundled, sampling, settings, exact)
        out = tmp_path / f"in_flight_{k}"
        box = within(
            300,
            run,
            task,
            localization_items("test", 4),
            out,
            settings,
            progress=False,
            log=lambda m: None,
            in_flight=k,
        )
        assert "error" not in box, box
        rows.append(read_rows(out))
    assert_rows_close(rows[1], rows[0], rtol=1e-4, atol=1e-5)


def test_in_flight_is_not_a_setting_of_the_run(tmp_path, capsys):
    argv = ["eval", "compositional", "--model", "exact", "--samples", "16", "--out", str(tmp_path)]
    assert main([*argv, "--limit", "2", "--in-flight", "2"]) == 0
    assert main([*argv, "--limit", "4", "--in-flight", "3"]) == 0  # resumed with another
    err = capsys.readouterr().err
    assert "2 already done; 2 to measure" in err and "mean fill" in err
    assert json.loads((tmp_path / "batching.json").read_text())["in_flight"] == 3
    assert "in_flight" not in json.loads((tmp_path / "settings.json").read_text())
    with pytest.raises(SystemExit):
        main([*argv, "--in-flight", "0"])
