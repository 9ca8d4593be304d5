"""Shared pieces of the reliability matrix: tiny bridge settings, corpus copies, file snapshots.

Each test module is one block of the matrix in docs/reliability.md: a bad input or a fault, and the
outcome it must have.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from bridge.rounds.config import BridgeConfig
from tests.bridge.bridge_tiny import tiny_bridge_config


def tiny_config(corpus: Path | None, **kw) -> BridgeConfig:
    """One round of MMGA only, with tiny stages: a run takes a few seconds."""
    return tiny_bridge_config(corpus, **{"rounds": 1, "baselines": False, **kw})


def snapshot(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file below ``folder``."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def corpus_copy(tiny_corpus, tmp_path):
    """Factory: a private copy of the 60-user tiny corpus, ``corpus_copy(name="c") -> Path``."""

    def make(name: str = "corpus", dest: Path | None = None) -> Path:
        target = dest if dest is not None else tmp_path / name
        shutil.copytree(tiny_corpus, target)
        return target

    return make
