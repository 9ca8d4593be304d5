"""Matrix, refuse at once what cannot finish (issue 24): absurd sizes, graphs larger than memory, outputs that
cannot be written, and bad input to the small command-line tools.

| input | expected outcome |
|---|---|
| `--stage2 model.num_layers=1000000000` (and hidden_dim, text_layers, max_text_length, max_steps, ...) | exit 2 in well under a second, one line naming the key and the bound; nothing written |
| the same values in a stage CLI flag, a config file or a checkpoint's stored config | the same one-line `ConfigError` |
| a graph whose training needs more memory than is free | `Stage2InputError` before the model is built: needed, free, what to do, how to override |
| `--out`/`--cache` of a stage CLI or `corpus.synthetic` on a read-only file system, without permission, or a file | exit 2, one `error:` line naming the path and what to do, no traceback, nothing trained |
| a full disk found by the probe write | the same line, saying "no space left on device" |
| `python -m cache.inspect` on a path the OS refuses (too long) | exit 2, one line |
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch

from bridge.alternate import main as bridge_main
from mmga_common.config import ConfigError
from stage1_encoders.config import Stage1Config
from stage2_graph.config import Stage2Config

# (bridge flag, dotted key, absurd value, bound)
ABSURD = [
    ("--stage2", "model.num_layers", 1_000_000_000, 1024),
    ("--stage2", "model.hidden_dim", 1_000_000_000, 16384),
    ("--stage2", "model.heads", 1_000_000, 256),
    ("--stage2", "trainer.batch_size", 10**12, 1 << 30),
    ("--stage2", "trainer.max_steps", 10**12, 100_000_000),
    ("--stage1", "model.text_layers", 1_000_000_000, 256),
    ("--stage1", "model.text_hidden_size", 1_000_000_000, 16384),
    ("--stage1", "model.max_text_length", 10**12, 65536),
    ("--stage1", "data.pairs_per_batch", 10**9, 65536),
    ("--stage1", "data.export_batch_size", 10**9, 65536),
    ("--stage1", "trainer.max_steps", 10**12, 100_000_000),
]


def _bound_message(key: str, value: int, bound: int) -> str:
    from mmga_common.config import SANITY_LIMIT

    return f"field '{key}': must be <= {bound} ({SANITY_LIMIT}), got {value}"


@pytest.mark.parametrize(
    ("flag", "key", "value", "bound"), ABSURD, ids=[f"{a[0][2:]}.{a[1]}" for a in ABSURD]
)
def test_absurd_sizes_are_refused_at_once(tmp_path, capsys, tiny_corpus, flag, key, value, bound):
    run_dir = tmp_path / "run"
    start = time.perf_counter()
    code = bridge_main(["--run-dir", str(run_dir), "--corpus", str(tiny_corpus), flag, f"{key}={value}"])
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert seconds < 3.0  # measured: ~0.05 s; the margin is for a loaded machine
    assert len(err.splitlines()) == 1 and err.endswith(_bound_message(key, value, bound)), err
    assert not (run_dir / "stage1").exists() and not (run_dir / "mmga").exists()


def test_fanouts_have_a_bound():
    from mmga_common.config import SANITY_LIMIT

    with pytest.raises(ConfigError) as info:
        Stage2Config.from_dict(
            {"corpus": "c", "cache_dir": "k", "trainer": {"batching": "neighbor", "fanouts": [10, 10**9]}},
            source="command line",
        )
    assert str(info.value) == (
        f"command line, field 'trainer.fanouts': must each be <= 1000000 (-1 takes all neighbours; {SANITY_LIMIT})"
    )


def test_the_paper_and_large_presets_are_within_the_bounds():
    """The bounds refuse nothing real: BERT-large-sized text towers, long captions, deep GNNs, long runs."""
    Stage1Config.from_dict(
        {
            "corpus": "c",
            "cache_dir": "k",
            "model": {"text_hidden_size": 1024, "text_layers": 24, "text_heads": 16, "max_text_length": 512},
            "data": {"pairs_per_batch": 4096, "export_batch_size": 4096},
            "trainer": {"max_steps": 1_000_000},
        }
    )
    Stage2Config.from_dict(
        {
            "corpus": "c",
            "cache_dir": "k",
            "model": {"hidden_dim": 4096, "num_layers": 64, "heads": 16},
            "trainer": {"max_steps": 10_000_000, "batch_size": 1_000_000},
        }
    )


def test_stage1_cli_refuses_an_absurd_flag_in_one_line(tmp_path, capsys):
    from stage1_encoders.run import main

    code = main(["--corpus", "c", "--cache", str(tmp_path), "--text-layers", "1000000000"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == (
        f"error: command line, {_bound_message('model.text_layers', 1_000_000_000, 256)} (flag --text-layers)"
    )


def test_absurd_values_in_a_config_file_name_the_line(tmp_path):
    path = tmp_path / "stage2.yaml"
    path.write_text("model:\n  hidden_dim: 64\n  num_layers: 1000000000\n")
    with pytest.raises(ConfigError) as info:
        Stage2Config.from_file(path, {"corpus": "c", "cache_dir": "k"})
    assert str(info.value) == f"{path}, line 3, {_bound_message('model.num_layers', 1_000_000_000, 1024)}"


# --- checkpoints whose stored config is absurd -----------------------------------------------------------


def test_stage1_checkpoint_with_an_absurd_stored_config_is_one_error(tmp_path):
    from stage1_encoders.infer import load_trained_encoders

    stored = Stage1Config.from_dict({"corpus": "c", "cache_dir": "k"}).to_dict()
    stored["model"]["text_layers"] = 1_000_000_000
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "stage1_config": stored, "stage1_tokenizer": None}, path)
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_trained_encoders(path)
    assert time.perf_counter() - start < 3.0
    assert str(info.value) == (
        f"{path} (stored stage1_config), {_bound_message('model.text_layers', 1_000_000_000, 256)} "
        "(a checkpoint from another version of stage 1?)"
    )


def test_stage2_checkpoint_with_an_absurd_stored_config_is_one_error(tmp_path):
    from stage2_graph.infer import read_checkpoint_config

    stored = Stage2Config.from_dict({"corpus": "c", "cache_dir": "k"}).to_dict()
    stored["model"]["hidden_dim"] = 1_000_000_000
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"stage2_config": stored}}, path)
    with pytest.raises(ConfigError) as info:
        read_checkpoint_config(path)
    assert str(info.value) == (
        f"{path} (stored stage2_config), {_bound_message('model.hidden_dim', 1_000_000_000, 16384)} "
        "(a checkpoint from another version of stage 2?)"
    )


# --- memory ----------------------------------------------------------------------------------------------


def test_memory_estimate_of_known_sizes():
    from stage2_graph.memory import estimate_training_bytes

    # inputs 1000*10*4, edge index 2*(2*5000)*8, weights (10*64 + 2*2*64*64)*4*4,
    # per layer (3*1000*64 + 2*(2*5000)*1)*4, two layers
    expected = 40_000 + 160_000 + 272_384 + 2 * 848_000
    assert estimate_training_bytes(1000, 5000, 10, 64, 2, heads=1) == expected
    assert (
        estimate_training_bytes(1000, 5000, 10, 64, 2, heads=1, full_batch=False)
        == 40_000 + 160_000 + 272_384
    )
    # the paper's size (60,000 users, 1,000,000 edges) with the default model fits a laptop: well under 1 GiB
    assert estimate_training_bytes(60_000, 1_000_000, 9 + 1 + 256 + 64, 64, 2) < 2**30


def test_available_memory_from_proc_meminfo(tmp_path):
    from stage2_graph.memory import _meminfo_available

    path = tmp_path / "meminfo"
    path.write_text("MemTotal:       16000000 kB\nMemFree:          100000 kB\nMemAvailable:    2000000 kB\n")
    assert _meminfo_available(path) == 2_000_000 * 1024
    path.write_text("garbage\n")
    assert _meminfo_available(path) is None


def test_stage2_refuses_a_graph_larger_than_memory(tmp_path, capsys, monkeypatch, tiny_corpus):
    import stage2_graph.pipeline
    from stage2_graph.memory import SKIP_ENV
    from stage2_graph.run import main

    monkeypatch.delenv(SKIP_ENV, raising=False)
    monkeypatch.setattr(stage2_graph.pipeline, "available_bytes", lambda accelerator: 1_000_000)
    out = tmp_path / "out"
    argv = [
        "--corpus",
        str(tiny_corpus),
        "--cache",
        str(tmp_path / "cache"),
        "--out",
        str(out),
        "--no-use-modalities",
        "--hidden-dim",
        "4096",
        "--max-steps",
        "1",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("stage2_graph.run: error: stage 2 needs at least ") and len(err.splitlines()) == 1
    assert err.endswith(
        "of memory for this graph and model, but only 1.0 MiB is available; use smaller model.hidden_dim / "
        "model.num_layers, trainer.batching=neighbor or subgraph, or a larger machine (set MMGA_SKIP_MEMORY_CHECK=1 to "
        "skip this check)"
    )
    assert not (out / "checkpoints").exists()


def test_memory_check_can_be_skipped(monkeypatch):
    from stage2_graph.memory import SKIP_ENV, memory_problem

    assert memory_problem(2**31, 2**30) is not None
    assert memory_problem(2**29, 2**30) is None
    monkeypatch.setenv(SKIP_ENV, "1")
    assert memory_problem(2**31, 2**30) is None


# --- outputs that cannot be written ----------------------------------------------------------------------


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder on a read-only tmpfs (needs root and mount; skipped otherwise)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a read-only file system")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)]).returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here")
    yield folder
    subprocess.run(["umount", "-l", str(folder)])


def _stage_argv(stage: str, corpus: Path, cache: Path, out: Path) -> list[str]:
    argv = ["--corpus", str(corpus), "--cache", str(cache), "--out", str(out), "--max-steps", "1"]
    return argv + (["--no-use-modalities"] if stage == "stage2" else [])


def _stage_main(stage: str):
    if stage == "stage1":
        from stage1_encoders.run import main
    else:
        from stage2_graph.run import main
    return main


PREFIX = {"stage1": "error: ", "stage2": "stage2_graph.run: error: "}


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
@pytest.mark.parametrize("which", ["--out", "--cache"])
def test_stage_cli_on_a_read_only_folder(tmp_path, capsys, read_only_folder, tiny_corpus, stage, which):
    target = read_only_folder / "sub"
    cache, out = (tmp_path / "cache", target) if which == "--out" else (target, tmp_path / "out")
    start = time.perf_counter()
    code = _stage_main(stage)(_stage_argv(stage, tiny_corpus, cache, out))
    assert time.perf_counter() - start < 3.0
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        f"{PREFIX[stage]}cannot write {target}: read-only file system; choose a folder on a writable file "
        f"system with {which}"
    )


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_stage_cli_without_permission(tmp_path, capsys, monkeypatch, tiny_corpus, stage):
    """Root ignores permission bits, so EACCES is simulated: mkdir under ``locked`` is refused."""
    locked = tmp_path / "locked"
    real_mkdir = os.mkdir

    def mkdir(path, *args, **kwargs):
        if str(path).startswith(str(locked)):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    out = locked / "out"
    code = _stage_main(stage)(_stage_argv(stage, tiny_corpus, tmp_path / "cache", out))
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{PREFIX[stage]}cannot write {locked}") and len(err.splitlines()) == 1
    assert err.endswith(
        "permission denied; choose a folder you can write, or change its permissions with --out"
    )


def test_a_full_disk_is_found_by_the_probe_write(tmp_path, monkeypatch):
    import mmga_common.writable

    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(mmga_common.writable.os, "fsync", fsync)
    assert mmga_common.writable.first_unwritable({tmp_path / "out": "--out"}) == (
        f"cannot write {tmp_path / 'out'}: no space left on device; free some space or choose a folder on "
        "another disk with --out"
    )
    assert list((tmp_path / "out").iterdir()) == []  # the probe file is gone


def test_generator_cli_on_a_file_or_a_read_only_folder(tmp_path, capsys, read_only_folder):
    from corpus.synthetic.__main__ import main

    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["--out", str(blocker / "corpus"), "--users", "60"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: cannot write {blocker / 'corpus'}: the path (or a folder in it) is a file, not a folder; "
        "choose another path with --out"
    )
    assert main(["--out", str(read_only_folder / "corpus"), "--users", "60"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: cannot write {read_only_folder / 'corpus'}: read-only file system; choose a folder on a "
        "writable file system with --out"
    )


def test_inspect_on_a_path_the_os_refuses(capsys):
    from cache.inspect import main

    assert main(["a" * 5000]) == 2
    assert capsys.readouterr().err.strip() == f"{'a' * 100}...{'a' * 100}: cannot read: File name too long"
