"""Output folders that cannot be written: found before any work, and told in one line.

The command-line entry points (``stage1_encoders.run``, ``stage2_graph.run``, ``corpus.synthetic``) call
:func:`check_writable` on every folder they will write before loading anything, and turn any ``OSError`` that
means "this place cannot be written" (read-only file system, no permission, full disk, a file where a folder
should be) into one ``error:`` line with :func:`explain_os_error`: the path, the reason and what to do.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

# errno -> (reason, what to do); the errnos that mean "the environment cannot take this write".
_ADVICE = {
    errno.EROFS: ("read-only file system", "choose a folder on a writable file system"),
    errno.EACCES: ("permission denied", "choose a folder you can write, or change its permissions"),
    errno.EPERM: ("operation not permitted", "choose a folder you can write, or change its permissions"),
    errno.ENOSPC: ("no space left on device", "free some space or choose a folder on another disk"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or choose a folder on another disk"),
    errno.ENOTDIR: ("the path (or a folder in it) is a file, not a folder", "choose another path"),
    errno.EEXIST: ("a file is in the way", "choose another path or move the file"),
    errno.ENAMETOOLONG: ("the path is too long", "choose a shorter path"),
    errno.ENOENT: ("no such file or folder", "check the path"),
    errno.EISDIR: ("a folder is where a file should be", "choose another path"),
}


def explain_os_error(err: BaseException, option: str | None = None) -> str | None:
    """One line for an ``OSError`` whose errno means the path cannot be written (``_ADVICE``), naming the path,
    the reason and what to do (``option``: the flag that chose the path, e.g. ``--out``); None for any other
    error (a bug, which should keep its traceback)."""
    if not isinstance(err, OSError) or err.errno not in _ADVICE:
        return None
    reason, todo = _ADVICE[err.errno]
    path = err.filename if err.filename is not None else "the output"
    flag = f" with {option}" if option else ""
    return f"cannot write {path}: {reason}; {todo}{flag}"


def check_writable(folder: str | Path) -> None:
    """Create ``folder`` (and its parents) when missing, then create, write, fsync and remove a small probe file
    in it. Raises the ``OSError`` of the first step that fails (its ``filename`` is set), so a read-only, full or
    forbidden place is found before any work rather than after training."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError as err:  # a file of that name
        raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder)) from err
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=folder)
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(folder)) from None
    try:
        os.write(fd, b"\0")
        os.fsync(fd)
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(folder)) from None
    finally:
        os.close(fd)
        os.unlink(probe)


def first_unwritable(folders: dict[str | Path, str]) -> str | None:
    """The one-line error (:func:`explain_os_error`) for the first of ``{folder: option}`` that
    :func:`check_writable` refuses, or None when every folder can be written."""
    for folder, option in folders.items():
        try:
            check_writable(folder)
        except OSError as err:
            return (
                explain_os_error(err, option)
                or f"cannot write {folder}: {err}; choose another path with {option}"
            )
    return None
