"""Embeddings in the formats users' tools read: a parquet table (pyarrow, the optional extra ``mmga[export]``) and a
PyG ``Data`` object.

The parquet table has one row per user: ``user_id`` (string), one fixed-size list column of float32 per block
(``graph`` = R^G, ``text`` = R^T, ``image`` = R^I, in the order of [R^G || R^T || R^I]) and the modality masks
(``text_mask``, ``image_mask``); the file's metadata says where the embeddings come from. ``pandas.read_parquet``
gives one numpy array per cell; ``np.stack(df["graph"])`` is the block as a matrix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from bridge.inference.embeddings import BLOCKS, EmbedError


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise EmbedError(
            "writing parquet needs pyarrow: pip install 'pyarrow>=15' (or install MMGA with the [export] extra), "
            "or write an .npz instead"
        ) from None
    return pa, pq


def write_parquet(
    path: Path,
    user_ids: list[str],
    blocks: dict[str, np.ndarray],
    masks: dict[str, np.ndarray],
    metadata: dict[str, Any],
) -> Path:
    """Write the table described in the module docstring to ``path`` (callers write a temporary name and rename).

    Args:
        user_ids: ``[N]``.
        blocks: ``{"graph": [N, Dg], "text": [N, Dt], "image": [N, Di]}`` float arrays.
        masks: ``{"text_mask": [N], "image_mask": [N]}`` bool arrays.
        metadata: JSON-able facts stored in the file's key-value metadata under ``mmga``.
    """
    pa, pq = _pyarrow()
    columns: dict[str, Any] = {"user_id": pa.array([str(u) for u in user_ids], pa.string())}
    for name in BLOCKS:
        block = np.ascontiguousarray(blocks[name], dtype=np.float32)
        width = block.shape[1]
        columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(block.reshape(-1), pa.float32()), width)
    for name, mask in masks.items():
        columns[name] = pa.array(np.asarray(mask, dtype=bool))
    table = pa.table(columns).replace_schema_metadata({"mmga": json.dumps(metadata, sort_keys=True)})
    path = Path(path)
    pq.write_table(table, path)
    return path


def read_parquet_blocks(path: Path) -> tuple[list[str], dict[str, np.ndarray], dict[str, Any]]:
    """``(user_ids, {block: [N, D] float32}, metadata)`` of a table written by :func:`write_parquet`."""
    _, pq = _pyarrow()
    table = pq.read_table(path)
    blocks = {}
    for name in BLOCKS:
        column = table.column(name).combine_chunks()
        blocks[name] = column.flatten().to_numpy().reshape(len(column), column.type.list_size)
    meta = json.loads((table.schema.metadata or {}).get(b"mmga", b"{}"))
    return table.column("user_id").to_pylist(), blocks, meta


def to_pyg_data(embeddings: np.ndarray, corpus) -> Any:
    """A PyG ``Data`` for the embedded corpus: ``x`` ``[N, D]`` (the embeddings, float32), ``edge_index``
    ``[2, 2E]`` (both directions of every edge), ``y`` ``[N]`` (topic index, -1 = unlabelled), ``fans`` ``[N]``
    (NaN = unknown), ``train_mask`` / ``val_mask`` / ``test_mask`` ``[N]`` and ``user_ids``."""
    import torch
    from torch_geometric.data import Data

    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or len(x) != corpus.num_users:
        raise ValueError(f"embeddings must be [N={corpus.num_users}, D], got {x.shape}")
    edges = torch.as_tensor(np.asarray(corpus.edges, dtype=np.int64).reshape(-1, 2))
    splits = torch.as_tensor(np.asarray(corpus.splits))
    return Data(
        x=torch.from_numpy(x),
        edge_index=torch.cat([edges.t(), edges.flip(1).t()], dim=1),
        y=torch.as_tensor(np.asarray(corpus.labels, dtype=np.int64)),
        fans=torch.as_tensor(np.asarray(corpus.fans, dtype=np.float32)),
        train_mask=splits == 0,
        val_mask=splits == 1,
        test_mask=splits == 2,
        user_ids=list(corpus.user_ids),
    )
