"""Matrix, images (issue 15, items 4 and 13).

| input | expected outcome |
|---|---|
| a truncated PNG (valid header) | passes the default header check; `--check-images` refuses it before training, naming posts.jsonl and the line; so does a decode at any later point |
| the same, decoded over 2 worker processes | the same error (first failure in file order) |
| an image replaced by a symlink to a file outside the corpus after loading | `load_image` refuses at open time; nothing read from outside |
"""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from bridge.alternate import main
from corpus import CorpusError, load_corpus


def _truncate_image(root, post_idx: int = 4) -> tuple[str, int]:
    """Replace one post's image by a truncated PNG; returns (image path, posts.jsonl line)."""
    lines = (root / "posts.jsonl").read_text().splitlines()
    rel = json.loads(lines[post_idx])["image"]
    buf = io.BytesIO()
    Image.effect_noise((32, 32), 50).convert("RGB").save(buf, format="PNG")
    (root / rel).write_bytes(buf.getvalue()[:200])
    first = next(i for i, line in enumerate(lines, 1) if json.loads(line)["image"] == rel)
    return rel, first


@pytest.mark.parametrize("workers", [1, 2])
def test_truncated_png_found_by_the_decode_check(corpus_copy, workers):
    root = corpus_copy()
    rel, line = _truncate_image(root)
    load_corpus(root)  # the default check reads headers only: this passes
    with pytest.raises(CorpusError) as info:
        load_corpus(root, image_check="decode", image_workers=workers)
    assert (info.value.file, info.value.line, info.value.field) == ("posts.jsonl", line, "image")
    assert str(info.value).endswith(f": {rel!r}")


def test_check_images_refuses_before_training(corpus_copy, tmp_path, capsys):
    root = corpus_copy()
    rel, line = _truncate_image(root)
    run = tmp_path / "run"
    code = main(
        ["--rounds", "1", "--corpus", str(root), "--run-dir", str(run), "--skip-baselines", "--check-images"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert f"error: posts.jsonl, line {line}, field 'image': cannot decode image" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in run.iterdir()) == ["run.lock"]  # the lock (taken first) and nothing else


def test_decode_failure_later_names_posts_jsonl_and_the_line(corpus_copy):
    root = corpus_copy()
    rel, line = _truncate_image(root)
    corpus = load_corpus(root)
    post = corpus.post_image.index(rel)
    with pytest.raises(CorpusError, match=rf"^posts.jsonl, line {line}, field 'image': cannot decode image"):
        corpus.load_image(post)


def test_image_swapped_for_a_symlink_after_loading_is_not_read(corpus_copy, tmp_path):
    root = corpus_copy()
    corpus = load_corpus(root)
    outside = tmp_path / "outside.png"
    Image.new("RGB", (8, 8), "red").save(outside)
    with_image = [i for i, rel in enumerate(corpus.post_image) if rel is not None]
    rel = corpus.post_image[with_image[0]]
    (root / rel).unlink()
    (root / rel).symlink_to(outside)
    with pytest.raises(CorpusError, match="now resolves outside the corpus folder"):
        corpus.load_image(with_image[0])
    assert corpus.load_image(with_image[1]).size[0] > 0  # the others still load
