"""Lightning callbacks of the shared trainer (``mmga_common.trainer``), in their own module so that reading a config
does not import Lightning, and at module level so that spawned DDP workers can unpickle them."""

from __future__ import annotations

from pathlib import Path

import lightning as L


class SaveFinalInWorkers(L.Callback):
    """Saves the final, resumable checkpoint at ``path`` inside the training processes: under a spawning strategy
    the caller's process gets back the weights only (no optimizer state, step 0), so a checkpoint saved there could
    not resume."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_train_end(self, trainer, pl_module) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)
