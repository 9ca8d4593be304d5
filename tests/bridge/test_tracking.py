"""The evaluation metrics logged with the stages' trackers (``bridge.report.tracking``): the keys and values of a
constructed evaluation, read back from the CSV log (and TensorBoard's event file, MLflow's store when installed),
a rerun that replaces the logged run, and a tracking folder that is not the bridge's."""

from __future__ import annotations

import csv
import math

import pytest
import yaml
from lightning.pytorch import loggers as pl_loggers

from bridge.evaluation.results import Evaluation, Stat, TaskScores
from bridge.report.tracking import evaluation_metrics, log_evaluations
from bridge.rounds import stages
from bridge.rounds.config import BridgeConfig
from bridge.runfolder import RunPaths
from bridge.runfolder.ownership import TrackingFolderNotOwned


def _evaluation(f1: list[float], acc: list[float], mae: list[float], spearman: list[float]) -> Evaluation:
    """An evaluation whose scores over the head seeds are the given values (bucket accuracy: skipped, NaN)."""
    nan = Stat.of([])
    topic = TaskScores("topic", {"accuracy": Stat.of(acc), "macro_f1": Stat.of(f1)})
    fans = TaskScores("fans", {"mae": Stat.of(mae), "spearman": Stat.of(spearman), "bucket_accuracy": nan})
    return Evaluation(topic, fans, dim=8)


# two rows: X (no training seed) and mmga_round_1 with training seeds 0 and 1, two head seeds each
EVALUATED = {
    "stats_x": {None: _evaluation([0.2, 0.4], [0.5, 0.5], [1.0, 2.0], [0.1, 0.3])},
    "mmga_round_1": {
        0: _evaluation([0.6, 0.8], [0.75, 0.75], [0.5, 0.5], [0.4, 0.6]),
        1: _evaluation([0.9, 0.9], [0.8, 1.0], [0.25, 0.75], [0.2, 0.4]),
    },
}
EXPECTED = {
    "stats_x/topic/accuracy": 0.5,
    "stats_x/topic/macro_f1": 0.3,
    "stats_x/fans/mae": 1.5,
    "stats_x/fans/spearman": 0.2,
    "mmga_round_1/seed_0/topic/accuracy": 0.75,
    "mmga_round_1/seed_0/topic/macro_f1": 0.7,
    "mmga_round_1/seed_0/fans/mae": 0.5,
    "mmga_round_1/seed_0/fans/spearman": 0.5,
    "mmga_round_1/seed_1/topic/accuracy": 0.9,
    "mmga_round_1/seed_1/topic/macro_f1": 0.9,
    "mmga_round_1/seed_1/fans/mae": 0.5,
    "mmga_round_1/seed_1/fans/spearman": 0.3,
    "mmga_round_1/topic/accuracy": 0.825,
    "mmga_round_1/topic/accuracy_sd": math.sqrt(2 * 0.075**2),
    "mmga_round_1/topic/macro_f1": 0.8,
    "mmga_round_1/topic/macro_f1_sd": math.sqrt(2 * 0.1**2),
    "mmga_round_1/fans/mae": 0.5,
    "mmga_round_1/fans/mae_sd": 0.0,
    "mmga_round_1/fans/spearman": 0.4,
    "mmga_round_1/fans/spearman_sd": math.sqrt(2 * 0.1**2),
}


def test_metric_keys_and_values_of_a_constructed_evaluation():
    metrics = evaluation_metrics(EVALUATED)
    assert metrics == pytest.approx(EXPECTED)
    assert not any("bucket_accuracy" in key for key in metrics)  # NaN (skipped) is left out


def _read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_csv_log_holds_the_metrics_and_a_rerun_replaces_it(tmp_path):
    paths = RunPaths(tmp_path / "my_run")
    out = log_evaluations(["csv"], paths, EVALUATED, {"rounds": 2, "seeds": 2})
    assert out == paths.tracking_dir == tmp_path / "my_run" / "report" / "tracking"
    (row,) = _read_csv(out / "logs" / "version_0" / "metrics.csv")
    assert int(row.pop("step")) == 0
    assert {key: float(value) for key, value in row.items()} == pytest.approx(EXPECTED)
    hparams = yaml.safe_load((out / "logs" / "version_0" / "hparams.yaml").read_text())
    assert hparams == {"bridge_config": {"rounds": 2, "seeds": 2}}

    # a rerun (here with other numbers) logs one run again, not a second version beside the first
    changed = {"stats_x": {None: _evaluation([0.0, 0.0], [0.25, 0.25], [3.0, 3.0], [0.0, 0.0])}}
    log_evaluations(["csv"], paths, changed)
    assert [p.name for p in (out / "logs").iterdir()] == ["version_0"]
    (row,) = _read_csv(out / "logs" / "version_0" / "metrics.csv")
    assert float(row["stats_x/fans/mae"]) == 3.0 and "mmga_round_1/topic/macro_f1" not in row
    assert not (
        out / "logs" / "version_0" / "hparams.yaml"
    ).exists()  # no config this time, and the old one is gone


