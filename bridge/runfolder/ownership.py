"""What the bridge may remove in a run folder: a stage's output folder holds only what the stages write
(checkpoints, Lightning's CSV, TensorBoard, MLflow and W&B logs, the captured ``stage.log``), the report's tracking
folder only what the loggers write, and nothing else is removed.

(The generated corpus's ownership rules live with the code that generates it, ``bridge.rounds.corpus``.)
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bridge.runfolder.manifest import ManifestConflict
from bridge.runfolder.paths import STAGE_LOG
from mmga_common.layout import LOG_DIR, MLFLOW_DIR, OUTPUT_ENTRIES, TENSORBOARD_DIR, WANDB_DIR

# What the stages write into their output folder (checkpoints, Lightning's CSV and TensorBoard logs).
STAGE_DIR_ENTRIES = OUTPUT_ENTRIES | {"lightning_logs", STAGE_LOG}
# What the loggers write into the report's tracking folder (``RunPaths.tracking_dir``).
TRACKING_DIR_ENTRIES = frozenset({LOG_DIR, TENSORBOARD_DIR, MLFLOW_DIR, WANDB_DIR})


class StageFolderNotOwned(ManifestConflict):
    """A stage output folder holds something no stage writes."""


class TrackingFolderNotOwned(ManifestConflict):
    """The report's tracking folder holds something no logger writes."""


def clear_stage_dir(out_dir: Path) -> None:
    """Remove a stage's output folder (leftovers of an interrupted attempt) when it holds only what the
    stages write; otherwise refuse, naming what is there, and remove nothing."""
    _remove_owned(
        Path(out_dir),
        STAGE_DIR_ENTRIES,
        StageFolderNotOwned,
        "which no stage writes; refusing to remove the folder before rerunning the stage",
    )


def clear_tracking_dir(tracking_dir: Path) -> None:
    """Remove the report's tracking folder (the previous invocation's logged evaluation) when it holds only what
    the loggers write; otherwise refuse, naming what is there, and remove nothing."""
    _remove_owned(
        Path(tracking_dir),
        TRACKING_DIR_ENTRIES,
        TrackingFolderNotOwned,
        "which no logger writes; refusing to remove the folder before logging the evaluation again",
    )


def _remove_owned(folder: Path, owned: frozenset[str], error: type[ManifestConflict], why: str) -> None:
    if not folder.exists():
        return
    if folder.is_symlink() or not folder.is_dir():
        raise error(f"{folder} is not a folder the bridge made; refusing to remove it")
    foreign = sorted(p.name for p in folder.iterdir() if p.name not in owned or p.is_symlink())
    if foreign:
        raise error(f"{folder} holds {', '.join(foreign[:3])}, {why}. Move those files away and rerun.")
    shutil.rmtree(folder)
