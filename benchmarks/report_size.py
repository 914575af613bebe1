"""How large is report.html, and how long does it take to build?

Cases: the demo's report (the bundled 16 px model, 6 words, with its appendix figures), and a
Stable-Diffusion-like explanation made by hand (no model): a 512 px image, 64x64 latent maps,
8 words with attention and DAAM maps, once with a photo-like image (smooth, with grain) and
once with pure noise (the PNG's worst case). Prints a table: bytes and build time.

    python benchmarks/report_size.py [--no-demo]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from infodecomp.explanation import Explanation
from infodecomp.report.viewer import viewer_html
from infodecomp.results import Estimate
from infodecomp.sampling import Sampling

WORDS = ["a", "photo", "of", "red", "fox", "snowy", "forest", "dawn"]


def sd_like(noise: bool, size: int = 512, latent: int = 64) -> Explanation:
    """An explanation shaped like Stable Diffusion's: maps per latent pixel, 24 profile bins."""
    g = torch.Generator().manual_seed(0)
    n = 1 + len(WORDS)
    maps = torch.rand(1, n, latent, latent, generator=g) ** 4 * 0.01
    value = maps.double().flatten(2).sum(-1)
    if noise:
        image = torch.rand(3, size, size, generator=g) * 2 - 1
    else:  # smooth shapes and a little grain, like a photograph's PNG
        coarse = torch.rand(1, 3, 8, 8, generator=g) * 2 - 1
        image = F.interpolate(coarse, size=(size, size), mode="bicubic")[0]
        image = (image + 0.02 * torch.randn(3, size, size, generator=g)).clamp(-1, 1)
    estimate = Estimate(
        quantity="conditional_mutual_info",
        value=value,
        stderr=0.1 * value,
        n_evaluations=(256 + 8) * (2 + len(WORDS)),
        seed=0,
        settings={
            "estimator": "orthogonal",
            "profile_edges": np.linspace(-10.0, 12.0, 25).tolist(),
            "contexts": [None, *WORDS],
        },
        map=maps,
        map_stderr=0.3 * maps,
        diagnostics={
            "profile": torch.rand(1, n, 24, generator=g, dtype=torch.float64),
            "profile_stderr": torch.rand(1, n, 24, generator=g, dtype=torch.float64),
            "outside_range": 0.01 * value,
            "outside_range_stderr": 0.001 * value,
        },
    )
    attention = {w: torch.rand(latent, latent, generator=g) for w in WORDS}
    return Explanation(
        prompt=" ".join(WORDS),
        words=WORDS,
        estimate=estimate,
        image=image,
        attention=attention,
        model_name="sd-like (made by hand)",
        generation_attention={w: torch.rand(latent, latent, generator=g) for w in WORDS},
    )


def timed_build(res: Explanation, **kwargs: object) -> tuple[int, float]:
    """Bytes of the page (UTF-8) and the build's seconds (the second of two builds: the first
    also loads the colour map)."""
    viewer_html(res, **kwargs)
    start = time.perf_counter()
    page = viewer_html(res, **kwargs)
    return len(page.encode()), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-demo", action="store_true", help="skip the demo (about 40 s)")
    args = parser.parse_args()
    rows = []
    if not args.no_demo:
        from infodecomp.world.demo import run_demo

        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            run_demo(Path(folder), progress=False, sampling=Sampling(draws=64))
            wall = time.perf_counter() - start
            size = (Path(folder) / "report.html").stat().st_size
        rows.append(("demo (16 px, 6 words, 3 figures)", size, f"in a {wall:.0f} s demo"))
    for noise in (False, True):
        size, seconds = timed_build(sd_like(noise))
        image = "noise image, worst case" if noise else "photo-like image"
        rows.append((f"SD-like 512 px, 8 words ({image})", size, f"{seconds:.3f} s"))
    print(f"{'report':<48} {'size':>10}  build")
    for name, size, build in rows:
        print(f"{name:<48} {size / 1024:>7.0f} KiB  {build}")


if __name__ == "__main__":
    sys.exit(main())
