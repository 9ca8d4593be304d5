"""Where a run's numbers come from, for the report's model card: package versions, the code's git commit, the
machine (no file or network is needed: what cannot be read is said to be unknown)."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "torch",
    "transformers",
    "open_clip_torch",
    "lightning",
    "torch_geometric",
    "torch_sparse",
    "numpy",
    "scikit-learn",
    "h5py",
)


def package_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit(folder: Path | None = None) -> str:
    """The commit of the checkout the code runs from, with ``+dirty`` when it has uncommitted changes to tracked
    files; ``unknown`` outside a git checkout."""
    folder = folder or Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def provenance() -> dict[str, Any]:
    return {"packages": package_versions(), "git_commit": git_commit(), "machine": platform.platform()}
