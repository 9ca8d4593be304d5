"""Row-subset reads of one per-user dataset, safe in DataLoader workers."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from cache.io import check_header, info_from_h5, open_h5, rerun_advice
from cache.raw import contiguous_offset, map_dataset
from cache.schema import dataset_spec
from cache.types import CacheError
from cache.validate import check_values


class LazyEmbeddings:
    """Lazy rows of one dataset of a cache file, e.g. ``LazyEmbeddings(encoder_file(d, 0), "user_text_emb")``.

    ``__init__`` checks the file's header (schema, kind, dtypes, shapes, and the fingerprint / user count /
    round / the corpus's user ids in order when given) with a short-lived open and keeps no handle. The file is opened on the first
    ``__getitem__`` in each process, so the object pickles and works inside DataLoader workers (forked or
    spawned). Rows read are checked for finiteness; a full-file finiteness check is ``read_*``'s job.

    Indexing: ``lazy[i]`` -> [D], ``lazy[a:b]`` -> [b - a, D], ``lazy[rows]`` (ints in any order, repeats
    allowed, or a bool mask [N]) -> [len(rows), D]; always a new array. A contiguous dataset (every file
    cache.io writes) is memory-mapped read-only and rows are copied out of the map; in a chunked file
    (written before the contiguous layout) only whole chunks that hold requested rows are read.
    """

    def __init__(
        self,
        path: str | Path,
        dataset: str,
        *,
        fingerprint: str | None = None,
        num_users: int | None = None,
        round_idx: int | None = None,
        user_ids: Sequence[str] | None = None,
    ):
        self.path = Path(path)
        self.dataset = dataset
        with open_h5(self.path) as h5:
            kind = info_from_h5(h5, self.path).kind  # schema version and kind first
            try:
                self._spec = dataset_spec(kind, dataset)
            except KeyError as err:
                raise CacheError(self.path, dataset, str(err.args[0])) from None
            if self._spec.row_axis != 0:
                raise CacheError(
                    self.path, dataset, "is not a per-row dataset; read it with read_graph_outputs"
                )
            info = check_header(
                h5,
                self.path,
                kind,
                round_idx=round_idx,
                fingerprint=fingerprint,
                num_users=num_users,
                user_ids=user_ids,
            )
            dset = h5[dataset]
            self.shape: tuple[int, ...] = dset.shape
            self.dtype: np.dtype = dset.dtype
            self._offset = contiguous_offset(dset)
            self._chunk_rows = dset.chunks[0] if dset.chunks else max(1, dset.shape[0])
        self._identity = self._stat_identity()
        self._advice = rerun_advice(kind, info.round)
        self._num_users = info.num_users
        self._file: h5py.File | None = None
        self._mapped: np.ndarray | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def _stat_identity(self) -> tuple[int, int, int]:
        stat = self.path.stat()
        return stat.st_ino, stat.st_size, stat.st_mtime_ns

    def _open(self) -> None:
        """Open (and, for a contiguous dataset, map) the file in this process, once."""
        if self._pid == os.getpid() and (self._file is not None or self._mapped is not None):
            return
        # A handle or map inherited through fork is dropped, not used: HDF5 state is per process.
        self._file, self._mapped = None, None
        replaced = CacheError(
            self.path,
            None,
            "was replaced or removed after this LazyEmbeddings was made (checked then); make a new one",
        )
        if not self.path.is_file() or self._stat_identity() != self._identity:
            raise replaced
        if self._offset is not None:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                stat = os.fstat(fd)  # the file actually mapped is the one checked
                if (stat.st_ino, stat.st_size, stat.st_mtime_ns) != self._identity:
                    raise replaced
                try:
                    self._mapped = map_dataset(fd, self._offset, self.shape, self.dtype, copy_on_write=False)
                except EOFError as err:
                    raise CacheError(
                        self.path, self.dataset, f"lies past the end of the file ({err})"
                    ) from None
            finally:
                os.close(fd)
        if self._mapped is None:
            self._file = open_h5(self.path)
        self._pid = os.getpid()

    def _dset(self) -> h5py.Dataset:
        self._open()
        assert self._file is not None
        return self._file[self.dataset]

    def _rows(self, rows) -> np.ndarray:
        idx = np.asarray(rows)
        n = len(self)
        if idx.dtype == np.bool_:
            if idx.shape != (n,):
                raise IndexError(f"bool mask has shape {idx.shape}; expected ({n},)")
            return np.flatnonzero(idx)
        if not np.issubdtype(idx.dtype, np.integer) or idx.ndim != 1:
            raise IndexError(
                f"rows must be an int, a slice, a 1-d int array or a bool mask, got {idx.dtype} {idx.shape}"
            )
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        return np.where(idx < 0, idx + n, idx).astype(np.int64)

    def _gather(self, idx: np.ndarray) -> np.ndarray:
        self._open()
        if self._mapped is not None:
            return self._mapped.take(idx, axis=0)
        dset = self._dset()
        uniq, inverse = np.unique(idx, return_inverse=True)
        out = np.empty((len(uniq), *self.shape[1:]), dtype=self.dtype)
        if not len(uniq):
            return out
        # One read per chunk touched, from its first to its last requested row.
        chunk_id = uniq // self._chunk_rows
        starts = np.flatnonzero(np.r_[True, chunk_id[1:] != chunk_id[:-1]])
        ends = np.r_[starts[1:], len(uniq)]
        for lo_pos, hi_pos in zip(starts, ends):
            lo, hi = int(uniq[lo_pos]), int(uniq[hi_pos - 1]) + 1
            out[lo_pos:hi_pos] = dset[lo:hi][uniq[lo_pos:hi_pos] - lo]
        return out[inverse]

    def __getitem__(self, rows) -> np.ndarray:
        if isinstance(rows, (int, np.integer)):
            out = self._gather(self._rows([rows]))[0]
        elif isinstance(rows, slice) and rows.step in (None, 1):
            self._open()
            out = self._mapped[rows].copy() if self._mapped is not None else self._dset()[rows]
        elif isinstance(rows, slice):
            out = self._gather(np.arange(*rows.indices(len(self))))
        else:
            out = self._gather(self._rows(rows))
        check_values(self._spec, out, self.path, self._num_users, self._advice)
        return out

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None
        self._mapped = None  # the map closes when no array taken from it is left

    def __enter__(self) -> LazyEmbeddings:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_mapped"] = None
        state["_pid"] = None
        return state

    def __repr__(self) -> str:
        return f"LazyEmbeddings({str(self.path)!r}, {self.dataset!r}, shape={self.shape}, dtype={self.dtype})"