def test_no_logger_writes_nothing(tmp_path):
    paths = RunPaths(tmp_path)
    assert log_evaluations([], paths, EVALUATED) is None
    assert not paths.report_dir.exists()


def test_a_tracking_folder_with_foreign_files_is_refused_and_kept(tmp_path):
    paths = RunPaths(tmp_path)
    log_evaluations(["csv"], paths, EVALUATED)
    (paths.tracking_dir / "notes.txt").write_text("mine")
    with pytest.raises(TrackingFolderNotOwned, match="notes.txt, which no logger writes"):
        log_evaluations(["csv"], paths, EVALUATED)
    assert (paths.tracking_dir / "notes.txt").read_text() == "mine"
    assert (paths.tracking_dir / "logs" / "version_0" / "metrics.csv").is_file()


def test_every_named_logger_gets_the_metrics_once(tmp_path, monkeypatch):
    calls = []

    class FakeWandbLogger:
        def __init__(self, **kwargs):
            calls.append(("init", kwargs))

        def log_hyperparams(self, params):
            calls.append(("hparams", params))

        def log_metrics(self, metrics, step=None):
            calls.append(("metrics", dict(metrics), step))

        def finalize(self, status):
            calls.append(("finalize", status))

    monkeypatch.setattr(pl_loggers, "WandbLogger", FakeWandbLogger)
    paths = RunPaths(tmp_path / "exp")
    log_evaluations(["wandb", "csv", "wandb"], paths, EVALUATED, {"rounds": 2})
    init, hparams, metrics, finalize = calls
    assert init == (
        "init",
        {"name": "exp", "save_dir": paths.tracking_dir, "project": "mmga", "offline": True},
    )
    assert hparams == ("hparams", {"bridge_config": {"rounds": 2}})
    assert metrics[0] == "metrics" and metrics[1] == pytest.approx(EXPECTED) and metrics[2] == 0
    assert finalize == ("finalize", "success")
    assert (paths.tracking_dir / "logs" / "version_0" / "metrics.csv").is_file()


def test_tensorboard_event_file_holds_the_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    paths = RunPaths(tmp_path)
    log_evaluations(["tensorboard"], paths, EVALUATED, {"rounds": 2})
    assert not (paths.tracking_dir / "logs").exists()  # only the loggers asked for
    (version,) = (paths.tracking_dir / "tensorboard").iterdir()
    events = EventAccumulator(str(version))
    events.Reload()
    for key in ("mmga_round_1/topic/macro_f1", "mmga_round_1/seed_1/fans/spearman", "stats_x/fans/mae"):
        (scalar,) = events.Scalars(key)
        assert scalar.step == 0 and scalar.value == pytest.approx(EXPECTED[key], rel=1e-6)


@pytest.mark.slow  # importing mlflow and creating its SQLite schema
def test_mlflow_run_is_named_after_the_run_folder(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("alembic")
    paths = RunPaths(tmp_path / "exp")
    for _ in range(2):  # the rerun replaces the store: one run in it
        log_evaluations(["mlflow"], paths, EVALUATED, {"rounds": 2})
    store = (paths.tracking_dir / "mlruns" / "mlflow.db").resolve()
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{store}")
    (run,) = client.search_runs([client.get_experiment_by_name("mmga").experiment_id])
    assert run.info.run_name == "exp"
    assert run.data.metrics == pytest.approx(EXPECTED)
    assert run.data.params["bridge_config/rounds"] == "2"


def test_the_trackers_are_every_logger_any_stage_config_names():
    plain = stages.check_stage_configs(BridgeConfig(rounds=1))
    assert plain.loggers == ("csv",)
    cfg = BridgeConfig(rounds=1, stage2={"trainer": {"loggers": ["tensorboard", "csv"]}})
    assert sorted(stages.check_stage_configs(cfg).loggers) == ["csv", "tensorboard"]
