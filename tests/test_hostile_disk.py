"""Full and read-only disks, and killed runs: nothing half-written, temporary files removed, one
line and exit 2, and a rerun after freeing space resumes (issue 16).

A full disk is simulated under :mod:`infodecomp.files` (every write of infodecomp goes through
it): a disk with ``free`` bytes left, which takes what fits and then refuses with ENOSPC, or a
read-only one."""

import builtins
import errno
import json
import os
import subprocess

import pytest
import torch
from PIL import Image
from tiny_pipelines import sd_pipeline

from infodecomp import files
from infodecomp.cli import main

EVAL = ["eval", "compositional", "--model", "exact", "--samples", "8", "--fixed"]


class Disk:
    """The disk under :mod:`infodecomp.files`: ``free`` bytes left (``None``: plenty), or
    ``read_only``; ``writes`` records ``(file name, bytes)`` of every write."""

    def __init__(self) -> None:
        self.free: int | None = None
        self.read_only = False
        self.writes: list[tuple[str, int]] = []

    def open(self, path, mode="r", buffering=-1):
        if not any(c in mode for c in "wax+"):
            return builtins.open(path, mode, buffering)
        if self.read_only:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return _File(self, builtins.open(path, mode, buffering), path)


class _File:
    def __init__(self, disk: Disk, f, path) -> None:
        self.disk, self.f, self.name = disk, f, os.path.basename(path)

    def write(self, data) -> int:
        size = len(data) if self.disk.free is None else min(len(data), self.disk.free)
        if size == 0 and len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = self.f.write(data[:size])
        if self.disk.free is not None:
            self.disk.free -= written
        self.disk.writes.append((self.name, written))
        return written

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()


@pytest.fixture
def disk(monkeypatch) -> Disk:
    d = Disk()
    monkeypatch.setattr(files, "open", d.open, raising=False)
    return d


@pytest.fixture(scope="module")
def dead_pid() -> int:
    """The id of a process that has ended (as a killed run's)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny SD pipeline as a model folder, an image and a prompts file."""
    root = tmp_path_factory.mktemp("tiny")
    sd_pipeline().save_pretrained(root / "model")
    pixels = torch.rand(16, 16, 3, generator=torch.Generator().manual_seed(0)) * 255
    Image.fromarray(pixels.byte().numpy()).save(root / "img.png")
    (root / "prompts.txt").write_text("a red dog\n")
    return root


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("infodecomp: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_full_disk_on_the_first_write_of_an_eval_leaves_nothing_and_the_rerun_runs(
    tmp_path, capsys, disk, dead_pid
):
    out = tmp_path / "out"
    argv = [*EVAL, "--limit", "2", "--out", str(out)]
    disk.free = 0
    assert main(argv) == 2
    line = error_line(capsys)
    assert "settings.json: No space left on device" in line and "run the same command" in line
    assert names(tmp_path) == []  # no folder, no lock, no temporary file
    # A run killed at its first write (older versions' names too): the folder is still ours.
    out.mkdir()
    for name in (".lock", f"settings.json.{dead_pid}.tmp", f".settings.json.{dead_pid}.tmp"):
        (out / name).write_text("{")
    disk.free = None
    assert main(argv) == 0
    assert "2 to measure" in capsys.readouterr().err
    assert not [n for n in names(out) if n.endswith(".tmp")]


def test_full_disk_in_the_middle_of_an_eval_keeps_whole_rows_and_resumes(tmp_path, capsys, disk):
    argv = [*EVAL, "--limit", "2", "--out"]
    assert main([*argv, str(tmp_path / "whole")]) == 0
    rows = (tmp_path / "whole" / "rows.jsonl").read_text()
    # Room for everything up to half of the second row.
    second = [k for k, (name, _) in enumerate(disk.writes) if name == "rows.jsonl"][1]
    disk.free = sum(n for _, n in disk.writes[:second]) + disk.writes[second][1] // 2
    out = tmp_path / "out"
    assert main([*argv, str(out)]) == 2
    assert "rows.jsonl: No space left on device" in error_line(capsys)
    assert (out / "rows.jsonl").read_text() == rows.splitlines(keepends=True)[0]  # no half row
    assert not [n for n in names(out) + names(out / "items") if n.endswith(".tmp")]
    disk.free = None
    assert main([*argv, str(out)]) == 0
    assert "1 already done; 1 to measure" in capsys.readouterr().err
    assert (out / "rows.jsonl").read_text() == rows


