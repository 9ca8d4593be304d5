"""The run folder as a format: typed keys that format and parse, the one file-record check, typed entries."""

from __future__ import annotations

import os

import pytest

from bridge.runfolder import CORPUS_KEY, EvalKey, FileRecord, Manifest, RunPaths, StageKey
from bridge.runfolder.records import file_sha256, resolve_run_relative, run_relative


@pytest.mark.parametrize(
    "key, text",
    [
        (StageKey("mmga", 1, "stage2", seed=0), "seed_0/mmga/round_1/stage2"),
        (StageKey("no_align", 0, "stage1"), "no_align/round_0/stage1"),
        (StageKey("abl_no_gcl", 12, "stage1", seed=7), "seed_7/abl_no_gcl/round_12/stage1"),
    ],
)
def test_stage_keys_format_and_parse_back(key, text):
    assert str(key) == text
    assert StageKey.parse(text) == key
    assert EvalKey.parse(text) is None


@pytest.mark.parametrize(
    "key, text",
    [
        (EvalKey("no_align", seed=0, round=2), "eval/seed_0/no_align/round_2"),
        (EvalKey("stats_x"), "eval/stats_x"),
        (EvalKey("peer_gcn", seed=3), "eval/seed_3/peer_gcn"),
    ],
)
def test_eval_keys_format_and_parse_back(key, text):
    assert str(key) == text
    assert EvalKey.parse(text) == key
    assert StageKey.parse(text) is None


@pytest.mark.parametrize(
    "text", [CORPUS_KEY, "seed_x/mmga/round_1/stage2", "mmga/round_1/stage3", "eval/", ""]
)
def test_other_strings_are_no_keys(text):
    assert StageKey.parse(text) is None and EvalKey.parse(text) is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"variant": "../x", "round": 0, "stage": "stage1"}, "variant must be a name"),
        ({"variant": "mmga", "round": -1, "stage": "stage1"}, "round must be an int >= 0"),
        ({"variant": "mmga", "round": 0, "stage": "stage3"}, "unknown stage 'stage3'"),
        ({"variant": "mmga", "round": 0, "stage": "stage1", "seed": True}, "training seed must be an int"),
    ],
)
def test_bad_stage_keys_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StageKey(**kwargs)


def test_paths_follow_the_keys(tmp_path):
    paths = RunPaths(tmp_path)
    key = paths.for_seed(2).stage_key("mmga", 1, "stage2")
    assert key == StageKey("mmga", 1, "stage2", seed=2)
    assert paths.stage_dir(key) == tmp_path / "seed_2" / "mmga" / "round_1" / "stage2"
    assert paths.for_key(key).cache_dir("mmga") == tmp_path / "seed_2" / "mmga" / "cache"
    assert paths.for_seed(2).eval_key("no_align", 1) == EvalKey("no_align", 2, 1)


def test_a_file_record_notices_a_same_size_change(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 100)
    record = FileRecord.of(path)
    assert record.matches(path) and record.size == 100
    stat = path.stat()
    path.write_bytes(b"b" * 100)  # same size, other bytes
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert not record.matches(path)
    path.unlink()
    assert not record.matches(path)
    assert FileRecord.from_json(record.to_json()) == record


def test_hashes_are_computed_once_per_file_state(tmp_path, monkeypatch):
    import hashlib

    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    calls = []
    real = hashlib.sha256

    def counting(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(hashlib, "sha256", counting)
    first = file_sha256(path)
    assert file_sha256(path) == first and len(calls) == 1  # memoised
    stat = path.stat()
    path.write_bytes(b"y" * 10)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10))
    assert file_sha256(path) != first and len(calls) == 2  # a changed file is hashed again


def test_manifest_entries_are_typed_and_intact_checks_every_file(tmp_path):
    out = tmp_path / "seed_0" / "mmga" / "round_0" / "stage1"
    out.mkdir(parents=True)
    ckpt = out / "last.ckpt"
    ckpt.write_bytes(b"checkpoint")
    manifest = Manifest(tmp_path / "manifest.json")
    key = StageKey("mmga", 0, "stage1", seed=0)
    manifest.record(
        key, {"lr": 1.0}, "fp", outputs={"checkpoint": ckpt, "dir": out}, metrics={"loss": 1.5}, seconds=2.0
    )
    loaded = Manifest.load(manifest.path)
    entry = loaded.entry(key)
    assert entry.outputs["checkpoint"] == ckpt and entry.metrics == {"loss": 1.5} and entry.seconds == 2.0
    assert set(entry.files) == {"seed_0/mmga/round_0/stage1/last.ckpt"}
    assert loaded.stage_keys() == [key] and loaded.eval_keys() == []
    assert loaded.intact(key)
    ckpt.write_bytes(b"checkpoinT")  # same size
    assert not loaded.intact(key)
    assert not loaded.intact(StageKey("mmga", 1, "stage1", seed=0))  # not recorded


def test_run_relative_paths_survive_a_move(tmp_path):
    run = tmp_path / "run"
    text = run_relative(run / "corpus", run)
    assert text == "$RUN/corpus"
    assert resolve_run_relative(text, tmp_path / "moved") == tmp_path / "moved" / "corpus"
    assert run_relative(tmp_path / "elsewhere", run) == str(tmp_path / "elsewhere")


def test_verify_names_every_step_whose_files_changed(tmp_path, capsys):
    from bridge.runfolder.verify import main as verify

    manifest = Manifest(tmp_path / "manifest.json")
    for name in ("a", "b"):
        path = tmp_path / f"{name}.bin"
        path.write_bytes(b"12345")
        manifest.record(StageKey(name, 0, "stage1", seed=0), {}, "fp", outputs={"checkpoint": path})
    assert verify([str(tmp_path)]) == 0 and "2 of 2 recorded steps match" in capsys.readouterr().out
    (tmp_path / "b.bin").write_bytes(b"12346")
    assert verify([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("seed_0/b/round_0/stage1: its files changed") and "1 of 2" in out
    assert verify([str(tmp_path / "nothing")]) == 2
