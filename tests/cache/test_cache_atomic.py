"""A write that fails or dies half-way leaves the old file (or no file) under the final name."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from cache_payloads import FINGERPRINT, PRODUCER, random_encoders

import cache.io
from cache import CacheError, encoder_file, read_encoder_embeddings, write_encoder_embeddings

N = 50
REPO = Path(__file__).resolve().parents[2]


class SimulatedCrash(RuntimeError):
    pass


def crash_on_second_dataset(monkeypatch):
    """Make the writer fail after the first dataset is already in the file."""
    real = h5py.Group.create_dataset
    calls = []

    def create_dataset(self, *args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise SimulatedCrash("disk full")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", create_dataset)
    return calls


def write(tmp_path: Path, seed: int) -> Path:
    return write_encoder_embeddings(
        tmp_path, 0, random_encoders(N, seed=seed), fingerprint=FINGERPRINT, producer=PRODUCER
    )


def test_crash_mid_write_leaves_no_file(tmp_path, monkeypatch):
    calls = crash_on_second_dataset(monkeypatch)
    with pytest.raises(SimulatedCrash):
        write(tmp_path, seed=0)
    assert calls == ["user_image_emb", "user_text_emb"]  # the crash really came mid-write
    assert not encoder_file(tmp_path, 0).exists()
    folder = encoder_file(tmp_path, 0).parent
    # a failed write removes its temporary file: the folder is left as it was (empty, or not made yet)
    assert not folder.exists() or list(folder.iterdir()) == []


def test_crash_mid_overwrite_keeps_the_old_file(tmp_path, monkeypatch):
    write(tmp_path, seed=0)
    crash_on_second_dataset(monkeypatch)
    with pytest.raises(SimulatedCrash):
        write(tmp_path, seed=1)
    monkeypatch.undo()
    back = read_encoder_embeddings(tmp_path, 0, fingerprint=FINGERPRINT, num_users=N)
    assert np.array_equal(back.user_image_emb, random_encoders(N, seed=0).user_image_emb)
    assert [p.name for p in encoder_file(tmp_path, 0).parent.iterdir()] == ["encoders.h5"]


def test_failed_rename_keeps_the_old_file(tmp_path, monkeypatch):
    write(tmp_path, seed=0)

    def failing_replace(src, dst):
        raise OSError("simulated rename failure")

    monkeypatch.setattr(cache.io.os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated rename failure"):
        write(tmp_path, seed=1)
    monkeypatch.undo()
    back = read_encoder_embeddings(tmp_path, 0, fingerprint=FINGERPRINT, num_users=N)
    assert np.array_equal(back.user_text_emb, random_encoders(N, seed=0).user_text_emb)
    assert [p.name for p in encoder_file(tmp_path, 0).parent.iterdir()] == ["encoders.h5"]


@pytest.mark.parametrize("old_file", [False, True])
def test_process_killed_mid_write_leaves_no_valid_looking_file(tmp_path, old_file):
    """A hard kill (no cleanup runs) leaves at most a ``*.h5.tmp-*`` file, which no reader opens: HDF5 and
    the data writes only ever touch the temporary file, which is renamed into place only when complete."""
    if old_file:
        write(tmp_path, seed=0)
    script = textwrap.dedent(
        f"""
        import os, sys
        import h5py
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from cache_payloads import FINGERPRINT, random_encoders
        from cache import write_encoder_embeddings

        real = h5py.Group.create_dataset
        def create_dataset(self, name, *args, **kwargs):
            if name == "user_text_emb":
                self.file.flush()
                os._exit(3)  # killed: no except/finally block runs
            return real(self, name, *args, **kwargs)
        h5py.Group.create_dataset = create_dataset
        write_encoder_embeddings({str(tmp_path)!r}, 0, random_encoders({N}, seed=1), fingerprint=FINGERPRINT, producer={{}})
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    folder = encoder_file(tmp_path, 0).parent
    files = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    assert [f for f in files if not f.startswith("encoders.h5.tmp-")] == (["encoders.h5"] if old_file else [])
    if old_file:
        back = read_encoder_embeddings(tmp_path, 0, fingerprint=FINGERPRINT, num_users=N)
        assert np.array_equal(back.user_image_emb, random_encoders(N, seed=0).user_image_emb)
    else:
        with pytest.raises(CacheError, match="no such cache file: run stage 1 for round 0 first"):
            read_encoder_embeddings(tmp_path, 0, fingerprint=FINGERPRINT, num_users=N)


def test_enospc_inside_hdf5_is_one_disk_full_error(tmp_path, monkeypatch):
    """HDF5 writes the metadata into the temporary file itself; its ENOSPC (h5py raises OSError with the
    errno) is the same DiskFullError as one in the data writes, and leaves no temporary file."""
    import errno

    from cache.atomic import DiskFullError

    real = h5py.Group.create_dataset

    def create_dataset(self, name, *args, **kwargs):
        if name == "user_text_emb":
            raise OSError(errno.ENOSPC, "Unable to extend file properly, errno = 28")
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", create_dataset)
    with pytest.raises(DiskFullError, match=r"encoders\.h5: no space left on device \(.* needed"):
        write(tmp_path, seed=0)
    assert list(encoder_file(tmp_path, 0).parent.iterdir()) == []
