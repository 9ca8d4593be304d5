"""Write and read cache files: atomic writes, fully checked reads.

A write goes to ``<final name>.tmp-<pid>-<random>`` in the same folder, is fsynced, then ``os.replace``d
onto the final name (and the folder fsynced), so a crash leaves either the old file or no file under the
final name, never a half-written one. A failed write removes its temporary file.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

from cache.atomic import atomic_file, write_at
from cache.raw import ALIGN_INTERVAL, ALIGN_THRESHOLD, contiguous_dcpl, contiguous_offset, map_dataset
from cache.schema import (
    ATTR_CREATED,
    ATTR_FINGERPRINT,
    ATTR_KIND,
    ATTR_MODEL,
    ATTR_NUM_EDGES,
    ATTR_NUM_USERS,
    ATTR_PRODUCER,
    ATTR_ROUND,
    ATTR_RUN_DIR,
    ATTR_SCHEMA_VERSION,
    DATASETS,
    KIND_ENCODERS,
    KIND_GRAPH,
    MASKED_ROWS,
    PRODUCER_COMMAND,
    READABLE_SCHEMA_VERSIONS,
    REQUIRED_ATTRS,
    SCHEMA_VERSION,
    STAGE_NAME,
    USER_IDS,
    USER_IDS_DOC,
    cache_file,
)
from cache.types import CacheError, CacheInfo, EncoderEmbeddings, GraphOutputs
from cache.validate import (
    ValueScan,
    check_dtype,
    check_masked_rows,
    check_shapes,
    check_symmetric,
    check_values,
    coerce_dtype,
    scan_array,
    to_numpy,
)

WRITE_ADVICE = "nothing was written"


def rerun_advice(kind: str, round_idx: int | str) -> str:
    """What to do about a bad or foreign cache file of ``kind``."""
    return (
        f"use a new --cache folder, or rerun {STAGE_NAME[kind]} for round {round_idx} "
        f"(`{PRODUCER_COMMAND[kind]}`) to overwrite this file"
    )


def _json_default(obj):
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def producer_json(producer, path: Path) -> str:
    """The resolved config (a dict or a dataclass) as a JSON string with sorted keys."""
    try:
        return json.dumps(producer, sort_keys=True, default=_json_default, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise CacheError(
            path, None, f"the producer config cannot be stored as JSON ({err}); {WRITE_ADVICE}"
        ) from None


# Room for the HDF5 metadata beside the data in the free-space check (a few KiB in practice).
METADATA_BYTES = 1 << 20


def write_h5(
    path: Path, kind: str, attrs: dict, arrays: dict[str, np.ndarray], user_ids: np.ndarray | None = None
) -> None:
    """Write a checked payload as the cache file ``path`` through :func:`cache.atomic.atomic_file`.

    HDF5 writes only the metadata (attributes, dataset headers) into the temporary file; the datasets are
    created contiguous with their space allocated (large ones page-aligned), and their bytes are then
    written at their offsets straight from the arrays (:mod:`cache.raw`). Reopening the file before it is
    published checks that HDF5 finished its part and that the data sits where HDF5 will read it.
    ``user_ids`` (object array of str [N]) is written through HDF5 as variable-length UTF-8 strings.
    """
    size = sum(arr.nbytes for arr in arrays.values()) + METADATA_BYTES
    if user_ids is not None:  # each string on HDF5's global heap, plus a 16-byte reference per row
        size += sum(len(uid.encode("utf-8")) + 32 for uid in user_ids)
    with atomic_file(path, size) as tmp:
        offsets = {}
        with h5py.File(
            tmp, "w-", alignment_threshold=ALIGN_THRESHOLD, alignment_interval=ALIGN_INTERVAL
        ) as h5:
            h5.attrs.update(attrs)
            for spec in DATASETS[kind]:
                arr = arrays[spec.name]
                dset = h5.create_dataset(spec.name, shape=arr.shape, dtype=arr.dtype, dcpl=contiguous_dcpl())
                dset.attrs["doc"] = spec.doc
                offsets[spec.name] = dset.id.get_offset()
            if user_ids is not None:
                ids = h5.create_dataset(USER_IDS, data=user_ids, dtype=h5py.string_dtype("utf-8"))
                ids.attrs["doc"] = USER_IDS_DOC
        fd = os.open(tmp, os.O_WRONLY)
        try:
            for name, offset in offsets.items():
                if arrays[name].nbytes:
                    write_at(fd, offset, memoryview(arrays[name].reshape(-1).view(np.uint8)))
        finally:
            os.close(fd)
        with h5py.File(tmp, "r", locking=False) as h5:
            placed = {name: contiguous_offset(h5[name]) for name in offsets}
        expected = {name: off if arrays[name].nbytes else None for name, off in offsets.items()}
        if placed != expected:
            raise CacheError(
                path, None, f"HDF5 placed the datasets at {placed}, not {expected}; {WRITE_ADVICE}"
            )


def _prepare(kind: str, payload, path: Path) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Convert and check the payload's arrays before anything touches the disk."""
    arrays = {}
    for spec in DATASETS[kind]:
        arr = to_numpy(getattr(payload, spec.name), path, spec.name)
        arrays[spec.name] = np.ascontiguousarray(coerce_dtype(spec, arr, path))
    first = DATASETS[kind][0]
    if arrays[first.name].ndim < 1:
        raise CacheError(path, first.name, f"is a scalar; expected shape [N, ...]: {WRITE_ADVICE}")
    sizes = {"N": arrays[first.name].shape[0]}
    if kind == KIND_GRAPH:
        if arrays["edge_weight"].ndim != 1:
            raise CacheError(
                path, "edge_weight", f"has shape {arrays['edge_weight'].shape}; expected [E]: {WRITE_ADVICE}"
            )
        sizes["E"] = arrays["edge_weight"].shape[0]
    sizes = check_shapes(kind, {k: a.shape for k, a in arrays.items()}, sizes, path, WRITE_ADVICE)
    check_all_values(kind, arrays, path, sizes["N"], WRITE_ADVICE)
    return arrays, sizes


