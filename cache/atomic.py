"""Temp-then-rename writes of whole files, with a full disk turned into one clear error.

Every file the project writes for a later step to read (cache files, checkpoints, the manifest, the report)
goes through :func:`atomic_file` (or :func:`atomic_write_bytes`, its form for a bytes object): the file is
made as ``<name>.tmp-<pid>-<random>`` in the same folder, fsynced and then ``os.replace``d onto the final
name, so the final name holds either the previous complete file or the new complete one. When the file
system is full (ENOSPC, or EDQUOT for a quota), the temporary file is removed and :class:`DiskFullError`
names the path and the space the write needed.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# errnos that mean "no room for this write"
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


class DiskFullError(OSError):
    """A write ran out of space. ``str(err)`` names the path, the bytes needed and the bytes free."""

    def __init__(self, path: str | Path, needed: int | None, free: int | None = None):
        self.path = str(path)
        self.needed = needed
        self.free = free
        need = f"{_human(needed)} needed" if needed is not None else "size unknown"
        have = f", {_human(free)} free" if free is not None else ""
        super().__init__(
            errno.ENOSPC,
            f"{self.path}: no space left on device ({need}{have}); nothing was written under this name. "
            "Free some space (or use a run folder on another disk) and rerun the same command to resume",
        )

    def __str__(self) -> str:
        return self.strerror

    def __reduce__(self):
        return (type(self), (self.path, self.needed, self.free))


def _human(num: int | None) -> str:
    if num is None:
        return "?"
    value = float(num)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def is_disk_full(err: BaseException) -> bool:
    """True for an OSError (or torch's RuntimeError wrapping one) that means the disk is full."""
    if isinstance(err, OSError) and err.errno in _FULL_ERRNOS:
        return True
    text = str(err)
    return "No space left on device" in text or "Disk quota exceeded" in text


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse to fsync a folder; the rename itself is still atomic
        pass
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view[: 1 << 24])
        view = view[written:]


def write_at(fd: int, offset: int, data: bytes | memoryview) -> None:
    """Write ``data`` at byte ``offset`` of ``fd`` (e.g. a dataset's bytes into a temporary cache file)."""
    os.lseek(fd, offset, os.SEEK_SET)
    _write_all(fd, data)


@contextmanager
def atomic_file(path: str | Path, size: int) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for the block to create; on success, publish it as ``path``.

    When the block completes, the file is fsynced, ``os.replace``d onto ``path`` and the folder fsynced.
    ``size`` (the bytes the file will take) is checked against the free space first. Any failure removes
    the temporary file and leaves what was under ``path`` untouched; a full disk (in the block or in the
    fsync) raises :class:`DiskFullError`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    free = free_bytes(path.parent)
    if free is not None and size > free:
        raise DiskFullError(path, size, free)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if is_disk_full(err):
            raise DiskFullError(path, size, free_bytes(path.parent)) from None
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes | memoryview) -> Path:
    """Write ``data`` to ``path`` through a fsynced temporary file in the same folder and a rename.

    Raises :class:`DiskFullError` (an ``OSError``) when the file system is full; any failure removes the
    temporary file and leaves what was under ``path`` before untouched.
    """
    path = Path(path)
    with atomic_file(path, len(memoryview(data).cast("B"))) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
    return path
