"""The bridge calls each stage in-process: Lightning's re-launching ``ddp`` is refused with what to use
instead, and the spawning ``ddp_spawn`` reaches the stage config (its 2-process run is tested in
tests/stage1_encoders/test_ddp.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.rounds.config import build_config
from bridge.runfolder.paths import RunPaths
from mmga_common.config import ConfigError
from tests.bridge.bridge_tiny import resolve_stage


def _resolve(stage: str, overrides: list[str], tmp: Path):
    if stage == "stage2":  # full-batch stage 2 is one process (a stage-2 config error otherwise)
        overrides = [*overrides, "trainer.batching=neighbor"]
    cfg = build_config(**{stage: overrides})
    return resolve_stage(stage, cfg, RunPaths(tmp).for_seed(0), tmp / "corpus", "mmga", 0, None)


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_relaunching_ddp_is_refused_with_the_strategy_to_use(stage, tmp_path):
    with pytest.raises(ConfigError) as err:
        _resolve(stage, ["trainer.devices=2", "trainer.strategy=ddp"], tmp_path)
    assert f"use --{stage} trainer.strategy=ddp_spawn" in str(err.value)
    assert "re-launches the calling script" in str(err.value)


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_ddp_spawn_and_single_process_ddp_pass_through(stage, tmp_path):
    spawn = _resolve(stage, ["trainer.devices=2", "trainer.strategy=ddp_spawn"], tmp_path)
    assert spawn.trainer.strategy == "ddp_spawn" and str(spawn.trainer.devices) == "2"
    single = _resolve(stage, ["trainer.devices=1", "trainer.strategy=ddp"], tmp_path)
    assert single.trainer.strategy == "ddp"


def test_stage2_full_batch_on_two_processes_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="more than one process needs trainer.batching=neighbor"):
        resolve_stage(
            "stage2",
            build_config(stage2=["trainer.devices=2", "trainer.strategy=ddp_spawn"]),
            RunPaths(tmp_path).for_seed(0),
            tmp_path / "corpus",
            "mmga",
            0,
            None,
        )
