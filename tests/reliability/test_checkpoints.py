"""Matrix, checkpoint safety (issue 15, item 10): no checkpoint we read can run code.

Every read passes ``weights_only=True`` explicitly, so ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` (set in every
test here) cannot turn pickle execution back on, also on Lightning's resume path (``ckpt_path=``).

| input | reader | expected outcome |
|---|---|---|
| checkpoint with a pickle payload | `cache.checkpoint.load_checkpoint`, Lightning's `strategy.load_checkpoint` (both stages' Trainers), stage 1 `--init-checkpoint`/`--resume`, stage 2 `--init-checkpoint`/`--resume` | clean error, the payload never runs |
| random bytes | the same readers | clean error naming the file, no traceback |
| a real checkpoint written by `SafeCheckpointIO` | `load_checkpoint` | loads (round trip) |
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from cache.checkpoint import CheckpointError, SafeCheckpointIO, load_checkpoint
from mmga_common.trainer import build_trainer
from stage1_encoders.checkpoint import load_stage1_checkpoint
from stage1_encoders.config import ConfigError as Stage1ConfigError
from stage2_graph.config import ConfigError as Stage2ConfigError
from stage2_graph.config import Stage2Config
from stage2_graph.pipeline import run_stage2


class Payload:
    """Unpickling this creates a folder: proof that code from the checkpoint ran."""

    def __init__(self, evidence: Path):
        self.evidence = str(evidence)

    def __reduce__(self):
        return (os.mkdir, (self.evidence,))


@pytest.fixture(autouse=True)
def force_unsafe_default(monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")


def _evil(tmp_path: Path) -> tuple[Path, Path]:
    evidence = tmp_path / "payload_ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "stage1_config": {}, "x": Payload(evidence)}, path)
    return path, evidence


def _garbage(tmp_path: Path) -> tuple[Path, Path]:
    path = tmp_path / "garbage.ckpt"
    path.write_bytes(os.urandom(4096))
    return path, tmp_path / "payload_ran"


def _stage2_cfg(tmp_path: Path, resume: str | None = None) -> Stage2Config:
    trainer = {"max_steps": 1, "enable_progress_bar": False}
    if resume is not None:
        trainer["resume"] = resume
    return Stage2Config.from_dict(
        {"corpus": str(tmp_path), "cache_dir": str(tmp_path / "cache"), "gate": "uniform", "trainer": trainer}
    )


def _lightning_stage2(path: Path, tmp_path: Path) -> None:
    cfg = _stage2_cfg(tmp_path)
    trainer = build_trainer(cfg.trainer, tmp_path / "out", "stage 2", checkpoint_io=SafeCheckpointIO())
    assert isinstance(trainer.strategy.checkpoint_io, SafeCheckpointIO)
    trainer.strategy.load_checkpoint(path)  # what trainer.fit(ckpt_path=path) calls


def _lightning_stage1(path: Path, tmp_path: Path) -> None:
    from stage1_encoders.config import Stage1Config

    cfg = Stage1Config.from_dict({"corpus": str(tmp_path), "cache_dir": str(tmp_path / "cache")}, "test")
    trainer = build_trainer(cfg.trainer, tmp_path / "out", "stage 1", checkpoint_io=SafeCheckpointIO())
    assert isinstance(trainer.strategy.checkpoint_io, SafeCheckpointIO)
    trainer.strategy.load_checkpoint(path)


READERS = {
    "cache.checkpoint.load_checkpoint": (lambda p, t: load_checkpoint(p), CheckpointError),
    "stage 1 --init-checkpoint / --resume (own read)": (
        lambda p, t: load_stage1_checkpoint(p),
        Stage1ConfigError,
    ),
    "stage 1 resume through Lightning": (_lightning_stage1, CheckpointError),
    "stage 2 --resume (checked before any work)": (
        lambda p, t: run_stage2(_stage2_cfg(t, str(p))),
        CheckpointError,
    ),
    "stage 2 resume through Lightning": (_lightning_stage2, CheckpointError),
}


@pytest.mark.parametrize("make", [_evil, _garbage], ids=["pickle payload", "random bytes"])
@pytest.mark.parametrize("reader", list(READERS))
def test_no_checkpoint_reader_runs_code_or_shows_a_traceback(tmp_path, make, reader):
    path, evidence = make(tmp_path)
    read, error = READERS[reader]
    with pytest.raises(error) as info:
        read(path, tmp_path)
    assert not evidence.exists(), "the pickle payload ran"
    assert str(path) in str(info.value)


def test_stage2_init_checkpoint_is_read_weights_only(tmp_path):
    from stage2_graph.pipeline import load_init_checkpoint

    path, evidence = _evil(tmp_path)
    with pytest.raises(CheckpointError, match="cannot be read as a weights-only checkpoint"):
        load_init_checkpoint(None, path)  # refused before the system is touched
    assert not evidence.exists()


def test_safe_checkpoint_io_round_trip(tmp_path):
    state = {"state_dict": {"w": torch.arange(6.0).reshape(2, 3)}, "global_step": 7, "name": "x"}
    path = tmp_path / "checkpoints" / "last.ckpt"
    SafeCheckpointIO().save_checkpoint(state, path)
    back = load_checkpoint(path)
    assert back["global_step"] == 7 and torch.equal(back["state_dict"]["w"], state["state_dict"]["w"])
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary file left


def test_missing_checkpoint_is_a_clean_error(tmp_path):
    with pytest.raises(Stage2ConfigError, match="not found"):
        _stage2_cfg(tmp_path, str(tmp_path / "nope.ckpt")).trainer.resume_path(tmp_path)