def check_all_values(
    kind: str,
    arrays: dict[str, np.ndarray],
    path: Path,
    num_users: int,
    advice: str,
    scans: dict[str, ValueScan] | None = None,
) -> None:
    """Every value check of a payload; ``scans`` holds datasets' bounds already gathered (by a read)."""
    scans = dict(scans or {})
    for spec in DATASETS[kind]:
        if spec.name not in scans:
            zero_mask = ~arrays[MASKED_ROWS[spec.name]] if spec.name in MASKED_ROWS else None
            scans[spec.name] = scan_array(spec, arrays[spec.name], zero_mask)
        check_values(spec, arrays[spec.name], path, num_users, advice, scans[spec.name])
    if kind == KIND_ENCODERS:
        check_masked_rows(arrays, path, advice, scans)
    else:
        check_symmetric(arrays["edge_index"], num_users, path, advice)


def _user_id_array(user_ids: Sequence[str] | None, num_users: int, path: Path) -> np.ndarray | None:
    """``user_ids`` as an object array of str [N], checked (one str per row); ``None`` stays ``None``."""
    if user_ids is None:
        return None
    ids = np.asarray(list(user_ids), dtype=object)
    if ids.shape != (num_users,):
        raise CacheError(path, USER_IDS, f"has {ids.size} ids for {num_users} rows: {WRITE_ADVICE}")
    bad = [i for i, uid in enumerate(ids) if not isinstance(uid, str)]
    if bad:
        raise CacheError(path, USER_IDS, f"row {bad[0]} is {ids[bad[0]]!r}, not a str: {WRITE_ADVICE}")
    return ids


def _relative_run_dir(run_dir: str | Path, path: Path) -> str:
    """``run_dir`` as stored: relative to the cache file's folder, so that a run folder (or a parent of both) moved
    or copied whole still owns its files; absolute where no relative path exists (another drive)."""
    try:
        return os.path.relpath(os.path.abspath(run_dir), os.path.abspath(path.parent))
    except ValueError:
        return os.path.abspath(run_dir)


