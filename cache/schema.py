"""The cache format: file layout, dataset names, dtypes, shapes, attributes and storage layout, in one place.

A cache is a folder with one subfolder per round::

    <cache_dir>/round_<r>/encoders.h5   written by stage 1 (kind "encoders")
    <cache_dir>/round_<r>/graph.h5      written by stage 2 (kind "graph")

Shapes are written with symbolic sizes: ``N`` users, ``E`` undirected corpus edges, and free widths
(``Di``, ``Dt``, ``Dg``, ``H``) that only have to be >= 1. Rows follow the corpus's user order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SCHEMA_VERSION = 2
# Versions this code reads: 1 (no user_ids, no run_dir) and 2. Only the current one is written.
READABLE_SCHEMA_VERSIONS = (1, 2)

ENCODER_FILE = "encoders.h5"
GRAPH_FILE = "graph.h5"
KIND_ENCODERS = "encoders"
KIND_GRAPH = "graph"
KINDS = (KIND_ENCODERS, KIND_GRAPH)

# The largest free width (Di, Dt, Dg, H) a file may declare: a bound on what a read allocates per row.
MAX_WIDTH = 1 << 16

# Root attributes every cache file carries.
ATTR_SCHEMA_VERSION = "schema_version"
ATTR_KIND = "kind"
ATTR_ROUND = "round"
ATTR_FINGERPRINT = "corpus_fingerprint"
ATTR_PRODUCER = "producer"  # JSON of the resolved config that wrote the file
ATTR_MODEL = "model"  # short model description given by the producer ("" when none)
ATTR_CREATED = "created"  # UTC ISO-8601 time of the write
ATTR_NUM_USERS = "num_users"
ATTR_NUM_EDGES = "num_edges"  # graph files only
# optional (schema 2): the output folder of the stage run that wrote the file, relative to the file's folder
ATTR_RUN_DIR = "run_dir"
REQUIRED_ATTRS = (
    ATTR_SCHEMA_VERSION,
    ATTR_KIND,
    ATTR_ROUND,
    ATTR_FINGERPRINT,
    ATTR_PRODUCER,
    ATTR_MODEL,
    ATTR_CREATED,
    ATTR_NUM_USERS,
)

# The command that (re)creates each kind, quoted in error messages.
PRODUCER_COMMAND = {
    KIND_ENCODERS: "python -m stage1_encoders.run",
    KIND_GRAPH: "python -m stage2_graph.run",
}
STAGE_NAME = {KIND_ENCODERS: "stage 1", KIND_GRAPH: "stage 2"}

# Storage layout. Every dataset is written contiguous and uncompressed, its file space allocated when it is
# created (HDF5's H5D_CONTIGUOUS, H5D_ALLOC_TIME_EARLY), so its bytes are one run at ``H5Dget_offset``:
# a write or a full read is a single pass over them, and a lazy read maps them. Files written before this
# layout (chunked row blocks of 10 KiB to 1 MiB, same schema version) read through h5py as before.
# The checks of a read (and of a write's input) run on blocks of whole rows about this large, each while it
# is still in the CPU's L2 cache after it was read, instead of as separate passes over the whole array.
SCAN_BLOCK_BYTES = 512 * 1024


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of a cache file.

    ``shape`` holds ints (fixed sizes) and names: ``"N"``, ``"E"`` and ``"2E"`` are checked against the
    corpus; any other name is a free width >= 1. ``row_axis`` is the axis that grows with users or edges,
    along which it is lazily sliced. ``kind`` says which checks apply:
    ``"float"`` (finite float32), ``"mask"`` (bool) or ``"index"`` (int64 user indices in [0, N)).
    """

    name: str
    dtype: np.dtype
    shape: tuple[int | str, ...]
    kind: str
    doc: str
    row_axis: int = 0
    unit_interval: bool = False  # values must lie in [0, 1]


