"""Outputs appear whole or not at all: write beside the target, then rename over it."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import CurateError


def check_output(path: Path, *, inputs=(), overwrite: bool = False) -> Path:
    """Refuse an output that is an input, a folder, or (without overwrite) an existing file."""
    path = Path(path)
    for source in inputs:
        source = Path(source)
        if path.exists() and source.exists() and os.path.samefile(path, source) \
                or path.resolve() == source.resolve():
            raise CurateError(f"{path}: the output is also an input; write to another file")
    if path.is_dir():
        raise CurateError(f"{path}: the output is a folder; name a file")
    if path.exists() and not overwrite:
        raise CurateError(f"{path}: the output exists; pass --overwrite to replace it")
    parent = _nearest_existing_parent(path)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CurateError(f"{path}: cannot write in folder {parent}")
    return path


def _nearest_existing_parent(path: Path) -> Path:
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    return parent


@contextmanager
def atomic_output(path: Path, *, mode: str = "w"):
    """Yield a file in the target's folder; rename it over the target only on success.

    A crash, an exception or a SIGKILL leaves the target untouched (absent or the
    complete old file); the temporary file is removed on any Python-level failure.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise CurateError(f"{path}: cannot write the output ({e.strerror})") from None
    temp = Path(temp_name)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        kwargs = {"encoding": "utf-8", "newline": "\n"} if "b" not in mode else {}
        with open(fd, mode, buffering=1 << 20, **kwargs) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
