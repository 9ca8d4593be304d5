"""Matrix, a full disk (issue 15, item 9): one clear error, exit code 2, nothing partial, and the rerun resumes.

| fault | expected outcome |
|---|---|
| ENOSPC while writing a cache file | `DiskFullError` naming the path and the bytes needed; the old file (or none) under the final name, no temporary file |
| not enough free space for a cache file (checked first) | `DiskFullError` before anything is written |
| ENOSPC while writing a checkpoint (`SafeCheckpointIO`) | `DiskFullError`; no partial `last.ckpt` |
| ENOSPC during a bridge run's `encoders.h5` write | exit 2, one `error:` line naming `encoders.h5`, no traceback; the rerun resumes to the metrics of an uninterrupted run |
| a real full file system (a small tmpfs, root only; slow) | exit 2, no partial file under a final name; after making room the rerun finishes |
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from reliability_helpers import tiny_config

import cache.atomic
from bridge.alternate import main
from cache import CacheError, encoder_file, read_encoder_embeddings, write_encoder_embeddings
from cache.atomic import DiskFullError
from cache.checkpoint import SafeCheckpointIO, load_checkpoint
from tests.bridge.bridge_tiny import TINY_EVAL

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cache"))
from cache_payloads import FINGERPRINT, PRODUCER, random_encoders  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def fail_writes_to(monkeypatch, name: str) -> list[str]:
    """Make every atomic write whose final name is ``name`` hit ENOSPC half-way; returns the paths hit."""
    real = cache.atomic._write_all
    hit: list[str] = []

    def write_all(fd, data):
        target = os.readlink(f"/proc/self/fd/{fd}")
        if Path(target).name.startswith(name + ".tmp-"):
            hit.append(target)
            os.write(fd, bytes(memoryview(data)[: len(data) // 2]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(cache.atomic, "_write_all", write_all)
    return hit


def test_enospc_in_a_cache_write(tmp_path, monkeypatch):
    write_encoder_embeddings(
        tmp_path, 0, random_encoders(40, seed=0), fingerprint=FINGERPRINT, producer=PRODUCER
    )
    hit = fail_writes_to(monkeypatch, "encoders.h5")
    with pytest.raises(DiskFullError) as info:
        write_encoder_embeddings(
            tmp_path, 0, random_encoders(40, seed=1), fingerprint=FINGERPRINT, producer=PRODUCER
        )
    assert hit, "the fault was not injected"
    message = str(info.value)
    assert message.startswith(f"{encoder_file(tmp_path, 0)}: no space left on device (")
    assert "needed" in message and "rerun the same command to resume" in message
    monkeypatch.undo()
    back = read_encoder_embeddings(tmp_path, 0, fingerprint=FINGERPRINT, num_users=40)  # the old file
    assert (back.user_image_emb == random_encoders(40, seed=0).user_image_emb).all()
    assert [p.name for p in encoder_file(tmp_path, 0).parent.iterdir()] == ["encoders.h5"]


def test_too_little_free_space_is_refused_before_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(cache.atomic, "free_bytes", lambda folder: 100)
    with pytest.raises(DiskFullError, match=r"needed, 100 B free"):
        write_encoder_embeddings(tmp_path, 0, random_encoders(40), fingerprint=FINGERPRINT, producer=PRODUCER)
    assert (
        not any(encoder_file(tmp_path, 0).parent.glob("*"))
        if encoder_file(tmp_path, 0).parent.exists()
        else True
    )


def test_enospc_in_a_checkpoint_write(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    SafeCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)
    fail_writes_to(monkeypatch, "last.ckpt")
    with pytest.raises(DiskFullError, match="last.ckpt: no space left on device"):
        SafeCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(1000)}}, path)
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.zeros(3))  # the previous one, whole
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def _config_file(tmp_path: Path, corpus: Path) -> Path:
    cfg = tiny_config(corpus)
    path = tmp_path / "tiny.json"
    path.write_text(
        json.dumps(
            {
                "rounds": 1,
                "seeds": 1,
                "corpus": str(corpus),
                "stage1": cfg.stage1,
                "stage2": cfg.stage2,
                "eval": {
                    "head_seeds": list(TINY_EVAL.head_seeds),
                    "heads": list(TINY_EVAL.heads),
                    "weight_decays": list(TINY_EVAL.weight_decays),
                    "max_epochs": TINY_EVAL.max_epochs,
                    "patience": TINY_EVAL.patience,
                },
            }
        )
    )
    return path


def _metrics(run: Path) -> dict:
    rows = json.loads((run / "report" / "metrics.json").read_text())["rows"]
    return {
        name: (row["topic"]["macro_f1"]["values"], row["fans"]["mae"]["values"]) for name, row in rows.items()
    }


def test_enospc_during_a_bridge_run_is_one_clear_error_and_the_rerun_resumes(
    corpus_copy, tmp_path, monkeypatch, capsys
):
    config = _config_file(tmp_path, corpus_copy())
    args = [
        "--config",
        str(config),
        "--skip-baselines",
        "--jobs",
        "1",
    ]  # in-process: the fault is injected here
    run = tmp_path / "full_disk"
    hit = fail_writes_to(monkeypatch, "encoders.h5")
    assert main([*args, "--run-dir", str(run)]) == 2
    assert hit
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert "encoders.h5: no space left on device" in line
    assert not encoder_file(run / "seed_0" / "mmga" / "cache", 0).exists()
    monkeypatch.undo()  # space freed
    assert main([*args, "--run-dir", str(run)]) == 0
    assert main([*args, "--run-dir", str(tmp_path / "uninterrupted")]) == 0
    assert _metrics(run) == _metrics(tmp_path / "uninterrupted")


def _mount_tmpfs(path: Path, size: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]).returncode == 0


@pytest.mark.slow
def test_real_full_file_system(corpus_copy, tmp_path):
    mount = tmp_path / "small_fs"
    if not _mount_tmpfs(mount, "256k"):
        pytest.skip("needs root and tmpfs to mount a small file system")
    try:
        config = _config_file(tmp_path, corpus_copy())
        run = mount / "run"
        cmd = [
            sys.executable,
            "bridge/alternate.py",
            "--config",
            str(config),
            "--skip-baselines",
            "--run-dir",
            str(run),
        ]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        full = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        assert full.returncode == 2, full.stderr[-3000:]
        assert "no space left on device" in full.stderr and "Traceback" not in full.stderr
        for ckpt in run.rglob("*.ckpt"):
            load_checkpoint(ckpt)  # nothing partial under a final name
        # the error names the file whose write failed (at 256 KiB the text states' cache, the run's first large
        # file), and nothing stands under that name
        failed = re.search(r"error: (\S+): no space left on device", full.stderr)
        assert failed, full.stderr[-3000:]
        assert run in Path(failed[1]).parents and not Path(failed[1]).exists()
        assert not list(run.rglob("*.tmp-*"))
        subprocess.run(["mount", "-o", "remount,size=200m", str(mount)], check=True)
        again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        assert again.returncode == 0, again.stderr[-3000:]
        assert (run / "report" / "metrics.json").is_file()
    finally:
        subprocess.run(["umount", "-l", str(mount)])


def test_cache_error_is_not_mistaken_for_a_full_disk():
    assert not cache.atomic.is_disk_full(CacheError("x.h5", None, "bad"))
