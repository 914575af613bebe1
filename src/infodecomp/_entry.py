"""The ``infodecomp`` command's entry point: light, so that a Ctrl-C while torch and the rest
are still loading ends in one line too."""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from .cli import main as run
    except KeyboardInterrupt:
        print("infodecomp: interrupted", file=sys.stderr)
        return 130
    return run()
