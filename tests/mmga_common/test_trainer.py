"""The one trainer layer both stages use: the shared section, its checks, the Trainer it builds, fit + resume."""

from __future__ import annotations

import csv
import dataclasses
import typing
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DataLoader, TensorDataset

from cache.checkpoint import SafeCheckpointIO
from mmga_common.config import ConfigError, from_dict
from mmga_common.layout import checkpoint_path
from mmga_common.trainer import TrainerConfig, build_trainer, csv_log_dir, fit_and_save, upgrade_stored_config
from stage1_encoders.config import Stage1Config
from stage1_encoders.config import TrainerConfig as Stage1Trainer
from stage2_graph.config import Stage2Config
from stage2_graph.config import TrainerConfig as Stage2Trainer


def test_both_stages_share_every_field_of_the_one_section():
    shared = {f.name: typing.get_type_hints(TrainerConfig)[f.name] for f in dataclasses.fields(TrainerConfig)}
    for stage in (Stage1Trainer, Stage2Trainer):
        assert issubclass(stage, TrainerConfig)
        hints = typing.get_type_hints(stage)
        assert {name: hints[name] for name in shared} == shared, stage
    # only defaults and each stage's own fields differ
    assert set(typing.get_type_hints(Stage1Trainer)) - set(shared) == {"accumulate_grad_batches"}
    assert set(typing.get_type_hints(Stage2Trainer)) - set(shared) == {
        "batching",
        "fanouts",
        "walk_length",
        "batch_size",
        "inference",
        "retain_freed_memory",
    }
    one, two = Stage1Trainer(), Stage2Trainer()
    assert (one.max_steps, one.accelerator, one.log_every_n_steps, one.num_threads) == (400, "auto", 1, 1)
    assert (two.max_steps, two.accelerator, two.log_every_n_steps, two.checkpoint_every_n_steps) == (
        200,
        "auto",
        10,
        100,
    )
    assert one.loggers == two.loggers == ["csv"] and one.resume is two.resume is None


@pytest.mark.parametrize(
    ("devices", "nodes", "want"), [("1", 1, 1), ("2", 1, 2), ("0,1", 1, 2), ("0,1,", 2, 4), ("auto", 3, 3)]
)
def test_processes(devices, nodes, want):
    assert TrainerConfig(devices=devices, num_nodes=nodes).processes() == want


def test_spawns_workers_only_with_a_spawning_strategy_and_several_processes():
    assert TrainerConfig(devices="2", strategy="ddp_spawn").spawns_workers
    assert TrainerConfig(devices="2", strategy="ddp_notebook").spawns_workers
    assert not TrainerConfig(devices="1", strategy="ddp_spawn").spawns_workers
    assert not TrainerConfig(devices="2", strategy="ddp").spawns_workers


@pytest.mark.parametrize(
    ("trainer", "field", "message"),
    [
        ({"devices": "two"}, "trainer.devices", "expected a count, a list like 0,1, or auto; got 'two'"),
        ({"max_steps": -1}, "trainer.max_epochs", "max_steps = -1 needs max_epochs"),
        ({"max_steps": -2}, "trainer.max_steps", "must be >= -1"),
    ],
)
@pytest.mark.parametrize("cls", [Stage1Config, Stage2Config])
def test_both_stages_check_the_section_alike(cls, trainer, field, message):
    with pytest.raises(ConfigError) as err:
        cls.from_dict({"corpus": "c", "cache_dir": "k", "trainer": trainer}, source="cfg.yaml")
    assert err.value.field == field and err.value.source == "cfg.yaml" and message in str(err.value)


def test_old_keys_are_unknown_and_the_new_one_is_suggested():
    with pytest.raises(
        ConfigError, match=r"'trainer.resume_from': unknown field \(did you mean 'trainer.resume'\?\)"
    ):
        Stage1Config.from_dict({"corpus": "c", "cache_dir": "k", "trainer": {"resume_from": "x.ckpt"}})
    with pytest.raises(
        ConfigError, match=r"'trainer.csv_logger': unknown field \(did you mean 'trainer.loggers'\?\)"
    ):
        Stage2Config.from_dict({"corpus": "c", "cache_dir": "k", "trainer": {"csv_logger": False}})


def test_stored_configs_of_before_the_shared_section_still_load():
    old1 = {
        "corpus": "c",
        "cache_dir": "k",
        "trainer": {"resume_from": None, "devices": 2, "loggers": ["csv"]},
    }
    old2 = {
        "corpus": "c",
        "cache_dir": "k",
        "trainer": {"csv_logger": False, "tensorboard_logger": True, "max_epochs": -1},
    }
    cfg1 = Stage1Config.from_dict(upgrade_stored_config(old1))
    cfg2 = Stage2Config.from_dict(upgrade_stored_config(old2))
    assert cfg1.trainer.resume is None and cfg1.trainer.devices == "2"
    assert cfg2.trainer.loggers == ["tensorboard"] and cfg2.trainer.max_epochs is None
    today = Stage2Config(corpus=Path("c"), cache_dir=Path("k")).to_dict()
    assert upgrade_stored_config(today) == today
    assert old2["trainer"]["csv_logger"] is False  # the stored dict is not changed in place