F32 = np.dtype(np.float32)
BOOL = np.dtype(np.bool_)
I64 = np.dtype(np.int64)

ENCODER_DATASETS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        "user_image_emb",
        F32,
        ("N", "Di"),
        "float",
        "per-user image embedding; zero row where image_mask is False",
    ),
    DatasetSpec(
        "user_text_emb",
        F32,
        ("N", "Dt"),
        "float",
        "per-user text embedding; zero row where text_mask is False",
    ),
    DatasetSpec("image_mask", BOOL, ("N",), "mask", "True = the user has at least one image"),
    DatasetSpec("text_mask", BOOL, ("N",), "mask", "True = the user has at least one non-empty caption"),
)

GRAPH_DATASETS: tuple[DatasetSpec, ...] = (
    DatasetSpec("user_graph_emb", F32, ("N", "Dg"), "float", "per-user graph embedding"),
    DatasetSpec(
        "edge_index",
        I64,
        (2, "2E"),
        "index",
        "directed edges, both directions of every corpus edge; row 0 = source v, row 1 = target u",
        row_axis=1,
    ),
    DatasetSpec(
        "gate",
        F32,
        ("2E", "H"),
        "float",
        "a_uv per head; gate[k] weighs the message v -> u of edge_index[:, k]",
    ),
    DatasetSpec(
        "edge_weight",
        F32,
        ("E",),
        "float",
        "per corpus edge (aligned with corpus.edges): mean gate over heads and both directions",
        unit_interval=True,
    ),
)

DATASETS = {KIND_ENCODERS: ENCODER_DATASETS, KIND_GRAPH: GRAPH_DATASETS}

# Optional in either kind (schema 2): the corpus user id of each row, UTF-8 variable-length strings [N]. Stored
# through HDF5 (a variable-length dataset has no raw byte run to map); checked against the corpus order on a read
# that is given the corpus's ids.
USER_IDS = "user_ids"
USER_IDS_DOC = "corpus user id of each row (users.csv order), UTF-8"

# Embedding rows that must be zero where the mask is False.
MASKED_ROWS = {"user_image_emb": "image_mask", "user_text_emb": "text_mask"}


def dataset_spec(kind: str, name: str) -> DatasetSpec:
    """The spec of dataset ``name`` in a file of ``kind``; ``KeyError`` if there is none."""
    for spec in DATASETS[kind]:
        if spec.name == name:
            return spec
    raise KeyError(
        f"no dataset {name!r} in a {kind!r} cache file; expected one of {[s.name for s in DATASETS[kind]]}"
    )


def _check_round(round_idx: int) -> int:
    if isinstance(round_idx, bool) or not isinstance(round_idx, (int, np.integer)) or round_idx < 0:
        raise ValueError(f"round must be an int >= 0, got {round_idx!r}")
    return int(round_idx)


def round_dir(cache_dir: str | Path, round_idx: int) -> Path:
    """``<cache_dir>/round_<r>``."""
    return Path(cache_dir) / f"round_{_check_round(round_idx)}"


def encoder_file(cache_dir: str | Path, round_idx: int) -> Path:
    """``<cache_dir>/round_<r>/encoders.h5``: the stage 1 output of round ``r``."""
    return round_dir(cache_dir, round_idx) / ENCODER_FILE


def graph_file(cache_dir: str | Path, round_idx: int) -> Path:
    """``<cache_dir>/round_<r>/graph.h5``: the stage 2 output of round ``r``."""
    return round_dir(cache_dir, round_idx) / GRAPH_FILE


def cache_file(cache_dir: str | Path, round_idx: int, kind: str) -> Path:
    """The file of ``kind`` ("encoders" or "graph") for round ``r``."""
    if kind == KIND_ENCODERS:
        return encoder_file(cache_dir, round_idx)
    if kind == KIND_GRAPH:
        return graph_file(cache_dir, round_idx)
    raise ValueError(f"unknown cache kind {kind!r}; expected one of {KINDS}")
