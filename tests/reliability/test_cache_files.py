"""Matrix, crafted and malformed cache files (issue 15, items 11 and 12): every one is a ``CacheError``.

Each case starts from a valid ``encoders.h5`` (50 users) and changes one thing. Three readers must refuse
it with a ``CacheError`` saying what is wrong, read nothing outside the file, and allocate nothing the
corpus does not justify: ``read_encoder_embeddings``, ``LazyEmbeddings`` and ``python -m cache.inspect``
(exit status 1, no "OK").

| case | expected message |
|---|---|
| required dataset is an external link to another file | external link |
| required dataset uses external raw storage (a secret file) | external raw storage |
| required dataset is a virtual dataset | virtual dataset |
| required dataset is a dangling soft link | SoftLink |
| an extra group | not part of |
| `num_users` is a string | not an integer |
| `producer` is a number | not a string |
| a mask stored as bytes | dtype |
| consistent 1e9-row shapes (nothing stored) | N is 50 (read) / declares ... stores only (inspect) |
| a 1e9 width | width ... is over 65536 |
"""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cache"))
from cache_payloads import FINGERPRINT, PRODUCER, random_encoders  # noqa: E402

from cache import CacheError, LazyEmbeddings, encoder_file, read_encoder_embeddings, write_encoder_embeddings  # noqa: E402
from cache.inspect import main as inspect_main  # noqa: E402

N = 50
SECRET = b"root:x:0:0:secret-line-that-must-not-be-read\n" * 100


def _replace(h5, name, **kwargs):
    del h5[name]
    h5.create_dataset(name, **kwargs)


def external_link(h5, tmp):
    other = tmp / "other.h5"
    with h5py.File(other, "w") as o:
        o["user_text_emb"] = np.zeros((N, 16), np.float32)
    del h5["user_text_emb"]
    h5["user_text_emb"] = h5py.ExternalLink(str(other), "/user_text_emb")


def external_storage(h5, tmp):
    secret = tmp / "passwd"
    secret.write_bytes(SECRET)
    _replace(h5, "user_text_emb", shape=(N, 16), dtype="f4", external=[(str(secret), 0, N * 16 * 4)])


def virtual(h5, tmp):
    other = tmp / "other.h5"
    with h5py.File(other, "w") as o:
        o["x"] = np.zeros((N, 16), np.float32)
    layout = h5py.VirtualLayout(shape=(N, 16), dtype="f4")
    layout[:] = h5py.VirtualSource(str(other), "x", shape=(N, 16))
    del h5["user_text_emb"]
    h5.create_virtual_dataset("user_text_emb", layout)


def dangling(h5, tmp):
    del h5["user_text_emb"]
    h5["user_text_emb"] = h5py.SoftLink("/nowhere")


def extra_group(h5, tmp):
    h5.create_group("extra")


def num_users_string(h5, tmp):
    h5.attrs["num_users"] = "fifty"


def producer_number(h5, tmp):
    h5.attrs["producer"] = 5


def bytes_mask(h5, tmp):
    _replace(h5, "image_mask", data=np.array([b"x"] * N))


def billion_rows(h5, tmp):
    h5.attrs["num_users"] = 10**9
    for name, width in (("user_image_emb", 32), ("user_text_emb", 16)):
        _replace(h5, name, shape=(10**9, width), dtype="f4", chunks=(1024, width))
    for name in ("image_mask", "text_mask"):
        _replace(h5, name, shape=(10**9,), dtype="?", chunks=(1 << 16,))


def huge_width(h5, tmp):
    _replace(h5, "user_text_emb", shape=(N, 10**9), dtype="f4", chunks=(1, 1 << 16))


CASES = {
    "external link": (external_link, "external link"),
    "external raw storage": (external_storage, "external raw storage"),
    "virtual dataset": (virtual, "virtual dataset"),
    "dangling soft link": (dangling, "SoftLink"),
    "extra group": (extra_group, "not part of"),
    "num_users not an integer": (num_users_string, "not an integer"),
    "producer not a string": (producer_number, "not a string"),
    "bytes dataset": (bytes_mask, "dtype"),
    "1e9 rows": (billion_rows, "N, the number of users, is 50"),
    "1e9 width": (huge_width, "is over 65536"),
}


@pytest.fixture
def crafted(tmp_path, request):
    cache_dir = tmp_path / "cache"
    write_encoder_embeddings(cache_dir, 0, random_encoders(N), fingerprint=FINGERPRINT, producer=PRODUCER)
    mutate, expected = CASES[request.param]
    with h5py.File(encoder_file(cache_dir, 0), "r+") as h5:
        mutate(h5, tmp_path)
    return cache_dir, expected


@pytest.mark.parametrize("crafted", list(CASES), indirect=True)
def test_reader_refuses(crafted):
    cache_dir, expected = crafted
    with pytest.raises(CacheError, match=expected if expected[0] != "N" else "N, the number of users"):
        read_encoder_embeddings(cache_dir, 0, fingerprint=FINGERPRINT, num_users=N)


@pytest.mark.parametrize("crafted", list(CASES), indirect=True)
def test_lazy_reader_refuses(crafted):
    cache_dir, _ = crafted
    with pytest.raises(CacheError):
        LazyEmbeddings(encoder_file(cache_dir, 0), "user_image_emb", fingerprint=FINGERPRINT, num_users=N)


@pytest.mark.parametrize("crafted", list(CASES), indirect=True)
def test_inspect_refuses_and_reads_nothing_outside(crafted, capsys):
    cache_dir, _ = crafted
    assert inspect_main([str(encoder_file(cache_dir, 0))]) == 1
    out = capsys.readouterr().out
    assert "status              OK" not in out
    assert "ERROR" in out
    assert "secret-line" not in out


def test_inspect_names_why_a_billion_rows_are_refused(tmp_path, capsys):
    cache_dir = tmp_path / "cache"
    write_encoder_embeddings(cache_dir, 0, random_encoders(N), fingerprint=FINGERPRINT, producer=PRODUCER)
    with h5py.File(encoder_file(cache_dir, 0), "r+") as h5:
        billion_rows(h5, tmp_path)
    assert inspect_main([str(encoder_file(cache_dir, 0))]) == 1
    assert "but the file stores only" in capsys.readouterr().out


def test_a_valid_file_still_reads(tmp_path):
    cache_dir = tmp_path / "cache"
    emb = random_encoders(N)
    write_encoder_embeddings(cache_dir, 0, emb, fingerprint=FINGERPRINT, producer=PRODUCER)
    back = read_encoder_embeddings(cache_dir, 0, fingerprint=FINGERPRINT, num_users=N)
    assert np.array_equal(back.user_text_emb, emb.user_text_emb)
