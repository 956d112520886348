"""Atomic file writes: a crash mid-write leaves the old file, never half a new one."""

from __future__ import annotations

import fcntl
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def folder_lock(folder: Path):
    """Exclusive flock on the folder itself (no lock file to leave behind): for
    read-modify-write of files in it by several processes."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Temporaries a killed writer of ``path`` left (call it under ``folder_lock``)."""
    path = Path(path)
    stale = list(path.parent.glob(f".{path.name}.*.tmp"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def atomic_write_text(path: Path, text: str) -> None:
    # A lone surrogate (a path decoded with surrogateescape, in an exception message) is
    # written as its escape: the file stays UTF-8 and the session survives it.
    atomic_write_bytes(path, text.encode("utf-8", errors="backslashreplace"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    # mkstemp makes the file 0600; reports and baselines are shared files: keep the old mode,
    # else the umask's default.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~umask)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)  # the rename itself survives a power cut


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
