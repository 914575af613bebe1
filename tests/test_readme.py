"""The README's examples, run as written.

Which blocks run, by rule (no list of blocks here):

* Every fenced block of README.md whose language is ``bash``, ``sh``, ``console`` or ``python``
  is an example; other blocks (``jsonl``, printed output) are not code.
* A block right after an HTML comment ``<!-- not run: REASON -->`` (blank lines between allowed)
  is skipped, with the reason: it needs a GPU, a download, several GPUs, hours, or it installs
  packages. The two set-up commands at the top are marked so (they ``pip install``; CI's
  ``.ci/run`` runs the test one itself, checked below); everything else that needs no GPU and no
  download runs.

How they run:

* In order, one test per block (marked ``slow``: ``pytest -m "not slow"`` leaves them out; run
  them with ``pytest tests/test_readme.py``), all in one temporary folder, so a block may use
  what an earlier one wrote (the quick start explains the image the demo draws into
  ``infodecomp-demo/``).
* ``bash``/``sh`` blocks run under ``bash -euo pipefail`` with an ``infodecomp`` command on
  ``PATH`` that runs ``python -m infodecomp`` (``runpy``, as ``-m`` does). ``console`` blocks
  run their ``$ `` lines. ``python`` blocks run as a script in their own process.
* Sizes are made small, generically (the text is not edited): every :class:`Sampling`, the
  command line's ``--samples`` and Python defaults included, takes at most ``DRAWS`` (16) draws;
  a command's ``--limit`` is at most ``LIMIT`` (1 item), its ``--ddim-steps`` and ``--steps`` at
  most ``STEPS`` (4). Only the amounts change, never the code; ``README_TEST_FULL=1`` runs the
  sizes as printed (minutes).
* Speed: a fresh ``python -m infodecomp`` spends most of its ~8 s of CPU importing torch,
  diffusers and transformers, and the README has a dozen commands. So every command and Python
  block runs in a child forked from one interpreter that imported them once (its own process,
  folder, environment and standard streams; the sizes above are set there).
  ``README_TEST_FORK=0`` (and any platform without ``fork``) starts each as a fresh process
  instead. Each runs with one torch thread (``OMP_NUM_THREADS=1`` unless set): the examples are
  small, and threads fight on a shared machine.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
LANGUAGES = {"bash", "sh", "console", "python"}
DRAWS, LIMIT, STEPS = 16, 1, 4  # 16: the fewest draws the sequential ranking takes
FORK = (
    hasattr(os, "fork")
    and hasattr(socket, "send_fds")
    and os.environ.get("README_TEST_FORK", "1") not in ("0", "")
)
TIMEOUT = 900


@dataclass
class Block:
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    skip: str | None  # the reason given in <!-- not run: REASON -->


def readme_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    skip: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = re.match(r"^(```+|~~~+)\s*([\w+-]*)", line)
        if fence:
            mark, language = fence.group(1), fence.group(2).lower()
            body: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].startswith(mark):
                body.append(lines[i])
                i += 1
            if language in LANGUAGES:
                start = i - len(body)
                blocks.append(Block(start, language, "\n".join(body) + "\n", skip))
            skip = None
        else:
            note = re.match(r"^<!--\s*not run:\s*(.*?)\s*-->\s*$", line)
            if note:
                skip = note.group(1) or "marked not run"
            elif line.strip():
                skip = None  # a note applies to the block right after it only
        i += 1
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))


# --- the runner: one file, three roles (command, Python block, fork server) -------------------

RUNNER = textwrap.dedent(
    '''
    import json, os, runpy, socket, struct, sys, traceback

    DRAWS, LIMIT, STEPS = {draws}, {limit}, {steps}


    def small_sizes():
        """Cap every sampling size (generic: the README's text is run unchanged)."""
        if os.environ.get("README_TEST_FULL"):
            return
        import argparse

        from infodecomp import sampling

        post_init = sampling.Sampling.__post_init__

        def capped(self):
            object.__setattr__(self, "draws", min(self.draws, DRAWS))
            post_init(self)

        sampling.Sampling.__post_init__ = capped
        parse = argparse.ArgumentParser.parse_known_args
        caps = {{"limit": LIMIT, "ddim_steps": STEPS, "steps": STEPS}}

        def parse_small(self, *args, **kwargs):
            namespace, rest = parse(self, *args, **kwargs)
            if getattr(namespace, "command", None) != "train-world":
                for name, cap in caps.items():
                    if hasattr(namespace, name):
                        value = getattr(namespace, name)
                        setattr(namespace, name, cap if value is None else min(value, cap))
            return namespace, rest

        argparse.ArgumentParser.parse_known_args = parse_small


    def execute(kind, payload):
        """Run one command (``python -m infodecomp ARGS``) or one Python block; its exit code."""
        try:
            if kind == "cli":
                sys.argv = ["infodecomp", *payload]
                runpy.run_module("infodecomp", run_name="__main__", alter_sys=True)
            else:
                sys.argv = [payload]
                runpy.run_path(payload, run_name="__main__")
            return 0
        except SystemExit as stop:
            if stop.code is None or isinstance(stop.code, int):
                return stop.code or 0
            print(stop.code, file=sys.stderr)
            return 1
        except BaseException:
            traceback.print_exc()
            return 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()


    def receive(conn, size):
        data = b""
        while len(data) < size:
            part = conn.recv(size - len(data))
            if not part:
                raise EOFError
            data += part
        return data


    def serve(path):
        # Imported once here; every child inherits them.
        import diffusers, transformers, matplotlib.pyplot  # noqa: F401
        import infodecomp.cli, infodecomp.loading, infodecomp.world.demo  # noqa: F401
        import infodecomp.evaluate.evaluation, infodecomp.report.figures  # noqa: F401
        small_sizes()
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(4)
        print("ready", flush=True)
        while True:
            conn, _ = server.accept()
            with conn:
                head, fds, _, _ = socket.recv_fds(conn, 8, 3)
                request = json.loads(receive(conn, struct.unpack("!Q", head)[0]))
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    server.close()
                    for target, fd in enumerate(fds):
                        os.dup2(fd, target)
                    os.chdir(request["cwd"])
                    os.environ.clear()
                    os.environ.update(request["env"])
                    os._exit(execute(request["kind"], request["payload"]))
                for fd in fds:
                    os.close(fd)
                _, status = os.waitpid(pid, 0)
                conn.sendall(struct.pack("!i", os.waitstatus_to_exitcode(status)))


    def ask(kind, payload):
        """Hand the request and this process's standard streams to the warm server."""
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(os.environ["README_TEST_SOCKET"])
        body = json.dumps(
            {{"kind": kind, "payload": payload, "cwd": os.getcwd(), "env": dict(os.environ)}}
        ).encode()
        socket.send_fds(conn, [struct.pack("!Q", len(body))], [0, 1, 2])
        conn.sendall(body)
        return struct.unpack("!i", receive(conn, 4))[0]


    if __name__ == "__main__":
        role, rest = sys.argv[1], sys.argv[2:]
        if role == "serve":
            serve(rest[0])
        kind, payload = ("cli", rest) if role == "cli" else ("python", rest[0])
        if os.environ.get("README_TEST_SOCKET"):
            code = ask(kind, payload)
        else:
            small_sizes()
            code = execute(kind, payload)
        sys.exit(128 - code if code < 0 else code)
    '''
).format(draws=DRAWS, limit=LIMIT, steps=STEPS)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The folder the examples run in, the environment they see, and the warm server."""
    base = tmp_path_factory.mktemp("readme")
    work, bin_dir = base / "work", base / "bin"
    work.mkdir()
    bin_dir.mkdir()
    runner = bin_dir / "readme_runner.py"
    runner.write_text(RUNNER)
    command = bin_dir / "infodecomp"
    command.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{runner}" cli "$@"\n')
    command.chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "1")
    env["MPLBACKEND"] = "Agg"
    env.pop("README_TEST_SOCKET", None)
    server = None
    if FORK:
        path = str(base / "s")  # AF_UNIX paths are short
        server = subprocess.Popen(
            [sys.executable, str(runner), "serve", path],
            env=env,
            cwd=work,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout.readline().strip() == "ready", "the warm server did not start"
        env["README_TEST_SOCKET"] = path
    yield work, env, runner
    if server is not None:
        server.kill()
        server.wait()


def run_block(block: Block, work: Path, env: dict, runner: Path) -> subprocess.CompletedProcess:
    if block.language == "python":
        script = work.parent / f"block_{block.line}.py"
        script.write_text(block.code)
        argv = [sys.executable, str(runner), "python", str(script)]
    else:
        code = block.code
        if block.language == "console":
            code = "\n".join(s[2:] for s in code.splitlines() if s.startswith("$ ")) + "\n"
        argv = ["bash", "-euo", "pipefail", "-c", code]
    return subprocess.run(
        argv, cwd=work, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


@pytest.mark.slow  # about a minute in all: the demo, three evaluations, a dozen commands
@pytest.mark.parametrize("block", BLOCKS, ids=[f"line{b.line}-{b.language}" for b in BLOCKS])
def test_readme_block_runs_as_written(block, world):
    if block.skip:
        pytest.skip(f"README line {block.line}: not run: {block.skip}")
    work, env, runner = world
    start = time.monotonic()
    done = run_block(block, work, env, runner)
    took = time.monotonic() - start
    assert done.returncode == 0, (
        f"README block at line {block.line} ({block.language}) exited {done.returncode} after "
        f"{took:.0f} s\n--- code\n{block.code}--- stdout (tail)\n{done.stdout[-3000:]}"
        f"--- stderr (tail)\n{done.stderr[-3000:]}"
    )


def test_readme_has_runnable_examples_and_reasons_for_the_rest():
    assert BLOCKS, "no code blocks found in README.md"
    assert sum(b.skip is None for b in BLOCKS) >= 5
    assert all(b.skip.strip() for b in BLOCKS if b.skip is not None)


def test_setup_commands_are_the_first_two_blocks_and_ci_runs_the_test_one():
    first, second = BLOCKS[0], BLOCKS[1]
    assert first.skip and second.skip
    assert "pip install" in first.code and "infodecomp demo" in first.code
    assert "pip install" in second.code and "python -m pytest" in second.code
    ci = (ROOT / ".ci" / "run").read_text()
    assert second.code.strip() in ci, "the README's test command is not the one .ci/run runs"


def test_block_rules():
    text = textwrap.dedent(
        """\
        <!-- not run: needs a GPU -->
        ```bash
        infodecomp heatmap --device cuda
        ```
        Some words.
        ```python
        print(1)
        ```
        <!-- not run: downloads -->

        ```sh
        hf download x
        ```
        <!-- not run: stale -->
        A paragraph between: the note no longer applies.
        ```console
        $ infodecomp reference
        output
        ```
        ```jsonl
        {"prompt": "a"}
        ```
        """
    )
    found = readme_blocks(text)
    assert [(b.language, b.skip) for b in found] == [
        ("bash", "needs a GPU"),
        ("python", None),
        ("sh", "downloads"),
        ("console", None),
    ]
    assert found[1].code == "print(1)\n" and found[0].line == 2
