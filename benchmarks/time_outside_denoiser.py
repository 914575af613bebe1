"""Where the time goes: the share of wall time spent outside the denoiser network.

Times `heatmap` (explain + save) on the bundled model and the whole `demo`, at their default
settings, with the UNet's forward calls timed on the side, and the pictures (figures, the
viewer `report.html`, the demo's comparison figure) timed apart; prints one table (ratios
measured in one run, on this machine). The pictures should stay under 10% of the demo.

    python benchmarks/time_outside_denoiser.py [--samples-heatmap 256] [--samples-demo 256]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import infodecomp.world.demo as demo
from infodecomp import explain
from infodecomp.loading import load_model
from infodecomp.report import figures, viewer
from infodecomp.sampling import Sampling
from infodecomp.world.demo import run_demo
from infodecomp.world.model import WorldModel
from infodecomp.world.scenes import sample


class Clock:
    """Wraps the denoisers' calls (the network with its text encoder and output conversion:
    ``DiffusersModel.schedule.denoise``; the exact world model's ``__call__``) to add up the
    seconds spent in them."""

    def __init__(self) -> None:
        self.seconds, self.calls = 0.0, 0

    def wrap(self, function):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            out = function(*args, **kwargs)
            self.seconds += time.perf_counter() - start
            self.calls += 1
            return out

        return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples-heatmap", type=int, default=256)
    parser.add_argument("--samples-demo", type=int, default=256)
    args = parser.parse_args()
    pictures = Clock()  # figures, viewer and the demo's comparison: every picture drawn
    figures.explanation_figures = pictures.wrap(figures.explanation_figures)
    viewer.viewer_html = pictures.wrap(viewer.viewer_html)
    demo._comparison = pictures.wrap(demo._comparison)
    with tempfile.TemporaryDirectory() as out:
        # The demo first, as a user runs it: matplotlib is imported by its first picture.
        demo_clock = Clock()
        original = demo.load_model

        def timed_load(*a, **k):
            m = original(*a, **k)
            if hasattr(m, "schedule"):
                m.schedule.denoise = demo_clock.wrap(m.schedule.denoise)
            return m

        demo.load_model = timed_load
        WorldModel.__call__ = demo_clock.wrap(WorldModel.__call__)
        start = time.perf_counter()
        run_demo(Path(out) / "demo", progress=False, sampling=Sampling(draws=args.samples_demo))
        demo_wall = time.perf_counter() - start
        demo_pictures = pictures.seconds
        demo.load_model = original

        model = load_model("bundled")
        clock = Clock()
        model.schedule.denoise = clock.wrap(model.schedule.denoise)
        data = sample(1, seed=0, split="test")
        heatmap_start = time.perf_counter()
        res = explain(
            model, data.images[0], data.captions[0], sampling=Sampling(draws=args.samples_heatmap)
        )
        computed = time.perf_counter()
        res.save(Path(out) / "heatmap")
        end = time.perf_counter()
        heatmap_pictures = pictures.seconds - demo_pictures

        # The command itself, in a new process (interpreter, imports, models, everything).
        start = time.perf_counter()
        command = ["infodecomp", "demo", "--samples", str(args.samples_demo)]
        cli = [sys.executable, "-m", *command, "--out", str(Path(out) / "cli")]
        subprocess.run(cli, check=True, capture_output=True)
        cli_wall = time.perf_counter() - start
    rows = [
        ("demo (generate, explain, exact model, save)", demo_wall, demo_clock),
        ("heatmap: explain", computed - heatmap_start, clock),
        ("heatmap: explain + save", end - heatmap_start, clock),
    ]
    print(
        "(denoiser: the network with its text encoder, and in the demo also the exact world "
        "model's calls; the demo's wall time includes loading both models)"
    )
    print(f"{'run':<46}{'wall s':>8}{'denoiser s':>11}{'calls':>7}{'outside':>9}")
    for name, wall, c in rows:
        print(f"{name:<46}{wall:>8.2f}{c.seconds:>11.2f}{c.calls:>7}{1 - c.seconds / wall:>9.1%}")
    print(
        f"pictures (figures, report.html, the demo's grid): demo {demo_pictures:.2f} s, "
        f"{demo_pictures / demo_wall:.1%} of its wall time in this process and "
        f"{demo_pictures / cli_wall:.1%} of `{' '.join(command)}` ({cli_wall:.1f} s, a new "
        f"process; the issue's bound: 10%); heatmap {heatmap_pictures:.2f} s "
        f"({heatmap_pictures / (end - heatmap_start):.1%})"
    )


if __name__ == "__main__":
    main()