def test_resume_path(tmp_path):
    assert TrainerConfig().resume_path(tmp_path) is None
    assert TrainerConfig(resume="last").resume_path(tmp_path) is None  # nothing to resume: a fresh start
    last = checkpoint_path(tmp_path)
    last.parent.mkdir(parents=True)
    last.write_bytes(b"")
    assert TrainerConfig(resume="last").resume_path(tmp_path) == last
    assert TrainerConfig(resume=str(last)).resume_path(tmp_path / "elsewhere") == last
    with pytest.raises(ConfigError, match=r"'trainer.resume': checkpoint .*missing.ckpt not found"):
        TrainerConfig(resume=str(tmp_path / "missing.ckpt")).resume_path(tmp_path)


def test_the_trainer_writes_the_one_layout(tmp_path):
    io = SafeCheckpointIO()
    tc = TrainerConfig(accelerator="cpu", loggers=["csv", "tensorboard"], checkpoint_every_n_steps=5)
    trainer = build_trainer(tc, tmp_path, "stage x", checkpoint_io=io, accumulate_grad_batches=2)
    csv_logger, tb_logger = trainer.loggers
    assert isinstance(csv_logger, CSVLogger) and csv_log_dir(trainer) == tmp_path / "logs" / "version_0"
    assert (
        isinstance(tb_logger, TensorBoardLogger)
        and Path(tb_logger.log_dir) == tmp_path / "tensorboard" / "version_0"
    )
    assert trainer.strategy.checkpoint_io is io and trainer.accumulate_grad_batches == 2
    (every,) = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]
    assert Path(every.dirpath) == tmp_path / "checkpoints" and every.save_last and every.save_top_k == 0
    quiet = build_trainer(
        TrainerConfig(accelerator="cpu", loggers=[], enable_progress_bar=False),
        tmp_path,
        "x",
        checkpoint_io=io,
    )
    assert quiet.loggers == [] and csv_log_dir(quiet) is None
    assert not any(isinstance(c, ModelCheckpoint) for c in quiet.callbacks)


def test_ddp_runs_without_buffer_broadcasts(tmp_path):
    tc = TrainerConfig(accelerator="cpu", devices="2", strategy="ddp_spawn", enable_progress_bar=False)
    trainer = build_trainer(tc, tmp_path, "x", checkpoint_io=SafeCheckpointIO())
    assert isinstance(trainer.strategy, DDPStrategy)
    assert trainer.strategy._ddp_kwargs == {"find_unused_parameters": False, "broadcast_buffers": False}
    assert trainer.strategy._start_method == "spawn" and trainer.num_devices == 2


class _Line(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.lin(x), y)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _Data(L.LightningDataModule):
    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(64, 2, generator=g)
        return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)


def _fit(tmp_path: Path, **fields) -> tuple[L.Trainer, Path]:
    tc = TrainerConfig(accelerator="cpu", enable_progress_bar=False, log_every_n_steps=1, **fields)
    trainer = build_trainer(tc, tmp_path, "x", checkpoint_io=SafeCheckpointIO())
    return trainer, fit_and_save(trainer, tc, _Line(), _Data(), tmp_path, tc.resume_path(tmp_path))


def test_fit_saves_a_resumable_last_checkpoint_and_resume_last_continues(tmp_path):
    trainer, checkpoint = _fit(tmp_path, max_steps=3)
    assert checkpoint == tmp_path / "checkpoints" / "last.ckpt" and trainer.global_step == 3
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 3
    resumed, _ = _fit(tmp_path, max_steps=5, resume="last")
    assert resumed.global_step == 5
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 5
    assert csv_log_dir(trainer) == tmp_path / "logs" / "version_0"
    assert (
        csv_log_dir(resumed) == tmp_path / "logs" / "version_1"
    )  # a new log for the resumed fit, the old one kept
    logged = {}
    for version in ("version_0", "version_1"):
        with open(tmp_path / "logs" / version / "metrics.csv") as handle:
            logged[version] = [int(row["step"]) for row in csv.DictReader(handle) if row.get("train/loss")]
    assert logged == {"version_0": [0, 1, 2], "version_1": [3, 4]}


def test_from_dict_of_the_shared_section_alone():
    tc = from_dict(TrainerConfig, {"devices": 2, "loggers": ["tensorboard"], "max_epochs": 3})
    assert tc.devices == "2" and tc.loggers == ["tensorboard"] and tc.max_epochs == 3


class _PartlyFrozen(_Line):
    """``_Line`` plus frozen modules kept in eval mode (as a frozen encoder's layers are) and, optionally, one more
    module left in eval mode by mistake."""

    def __init__(self, stray: bool):
        super().__init__()
        self.frozen = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.1))  # 3 modules
        self.stray = torch.nn.Dropout(0.1) if stray else None
        self.train()  # Lightning checks the modes as the module comes, before anything calls train()

    def train(self, mode: bool = True):
        super().train(mode)
        self.frozen.eval()
        if self.stray is not None:
            self.stray.eval()
        return self


@pytest.mark.parametrize(
    ("stray", "declared", "warns"), [(False, 3, False), (False, 0, True), (True, 3, True)]
)
def test_fit_drops_the_eval_mode_warning_only_for_the_declared_frozen_modules(
    tmp_path, stray, declared, warns
):
    tc = TrainerConfig(accelerator="cpu", enable_progress_bar=False, log_every_n_steps=1, max_steps=1)
    trainer = build_trainer(tc, tmp_path, "x", checkpoint_io=SafeCheckpointIO())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit_and_save(trainer, tc, _PartlyFrozen(stray), _Data(), tmp_path, None, frozen_eval_modules=declared)
    eval_warnings = [str(w.message) for w in caught if "in eval mode" in str(w.message)]
    assert bool(eval_warnings) is warns, eval_warnings
    if warns:
        assert eval_warnings[0].startswith(f"Found {3 + int(stray)} module(s)")
