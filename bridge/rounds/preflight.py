"""Checks the command line runs before the work: a full image decode (``--check-images``), and the one
message a full disk ends in."""

from __future__ import annotations

import os
from pathlib import Path

from cache.atomic import DiskFullError, is_disk_full
from corpus import load_corpus


def check_images(corpus_dir: Path | None) -> None:
    """Decode every image of the corpus (with a progress bar, over up to 8 processes); raises ``CorpusError`` naming posts.jsonl and
    the line of the first image that fails. The generated synthetic corpus is skipped (its images are ours)."""
    if corpus_dir is None:
        print("[check-images] no --corpus given: the generated synthetic corpus needs no decode check")
        return
    workers = max(1, min(8, os.cpu_count() or 1))
    corpus = load_corpus(corpus_dir, image_check="decode", progress=True, image_workers=workers)
    print(f"[check-images] {corpus_dir}: all {len(set(p for p in corpus.post_image if p))} images decode")


def disk_full_message(err: BaseException) -> str | None:
    """The one-line message for an error that means "the disk is full", or None for any other error."""
    if isinstance(err, DiskFullError):
        return str(err)
    if not is_disk_full(err):
        return None
    where = getattr(err, "filename", None) or "a file of the run"
    return (
        f"{where}: no space left on device ({err}); free some space (or use a run folder on another disk) and "
        "rerun the same command to resume"
    )
