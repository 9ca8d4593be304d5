"""The tracking loggers: MLflow to a local SQLite store in the run folder (when the [tracking] extra is installed;
run with -m slow) and W&B offline (built with the arguments it needs; the package itself is optional)."""

from __future__ import annotations

import csv

import lightning as L
import pytest
import torch
from lightning.pytorch import loggers as pl_loggers
from torch.utils.data import DataLoader, TensorDataset

from cache.checkpoint import SafeCheckpointIO
from mmga_common.trainer import TrainerConfig, build_loggers, build_trainer, fit_and_save


class _Line(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.save_hyperparameters({"demo_config": {"lr": 0.1, "name": "line"}})
        self.lin = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.lin(x), y)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader() -> DataLoader:
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)


@pytest.mark.slow  # ~25 s: importing mlflow and creating its SQLite schema
def test_mlflow_logs_to_a_local_store_beside_the_csv_log(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("alembic")
    tc = TrainerConfig(
        accelerator="cpu",
        enable_progress_bar=False,
        log_every_n_steps=1,
        max_steps=3,
        loggers=["mlflow", "csv"],
    )
    trainer = build_trainer(tc, tmp_path, "stage x", checkpoint_io=SafeCheckpointIO())
    assert [type(logger).__name__ for logger in trainer.loggers] == ["CSVLogger", "MLFlowLogger"]  # csv first
    module = _Line()
    datamodule = L.LightningDataModule.from_datasets(train_dataset=_loader().dataset, batch_size=8)
    fit_and_save(trainer, tc, module, datamodule, tmp_path, None)
    with open(tmp_path / "logs" / "version_0" / "metrics.csv") as handle:
        from_csv = [float(row["train/loss"]) for row in csv.DictReader(handle) if row.get("train/loss")]
    client = mlflow.tracking.MlflowClient(
        tracking_uri=f"sqlite:///{(tmp_path / 'mlruns' / 'mlflow.db').resolve()}"
    )
    experiment = client.get_experiment_by_name("mmga")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "stage x"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [0, 1, 2]
    assert [m.value for m in history] == pytest.approx(from_csv, rel=1e-6)
    assert run.data.params["demo_config/lr"] == "0.1"


def test_wandb_is_built_offline_under_the_run_folder(tmp_path, monkeypatch):
    built = {}

    class FakeWandbLogger:
        def __init__(self, **kwargs):
            built.update(kwargs)

    monkeypatch.setattr(pl_loggers, "WandbLogger", FakeWandbLogger)
    (csv_logger, wandb_logger) = build_loggers(TrainerConfig(loggers=["wandb", "csv"]), tmp_path, "stage 1")
    assert isinstance(csv_logger, pl_loggers.CSVLogger) and isinstance(wandb_logger, FakeWandbLogger)
    assert built == {"name": "stage 1", "save_dir": tmp_path, "project": "mmga", "offline": True}


def test_mlflow_store_is_under_the_run_folder(tmp_path, monkeypatch):
    built = {}

    class FakeMLFlowLogger:
        def __init__(self, **kwargs):
            built.update(kwargs)

    monkeypatch.setattr(pl_loggers, "MLFlowLogger", FakeMLFlowLogger)
    build_loggers(TrainerConfig(loggers=["mlflow"]), tmp_path / "out", "stage 2")
    store = (tmp_path / "out" / "mlruns").resolve()
    assert built == {
        "experiment_name": "mmga",
        "run_name": "stage 2",
        "tracking_uri": f"sqlite:///{store / 'mlflow.db'}",
        "artifact_location": (store / "artifacts").as_uri(),
    }
