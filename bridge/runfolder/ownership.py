"""What the bridge may remove in a run folder: a stage's output folder holds only what the stages write
(checkpoints, Lightning's CSV, TensorBoard, MLflow and W&B logs, the captured ``stage.log``), and nothing else is removed.

(The generated corpus's ownership rules live with the code that generates it, ``bridge.rounds.corpus``.)
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bridge.runfolder.manifest import ManifestConflict
from bridge.runfolder.paths import STAGE_LOG
from mmga_common.layout import OUTPUT_ENTRIES

# What the stages write into their output folder (checkpoints, Lightning's CSV and TensorBoard logs).
STAGE_DIR_ENTRIES = OUTPUT_ENTRIES | {"lightning_logs", STAGE_LOG}


class StageFolderNotOwned(ManifestConflict):
    """A stage output folder holds something no stage writes."""


def clear_stage_dir(out_dir: Path) -> None:
    """Remove a stage's output folder (leftovers of an interrupted attempt) when it holds only what the
    stages write; otherwise refuse, naming what is there, and remove nothing."""
    out_dir = Path(out_dir)
    if not out_dir.exists():
        return
    if out_dir.is_symlink() or not out_dir.is_dir():
        raise StageFolderNotOwned(f"{out_dir} is not a folder the bridge made; refusing to remove it")
    foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in STAGE_DIR_ENTRIES or p.is_symlink())
    if foreign:
        raise StageFolderNotOwned(
            f"{out_dir} holds {', '.join(foreign[:3])}, which no stage writes; refusing to remove the folder "
            "before rerunning the stage. Move those files away and rerun."
        )
    shutil.rmtree(out_dir)