def _resolved_run_dir(stored: str, path: Path) -> str:
    """The absolute folder a stored ``run_dir`` names, seen from where the file ``path`` is now."""
    return os.path.normpath(os.path.join(os.path.abspath(path.parent), stored))


def _write(
    kind: str,
    cache_dir,
    round_idx: int,
    payload,
    fingerprint: str,
    producer,
    model: str,
    user_ids: Sequence[str] | None,
    run_dir: str | Path | None,
) -> Path:
    path = cache_file(cache_dir, round_idx, kind)
    if not isinstance(fingerprint, str) or not fingerprint:
        raise CacheError(
            path, None, f"fingerprint must be the corpus fingerprint (a non-empty str), got {fingerprint!r}"
        )
    arrays, sizes = _prepare(kind, payload, path)
    ids = _user_id_array(user_ids, sizes["N"], path)
    attrs = {
        ATTR_SCHEMA_VERSION: SCHEMA_VERSION,
        ATTR_KIND: kind,
        ATTR_ROUND: int(round_idx),
        ATTR_FINGERPRINT: fingerprint,
        ATTR_PRODUCER: producer_json(producer, path),
        ATTR_MODEL: str(model),
        ATTR_CREATED: datetime.now(timezone.utc).isoformat(timespec="seconds"),
        ATTR_NUM_USERS: sizes["N"],
    }
    if kind == KIND_GRAPH:
        attrs[ATTR_NUM_EDGES] = sizes["E"]
    if run_dir is not None:
        attrs[ATTR_RUN_DIR] = _relative_run_dir(run_dir, path)
    write_h5(path, kind, attrs, arrays, ids)
    return path


def write_encoder_embeddings(
    cache_dir: str | Path,
    round_idx: int,
    emb: EncoderEmbeddings,
    *,
    fingerprint: str,
    producer,
    model: str = "",
    user_ids: Sequence[str] | None = None,
    run_dir: str | Path | None = None,
) -> Path:
    """Check ``emb`` and write it atomically to ``<cache_dir>/round_<r>/encoders.h5``; return that path.

    ``producer`` is the resolved config (dict or dataclass) stored as JSON; ``model`` a short description
    (e.g. "open_clip ViT-B-32 + MiniLM-L6"). Floating arrays are converted to float32, 0/1 integer masks
    to bool; anything else that does not fit the schema raises ``CacheError`` before the disk is touched.
    ``user_ids``: the corpus's user ids [N] in row order (``corpus.user_ids``), stored so that a read can check
    the rows still follow the corpus; ``run_dir``: the writing run's output folder, which ``check_owner`` compares.
    """
    return _write(KIND_ENCODERS, cache_dir, round_idx, emb, fingerprint, producer, model, user_ids, run_dir)


def write_graph_outputs(
    cache_dir: str | Path,
    round_idx: int,
    graph: GraphOutputs,
    *,
    fingerprint: str,
    producer,
    model: str = "",
    user_ids: Sequence[str] | None = None,
    run_dir: str | Path | None = None,
) -> Path:
    """Check ``graph`` and write it atomically to ``<cache_dir>/round_<r>/graph.h5``; return that path.

    Besides shapes and finiteness, checks that ``edge_index`` holds user indices in [0, N), both directions
    of every edge and no self loops, and that ``edge_weight`` lies in [0, 1]. ``user_ids`` and ``run_dir`` as
    in ``write_encoder_embeddings``.
    """
    return _write(KIND_GRAPH, cache_dir, round_idx, graph, fingerprint, producer, model, user_ids, run_dir)


def open_h5(path: str | Path, kind: str | None = None, round_idx: int | str = "r") -> h5py.File:
    """Open ``path`` read-only, turning a missing or unreadable file into ``CacheError``.

    ``kind`` and ``round_idx``, when known, make the error say which stage to run.
    """
    path = Path(path)
    if not path.is_file():
        hint = (
            f": run {STAGE_NAME[kind]} for round {round_idx} first (`{PRODUCER_COMMAND[kind]}`)"
            if kind
            else ""
        )
        raise CacheError(path, None, f"no such cache file{hint}")
    try:
        # Locking off: cache files never change in place (writes replace them), and HDF5's locks fail on
        # some network filesystems and across forked DataLoader workers.
        return h5py.File(path, "r", locking=False)
    except OSError as err:
        advice = rerun_advice(kind, round_idx) if kind else "delete it and rerun the stage that wrote it"
        raise CacheError(
            path, None, f"is not a readable HDF5 file ({err}); it is damaged: {advice}"
        ) from None