def test_read_only_disk_is_one_line_and_leaves_nothing(tmp_path, capsys, disk):
    disk.read_only = True
    assert main([*EVAL, "--limit", "1", "--out", str(tmp_path / "out")]) == 2
    assert "settings.json: Read-only file system" in error_line(capsys)
    assert names(tmp_path) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_summarize_in_a_read_only_folder_is_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    assert main([*EVAL, "--limit", "1", "--out", str(out)]) == 0
    before = names(out)
    out.chmod(0o555)
    try:
        assert main(["eval", "summarize", str(out)]) == 2
        assert "Permission denied" in error_line(capsys)
        assert names(out) == before
    finally:
        out.chmod(0o755)


def test_summary_temporaries_never_pile_up(tmp_path, capsys, disk, dead_pid):
    out = tmp_path / "out"
    assert main([*EVAL, "--limit", "1", "--out", str(out)]) == 0
    summary = (out / "summary.json").read_text()
    stale = [f"summary.json.{dead_pid}.tmp", f".summary.json.{dead_pid}.tmp"]
    in_use = f".report.html.{os.getppid()}.tmp"  # a running process's: left alone
    for name in [*stale, in_use, f"items/.x.npz.{dead_pid}.tmp"]:
        (out / name).write_text("half")
    disk.free = 0
    for _ in range(3):
        assert main(["eval", "summarize", str(out)]) == 2
        assert "summary.json: No space left on device" in error_line(capsys)
    assert [n for n in names(out) if n.endswith(".tmp")] == [in_use]
    assert [n for n in names(out / "items") if n.endswith(".tmp")] == []
    assert (out / "summary.json").read_text() == summary  # the earlier one, whole
    disk.free = None
    assert main(["eval", "summarize", str(out)]) == 0


def test_summarize_names_an_unknown_task_in_settings(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    for task, what in (("nope", "unknown task 'nope'"), (None, "missing")):
        (out / "settings.json").write_text(json.dumps({"task": task}))
        assert main(["eval", "summarize", str(out)]) == 2
        line = error_line(capsys)
        assert str(out / "settings.json") in line and f"field 'task': {what}" in line


def test_reference_out_is_checked_first_and_written_whole(tmp_path, capsys, disk, monkeypatch):
    import infodecomp.models.reference as reference

    argv = ["reference", "--samples", "50", "--out"]
    (tmp_path / "file").write_text("mine")
    with monkeypatch.context() as m:  # refused before anything is computed
        m.setattr(reference, "example_mixture", lambda: pytest.fail("computed before the check"))
        assert main([*argv, str(tmp_path / "file")]) == 2
    assert "is a file, not a folder" in error_line(capsys)
    out = tmp_path / "out"
    disk.free = 0
    assert main([*argv, str(out)]) == 2
    assert f"{out.resolve() / 'nll.json'}: No space left on device" in error_line(capsys)
    assert names(tmp_path) == ["file"]  # no folder, no truncated nll.json, no temporary
    disk.free = None
    assert main([*argv, str(out)]) == 0
    assert names(out) == ["nll.json", "orthogonal.json", "standard.json"]
    for name in names(out):
        json.loads((out / name).read_text())


def test_full_disk_while_writing_maps_is_one_line_and_leaves_nothing(tiny, tmp_path, capsys, disk):
    out = tmp_path / "out"
    argv = ["heatmap", "--model", str(tiny / "model"), "--image", str(tiny / "img.png")]
    argv += ["--prompt", "a red dog", "--samples", "4", "--no-attention", "--out", str(out)]
    disk.free = 0
    assert main(argv) == 2  # was a SafetensorError traceback, exit 1
    assert f"{out.resolve() / 'maps.safetensors'}: No space left on device" in error_line(capsys)
    assert names(tmp_path) == []


def test_full_disk_on_the_first_write_of_heatmap_prompts_then_resume(
    tiny, tmp_path, capsys, disk, dead_pid
):
    out = tmp_path / "out"
    argv = ["heatmap", "--model", str(tiny / "model"), "--prompts", str(tiny / "prompts.txt")]
    argv += ["--image", str(tiny / "img.png"), "--samples", "4", "--no-attention"]
    argv += ["--out", str(out)]
    disk.free = 0
    assert main(argv) == 2
    assert "settings.json: No space left on device" in error_line(capsys)
    assert names(tmp_path) == []
    # What a kill at the first write (or an older version on a full disk) leaves: still ours.
    out.mkdir()
    (out / ".lock").write_text("")
    (out / f".settings.json.{dead_pid}.tmp").write_text("{")
    (out / f".p0123456789.{dead_pid}.tmp").mkdir()  # an item's folder being written
    disk.free = None
    assert main(argv) == 0
    assert "1 to measure" in capsys.readouterr().err
    assert not [n for n in names(out) if n.endswith(".tmp")]
    assert len((out / "rows.jsonl").read_text().splitlines()) == 1
