"""An exclusive lock on a run folder for the whole of a bridge run.

Two runs on one ``--run-dir`` would remove each other's in-progress stage folders. The lock is an OS file
lock (``fcntl.flock``) on ``<run_dir>/run.lock``, which the kernel releases when its holder dies, so a lock
left by a killed run never blocks the next one; the file keeps the holder's PID for the message.
"""

from __future__ import annotations

import fcntl
import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

LOCK_FILE = "run.lock"

F = TypeVar("F", bound=Callable)
_HELD: set[Path] = set()  # run folders whose lock this process holds: taking it again is a no-op


class RunFolderLocked(RuntimeError):
    """Another process holds the run folder's lock."""

    def __init__(self, run_dir: Path, holder: str):
        self.run_dir = Path(run_dir)
        self.holder = holder
        super().__init__(
            f"{self.run_dir} is in use by another bridge run (PID {holder}, lock {self.run_dir / LOCK_FILE}); "
            "wait for it to finish, or use another --run-dir"
        )


class RunFolderUnwritable(RuntimeError):
    """The run folder cannot be created or written (a read-only mount, no permission, a file in the way)."""

    def __init__(self, run_dir: Path, err: OSError):
        self.run_dir = Path(run_dir)
        super().__init__(
            f"{self.run_dir}: cannot write the run folder ({err.strerror or err}); use a --run-dir on a writable "
            "disk (results, checkpoints and the manifest are written there)"
        )


@contextmanager
def run_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold the exclusive lock of ``run_dir`` (created if needed) for the block; fail at once if taken.

    Raises:
        RunFolderLocked: another process holds the lock.
        RunFolderUnwritable: the folder cannot be created, or its lock file cannot be opened for writing.
    """
    run_dir = Path(run_dir)
    held = run_dir.resolve()
    if held in _HELD:  # this process holds it already (the CLI locks before it imports the rest)
        yield run_dir / LOCK_FILE
        return
    path = run_dir / LOCK_FILE
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise RunFolderUnwritable(run_dir, err) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            raise RunFolderLocked(run_dir, holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _HELD.add(held)
        try:
            yield path
        finally:
            _HELD.discard(held)
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race with a waiting run)


def holding_run_lock(func: F) -> F:
    """Decorate ``func(cfg, run_dir, ...)`` so that it runs holding ``run_dir``'s lock."""

    @functools.wraps(func)
    def wrapper(cfg, run_dir, *args, **kwargs):
        with run_lock(Path(run_dir).resolve()):
            return func(cfg, run_dir, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