def _attr(attrs, name: str, want: type, path: Path):
    """Attribute ``name`` as ``want`` (int or str), or ``CacheError`` when it has another type."""
    value = attrs[name]
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if want is int:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise CacheError(path, None, f"attribute {name!r} is {value!r}, not an integer: {MALFORMED}")
        return int(value)
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise CacheError(path, None, f"attribute {name!r} is not UTF-8 text: {MALFORMED}") from None
    if not isinstance(value, str):
        raise CacheError(path, None, f"attribute {name!r} is {value!r}, not a string: {MALFORMED}")
    return value


MALFORMED = "it was not written by cache.io (damaged or crafted): delete it and rerun the stage that wrote it"


def info_from_h5(h5: h5py.File, path: Path) -> CacheInfo:
    try:
        return _info_from_h5(h5, path)
    except CacheError:
        raise
    except Exception as err:  # noqa: BLE001 - any other failure on a crafted file is "malformed"
        raise CacheError(
            path, None, f"has malformed attributes ({type(err).__name__}: {err}): {MALFORMED}"
        ) from None


def _info_from_h5(h5: h5py.File, path: Path) -> CacheInfo:
    attrs = h5.attrs
    if ATTR_SCHEMA_VERSION not in attrs:
        raise CacheError(path, None, "has no schema_version attribute: it is not an MMGA cache file")
    version = _attr(attrs, ATTR_SCHEMA_VERSION, int, path)
    kind = _attr(attrs, ATTR_KIND, str, path) if ATTR_KIND in attrs else ""
    if version not in READABLE_SCHEMA_VERSIONS:
        round_hint = attrs.get(ATTR_ROUND, "r")
        advice = rerun_advice(kind, round_hint) if kind in DATASETS else "regenerate it"
        readable = " or ".join(str(v) for v in READABLE_SCHEMA_VERSIONS)
        raise CacheError(
            path,
            None,
            f"has cache schema_version {version} but this code reads schema_version {readable}: {advice}",
        )
    missing = [a for a in REQUIRED_ATTRS if a not in attrs]
    if missing or kind not in DATASETS:
        what = f"lacks attributes {missing}" if missing else f"has unknown kind {kind!r}"
        raise CacheError(path, None, f"{what}; it was not written by cache.io: delete it and rerun the stage")
    try:
        producer = json.loads(_attr(attrs, ATTR_PRODUCER, str, path))
    except ValueError as err:
        raise CacheError(
            path, None, f"attribute 'producer' is not valid JSON ({err}): {rerun_advice(kind, 'r')}"
        ) from None
    if not isinstance(producer, dict):
        raise CacheError(path, None, f"attribute 'producer' is not a JSON object: {MALFORMED}")
    num_users = _attr(attrs, ATTR_NUM_USERS, int, path)
    num_edges = _attr(attrs, ATTR_NUM_EDGES, int, path) if ATTR_NUM_EDGES in attrs else None
    if num_users < 0 or (num_edges is not None and num_edges < 0):
        raise CacheError(path, None, f"attribute num_users / num_edges is negative: {MALFORMED}")
    return CacheInfo(
        path=path,
        kind=kind,
        schema_version=version,
        round=_attr(attrs, ATTR_ROUND, int, path),
        corpus_fingerprint=_attr(attrs, ATTR_FINGERPRINT, str, path),
        producer=producer,
        model=_attr(attrs, ATTR_MODEL, str, path),
        created=_attr(attrs, ATTR_CREATED, str, path),
        num_users=num_users,
        num_edges=num_edges,
        run_dir=_resolved_run_dir(_attr(attrs, ATTR_RUN_DIR, str, path), path)
        if ATTR_RUN_DIR in attrs
        else None,
        has_user_ids=USER_IDS in h5,
    )


