"""The block-wise value scans behind the read and write checks, against whole-array references."""

from __future__ import annotations

import re
from dataclasses import replace

import h5py
import numpy as np
import pytest
from cache_payloads import FINGERPRINT, PRODUCER, random_encoders, random_graph

from cache import (
    CacheError,
    graph_file,
    read_encoder_embeddings,
    read_graph_outputs,
    write_encoder_embeddings,
    write_graph_outputs,
)
from cache.schema import SCAN_BLOCK_BYTES, dataset_spec
from cache.validate import row_blocks, scan_array

N = 3000  # 64 float32 per row: 256 B rows, so 2048 rows per 512 KiB block and two blocks in all
RERUN1 = "use a new --cache folder, or rerun stage 1 for round 0 (`python -m stage1_encoders.run`) to overwrite this file"


def write(tmp_path, emb):
    return write_encoder_embeddings(tmp_path, 0, emb, fingerprint=FINGERPRINT, producer=PRODUCER)


def read(tmp_path):
    return read_encoder_embeddings(tmp_path, 0, fingerprint=FINGERPRINT, num_users=N)


def test_row_blocks_cover_every_row_once_with_the_right_zero_rows():
    rng = np.random.default_rng(0)
    zero_mask = rng.random(N) < 0.2
    blocks = list(row_blocks((N, 64), 4, zero_mask))
    assert SCAN_BLOCK_BYTES // 256 == 2048 and [(lo, hi) for lo, hi, _ in blocks] == [(0, 2048), (2048, N)]
    assert np.array_equal(np.concatenate([lo + z for lo, _, z in blocks]), np.flatnonzero(zero_mask))
    assert [(lo, hi) for lo, hi, _ in row_blocks((2, 10**6), 8)] == [(0, 1), (1, 2)]  # a row over a block
    assert [(lo, hi, z) for lo, hi, z in row_blocks((), 4)] == [(0, 1, None)]


@pytest.mark.parametrize("name", ["edge_index", "edge_weight", "image_mask"])
def test_bounds_scans_equal_min_and_max(name):
    spec = dataset_spec("graph" if name.startswith("edge") else "encoders", name)
    rng = np.random.default_rng(1)
    arr = {
        "edge_index": rng.integers(0, 10**6, (2, 300_000)),
        "edge_weight": rng.random(300_000, dtype=np.float32),
        "image_mask": rng.random(300_000) < 0.5,
    }[name]
    scan = scan_array(spec, arr)
    values = arr.view(np.uint8) if arr.dtype == np.bool_ else arr
    assert scan.bounds and (scan.low, scan.high) == (values.min(), values.max())


def test_a_sum_that_overflows_is_not_mistaken_for_inf(tmp_path):
    emb = random_encoders(N, dims=(64, 16))
    big = np.where(emb.image_mask[:, None], np.float32(3e38), np.float32(0)).astype(np.float32)
    emb = replace(emb, user_image_emb=np.broadcast_to(big, (N, 64)).copy())
    with np.errstate(over="ignore"):
        assert not np.isfinite(
            np.einsum("i->", emb.user_image_emb[:2048].reshape(-1))
        )  # the sum does overflow
    assert scan_array(dataset_spec("encoders", "user_image_emb"), emb.user_image_emb).finite
    write(tmp_path, emb)
    assert np.array_equal(read(tmp_path).user_image_emb, emb.user_image_emb)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [(5, 0), (2999, 63)])  # first block, last block
def test_nan_and_inf_are_found_in_any_block(tmp_path, value, where):
    emb = random_encoders(N, dims=(64, 16))
    image = emb.user_image_emb.copy()
    image[where] = value
    with pytest.raises(CacheError, match=re.escape(f"has 1 NaN/inf values (first at index {where})")):
        write(tmp_path, replace(emb, user_image_emb=image))
    path = write(tmp_path, emb)
    with h5py.File(path, "r+") as h5:
        h5["user_image_emb"][where] = value
    with pytest.raises(CacheError) as err:
        read(tmp_path)
    assert str(err.value) == (
        f"{path}, dataset 'user_image_emb': has 1 NaN/inf values (first at index {where}): {RERUN1}"
    )


def test_a_non_zero_masked_row_in_a_later_block_is_named(tmp_path):
    emb = random_encoders(N, dims=(64, 16))
    path = write(tmp_path, emb)
    user = int(np.flatnonzero(~emb.image_mask)[-1])
    assert user >= 2048
    with h5py.File(path, "r+") as h5:
        h5["user_image_emb"][user, 7] = -0.5
    with pytest.raises(CacheError) as err:
        read(tmp_path)
    assert str(err.value) == (
        f"{path}, dataset 'user_image_emb': 1 users with image_mask False have a non-zero row (first: user "
        f"{user}); users without the modality must have a zero row: {RERUN1}"
    )


def test_negative_zero_rows_count_as_zero(tmp_path):
    emb = random_encoders(N, dims=(64, 16))
    image = np.where(emb.image_mask[:, None], emb.user_image_emb, np.float32(-0.0))
    assert np.signbit(image[~emb.image_mask]).all()
    write(tmp_path, replace(emb, user_image_emb=image))
    assert np.array_equal(read(tmp_path).user_image_emb, image)


def test_a_mask_byte_other_than_0_or_1_is_refused(tmp_path):
    path = write(tmp_path, random_encoders(N, dims=(64, 16)))
    with h5py.File(path, "r") as h5:
        offset = h5["text_mask"].id.get_offset()
    with open(path, "r+b") as f:  # a bool stored as 2: only a crafted file holds one
        f.seek(offset + 10)
        f.write(b"\x02")
    with pytest.raises(CacheError) as err:
        read(tmp_path)
    assert str(err.value) == (
        f"{path}, dataset 'text_mask': holds bytes other than 0 and 1 (up to 2); it is not a bool mask: {RERUN1}"
    )


def test_graph_checks_after_block_scans(tmp_path):
    graph = random_graph(N, 4000, heads=4)
    path = write_graph_outputs(tmp_path, 0, graph, fingerprint=FINGERPRINT, producer=PRODUCER)
    back = read_graph_outputs(tmp_path, 0, fingerprint=FINGERPRINT, num_users=N, num_edges=4000)
    assert np.array_equal(back.gate, graph.gate) and np.array_equal(back.edge_index, graph.edge_index)
    with h5py.File(graph_file(tmp_path, 0), "r+") as h5:
        h5["edge_weight"][3999] = 1.5
    with pytest.raises(CacheError, match=r"'edge_weight': values must lie in \[0, 1\] but span \[.*, 1\.5\]"):
        read_graph_outputs(tmp_path, 0, fingerprint=FINGERPRINT, num_users=N, num_edges=4000)
    write_graph_outputs(tmp_path, 0, graph, fingerprint=FINGERPRINT, producer=PRODUCER)
    with h5py.File(path, "r+") as h5:
        h5["edge_index"][1, 7000] = N
    with pytest.raises(
        CacheError, match=rf"'edge_index': holds user indices in \[0, {N}\] but there are {N} users"
    ):
        read_graph_outputs(tmp_path, 0, fingerprint=FINGERPRINT, num_users=N, num_edges=4000)
