"""The bytes of contiguous datasets, reached at their file offsets instead of through HDF5's read path.

A dataset written by :mod:`cache.io` is contiguous and uncompressed, its file space allocated when it was
created (see ``cache/schema.py``), so its values are ``nbytes`` raw bytes at ``H5Dget_offset`` -- the
documented way to reach a contiguous dataset's data without the library, e.g. with mmap. A write lets HDF5
write only the metadata and puts the arrays' bytes there itself (one pass, no staging copy); a read maps
them. Anything else (chunked files from before this layout, compact or empty datasets) has no offset here
and is read through h5py.

Mapped arrays rest on the rule that a cache file never changes in place: every write builds a new file and
renames it over the old one (:mod:`cache.atomic`), which leaves the old file's data, and so every array
mapped from it, intact. Changing a cache file in place (e.g. ``h5py.File(path, "r+")``) while arrays from
it are alive would change those arrays, and cutting it short would make touching them fault.
"""

from __future__ import annotations

import mmap
import os

import h5py
import numpy as np

# Datasets of at least this many bytes start on a page boundary in files cache.io writes, so a map of one
# starts on its first byte (other offsets work too; the map then starts on the page before).
ALIGN_THRESHOLD = 64 * 1024
ALIGN_INTERVAL = mmap.ALLOCATIONGRANULARITY


def contiguous_dcpl() -> h5py.h5p.PropDCID:
    """Dataset creation properties: contiguous, space allocated at creation, never filled (we write it)."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.CONTIGUOUS)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    return dcpl


def contiguous_offset(dset: h5py.Dataset) -> int | None:
    """The file offset of ``dset``'s raw bytes when they are one contiguous, allocated run, else ``None``."""
    if dset.size == 0 or dset.id.get_create_plist().get_layout() != h5py.h5d.CONTIGUOUS:
        return None
    if dset.id.get_storage_size() != dset.size * dset.dtype.itemsize:
        return None
    return dset.id.get_offset()


def map_dataset(
    fd: int, offset: int, shape: tuple[int, ...], dtype: np.dtype, *, copy_on_write: bool
) -> np.ndarray | None:
    """An array [shape] over the ``nbytes`` at ``offset`` of the file open as ``fd``.

    ``copy_on_write``: the array is writable and writes stay in this process (``mmap.ACCESS_COPY``);
    otherwise it is read-only. Raises ``EOFError`` when the file ends before the data does; returns
    ``None`` when the file system cannot map files (the caller reads through h5py instead).
    """
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    length = offset - start + count * dtype.itemsize
    if os.fstat(fd).st_size < start + length:
        raise EOFError(f"the file ends before byte {start + length}")
    try:
        mapped = mmap.mmap(
            fd, length, access=mmap.ACCESS_COPY if copy_on_write else mmap.ACCESS_READ, offset=start
        )
    except OSError:
        return None
    return np.frombuffer(mapped, dtype, count, offset=offset - start).reshape(shape)