def check_members(h5: h5py.File, path: Path, kind: str, advice: str) -> None:
    """The file holds exactly the schema's datasets, each stored inside this file.

    Refused: any member that is not a hard link (soft, external or dangling links), any extra member, a
    dataset with external raw storage or a virtual dataset (both read other files), a filtered dataset, and
    a dtype other than the schema's.
    """
    wanted = {spec.name for spec in DATASETS[kind]} | {USER_IDS}
    for name in h5:
        link = h5.get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            raise CacheError(
                path,
                name,
                f"is an external link to {link.filename}:{link.path}; a cache file must hold "
                f"its own data (refusing to follow it): {MALFORMED}",
            )
        if not isinstance(link, h5py.HardLink):
            raise CacheError(path, name, f"is a {type(link).__name__} (refusing to follow it): {MALFORMED}")
        if name not in wanted:
            raise CacheError(path, name, f"is not part of a {kind!r} cache file: {MALFORMED}")
    for spec in DATASETS[kind]:
        if spec.name not in h5:
            raise CacheError(path, spec.name, f"is missing: {advice}")
        dset = h5[spec.name]
        if not isinstance(dset, h5py.Dataset):
            raise CacheError(path, spec.name, f"is a group, not a dataset: {MALFORMED}")
        if dset.is_virtual:
            raise CacheError(path, spec.name, f"is a virtual dataset (it reads other files): {MALFORMED}")
        if dset.external:
            raise CacheError(
                path, spec.name, f"uses external raw storage {dset.external[0][0]!r}: {MALFORMED}"
            )
        if dset.compression is not None or dset.id.get_create_plist().get_nfilters():
            raise CacheError(path, spec.name, f"is compressed or filtered (cache.io never is): {MALFORMED}")
        check_dtype(spec, dset.dtype, path, advice)
    if USER_IDS in h5:
        ids = h5[USER_IDS]
        string = h5py.check_string_dtype(ids.dtype) if isinstance(ids, h5py.Dataset) else None
        if string is None or string.length is not None or ids.is_virtual or ids.external:
            raise CacheError(
                path, USER_IDS, f"is not a variable-length string dataset stored here: {MALFORMED}"
            )


def check_user_ids(
    h5: h5py.File, path: Path, num_users: int, user_ids: Sequence[str] | None, advice: str
) -> None:
    """The ``user_ids`` dataset, when the file has one: shape [N], and, when ``user_ids`` (the corpus's, in its
    order) is given, the same ids in the same order. Files without it (schema 1) are not checked."""
    if USER_IDS not in h5:
        return
    dset = h5[USER_IDS]
    if dset.shape != (num_users,):
        raise CacheError(path, USER_IDS, f"has shape {list(dset.shape)}; expected [{num_users}]: {advice}")
    if user_ids is None:
        return
    try:
        stored = dset.asstr()[()]
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CacheError(path, USER_IDS, f"cannot be read as UTF-8 text ({err}): {MALFORMED}") from None
    expected = np.asarray(list(user_ids), dtype=object)
    if expected.shape != stored.shape:
        raise CacheError(
            path, USER_IDS, f"holds {stored.size} ids but the corpus has {expected.size}: {advice}"
        )
    differ = np.flatnonzero(stored != expected)
    if differ.size:
        row = int(differ[0])
        raise CacheError(
            path,
            USER_IDS,
            f"row {row} holds user {stored[row]!r} but the corpus's row {row} is {expected[row]!r} "
            f"({differ.size} rows differ: the corpus's users changed or were reordered): {advice}",
        )


def check_storage(h5: h5py.File, path: Path, kind: str, advice: str) -> None:
    """Each dataset stores all the data its shape declares (cache.io writes every byte, uncompressed)."""
    for spec in DATASETS[kind]:
        dset = h5[spec.name]
        declared = int(np.prod(dset.shape, dtype=np.float64) * dset.dtype.itemsize)
        stored = dset.id.get_storage_size()
        if stored < declared:
            raise CacheError(
                path,
                spec.name,
                f"declares shape {list(dset.shape)} ({declared} bytes) but the file stores "
                f"only {stored} bytes of it (truncated or crafted): {advice}",
            )


