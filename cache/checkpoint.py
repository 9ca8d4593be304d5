"""Checkpoint files of both stages: written atomically, read with ``weights_only=True`` and nothing else.

A checkpoint is an on-disk format one round hands to the next, like the HDF5 files, so its safety rules
live here. ``torch.load`` with ``weights_only=False`` runs whatever the pickle says; torch's
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` turns that on for every call that does not pass ``weights_only``
itself, Lightning's resume path included. Every checkpoint read therefore passes ``weights_only=True``
explicitly: :func:`load_checkpoint` for our own reads, :class:`SafeCheckpointIO` for Lightning's (given to
both stages' Trainers as a plugin), which also writes every checkpoint through a temporary file and a
rename (:func:`cache.atomic.atomic_write_bytes`), so a full disk never leaves a partial ``last.ckpt``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from cache.atomic import DiskFullError, atomic_write_bytes, is_disk_full
from cache.types import CacheError


class CheckpointError(CacheError):
    """A checkpoint that is missing, damaged, or holds more than tensors and plain containers."""

    def __init__(self, file: str | Path, msg: str):
        super().__init__(file, None, msg)

    def __reduce__(self):
        return (type(self), (self.file, self.msg))


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """``torch.load(path, weights_only=True)``; any failure becomes :class:`CheckpointError`.

    A file that needs pickled code (a crafted or foreign checkpoint) is refused, whatever the environment
    says, and nothing in it runs.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "checkpoint file not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - unpickling errors have many types; all mean "not loadable"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            path,
            f"cannot be read as a weights-only checkpoint ({type(err).__name__}: {first}); it is damaged or "
            "was not written by this project (code in a checkpoint is never run)",
        ) from None
    if not isinstance(payload, dict):
        raise CheckpointError(path, f"holds a {type(payload).__name__}, not a checkpoint dict")
    return payload


def save_checkpoint(checkpoint: dict, path: str | Path) -> Path:
    """Serialise ``checkpoint`` in memory and write it atomically; a full disk is :class:`DiskFullError`."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return atomic_write_bytes(path, buffer.getbuffer())


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with atomic writes and weights-only reads (also on ``ckpt_path`` resume)."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options: Any | None = None) -> None:
        try:
            save_checkpoint(checkpoint, path)
        except DiskFullError:
            raise
        except Exception as err:
            if is_disk_full(err):
                raise DiskFullError(path, None) from None
            raise

    def load_checkpoint(
        self, path, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict:
        return load_checkpoint(path, map_location if map_location is not None else "cpu")

    def remove_checkpoint(self, path) -> None:
        Path(path).unlink(missing_ok=True)
