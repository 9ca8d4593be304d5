"""Checks shared by writes and reads: dtype conversion, shapes against the schema, and values.

Every check raises ``CacheError(path, dataset, msg)``; ``advice`` is appended to the message and says
what to do (on a write: nothing was written; on a read: how to recreate the file).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cache.schema import DATASETS, MASKED_ROWS, MAX_WIDTH, SCAN_BLOCK_BYTES, DatasetSpec
from cache.types import CacheError


def fmt_shape(shape: tuple) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def to_numpy(value, path: Path, name: str) -> np.ndarray:
    """A numpy view of ``value`` (numpy array, CPU/GPU torch tensor, nested list)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor; cache does not import torch
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            value = value.float()
        value = value.numpy()
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as err:
        raise CacheError(path, name, f"cannot be turned into an array ({err}); nothing was written") from None


def coerce_dtype(spec: DatasetSpec, arr: np.ndarray, path: Path) -> np.ndarray:
    """Convert ``arr`` to ``spec.dtype`` where that is safe, else raise ``CacheError``.

    float: any floating dtype -> float32 unless a finite value overflows float32. mask: bool, or integers
    that are all 0/1. index: any integer dtype -> int64.
    """
    if arr.dtype == spec.dtype:
        return arr
    bad = f"has dtype {arr.dtype}; expected {spec.dtype}"
    if spec.kind == "float":
        if not np.issubdtype(arr.dtype, np.floating):
            raise CacheError(path, spec.name, f"{bad} (a floating-point array); nothing was written")
        with np.errstate(invalid="ignore"):
            biggest = np.abs(arr[np.isfinite(arr)]).max(initial=0)
        if biggest > np.finfo(np.float32).max:
            raise CacheError(
                path, spec.name, f"{bad}: values up to {biggest:.3g} overflow float32; nothing was written"
            )
        return arr.astype(np.float32)
    if spec.kind == "mask":
        if np.issubdtype(arr.dtype, np.integer) and np.isin(arr, (0, 1)).all():
            return arr.astype(np.bool_)
        raise CacheError(path, spec.name, f"{bad} (or integers that are all 0 or 1); nothing was written")
    if spec.kind == "index":
        if np.issubdtype(arr.dtype, np.integer):
            if (
                arr.size
                and np.issubdtype(arr.dtype, np.unsignedinteger)
                and arr.max() > np.iinfo(np.int64).max
            ):
                raise CacheError(path, spec.name, f"{bad}: values exceed int64; nothing was written")
            return arr.astype(np.int64)
        raise CacheError(path, spec.name, f"{bad} (an integer array); nothing was written")
    raise AssertionError(f"unknown dataset kind {spec.kind!r}")


def check_dtype(spec: DatasetSpec, dtype: np.dtype, path: Path, advice: str) -> None:
    if np.dtype(dtype) != spec.dtype:
        raise CacheError(path, spec.name, f"has dtype {dtype}; expected {spec.dtype}: {advice}")


def check_shapes(
    kind: str, shapes: dict[str, tuple[int, ...]], sizes: dict[str, int], path: Path, advice: str
) -> dict[str, int]:
    """Check each dataset's shape against the schema; return the sizes of every symbolic dimension.

    ``sizes`` gives the expected ``N`` (users) and, for graph files, ``E`` (undirected corpus edges).
    """
    bound = dict(sizes)
    for spec in DATASETS[kind]:
        shape = tuple(int(s) for s in shapes[spec.name])
        expected = fmt_shape(spec.shape)
        if len(shape) != len(spec.shape):
            raise CacheError(path, spec.name, f"has shape {fmt_shape(shape)}; expected {expected}: {advice}")
        for dim, sym in zip(shape, spec.shape):
            if isinstance(sym, int):
                want = sym
            elif sym == "N":
                want = bound["N"]
            elif sym in ("E", "2E"):
                want = bound["E"] * (2 if sym == "2E" else 1)
            else:  # a free width: bound by its first use, >= 1
                want = bound.setdefault(sym, dim)
                if dim < 1:
                    raise CacheError(
                        path, spec.name, f"has shape {fmt_shape(shape)}: width {sym} is 0: {advice}"
                    )
                if dim > MAX_WIDTH:
                    raise CacheError(
                        path,
                        spec.name,
                        f"has shape {fmt_shape(shape)}: width {sym} is over {MAX_WIDTH}: {advice}",
                    )
            if dim != want:
                what = {
                    "N": f"N, the number of users, is {want}",
                    "E": f"E, the number of undirected edges, is {want}",
                    "2E": f"2E, twice the number of undirected edges, is {want}",
                }.get(sym, f"{sym} is {want}")
                raise CacheError(
                    path, spec.name, f"has shape {fmt_shape(shape)} (schema {expected}) but {what}: {advice}"
                )
    return bound