def read_cache_info(path: str | Path) -> CacheInfo:
    """The attributes of one cache file (schema version checked; fingerprint and data not)."""
    with open_h5(path) as h5:
        return info_from_h5(h5, Path(path))


def read_producer(path: str | Path) -> dict:
    """The resolved config that wrote the cache file at ``path``, as a dict."""
    return read_cache_info(path).producer


def check_owner(
    path: str | Path, fingerprint: str, run_dir: str | Path | None = None, force: bool = False
) -> None:
    """Refuse, before any work, a cache file at ``path`` that was made for another corpus, or by another run: a
    stage about to write ``path`` (or to read the round it belongs to) calls this with its corpus's fingerprint
    and, when it will write ``path``, its output folder ``run_dir``. No file, or a damaged one (the stage's write
    replaces it): nothing to refuse. Raises ``CacheError`` naming both fingerprints, or both runs.

    "Another run" is a stage run with another output folder (checkpoints, logs, config): the file's ``run_dir``
    attribute (stored relative to the file's folder, so it survives moving or copying a run folder whole) names
    another folder than ``run_dir``. Overwriting it would leave that run's checkpoint without its cache file.
    A rerun into the same folder (a resume, the bridge rerunning a round) owns the file. ``force`` lets a run
    overwrite another run's file; a file without ``run_dir`` (schema 1) is not refused. Another corpus's file is
    refused even with ``force``: its folder holds that corpus's other rounds."""
    path = Path(path)
    if not path.exists():
        return
    try:
        info = read_cache_info(path)
    except CacheError:
        return
    if info.corpus_fingerprint != fingerprint:
        raise CacheError(
            path,
            None,
            f"belongs to corpus fingerprint {info.corpus_fingerprint}, not to this corpus ({fingerprint}): "
            "use another --cache folder for this corpus",
        )
    if run_dir is None or force or info.run_dir is None:
        return
    if os.path.abspath(run_dir) != info.run_dir:
        raise CacheError(
            path,
            None,
            f"was written by another run (output folder {info.run_dir}, {info.created}), not by this one "
            f"({os.path.abspath(run_dir)}): pass --force to overwrite it, or use another --cache folder",
        )


def check_header(
    h5: h5py.File,
    path: Path,
    kind: str,
    *,
    round_idx: int | None,
    fingerprint: str | None,
    num_users: int | None,
    num_edges: int | None = None,
    user_ids: Sequence[str] | None = None,
) -> CacheInfo:
    """Check attributes, dataset presence, dtypes and shapes (no data read but the ``user_ids`` when given and
    stored). ``None`` skips a check."""
    info = info_from_h5(h5, path)
    advice = rerun_advice(kind, info.round if round_idx is None else round_idx)
    if info.kind != kind:
        raise CacheError(path, None, f"is a {info.kind!r} cache file, expected {kind!r}: {advice}")
    if round_idx is not None and info.round != round_idx:
        raise CacheError(
            path,
            None,
            f"says it holds round {info.round} but was read as round {round_idx} (moved by hand?): {advice}",
        )
    if fingerprint is not None and info.corpus_fingerprint != fingerprint:
        raise CacheError(
            path,
            None,
            f"cache belongs to corpus fingerprint {info.corpus_fingerprint} but the corpus is {fingerprint}: {advice}",
        )
    sizes = {"N": info.num_users if num_users is None else num_users}
    if kind == KIND_GRAPH:
        sizes["E"] = info.num_edges if num_edges is None else num_edges
        if sizes["E"] is None:
            raise CacheError(path, None, f"a graph file without attribute 'num_edges': {MALFORMED}")
    try:
        check_members(h5, path, kind, advice)
        # shapes against the corpus (num_users / num_edges) before any data is read
        check_shapes(kind, {s.name: h5[s.name].shape for s in DATASETS[kind]}, sizes, path, advice)
        check_storage(h5, path, kind, advice)
        check_user_ids(h5, path, sizes["N"], user_ids, advice)
    except CacheError:
        raise
    except Exception as err:  # noqa: BLE001 - h5py raises KeyError/OSError/TypeError on crafted files
        raise CacheError(path, None, f"is malformed ({type(err).__name__}: {err}): {MALFORMED}") from None
    return info


