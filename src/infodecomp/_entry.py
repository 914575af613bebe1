"""The ``infodecomp`` command's entry point: light, so that a Ctrl-C while torch and the rest
are still loading ends in one line too."""

from __future__ import annotations

import signal
import sys


def main() -> int:
    # A Ctrl-C during the imports is noted, not raised: raised inside torch's native start-up it
    # aborts the process with a C++ error.
    interrupted: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum))
    try:
        from .cli import main as run
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:
        return _interrupted()
    try:
        return run()
    except KeyboardInterrupt:  # e.g. while the parser imports matplotlib, before the work
        return _interrupted()


def _interrupted() -> int:
    print("infodecomp: interrupted", file=sys.stderr)
    return 130
