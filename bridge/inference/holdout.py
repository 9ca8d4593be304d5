"""Write a corpus without some of its users: their ``users.csv`` rows, their posts (and images) and every edge
that touches them are removed. The inductive-gap benchmark and the embedding tests train on such a corpus and
embed the full one with ``bridge.embed``."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np

from corpus import Corpus


def holdout_mask(corpus: Corpus, fraction: float = 0.2, seed: int = 0) -> np.ndarray:
    """bool ``[N]``: True for the held-out users, ``fraction`` of each topic (and of the unlabelled), seeded."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    mask = np.zeros(corpus.num_users, dtype=bool)
    for label in np.unique(corpus.labels):
        members = np.flatnonzero(corpus.labels == label)
        mask[rng.permutation(members)[: round(fraction * len(members))]] = True
    return mask


def write_user_subset(src: Path, dst: Path, keep_user_ids: set[str]) -> Path:
    """Copy corpus folder ``src`` to ``dst`` keeping only the users in ``keep_user_ids`` (in their order),
    their posts and images, and the edges between two kept users. Returns ``dst``."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    with open(src / "users.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    uid = header.index("user_id")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(r for r in body if r and r[uid] in keep_user_ids)
    (dst / "users.csv").write_text(out.getvalue(), encoding="utf-8")

    kept_posts = []
    for line in (src / "posts.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip() and json.loads(line)["user_id"] in keep_user_ids:
            kept_posts.append(line)
            image = json.loads(line).get("image")
            if image:
                target = dst / image
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    try:
                        os.link(src / image, target)
                    except OSError:
                        shutil.copyfile(src / image, target)
    (dst / "posts.jsonl").write_text("".join(p + "\n" for p in kept_posts), encoding="utf-8")

    with open(src / "edges.csv", newline="", encoding="utf-8") as f:
        edge_rows = list(csv.reader(f))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(edge_rows[0])
    writer.writerows(r for r in edge_rows[1:] if r and r[0] in keep_user_ids and r[1] in keep_user_ids)
    (dst / "edges.csv").write_text(out.getvalue(), encoding="utf-8")
    return dst


def held_out_splits(full: Corpus, held: np.ndarray, train: Corpus) -> np.ndarray:
    """int8 ``[N]`` splits of ``full`` for scoring held-out users: every held-out user is test (2); a training
    user keeps the training corpus's split, with its test users moved to train (0), since the held-out users are
    the test set now."""
    if held.shape != (full.num_users,) or int((~held).sum()) != train.num_users:
        raise ValueError("held must mark the users of full that are not in train")
    index = {u: i for i, u in enumerate(train.user_ids)}
    splits = np.full(full.num_users, 2, dtype=np.int8)
    for i in np.flatnonzero(~held):
        split = int(train.splits[index[full.user_ids[i]]])
        splits[i] = 0 if split == 2 else split
    return splits
