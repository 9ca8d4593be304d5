"""Silence third-party messages a user cannot act on. Called by the entry points (``main`` of every CLI and the
bridge's worker processes), never at import time of library code, so a program that imports MMGA keeps its own
warning and logging settings."""

from __future__ import annotations

import logging
import warnings

# (category, message regex) of warnings that say nothing about the user's run.
_WARNINGS = (
    # torch-sparse decorates its storage with torch.jit.script at import time
    (FutureWarning, r"`torch\.jit\.script` is deprecated"),
    # Lightning's own use of torch's private pytree module (LeafSpec / treespec deprecations)
    (Warning, r"(?s).*(_pytree|LeafSpec|treespec).*"),
    # full-batch / small-data runs: one batch per epoch by design
    (UserWarning, r"The number of training batches .* is smaller than the logging interval"),
    (UserWarning, r".*does not have many workers which may be a bottleneck.*"),
    # torch-sparse's SparseTensor -> torch CSR conversion (PyG's GCN over a SparseTensor, stage 2's kernels)
    (UserWarning, r"Sparse invariant checks are implicitly disabled"),
    (UserWarning, r"Sparse CSR tensor support is in beta state"),
    # PyG's NeighborLoader without pyg-lib (not on PyPI; docs/stage2.md says where to get it and what it speeds up)
    (UserWarning, r"Using 'NeighborSampler' without a 'pyg-lib' installation is deprecated"),
)

# Log records dropped: Lightning's advertising tip and hardware banner, open_clip's note that a model config
# without a pretrained tag starts from random weights (the run header says that once, with what to do).
_DROPPED_LOG_PREFIXES = (
    "💡 Tip:",
    "GPU available:",
    "TPU available:",
    "HPU available:",
    "No pretrained weights loaded",
    "`Trainer.fit` stopped: `max_steps=",
    "`Trainer.fit` stopped: `max_epochs=",
)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is not ours to judge
            return True
        return not message.startswith(_DROPPED_LOG_PREFIXES)


_FILTER = _DropNoise()


def quiet_third_party(verbose: bool = False) -> None:
    """Install the filters (idempotent). ``verbose=True`` leaves everything as the libraries print it."""
    if verbose:
        return
    for category, pattern in _WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    for name in (
        "",
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
        "pytorch_lightning.utilities.rank_zero",
        "root",
    ):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    # open_clip logs through the root logger's handlers: filter there too, whoever configures them later
    for handler in logging.getLogger().handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)


def init_worker(threads: int, verbose: bool = False) -> None:
    """Initializer of a worker process: quiet the libraries before anything imports them, then set torch's
    threads. Lives here (a module that imports nothing heavy) because a spawned worker imports its initializer's
    module first."""
    quiet_third_party(verbose)
    import torch

    torch.set_num_threads(threads)
