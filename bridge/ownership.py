"""Remove only what the bridge wrote: the generated corpus, and stage output folders.

Generating the synthetic corpus into a run folder never removes a file the bridge did not write.

``<run_dir>/corpus`` is (re)generated only when it is absent or empty, or when it carries the bridge's
marker (:mod:`corpus.ownership`) whose token matches the one this run folder's manifest recorded (or, for a
folder generated before markers existed, when its files still hash to what the manifest recorded). Anything
else there, e.g. a user's own corpus copied in, stops the run naming the folder and ``--corpus``; a folder
that is ours is cleared file by file, and only of the files the generator wrote.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

from bridge.manifest import Manifest, ManifestConflict, file_sha256
from bridge.paths import STAGE_LOG
from corpus.ownership import (
    GENERATOR_RECORD,
    folder_files,
    foreign_files,
    read_marker,
    remove_generated,
    write_marker,
)
from corpus.synthetic import SyntheticConfig, generate

TOKEN_KEY = "generated_corpus_token"


class CorpusFolderNotOwned(ManifestConflict):
    """The folder the bridge would generate into holds files it did not write."""


def _matches_manifest(corpus_dir: Path, manifest: Manifest, corpus_key: str) -> bool:
    """A marker-less folder from before markers: every file the manifest hashed is unchanged."""
    entry = manifest.get(corpus_key)
    if not entry or not entry.get("files") or not (corpus_dir / GENERATOR_RECORD).is_file():
        return False
    for rel, rec in entry["files"].items():
        path = manifest.base / rel
        if not path.is_file() or path.stat().st_size != rec["size"] or file_sha256(path) != rec["sha256"]:
            return False
    return True


def check_owned(corpus_dir: Path, manifest: Manifest, corpus_key: str) -> set[str]:
    """The files of ``corpus_dir`` the bridge may remove; raises :class:`CorpusFolderNotOwned` otherwise."""
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.exists() or (corpus_dir.is_dir() and not any(corpus_dir.iterdir())):
        return set()
    refuse = (
        f"{corpus_dir} already holds files that this run folder did not generate ({{why}}); refusing to "
        f"overwrite or remove them. To train on that corpus pass --corpus {corpus_dir}; to generate the "
        "synthetic corpus, use another --run-dir (or move that folder away)."
    )
    if not corpus_dir.is_dir():
        raise CorpusFolderNotOwned(refuse.format(why="it is not a folder"))
    marker = read_marker(corpus_dir)
    token = manifest.data.get(TOKEN_KEY)
    if marker is not None and token is not None and marker["token"] == token:
        owned = set(marker["files"])
    elif marker is None and _matches_manifest(corpus_dir, manifest, corpus_key):
        owned = set()
    else:
        why = "no generator marker" if marker is None else "its marker does not match this run's manifest"
        raise CorpusFolderNotOwned(refuse.format(why=why))
    foreign = foreign_files(corpus_dir, owned)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise CorpusFolderNotOwned(refuse.format(why=f"files the generator never wrote: {shown}"))
    return owned


def generate_owned(corpus_dir: Path, synth: SyntheticConfig, manifest: Manifest, corpus_key: str) -> Path:
    """(Re)generate the synthetic corpus into ``corpus_dir`` under the rules in the module docstring."""
    corpus_dir = Path(corpus_dir)
    owned = check_owned(corpus_dir, manifest, corpus_key)
    if corpus_dir.exists() and any(corpus_dir.iterdir()):
        remove_generated(corpus_dir, owned)
    token = secrets.token_hex(8)
    manifest.data[TOKEN_KEY] = token
    manifest.save()
    # The marker comes first, so a generation killed half-way leaves a folder the next run may clear.
    write_marker(corpus_dir, token, [])
    generate(corpus_dir, synth, overwrite=False)
    write_marker(corpus_dir, token, folder_files(corpus_dir))
    return corpus_dir


# What the stages write into their output folder (checkpoints, Lightning's CSV and TensorBoard logs).
STAGE_DIR_ENTRIES = frozenset({"checkpoints", "logs", "tensorboard", "lightning_logs", STAGE_LOG})


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
