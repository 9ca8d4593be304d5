"""Storage layout, files in the older chunked layout, lazy reads equal to full reads, pickling, workers."""

from __future__ import annotations

import os
import pickle

import h5py
import numpy as np
import pytest
from cache_payloads import FINGERPRINT, PRODUCER, random_encoders

from cache import CacheError, LazyEmbeddings, encoder_file, read_encoder_embeddings, write_encoder_embeddings
from cache.raw import ALIGN_INTERVAL, ALIGN_THRESHOLD, map_dataset

N = 3000  # several blocks of the 64-float rows below, in the scans and in the old chunked layout


@pytest.fixture
def enc_path(tmp_path):
    emb = random_encoders(N, dims=(64, 16))
    return write_encoder_embeddings(tmp_path, 0, emb, fingerprint=FINGERPRINT, producer=PRODUCER), emb


def rechunk(path, rows: int = 512) -> None:
    """Rewrite ``path`` in the layout files had before the contiguous one: chunked row blocks."""
    old = path.with_name("old.h5")
    with h5py.File(path) as src, h5py.File(old, "w") as dst:
        dst.attrs.update(src.attrs)
        for name in src:
            data = src[name][()]
            chunks = (min(rows, data.shape[0]), *data.shape[1:])
            dst.create_dataset(name, data=data, chunks=chunks).attrs.update(src[name].attrs)
    os.replace(old, path)


def test_written_files_are_contiguous_page_aligned_raw_bytes(enc_path):
    path, emb = enc_path
    with h5py.File(path) as h5:
        for name, arr in vars(emb).items():
            dset = h5[name]
            assert dset.chunks is None and dset.compression is None
            offset = dset.id.get_offset()
            if arr.nbytes >= ALIGN_THRESHOLD:
                assert offset % ALIGN_INTERVAL == 0, (name, offset)
            raw = np.fromfile(path, dtype=arr.dtype, count=arr.size, offset=offset).reshape(arr.shape)
            assert np.array_equal(raw, arr), name  # the bytes at the offset are the array, as HDF5 reads it
            assert np.array_equal(dset[()], arr), name


def test_chunked_files_from_before_read_the_same(enc_path):
    path, emb = enc_path
    rechunk(path)
    with h5py.File(path) as h5:
        assert h5["user_image_emb"].chunks == (512, 64)
    back = read_encoder_embeddings(path.parent.parent, 0, fingerprint=FINGERPRINT, num_users=N)
    for name, arr in vars(emb).items():
        assert np.array_equal(getattr(back, name), arr), name
    lazy = LazyEmbeddings(path, "user_image_emb")
    rows = np.random.default_rng(1).integers(0, N, 200)
    assert np.array_equal(lazy[rows], emb.user_image_emb[rows])
    assert np.array_equal(lazy[100:900], emb.user_image_emb[100:900])
    assert lazy._mapped is None and lazy._file is not None  # read through h5py, chunk by chunk
    lazy.close()
    with h5py.File(path, "r+") as h5:
        h5["user_text_emb"][2000, 3] = np.inf
    with pytest.raises(
        CacheError, match=r"dataset 'user_text_emb': has 1 NaN/inf values \(first at index \(2000, 3\)\)"
    ):
        read_encoder_embeddings(path.parent.parent, 0, fingerprint=FINGERPRINT, num_users=N)


def test_read_arrays_are_writable_and_outlive_a_rewrite(enc_path):
    path, emb = enc_path
    back = read_encoder_embeddings(path.parent.parent, 0, fingerprint=FINGERPRINT, num_users=N)
    assert back.user_image_emb.flags.writeable and back.image_mask.flags.writeable
    back.user_image_emb[0] = 7.0  # copy-on-write: stays in this process
    again = read_encoder_embeddings(path.parent.parent, 0, fingerprint=FINGERPRINT, num_users=N)
    assert np.array_equal(again.user_image_emb, emb.user_image_emb)
    write_encoder_embeddings(
        path.parent.parent, 0, random_encoders(N, seed=5, dims=(64, 16)), fingerprint=FINGERPRINT, producer={}
    )  # replaces the file by rename: arrays mapped from the old one keep the old data
    assert np.array_equal(again.user_text_emb, emb.user_text_emb)
    assert np.array_equal(back.user_image_emb[1:], emb.user_image_emb[1:])


def test_a_dataset_past_the_end_of_the_file_is_refused(enc_path):
    path, _ = enc_path
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(EOFError, match="the file ends before byte"):
            map_dataset(fd, os.fstat(fd).st_size - 8, (4,), np.dtype(np.float32), copy_on_write=True)
        assert map_dataset(
            fd, os.fstat(fd).st_size - 16, (4,), np.dtype(np.float32), copy_on_write=False
        ).shape == (4,)
    finally:
        os.close(fd)


