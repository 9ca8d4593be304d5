"""Which files of a corpus folder the synthetic generator wrote, so that nothing else is ever removed.

A folder the bridge generates carries a marker, ``.mmga-generated.json``, with a random token (also kept in
the run's manifest) and the list of files written. Code that regenerates a folder removes only the files the
marker lists (or files named the way the generator names them), never anything else, and nothing at all
in a folder without the generator's record.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

MARKER_FILE = ".mmga-generated.json"
# What the generator writes (corpus/synthetic/generator.py: OUTPUTS and _image_paths).
GENERATOR_TOP_FILES = frozenset(
    {"users.csv", "posts.jsonl", "edges.csv", "_truth.npz", "_synthetic_config.json"}
)
GENERATOR_RECORD = "_synthetic_config.json"  # written last by every complete generation
_GENERATOR_IMAGE = re.compile(r"images/\d+/\d+\.png")


def looks_generated(rel: str) -> bool:
    """True for a relative path named the way the synthetic generator names its outputs."""
    return rel in GENERATOR_TOP_FILES or bool(_GENERATOR_IMAGE.fullmatch(rel))


def folder_files(folder: Path) -> list[str]:
    """Every file and symlink below ``folder``, as sorted relative POSIX paths (the marker excluded)."""
    folder = Path(folder)
    out = []
    for path in folder.rglob("*"):
        if path.is_symlink() or not path.is_dir():
            rel = path.relative_to(folder).as_posix()
            if rel != MARKER_FILE:
                out.append(rel)
    return sorted(out)


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The marker of ``folder``, or None when it has none (or an unreadable one)."""
    path = Path(folder) / MARKER_FILE
    if path.is_symlink() or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("token"), str):
        return None
    files = data.get("files")
    data["files"] = [f for f in files if isinstance(f, str)] if isinstance(files, list) else []
    return data


def write_marker(folder: Path, token: str, files: list[str]) -> None:
    payload = {"written_by": "corpus.synthetic via the bridge", "token": token, "files": sorted(files)}
    path = Path(folder) / MARKER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{MARKER_FILE}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(tmp, path)


def foreign_files(folder: Path, owned: set[str] | None = None) -> list[str]:
    """Files below ``folder`` that are neither in ``owned`` nor named like generator outputs."""
    owned = owned or set()
    return [rel for rel in folder_files(folder) if rel not in owned and not looks_generated(rel)]


def remove_generated(folder: Path, owned: set[str] | None = None) -> None:
    """Remove the generator's files from ``folder`` (those in ``owned`` or named like generator outputs) and
    the folders that leaves empty; every other file stays untouched. Refuses (``FileExistsError``) a folder
    without the generator's record, whose ``users.csv`` etc. are then someone else's."""
    folder = Path(folder)
    if not (folder / GENERATOR_RECORD).is_file() and read_marker(folder) is None:
        raise FileExistsError(
            f"{folder} has no record of the synthetic generator ({GENERATOR_RECORD} or {MARKER_FILE}): its files "
            "were not written by it; refusing to remove anything there"
        )
    owned = owned or set()
    for rel in folder_files(folder):
        if rel in owned or looks_generated(rel):
            (folder / rel).unlink()
    for path in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(path.iterdir()):
            path.rmdir()
