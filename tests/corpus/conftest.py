"""Fixture ``make_corpus``: writes the sample corpus (sample_corpus.py) or a variant of it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sample_corpus import EDGES_CSV, POSTS, USERS_CSV, image_bytes, posts_text


@pytest.fixture
def make_corpus(tmp_path):
    """``make_corpus(users=..., posts=..., edges=..., images=...) -> Path``; unspecified parts are the valid
    defaults above. ``posts`` may be a list of dicts or raw text; ``images`` maps relative path -> bytes."""
    counter = iter(range(1000))

    def make(
        users: str = USERS_CSV, posts: list[dict] | str = POSTS, edges: str = EDGES_CSV, images=None
    ) -> Path:
        root = tmp_path / f"corpus{next(counter)}"
        root.mkdir()
        (root / "users.csv").write_text(users)
        (root / "posts.jsonl").write_text(posts if isinstance(posts, str) else posts_text(posts))
        (root / "edges.csv").write_text(edges)
        if images is None:
            images = {
                "images/x.png": image_bytes("PNG"),
                "images/sub/y.jpg": image_bytes("JPEG", size=(5, 6)),
                "images/z.webp": image_bytes("WEBP", size=(2, 2)),
            }
        for rel, data in images.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        return root

    return make