class ValueScan:
    """What the value checks need to know about one dataset, gathered block by block of rows.

    Fed as a read brings the blocks in (or over an array in memory), so each block is looked at while it
    is in the CPU cache. For floats that only have to be finite, ``finite`` comes from the block's sum,
    one pass: a NaN or inf makes it non-finite, and when an overflow of large finite values does, the
    block's min and max decide. For the rest, ``low``/``high`` are the min and max (NaN-propagating; bool
    masks as bytes, so a byte other than 0/1 shows). ``masked_nonzero`` says whether a row that must be zero
    (``MASKED_ROWS``) is not. On a failure the checks look at the whole array again to say exactly where.
    """

    def __init__(self, spec: DatasetSpec) -> None:
        self.bounds = spec.kind != "float" or spec.unit_interval
        self.finite = True
        self.low = None
        self.high = None
        self.masked_nonzero = False

    def update(self, block: np.ndarray, zero_rows: np.ndarray | None = None) -> None:
        """Fold in ``block`` (rows of the dataset); ``zero_rows``: indices of its rows that must be zero.

        Call under ``np.errstate(invalid="ignore", over="ignore")``: a sum may overflow or meet inf - inf.
        """
        if not block.size:
            return
        if self.bounds:
            values = block.view(np.uint8) if block.dtype == np.bool_ else block
            low, high = values.min(), values.max()
            self.low = low if self.low is None else np.minimum(self.low, low)
            self.high = high if self.high is None else np.maximum(self.high, high)
        elif self.finite and not np.isfinite(np.einsum("i->", block.reshape(-1))):
            self.finite = bool(np.isfinite(block.min()) and np.isfinite(block.max()))
        if zero_rows is not None and zero_rows.size and not self.masked_nonzero:
            self.masked_nonzero = bool(block.take(zero_rows, axis=0).any())