def read_datasets(h5: h5py.File, path: Path, kind: str) -> tuple[dict[str, np.ndarray], dict[str, ValueScan]]:
    """Every dataset of a header-checked file, as arrays, and the scans of their values for the checks.

    Contiguous datasets are mapped copy-on-write from HDF5's own open file (:mod:`cache.raw`): no copy is
    made, the arrays are writable, and writes to them stay in memory. The scan then brings every byte in, a
    block of rows at a time. Others (chunked files from before the contiguous layout, empty datasets) are
    read through h5py. HDF5 read errors and data past the end of the file become ``CacheError``.
    """
    arrays: dict[str, np.ndarray] = {}
    scans: dict[str, ValueScan] = {}
    fd = h5.id.get_vfd_handle()
    # masks first, so an embedding's rows that must be zero are known when it is scanned
    for spec in sorted(DATASETS[kind], key=lambda s: s.name in MASKED_ROWS):
        dset = h5[spec.name]
        try:
            offset = contiguous_offset(dset)
            arr = None
            if offset is not None:
                arr = map_dataset(fd, offset, dset.shape, dset.dtype, copy_on_write=True)
            if arr is None:
                arr = dset[()]
        except EOFError as err:
            raise CacheError(
                path, spec.name, f"lies past the end of the file ({err}; truncated or crafted): {MALFORMED}"
            ) from None
        except (OSError, RuntimeError, ValueError) as err:
            raise CacheError(path, spec.name, f"cannot be read ({err}): {MALFORMED}") from None
        mask = arrays.get(MASKED_ROWS.get(spec.name, ""))
        arrays[spec.name] = arr
        scans[spec.name] = scan_array(spec, arr, None if mask is None else ~mask)
    return arrays, scans


def _read(
    kind: str,
    cache_dir,
    round_idx: int,
    fingerprint: str,
    num_users: int,
    num_edges: int | None,
    user_ids: Sequence[str] | None,
):
    path = cache_file(cache_dir, round_idx, kind)
    with open_h5(path, kind, round_idx) as h5:
        check_header(
            h5,
            path,
            kind,
            round_idx=round_idx,
            fingerprint=fingerprint,
            num_users=num_users,
            num_edges=num_edges,
            user_ids=user_ids,
        )
        arrays, scans = read_datasets(h5, path, kind)
    check_all_values(kind, arrays, path, num_users, rerun_advice(kind, round_idx), scans)
    return {spec.name: arrays[spec.name] for spec in DATASETS[kind]}


def read_encoder_embeddings(
    cache_dir: str | Path,
    round_idx: int,
    *,
    fingerprint: str,
    num_users: int,
    user_ids: Sequence[str] | None = None,
) -> EncoderEmbeddings:
    """Read and fully check ``<cache_dir>/round_<r>/encoders.h5``; raise ``CacheError`` saying what to do.

    ``user_ids``: the corpus's ids in its order; when given, a file that stores ids must hold the same ones in
    the same order (a file without them, schema 1, is read as before)."""
    return EncoderEmbeddings(
        **_read(KIND_ENCODERS, cache_dir, round_idx, fingerprint, num_users, None, user_ids)
    )


def read_graph_outputs(
    cache_dir: str | Path,
    round_idx: int,
    *,
    fingerprint: str,
    num_users: int,
    num_edges: int,
    user_ids: Sequence[str] | None = None,
) -> GraphOutputs:
    """Read and fully check ``<cache_dir>/round_<r>/graph.h5`` (``num_edges`` = undirected corpus edges E);
    ``user_ids`` as in ``read_encoder_embeddings``."""
    return GraphOutputs(
        **_read(KIND_GRAPH, cache_dir, round_idx, fingerprint, num_users, num_edges, user_ids)
    )
