"""Round trips, input validation on write, and every read check with its exact message."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
import pytest
from cache_payloads import FINGERPRINT, PRODUCER, random_encoders, random_graph

from cache import (
    SCHEMA_VERSION,
    CacheError,
    check_owner,
    encoder_file,
    graph_file,
    read_cache_info,
    read_encoder_embeddings,
    read_graph_outputs,
    read_producer,
    write_encoder_embeddings,
    write_graph_outputs,
)

N, E = 50, 120
RERUN1 = "use a new --cache folder, or rerun stage 1 for round 0 (`python -m stage1_encoders.run`) to overwrite this file"
RERUN2 = "use a new --cache folder, or rerun stage 2 for round 0 (`python -m stage2_graph.run`) to overwrite this file"


def write_enc(tmp_path: Path, emb=None, round_idx: int = 0) -> Path:
    return write_encoder_embeddings(
        tmp_path,
        round_idx,
        emb or random_encoders(N),
        fingerprint=FINGERPRINT,
        producer=PRODUCER,
        model="tiny",
    )


def write_graph(tmp_path: Path, graph=None) -> Path:
    return write_graph_outputs(
        tmp_path, 0, graph or random_graph(N, E), fingerprint=FINGERPRINT, producer=PRODUCER
    )


def read_enc(tmp_path: Path, **kwargs):
    args = {"fingerprint": FINGERPRINT, "num_users": N, **kwargs}
    return read_encoder_embeddings(tmp_path, 0, **args)


def test_layout(tmp_path):
    assert encoder_file(tmp_path, 3) == tmp_path / "round_3" / "encoders.h5"
    assert graph_file(str(tmp_path), 0) == tmp_path / "round_0" / "graph.h5"
    with pytest.raises(ValueError, match="round must be an int >= 0"):
        encoder_file(tmp_path, -1)


def test_encoder_round_trip_is_bit_exact_with_attributes(tmp_path):
    emb = random_encoders(N)
    path = write_enc(tmp_path, emb)
    assert path == encoder_file(tmp_path, 0)
    back = read_enc(tmp_path)
    for name in ("user_image_emb", "user_text_emb", "image_mask", "text_mask"):
        want, got = getattr(emb, name), getattr(back, name)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.tobytes() == want.tobytes(), name
    info = read_cache_info(path)
    assert (info.kind, info.round, info.schema_version) == ("encoders", 0, SCHEMA_VERSION)
    assert (info.corpus_fingerprint, info.model, info.num_users, info.num_edges) == (
        FINGERPRINT,
        "tiny",
        N,
        None,
    )
    assert read_producer(path) == PRODUCER
    created = datetime.fromisoformat(info.created)
    assert created.tzinfo == timezone.utc and abs((datetime.now(timezone.utc) - created).total_seconds()) < 60
    with h5py.File(path) as h5:
        assert json.loads(h5.attrs["producer"]) == PRODUCER


def test_graph_round_trip_is_bit_exact(tmp_path):
    graph = random_graph(N, E)
    path = write_graph(tmp_path, graph)
    back = read_graph_outputs(tmp_path, 0, fingerprint=FINGERPRINT, num_users=N, num_edges=E)
    for name in ("user_graph_emb", "edge_index", "gate", "edge_weight"):
        want, got = getattr(graph, name), getattr(back, name)
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), name
    info = read_cache_info(path)
    assert (info.kind, info.num_users, info.num_edges, info.model) == ("graph", N, E, "")


def test_producer_dataclass_and_paths_are_stored_as_json(tmp_path):
    from dataclasses import dataclass

    @dataclass
    class Cfg:
        corpus: Path
        lr: float = np.float32(0.5)

    path = write_encoder_embeddings(
        tmp_path, 0, random_encoders(N), fingerprint=FINGERPRINT, producer=Cfg(Path("/c"))
    )
    assert read_producer(path) == {"corpus": "/c", "lr": 0.5}
    with pytest.raises(CacheError, match="the producer config cannot be stored as JSON"):
        write_encoder_embeddings(
            tmp_path, 1, random_encoders(N), fingerprint=FINGERPRINT, producer={"f": print}
        )
    assert not encoder_file(tmp_path, 1).exists()


def test_safe_dtype_conversions_on_write(tmp_path):
    torch = pytest.importorskip("torch")
    emb = random_encoders(N)
    image64 = emb.user_image_emb.astype(np.float64) * (1 + 1e-9)  # zero rows stay zero
    text_tensor = torch.from_numpy(emb.user_text_emb.copy()).requires_grad_(True)
    write_enc(
        tmp_path,
        replace(
            emb, user_image_emb=image64, user_text_emb=text_tensor, text_mask=emb.text_mask.astype(np.int8)
        ),
    )
    back = read_enc(tmp_path)
    assert back.user_image_emb.dtype == np.float32 and np.array_equal(
        back.user_image_emb, image64.astype(np.float32)
    )
    assert np.array_equal(back.user_text_emb, emb.user_text_emb)
    assert back.text_mask.dtype == np.bool_ and np.array_equal(back.text_mask, emb.text_mask)
    graph = random_graph(N, E)
    write_graph(
        tmp_path,
        replace(graph, edge_index=graph.edge_index.astype(np.int32), gate=graph.gate.astype(np.float16)),
    )
    back_graph = read_graph_outputs(tmp_path, 0, fingerprint=FINGERPRINT, num_users=N, num_edges=E)
    assert back_graph.edge_index.dtype == np.int64 and np.array_equal(back_graph.edge_index, graph.edge_index)
    assert back_graph.gate.dtype == np.float32


def bad_encoder_cases():
    emb = random_encoders(N)
    nan_text = emb.user_text_emb.copy()
    nan_text[7, 3] = np.nan
    masked_nonzero = emb.user_image_emb.copy()
    user = int(np.flatnonzero(~emb.image_mask)[0])
    masked_nonzero[user, 0] = 1.0
    return [
        (
            replace(emb, user_text_emb=nan_text),
            "user_text_emb",
            "has 1 NaN/inf values (first at index (7, 3))",
        ),
        (
            replace(emb, user_text_emb=emb.user_text_emb[:-1]),
            "user_text_emb",
            "has shape [49, 16] (schema [N, Dt]) but N, the number of users, is 50",
        ),
        (replace(emb, image_mask=emb.image_mask[:, None]), "image_mask", "has shape [50, 1]; expected [N]"),
        (
            replace(emb, user_image_emb=np.zeros((N, 0), np.float32), image_mask=np.zeros(N, bool)),
            "user_image_emb",
            "width Di is 0",
        ),
        (
            replace(emb, user_image_emb=emb.user_image_emb.astype(np.int64)),
            "user_image_emb",
            "has dtype int64; expected float32 (a floating-point array)",
        ),
        (
            replace(emb, text_mask=emb.text_mask.astype(np.int64) * 2),
            "text_mask",
            "has dtype int64; expected bool (or integers that are all 0 or 1)",
        ),
        (
            replace(emb, user_image_emb=emb.user_image_emb.astype(np.float64) * 1e300),
            "user_image_emb",
            "has dtype float64; expected float32: values up to",
        ),
        (
            replace(emb, user_image_emb=masked_nonzero),
            "user_image_emb",
            f"users with image_mask False have a non-zero row (first: user {user})",
        ),
    ]


@pytest.mark.parametrize("payload, dataset, message", bad_encoder_cases())
def test_bad_encoder_inputs_are_refused_before_writing(tmp_path, payload, dataset, message):
    with pytest.raises(CacheError) as err:
        write_enc(tmp_path, payload)
    assert err.value.dataset == dataset
    assert str(err.value).startswith(f"{encoder_file(tmp_path, 0)}, dataset '{dataset}': ")
    assert message in str(err.value) and str(err.value).endswith("nothing was written")
    assert not encoder_file(tmp_path, 0).parent.exists() or not any(
        encoder_file(tmp_path, 0).parent.iterdir()
    )


def bad_graph_cases():
    graph = random_graph(N, E)
    one_way = graph.edge_index.copy()
    v, u = one_way[:, 0]
    one_way[1, 0] = (u + 1) % N if (u + 1) % N != v else (u + 2) % N  # (u, v) is left without its pair
    loop = graph.edge_index.copy()
    loop[1, 5] = loop[0, 5]
    out_of_range = graph.edge_index.copy()
    out_of_range[0, 0] = N
    weight = graph.edge_weight.copy()
    weight[3] = 1.5
    return [
        (replace(graph, edge_index=one_way), "edge_index", "is not symmetric"),
        (replace(graph, edge_index=loop), "edge_index", "has a self loop at column 5"),
        (
            replace(graph, edge_index=out_of_range),
            "edge_index",
            f"holds user indices in [0, {N}] but there are {N} users",
        ),
        (
            replace(graph, edge_index=graph.edge_index.astype(np.float32)),
            "edge_index",
            "has dtype float32; expected int64 (an integer array)",
        ),
        (replace(graph, edge_weight=weight), "edge_weight", "values must lie in [0, 1] but span [0"),
        (
            replace(graph, gate=graph.gate[:-2]),
            "gate",
            f"has shape [{2 * E - 2}, 4] (schema [2E, H]) but 2E, twice the number of undirected edges, is {2 * E}",
        ),
        (
            replace(graph, edge_index=graph.edge_index[:, :-2]),
            "edge_index",
            "(schema [2, 2E]) but 2E, twice the number of undirected edges",
        ),
    ]


@pytest.mark.parametrize("payload, dataset, message", bad_graph_cases())
def test_bad_graph_inputs_are_refused_before_writing(tmp_path, payload, dataset, message):
    with pytest.raises(CacheError) as err:
        write_graph(tmp_path, payload)
    assert err.value.dataset == dataset
    assert message in str(err.value), str(err.value)
    assert not graph_file(tmp_path, 0).exists()


def test_fingerprint_mismatch_says_what_to_do(tmp_path):
    path = write_enc(tmp_path)
    with pytest.raises(CacheError) as err:
        read_enc(tmp_path, fingerprint="abc123")
    assert (
        str(err.value)
        == f"{path}: cache belongs to corpus fingerprint {FINGERPRINT} but the corpus is abc123: {RERUN1}"
    )
    assert (err.value.file, err.value.dataset) == (str(path), None)


def test_schema_version_mismatch_says_what_to_do(tmp_path):
    path = write_graph(tmp_path)
    with h5py.File(path, "r+") as h5:
        h5.attrs["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(CacheError) as err:
        read_graph_outputs(tmp_path, 0, fingerprint=FINGERPRINT, num_users=N, num_edges=E)
    assert str(err.value) == (
        f"{path}: has cache schema_version {SCHEMA_VERSION + 1} but this code reads schema_version 1 or 2: {RERUN2}"
    )


def test_read_shape_checks_against_the_corpus(tmp_path):
    write_enc(tmp_path)
    with pytest.raises(
        CacheError,
        match=re.escape(
            "dataset 'user_image_emb': has shape [50, 32] (schema [N, Di]) but N, the number of users, is 51"
        ),
    ):
        read_enc(tmp_path, num_users=51)
    write_graph(tmp_path)
    with pytest.raises(
        CacheError,
        match=re.escape(
            "dataset 'edge_index': has shape [2, 240] (schema [2, 2E]) but 2E, twice the number of undirected edges, is 242"
        ),
    ):
        read_graph_outputs(tmp_path, 0, fingerprint=FINGERPRINT, num_users=N, num_edges=E + 1)


def test_missing_wrong_round_and_damaged_files(tmp_path):
    with pytest.raises(CacheError) as err:
        read_enc(tmp_path)
    assert str(err.value) == (
        f"{encoder_file(tmp_path, 0)}: no such cache file: run stage 1 for round 0 first (`python -m stage1_encoders.run`)"
    )
    path = write_enc(tmp_path)
    encoder_file(tmp_path, 1).parent.mkdir()
    shutil.copy(path, encoder_file(tmp_path, 1))
    with pytest.raises(
        CacheError, match=re.escape("says it holds round 0 but was read as round 1 (moved by hand?)")
    ):
        read_encoder_embeddings(tmp_path, 1, fingerprint=FINGERPRINT, num_users=N)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(
        CacheError, match=r"is not a readable HDF5 file .*it is damaged: use a new --cache folder"
    ):
        read_enc(tmp_path)


def test_read_detects_tampered_datasets(tmp_path):
    path = write_enc(tmp_path)
    with h5py.File(path, "r+") as h5:
        h5["user_text_emb"][4, 2] = np.inf
    with pytest.raises(CacheError) as err:
        read_enc(tmp_path)
    assert (
        str(err.value)
        == f"{path}, dataset 'user_text_emb': has 1 NaN/inf values (first at index (4, 2)): {RERUN1}"
    )

    write_enc(tmp_path)
    with h5py.File(path, "r+") as h5:
        data = h5["user_text_emb"][()]
        del h5["user_text_emb"]
        h5["user_text_emb"] = data.astype(np.float64)
    with pytest.raises(
        CacheError, match=re.escape("dataset 'user_text_emb': has dtype float64; expected float32")
    ):
        read_enc(tmp_path)

    write_enc(tmp_path)
    with h5py.File(path, "r+") as h5:
        del h5["text_mask"]
    with pytest.raises(CacheError, match=re.escape(f"dataset 'text_mask': is missing: {RERUN1}")):
        read_enc(tmp_path)

    write_graph(tmp_path)
    with h5py.File(graph_file(tmp_path, 0), "r+") as h5:
        h5.attrs["kind"] = "encoders"
    with pytest.raises(
        CacheError, match=re.escape(f"is a 'encoders' cache file, expected 'graph': {RERUN2}")
    ):
        read_graph_outputs(tmp_path, 0, fingerprint=FINGERPRINT, num_users=N, num_edges=E)


def test_cache_error_pickles():
    import pickle

    err = pickle.loads(pickle.dumps(CacheError("a.h5", "gate", "bad")))
    assert (str(err), err.file, err.dataset, err.msg) == ("a.h5, dataset 'gate': bad", "a.h5", "gate", "bad")


def test_check_owner_refuses_only_a_readable_file_of_another_corpus(tmp_path):
    path = encoder_file(tmp_path, 0)
    check_owner(path, "anything")  # no file yet
    write_enc(tmp_path)
    check_owner(path, FINGERPRINT)  # the same corpus
    with pytest.raises(CacheError) as err:
        check_owner(path, "abc123")
    assert str(err.value) == (
        f"{path}: belongs to corpus fingerprint {FINGERPRINT}, not to this corpus (abc123): "
        "use another --cache folder for this corpus"
    )
    path.write_bytes(path.read_bytes()[:100])  # damaged: the stage's write will replace it
    check_owner(path, "abc123")
