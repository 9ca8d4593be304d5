"""Matrix, the run folder (issue 15, items 6, 7 and 8).

| input | expected outcome |
|---|---|
| a second run on a folder another process is running in | exit 2 at once, naming the holder's PID; nothing touched |
| the lock file of a run killed with `kill -9` | does not block the next run |
| a finished `graph.h5` truncated, then the same command | only that stage reruns, with identical data; nothing downstream recomputes, no `--force` |
| the same cache data written at another time | same content digest (the sha256 differs) |
| a damaged `manifest.json` | recovered from `manifest.json.bak`, with a warning |
| `manifest.json` and its backup both damaged | `ManifestError`, nothing overwritten |
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
from reliability_helpers import tiny_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cache"))

from bridge.alternate import main
from bridge.rounds.runner import run_bridge
from bridge.runfolder.lock import LOCK_FILE, RunFolderLocked, run_lock
from bridge.runfolder.manifest import Manifest, ManifestError
from bridge.runfolder.records import content_digest, file_sha256
from cache import graph_file

REPO = Path(__file__).resolve().parents[2]
HOLD = "import sys, time; from bridge.runfolder.lock import run_lock\nwith run_lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(120)"


def _holder(run_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_run_on_a_locked_folder_exits_at_once_naming_the_pid(tmp_path, capsys):
    run = tmp_path / "run"
    holder = _holder(run)
    try:
        start = time.perf_counter()
        code = main(["--rounds", "1", "--run-dir", str(run), "--skip-baselines"])
        seconds = time.perf_counter() - start
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    assert code == 2
    assert f"in use by another bridge run (PID {holder.pid}" in err
    assert seconds < 30  # at once: no corpus generated, nothing trained
    assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]


def test_lock_of_a_killed_run_does_not_block(tmp_path):
    run = tmp_path / "run"
    holder = _holder(run)
    with pytest.raises(RunFolderLocked, match=str(holder.pid)):
        with run_lock(run):
            pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (run / LOCK_FILE).read_text().strip() == str(holder.pid)  # the stale file is still there
    with run_lock(run):  # ... and does not block
        assert (run / LOCK_FILE).read_text().strip() == str(os.getpid())


def test_repaired_cache_file_does_not_force_recomputing_what_follows(corpus_copy, tmp_path):
    cfg = tiny_config(corpus_copy())
    run = tmp_path / "run"
    run_bridge(cfg, run)
    graph = graph_file(run / "seed_0" / "mmga" / "cache", 0)
    digest_before = content_digest(graph)
    with open(graph, "r+b") as f:
        f.truncate(graph.stat().st_size // 2)
    time.sleep(1.1)  # a later `created` second
    again = run_bridge(cfg, run)  # no ManifestConflict, no --force
    assert again.ran == ["seed_0/mmga/round_0/stage2"]
    assert content_digest(graph) == digest_before  # recomputed with identical data


def test_content_digest_ignores_the_write_time(tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    from cache_payloads import FINGERPRINT, PRODUCER, random_encoders  # noqa: PLC0415

    from cache import encoder_file, write_encoder_embeddings

    for folder in (a, b):
        write_encoder_embeddings(folder, 0, random_encoders(20), fingerprint=FINGERPRINT, producer=PRODUCER)
    with h5py.File(encoder_file(b, 0), "r+") as h5:
        h5.attrs["created"] = "2000-01-01T00:00:00+00:00"
    fa, fb = encoder_file(a, 0), encoder_file(b, 0)
    assert file_sha256(fa) != file_sha256(fb)
    assert content_digest(fa) == content_digest(fb)


def _manifest_with_two_entries(path: Path) -> Manifest:
    m = Manifest(path)
    m.record("a", {"x": 1}, "fp")
    m.record("b", {"x": 2}, "fp")
    return m


@pytest.mark.parametrize(
    "damage", [b"{not json", b"", b'{"version": 1}'], ids=["bad JSON", "empty", "no entries"]
)
def test_damaged_manifest_is_recovered_from_its_backup(tmp_path, capsys, damage):
    path = tmp_path / "manifest.json"
    _manifest_with_two_entries(path)
    path.write_bytes(damage)
    m = Manifest.load(path)
    assert "Recovered the previous good manifest from" in capsys.readouterr().out
    assert m.entry("a") is not None  # the backup holds the state before the last save
    assert Manifest.load(path).entry("a") is not None  # and the recovered state was saved


def test_manifest_and_backup_both_damaged_is_an_error(tmp_path):
    path = tmp_path / "manifest.json"
    _manifest_with_two_entries(path)
    path.write_bytes(b"{not json")
    path.with_name("manifest.json.bak").write_bytes(b"{also not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        Manifest.load(path)
    assert path.read_bytes() == b"{not json"
