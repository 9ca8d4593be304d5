"""Schema 2: the ``user_ids`` dataset (written, checked on read, optional), schema-1 files still read, and the run
ownership check (``check_owner`` with ``run_dir`` / ``force``)."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
from cache_payloads import FINGERPRINT, PRODUCER, random_encoders, random_graph

from cache import (
    SCHEMA_VERSION,
    CacheError,
    LazyEmbeddings,
    check_owner,
    encoder_file,
    read_cache_info,
    read_encoder_embeddings,
    read_graph_outputs,
    write_encoder_embeddings,
    write_graph_outputs,
)
from cache.inspect import describe

N, E = 50, 120
IDS = [f"user_{i:03d}" for i in range(N - 2)] + ["ünïcode 用户", ""]  # any UTF-8 text, even empty
RERUN1 = "use a new --cache folder, or rerun stage 1 for round 0 (`python -m stage1_encoders.run`) to overwrite this file"


def write_enc(cache_dir, user_ids=IDS, run_dir=None):
    return write_encoder_embeddings(
        cache_dir,
        0,
        random_encoders(N),
        fingerprint=FINGERPRINT,
        producer=PRODUCER,
        user_ids=user_ids,
        run_dir=run_dir,
    )


def test_user_ids_are_stored_as_utf8_strings_in_row_order(tmp_path):
    path = write_enc(tmp_path)
    with h5py.File(path, "r") as h5:
        assert SCHEMA_VERSION == 2 and h5.attrs["schema_version"] == 2
        dtype = h5py.check_string_dtype(h5["user_ids"].dtype)
        assert (dtype.encoding, dtype.length) == ("utf-8", None)
        assert h5["user_ids"].asstr()[()].tolist() == IDS
    info = read_cache_info(path)
    assert info.has_user_ids and info.run_dir is None
    emb = read_encoder_embeddings(tmp_path, 0, fingerprint=FINGERPRINT, num_users=N, user_ids=IDS)
    assert np.array_equal(emb.user_image_emb, random_encoders(N).user_image_emb)


def test_graph_files_store_user_ids_too(tmp_path):
    write_graph_outputs(
        tmp_path, 0, random_graph(N, E), fingerprint=FINGERPRINT, producer=PRODUCER, user_ids=IDS
    )
    read_graph_outputs(tmp_path, 0, fingerprint=FINGERPRINT, num_users=N, num_edges=E, user_ids=IDS)
    with pytest.raises(CacheError, match="row 0 holds user 'user_000' but the corpus's row 0 is 'x'"):
        read_graph_outputs(
            tmp_path, 0, fingerprint=FINGERPRINT, num_users=N, num_edges=E, user_ids=["x", *IDS[1:]]
        )


def test_reordered_users_are_refused_naming_the_first_row(tmp_path):
    path = write_enc(tmp_path)
    swapped = [IDS[0], IDS[2], IDS[1], *IDS[3:]]
    with pytest.raises(CacheError) as err:
        read_encoder_embeddings(tmp_path, 0, fingerprint=FINGERPRINT, num_users=N, user_ids=swapped)
    assert str(err.value) == (
        f"{path}, dataset 'user_ids': row 1 holds user 'user_001' but the corpus's row 1 is 'user_002' "
        f"(2 rows differ: the corpus's users changed or were reordered): {RERUN1}"
    )
    with pytest.raises(CacheError, match="row 1 holds user"):  # the lazy reader checks them too
        LazyEmbeddings(path, "user_text_emb", user_ids=swapped)


def test_user_ids_are_optional_and_checked_on_write(tmp_path):
    write_enc(tmp_path, user_ids=None)
    assert not read_cache_info(encoder_file(tmp_path, 0)).has_user_ids
    read_encoder_embeddings(
        tmp_path, 0, fingerprint=FINGERPRINT, num_users=N, user_ids=IDS
    )  # nothing to check
    with pytest.raises(CacheError, match=r"dataset 'user_ids': has 3 ids for 50 rows: nothing was written"):
        write_enc(tmp_path / "b", user_ids=["a", "b", "c"])
    with pytest.raises(CacheError, match=r"dataset 'user_ids': row 1 is 7, not a str: nothing was written"):
        write_enc(tmp_path / "c", user_ids=["a", 7, *IDS[2:]])
    assert not (tmp_path / "b" / "round_0" / "encoders.h5").exists()


def test_a_schema_1_file_is_still_read(tmp_path):
    """A file as the code before schema 2 wrote it: version 1, no user_ids, no run_dir."""
    path = write_enc(tmp_path, user_ids=None)
    with h5py.File(path, "r+") as h5:
        h5.attrs["schema_version"] = 1
    info = read_cache_info(path)
    assert (info.schema_version, info.has_user_ids, info.run_dir) == (1, False, None)
    read_encoder_embeddings(tmp_path, 0, fingerprint=FINGERPRINT, num_users=N, user_ids=IDS)
    check_owner(path, FINGERPRINT, run_dir=tmp_path / "any_run")  # no owner recorded: not refused


def test_a_user_ids_member_of_the_wrong_type_or_shape_is_refused(tmp_path):
    path = write_enc(tmp_path)
    with h5py.File(path, "r+") as h5:
        del h5["user_ids"]
        h5["user_ids"] = np.arange(N)
    with pytest.raises(CacheError, match="dataset 'user_ids': is not a variable-length string dataset"):
        read_encoder_embeddings(tmp_path, 0, fingerprint=FINGERPRINT, num_users=N)
    with h5py.File(path, "r+") as h5:
        del h5["user_ids"]
        h5.create_dataset("user_ids", data=IDS[:10], dtype=h5py.string_dtype())
    with pytest.raises(CacheError, match=r"dataset 'user_ids': has shape \[10\]; expected \[50\]"):
        read_encoder_embeddings(tmp_path, 0, fingerprint=FINGERPRINT, num_users=N)


def test_inspect_shows_and_passes_a_schema_2_file(tmp_path):
    path = write_enc(tmp_path, run_dir=tmp_path / "run")
    text, ok = describe(path, FINGERPRINT, stats=True, full_producer=False)
    assert ok, text
    assert "user_ids" in text and "  run_dir             ../run\n" in text  # stored relative to round_0/
    assert read_cache_info(path).run_dir == os.path.abspath(tmp_path / "run")


def test_another_runs_file_is_refused_without_force(tmp_path):
    path = write_enc(tmp_path / "cache", run_dir=tmp_path / "run_a")
    created = read_cache_info(path).created
    check_owner(path, FINGERPRINT, run_dir=tmp_path / "run_a")  # the same run (a rerun, a resume)
    check_owner(
        path, FINGERPRINT, run_dir=tmp_path / "run_a" / ".." / "run_a"
    )  # the same folder, spelt otherwise
    with pytest.raises(CacheError) as err:
        check_owner(path, FINGERPRINT, run_dir=tmp_path / "run_b")
    assert str(err.value) == (
        f"{path}: was written by another run (output folder {tmp_path / 'run_a'}, {created}), not by this one "
        f"({tmp_path / 'run_b'}): pass --force to overwrite it, or use another --cache folder"
    )
    check_owner(path, FINGERPRINT, run_dir=tmp_path / "run_b", force=True)
    check_owner(path, FINGERPRINT)  # a reader (no run_dir) is not refused
    with pytest.raises(
        CacheError, match="belongs to corpus fingerprint"
    ):  # another corpus: force does not help
        check_owner(path, "0" * 64, run_dir=tmp_path / "run_a", force=True)


def test_the_content_digest_covers_the_ids_text_not_their_pointers(tmp_path):
    from cache.digest import content_digest

    first = content_digest(write_enc(tmp_path / "a"))
    assert content_digest(write_enc(tmp_path / "b")) == first  # the same data written twice
    assert content_digest(write_enc(tmp_path / "c", user_ids=[*IDS[:-1], "other"])) != first


def test_a_run_folder_moved_whole_still_owns_its_files(tmp_path):
    """The bridge's layout: the cache and the stage folders inside one run folder, copied or moved together."""
    write_enc(tmp_path / "run" / "cache", run_dir=tmp_path / "run" / "stage1")
    (tmp_path / "run").rename(tmp_path / "moved")
    path = encoder_file(tmp_path / "moved" / "cache", 0)
    assert read_cache_info(path).run_dir == str(tmp_path / "moved" / "stage1")
    check_owner(path, FINGERPRINT, run_dir=tmp_path / "moved" / "stage1")
    with pytest.raises(CacheError, match="was written by another run"):
        check_owner(path, FINGERPRINT, run_dir=tmp_path / "run" / "stage1")
