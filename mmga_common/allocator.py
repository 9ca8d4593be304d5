"""glibc malloc settings for training on CPU: a heap that keeps freed memory for full-batch training, and a low
mmap threshold for mini-batches.

PyTorch's CPU tensors come from the C library's ``malloc``. Under glibc a block larger than the mmap threshold
(dynamic, at most 32 MiB) gets its own mapping, unmapped when freed, and freed memory at the top of the heap
beyond the trim threshold is returned to the system. Both behaviours cost the two kinds of training differently:

- **Full batch** (:func:`retained_heap`): every step allocates and frees the same large per-edge tensors (at
  10^6 edges, hundreds of MiB each). Each is mapped afresh, so the kernel faults in and zeroes every page again
  at every step: 13 million page faults and about as much system time as compute in
  ``benchmarks/bench_gnn.py``'s layer study. Keeping freed memory in the heap for reuse took a stage-2
  full-batch training step at 10^6 edges to 0.5-0.7x the time (two runs; how much depends on the machine's cost
  of a page fault) for 5% more peak memory, and a PyG ``GCNConv`` peer's step at 10^5 users to 0.6x
  (docs/performance.md, "Stage 2 full batch on CPU"). Stage 2's full batch (``trainer.retain_freed_memory``) and
  the bridge's networks trained end to end (``bridge.evaluation.networks``) use it.
- **Mini-batches** (:func:`limit_allocator_caching`): every batch has a different size, and blocks of sizes
  the heap keeps grow the resident set without levelling off; a fixed 1 MiB threshold maps those and returns
  them on free. Stage 2's mini-batch paths use it.

The settings are per process (glibc's ``mallopt``); off glibc (macOS, musl) nothing is changed. This module
imports nothing heavy and no project package.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# glibc's mallopt parameters (malloc.h) and its defaults (malloc.c).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65_536
_INT_MAX = 2**31 - 1  # mallopt takes an int
_depth = [0]  # open retained_heap blocks in this process


def _libc() -> ctypes.CDLL | None:
    """The C library when it is glibc on Linux, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt  # noqa: B018  (musl has no mallopt)
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def _mallopt(libc: ctypes.CDLL, param: int, value: int) -> bool:
    return bool(libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)))


def limit_allocator_caching(threshold_bytes: int = 1 << 20) -> bool:
    """Serve allocations of ``threshold_bytes`` and more with their own mapping, returned to the system when
    freed (glibc's ``mallopt(M_MMAP_THRESHOLD)``, the same as ``MALLOC_MMAP_THRESHOLD_`` set before start).

    glibc raises its threshold each time a mapped block is freed (up to 32 MiB), after which blocks of the
    varying sizes of mini-batches are carved from the heap and kept there; a fixed threshold also turns
    that adjustment off. The setting is per process and idempotent. Returns whether it was applied (False
    off glibc, e.g. macOS or musl, where nothing is changed).
    """
    libc = _libc()
    return libc is not None and _mallopt(libc, _M_MMAP_THRESHOLD, threshold_bytes)


@contextmanager
def retained_heap(enabled: bool = True) -> Iterator[bool]:
    """Within the block, serve every allocation from the heap and keep freed memory there (up to 2 GiB free at
    its top) for the next one, instead of mapping large blocks and returning them on free; yields whether
    that was applied (False when not ``enabled`` or off glibc).

    On exit glibc's default limits are set again (``M_MMAP_MAX`` 65,536, ``M_TRIM_THRESHOLD`` 128 KiB) and
    ``malloc_trim(0)`` returns the free memory to the system. glibc's dynamic mmap threshold stays off after
    the block (setting the trim threshold turns it off for the process), so blocks above the threshold it had
    reached are mapped, as :func:`limit_allocator_caching` does on purpose. A block inside another changes
    nothing: the outermost one applies the setting and undoes it (per process; not for concurrent threads).
    """
    libc = _libc() if enabled else None
    if libc is not None and _depth[0] > 0:  # nested: the outermost block applied it and will undo it
        yield True
        return
    applied = (
        libc is not None and _mallopt(libc, _M_MMAP_MAX, 0) and _mallopt(libc, _M_TRIM_THRESHOLD, _INT_MAX)
    )
    _depth[0] += libc is not None
    try:
        yield applied
    finally:
        if libc is not None:
            _depth[0] -= 1
            _mallopt(libc, _M_MMAP_MAX, _DEFAULT_MMAP_MAX)
            _mallopt(libc, _M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
            libc.malloc_trim(ctypes.c_size_t(0))