def test_lazy_reads_equal_the_full_read(enc_path):
    path, _ = enc_path
    full = read_encoder_embeddings(path.parent.parent, 0, fingerprint=FINGERPRINT, num_users=N)
    lazy = LazyEmbeddings(path, "user_image_emb", fingerprint=FINGERPRINT, num_users=N, round_idx=0)
    assert len(lazy) == N and lazy.shape == (N, 64) and lazy.dtype == np.float32
    rng = np.random.default_rng(0)
    rows = rng.integers(0, N, 200)  # random order, repeats, across all chunks
    assert np.array_equal(lazy[rows], full.user_image_emb[rows])
    assert np.array_equal(lazy[[5, -1, 5]], full.user_image_emb[[5, -1, 5]])
    assert np.array_equal(lazy[17], full.user_image_emb[17])
    assert np.array_equal(lazy[1000:2100], full.user_image_emb[1000:2100])
    assert np.array_equal(lazy[2900:100:-7], full.user_image_emb[2900:100:-7])
    assert np.array_equal(lazy[np.array([], dtype=np.int64)], full.user_image_emb[:0])
    mask_lazy = LazyEmbeddings(path, "image_mask")
    assert np.array_equal(mask_lazy[rows], full.image_mask[rows])
    assert np.array_equal(lazy[full.image_mask], full.user_image_emb[full.image_mask])
    with pytest.raises(IndexError, match="out of range for 3000 rows"):
        lazy[[N]]


def test_lazy_checks_header_at_construction_and_rows_when_read(enc_path):
    path, _ = enc_path
    with pytest.raises(CacheError, match="cache belongs to corpus fingerprint"):
        LazyEmbeddings(path, "user_text_emb", fingerprint="other")
    with pytest.raises(CacheError, match="but N, the number of users, is 10"):
        LazyEmbeddings(path, "user_text_emb", num_users=10)
    with pytest.raises(CacheError, match="no dataset 'user_graph_emb' in a 'encoders' cache file"):
        LazyEmbeddings(path, "user_graph_emb")
    with h5py.File(path, "r+") as h5:
        h5.attrs["schema_version"] = 0
    with pytest.raises(
        CacheError, match="has cache schema_version 0 but this code reads schema_version 1 or 2"
    ):
        LazyEmbeddings(path, "user_text_emb")
    with h5py.File(path, "r+") as h5:
        h5.attrs["schema_version"] = 1
    with h5py.File(path, "r+") as h5:
        h5["user_text_emb"][2500, 1] = np.nan
    lazy = LazyEmbeddings(path, "user_text_emb")
    assert lazy[:100].shape == (100, 16)
    with pytest.raises(CacheError, match=r"dataset 'user_text_emb': has 1 NaN/inf values"):
        lazy[[3, 2500]]


def test_lazy_opens_nothing_until_used_and_pickles_after_use(enc_path):
    path, emb = enc_path
    lazy = LazyEmbeddings(path, "user_text_emb")
    assert lazy._file is None and lazy._mapped is None  # no handle held after __init__
    first = lazy[[1, 2999]]
    assert lazy._mapped is not None
    clone = pickle.loads(pickle.dumps(lazy))
    assert clone._file is None and clone._mapped is None
    assert np.array_equal(clone[[1, 2999]], first)
    assert np.array_equal(first, emb.user_text_emb[[1, 2999]])
    clone.close()
    lazy.close()


class UserRows:
    """A torch Dataset of (user, row, worker pid) backed by a LazyEmbeddings."""

    def __init__(self, lazy: LazyEmbeddings):
        self.lazy = lazy

    def __len__(self) -> int:
        return len(self.lazy)

    def __getitem__(self, user: int):
        return user, self.lazy[user], os.getpid()


@pytest.mark.parametrize("context", ["fork", pytest.param("spawn", marks=pytest.mark.slow)])
def test_lazy_works_in_dataloader_workers(enc_path, context):
    torch = pytest.importorskip("torch")
    path, emb = enc_path
    lazy = LazyEmbeddings(path, "user_image_emb")
    lazy[0]  # the parent holds an open handle before the workers start
    subset = torch.utils.data.Subset(UserRows(lazy), list(range(0, N, 37)))
    loader = torch.utils.data.DataLoader(subset, batch_size=8, num_workers=2, multiprocessing_context=context)
    users, rows, pids = [], [], set()
    for user, row, pid in loader:
        users.append(user.numpy())
        rows.append(row.numpy())
        pids.update(pid.tolist())
    users = np.concatenate(users)
    assert np.array_equal(users, np.arange(0, N, 37))
    assert np.array_equal(np.concatenate(rows), emb.user_image_emb[users])
    assert len(pids) == 2 and os.getpid() not in pids


def test_lazy_on_graph_file_rejects_edge_axis_datasets(tmp_path):
    from cache_payloads import random_graph

    from cache import graph_file, write_graph_outputs

    write_graph_outputs(tmp_path, 0, random_graph(), fingerprint=FINGERPRINT, producer={})
    lazy = LazyEmbeddings(graph_file(tmp_path, 0), "user_graph_emb", num_users=50)
    assert lazy[[0, 49]].shape == (2, 24)
    with pytest.raises(CacheError, match="is not a per-row dataset"):
        LazyEmbeddings(graph_file(tmp_path, 0), "edge_index")
    assert not encoder_file(tmp_path, 0).exists()


def test_lazy_refuses_a_file_replaced_after_it_was_made(enc_path):
    path, _ = enc_path
    lazy = LazyEmbeddings(path, "user_text_emb")
    write_encoder_embeddings(
        path.parent.parent, 0, random_encoders(N, seed=5), fingerprint="new", producer={}
    )
    with pytest.raises(CacheError, match="was replaced or removed after this LazyEmbeddings was made"):
        lazy[0]