def row_blocks(
    shape: tuple[int, ...], itemsize: int, zero_mask: np.ndarray | None = None
) -> Iterator[tuple[int, int, np.ndarray | None]]:
    """Blocks of whole rows (axis 0) of about ``SCAN_BLOCK_BYTES``: ``(lo, hi, zero_rows)`` for each.

    ``zero_rows`` are the indices, within the block, of the rows where ``zero_mask`` [R] is True (``None``
    without a mask).
    """
    rows = shape[0] if shape else 1
    row_bytes = itemsize * math.prod(shape[1:])
    step = max(1, SCAN_BLOCK_BYTES // max(1, row_bytes))
    starts = np.arange(0, rows, step)
    zero_idx = cuts = None
    if zero_mask is not None:
        zero_idx = np.flatnonzero(zero_mask)
        cuts = np.searchsorted(zero_idx, np.r_[starts, rows])
    for k, lo in enumerate(starts.tolist()):
        hi = min(rows, lo + step)
        yield lo, hi, None if zero_idx is None else zero_idx[cuts[k] : cuts[k + 1]] - lo


def scan_array(spec: DatasetSpec, arr: np.ndarray, zero_mask: np.ndarray | None = None) -> ValueScan:
    """A :class:`ValueScan` of a whole array in memory; ``zero_mask`` [R] marks rows that must be zero."""
    scan = ValueScan(spec)
    flat = arr.reshape(1, -1) if arr.ndim == 0 else arr
    with np.errstate(invalid="ignore", over="ignore"):
        for lo, hi, zero_rows in row_blocks(flat.shape, flat.dtype.itemsize, zero_mask):
            scan.update(flat[lo:hi], zero_rows)
    return scan


def check_values(
    spec: DatasetSpec,
    arr: np.ndarray,
    path: Path,
    num_users: int,
    advice: str,
    scan: ValueScan | None = None,
) -> None:
    """Finiteness and range checks of one dataset's values (``scan``: its bounds, when already known)."""
    if scan is None:
        scan = scan_array(spec, arr)
    low, high = (scan.low, scan.high) if arr.size and scan.bounds else (0, 0)
    if spec.kind == "float":
        # min and max propagate NaN and show inf; a sum shows both in one pass (see ValueScan)
        if not (scan.finite and np.isfinite(low) and np.isfinite(high)):
            bad = np.argwhere(~np.isfinite(arr))
            raise CacheError(
                path,
                spec.name,
                f"has {len(bad)} NaN/inf values (first at index {tuple(int(i) for i in bad[0])}): {advice}",
            )
        if spec.unit_interval and (low < 0 or high > 1):
            raise CacheError(
                path, spec.name, f"values must lie in [0, 1] but span [{low:.6g}, {high:.6g}]: {advice}"
            )
    elif spec.kind == "mask" and high > 1:
        raise CacheError(
            path,
            spec.name,
            f"holds bytes other than 0 and 1 (up to {int(high)}); it is not a bool mask: {advice}",
        )
    elif spec.kind == "index" and arr.size and (low < 0 or high >= num_users):
        raise CacheError(
            path,
            spec.name,
            f"holds user indices in [{low}, {high}] but there are {num_users} users: {advice}",
        )


def check_masked_rows(
    arrays: dict[str, np.ndarray], path: Path, advice: str, scans: dict[str, ValueScan] | None = None
) -> None:
    """Users without a modality (mask False) must have a zero embedding row.

    ``scans``, when given, say per embedding whether any such row is non-zero, so the rows are only
    gathered again to name the first offender.
    """
    for emb_name, mask_name in MASKED_ROWS.items():
        if emb_name not in arrays:
            continue
        if scans is not None and emb_name in scans and not scans[emb_name].masked_nonzero:
            continue
        mask = arrays[mask_name]
        masked_rows = arrays[emb_name][~mask]
        if masked_rows.any():
            nonzero = np.flatnonzero(masked_rows.any(axis=1))
            first_user = int(np.flatnonzero(~mask)[nonzero[0]])
            raise CacheError(
                path,
                emb_name,
                f"{nonzero.size} users with {mask_name} False have a non-zero row (first: user {first_user}); "
                f"users without the modality must have a zero row: {advice}",
            )


def check_symmetric(edge_index: np.ndarray, num_users: int, path: Path, advice: str) -> None:
    """``edge_index`` [2, 2E] must hold both directions of every edge and no self loops."""
    src, dst = edge_index[0], edge_index[1]
    if (src == dst).any():
        k = int(np.flatnonzero(src == dst)[0])
        raise CacheError(path, "edge_index", f"has a self loop at column {k} (user {int(src[k])}): {advice}")
    forward = np.sort(src * num_users + dst)
    backward = np.sort(dst * num_users + src)
    if not np.array_equal(forward, backward):
        k = int(np.flatnonzero(forward != backward)[0])
        v, u = divmod(int(forward[k]), num_users)
        raise CacheError(
            path,
            "edge_index",
            f"is not symmetric: edge {v} -> {u} (or a duplicate of it) has no matching reverse; "
            f"it must hold both directions of every corpus edge: {advice}",
        )
