"""The text-to-image model shipped with the package: its files and its name.

Trained on the shapes world by ``infodecomp train-world`` (world/train.py); load it with
``infodecomp.loading.load_model("bundled")``.
"""

from pathlib import Path

BUNDLED = Path(__file__).parent / "bundled"
BUNDLED_NAME = "infodecomp/shapes-world-16px"
