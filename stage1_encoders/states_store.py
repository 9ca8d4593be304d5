"""One file per key of a frozen encoder's outputs, shared by the processes of a run folder.

The frozen text layers' caption states (``encoders.LowerStates``) and a frozen image tower's outputs
(``image_states.ImageStates``) are computed once per corpus and weights; the first process that needs them
computes and stores them, the others wait on a lock file and load them.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from cache.atomic import atomic_file

log = logging.getLogger(__name__)


def stored_tensors(
    store_dir: str | Path | None, stem: str, key: tuple, compute: Callable[[], dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """``compute()``'s tensors, from ``<store_dir>/<stem>-<digest of key>.pt`` when an earlier process stored
    them, else computed and stored there (``store_dir`` None: computed, not stored). A damaged file is computed
    again and replaced."""
    if store_dir is None:
        return compute()
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:20]
    path = Path(store_dir) / f"{stem}-{digest}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if path.exists():
                try:
                    return torch.load(path, map_location="cpu", weights_only=True)
                except Exception as err:  # a damaged file: compute again and replace it
                    log.warning(
                        "stage 1: cannot read %s (%s); computing the %s again",
                        path,
                        err,
                        stem.replace("_", " "),
                    )
            tensors = compute()
            size = sum(t.numel() * t.element_size() for t in tensors.values()) + (1 << 16)
            with atomic_file(path, size) as tmp:
                torch.save(tensors, tmp)
            return tensors
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
