"""Files written whole or not at all, and the temporary files that make them so.

A file infodecomp writes goes through :func:`write_atomic` (a temporary file beside it, then a
rename) or, a line at a time, :func:`appending`; or it is written into a temporary folder
that replaces its output folder whole (:func:`~infodecomp.results.output_folder`). So a full
or read-only disk, an error or a kill never leaves half a file under the real name, and the
temporary file is removed on any error. Temporary names are
``.<name>.<pid>.tmp`` (``.<name>.<pid>.old`` for a folder being replaced): only a kill can
leave one behind; :func:`remove_leftovers` removes those whose process is gone, and
:func:`is_leftover` lets an output folder holding nothing else count as empty.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# Our temporary files and folders, and the runner's lock files (``.lock``, ``.lock.rows``,
# ``.lock.rows.<rank>``): a folder holding nothing else holds nothing of value.
# (Earlier versions named the runner's two temporary files without the leading dot.)
_TEMPORARY = re.compile(r"(?:\..+|settings\.json|summary\.json)\.([0-9]+)\.(tmp|old)")
_LOCK = re.compile(r"\.lock(\.rows(\.[0-9]+)?)?")


def temporary(path: str | Path, kind: str = "tmp") -> Path:
    """This process's temporary name for ``path``: ``.<name>.<pid>.<kind>`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{kind}")


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` whole or not at all: into a temporary file
    beside it, then renamed over it. On any error the temporary file is removed and ``path``
    is left as it was; an ``OSError`` names ``path`` (not the temporary file). Returns
    ``path``."""
    path = Path(path)
    view = memoryview(data.encode() if isinstance(data, str) else data)
    tmp = temporary(path)
    try:
        with naming(path):
            with open(tmp, "wb", buffering=0) as f:
                _write_all(f, view)
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def appending(path: str | Path) -> Iterator[Callable[[str], None]]:
    """``append(line)`` to the file ``path``: each line whole and on disk (synced), or not at
    all (an error or Ctrl-C mid-write, e.g. a full disk, takes back the part written; a kill
    can leave half a line, which readers drop)."""
    with contextlib.ExitStack() as opened:
        with naming(path):
            f = opened.enter_context(open(path, "ab", buffering=0))
        yield lambda line: _append(f, line, path)


def _append(f: Any, line: str, path: str | Path) -> None:
    """Append ``line`` and a newline to ``f``, whole and synced, or take back what was
    written."""
    start = f.seek(0, os.SEEK_END)
    try:
        with naming(path):
            _write_all(f, memoryview((line + "\n").encode()))
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            f.truncate(start)
        raise


def _write_all(f: Any, view: memoryview) -> None:
    """Write all of ``view`` to the unbuffered file ``f`` (a write may take part of it)."""
    while view:
        view = view[f.write(view) :]


@contextlib.contextmanager
def naming(path: str | Path, inside: Path | None = None) -> Iterator[None]:
    """An ``OSError`` in the block names ``path`` (the file the user knows of, not a
    temporary one nor none); with ``inside`` (a temporary folder that becomes ``path``), only
    one about a file in ``inside`` does, as the same file in ``path``."""
    try:
        yield
    except OSError as err:
        name = str(path)
        if inside is not None:
            where = Path(err.filename) if isinstance(err.filename, str) else None
            if where is None or not where.is_relative_to(inside):
                raise
            name = str(Path(path) / where.relative_to(inside))
        if err.errno is None:
            raise
        raise type(err)(err.errno, err.strerror, name) from None


def is_leftover(name: str) -> bool:
    """Whether a file name is one of our temporary or lock files (nothing of value)."""
    return bool(_TEMPORARY.fullmatch(name) or _LOCK.fullmatch(name))


def remove_leftovers(folder: str | Path, name: str | None = None) -> None:
    """Remove the temporary files and folders in ``folder`` (of ``name`` only, if given) that
    processes since gone left behind (a kill): those of running processes are in use. Silent:
    what cannot be removed stays, and is ignored."""
    folder = Path(folder)
    with contextlib.suppress(OSError):
        entries = folder.iterdir() if name is None else folder.glob(f".{glob.escape(name)}.*")
        for entry in list(entries):
            match = _TEMPORARY.fullmatch(entry.name)
            if match is None or _running(int(match[1])):
                continue
            with contextlib.suppress(OSError):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process
        return True
    return True
