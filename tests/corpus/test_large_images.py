"""Large images decoded small: ``corpus.pixels.reduce_to`` and ``Corpus.load_image(post, min_side)``."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from corpus import CorpusError, load_corpus
from corpus.pixels import reduce_to


def _pattern(width: int, height: int, seed: int = 0) -> np.ndarray:
    """uint8 [H, W, 3]: smooth gradients with some noise, so a box mean and a resampling differ a little."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 / width, yy * 255 / height, (xx + yy) * 127 / (width + height)], axis=-1)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def _encoded(array: np.ndarray, fmt: str, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    image = Image.fromarray(array, mode="RGB")
    if mode == "RGBA":
        alpha = np.full(array.shape[:2], 255, dtype=np.uint8)
        alpha[: array.shape[0] // 3] = 0  # a transparent band, as clip art has
        image = Image.fromarray(np.dstack([array, alpha]), mode="RGBA")
    image.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def test_reduce_to_takes_block_means_by_the_largest_factor_keeping_min_side():
    array = _pattern(10, 7)
    image = Image.fromarray(array)
    reduced = reduce_to(image, 3)  # 7 // 3 = 2
    assert reduced.size == (5, 4)  # sides rounded up: the last block row is partial
    blocks = array[:6, :10].reshape(3, 2, 5, 2, 3).astype(np.float64).mean(axis=(1, 3))
    assert np.abs(np.asarray(reduced)[:3].astype(np.float64) - blocks).max() <= 0.5  # the rounded mean
    assert reduce_to(image, 4) is image  # 7 // 4 = 1: nothing to gain
    assert reduce_to(image, 100) is image
    with pytest.raises(ValueError, match="min_side must be >= 1"):
        reduce_to(image, 0)


def _large_corpus(make_corpus, png: bytes, jpg: bytes):
    images = {"images/x.png": png, "images/sub/y.jpg": jpg, "images/z.webp": _encoded(_pattern(8, 8), "WEBP")}
    return load_corpus(make_corpus(images=images))


def _post(corpus, image: str) -> int:
    """The index of the first post showing ``image``."""
    return corpus.post_image.index(image)


def test_a_large_png_is_decoded_whole_then_box_reduced(make_corpus):
    array = _pattern(1200, 900)
    corpus = _large_corpus(make_corpus, _encoded(array, "PNG", mode="RGBA"), _encoded(array, "JPEG"))
    png = _post(corpus, "images/x.png")
    full = corpus.load_image(png)
    assert full.size == (1200, 900) and full.mode == "RGB"
    small = corpus.load_image(png, min_side=288)
    assert small.size == (400, 300)  # 900 // 288 = 3
    # exactly the full decode (alpha dropped, as without min_side) reduced: nothing else changes
    assert np.array_equal(np.asarray(small), np.asarray(full.reduce(3)))
    # an image too small to gain is decoded as before, bit for bit
    assert np.array_equal(
        np.asarray(corpus.load_image(png, min_side=500)), np.asarray(full)
    )  # 900 // 500 = 1
    webp = _post(corpus, "images/z.webp")  # 8 x 8
    tiny = corpus.load_image(webp, min_side=288)
    assert tiny.size == (8, 8) and np.array_equal(np.asarray(tiny), np.asarray(corpus.load_image(webp)))


def test_a_large_jpeg_is_decoded_at_a_reduced_scale(make_corpus):
    array = _pattern(1600, 1200)
    corpus = _large_corpus(make_corpus, _encoded(array, "PNG"), _encoded(array, "JPEG"))
    jpg = _post(corpus, "images/sub/y.jpg")
    full = corpus.load_image(jpg)
    assert full.size == (1600, 1200)
    small = corpus.load_image(jpg, min_side=288)
    # libjpeg's 1/4 scale (1600 x 1200 -> 400 x 300): the largest that keeps both sides >= 288, no reduce after
    assert small.size == (400, 300) and small.mode == "RGB"
    # the same picture: against the full decode box-reduced to the same size, a few levels apart on average
    reference = np.asarray(full.reduce(4)).astype(np.float64)
    diff = np.abs(np.asarray(small).astype(np.float64) - reference)
    assert diff.mean() < 3.0 and diff.max() < 60
    # the draft happened (a full decode reduced by 4 is not what came back)
    assert not np.array_equal(np.asarray(small), reference.astype(np.uint8))


def test_the_pixel_limit_applies_to_the_file_not_the_reduced_image(make_corpus):
    array = _pattern(120, 100)
    root = make_corpus(
        images={
            "images/x.png": _encoded(array, "PNG"),
            "images/sub/y.jpg": _encoded(array, "JPEG"),
            "images/z.webp": _encoded(_pattern(8, 8), "WEBP"),
        }
    )
    corpus = load_corpus(root, image_check="exists", max_image_pixels=10_000)
    with pytest.raises(CorpusError, match=r"120x100 = 12000 pixels, over the limit of 10000"):
        corpus.load_image(_post(corpus, "images/x.png"), min_side=10)


@pytest.mark.parametrize(
    "mode, fmt, options",
    [
        ("L", "JPEG", {}),
        ("CMYK", "JPEG", {}),
        ("RGB", "JPEG", {"progressive": True}),
        ("P", "PNG", {}),
        ("LA", "PNG", {}),
        ("I;16", "PNG", {}),
        ("RGBA", "WEBP", {"lossless": True}),
    ],
)
def test_every_mode_and_format_decodes_small_to_rgb(make_corpus, mode, fmt, options):
    array = _pattern(900, 700)
    image = Image.fromarray(array)
    image = Image.fromarray(array[..., 0].astype(np.uint16) * 257) if mode == "I;16" else image.convert(mode)
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    name = "images/sub/y.jpg" if fmt == "JPEG" else "images/x.png" if fmt == "PNG" else "images/z.webp"
    images = {
        "images/x.png": _encoded(_pattern(8, 8), "PNG"),
        "images/sub/y.jpg": _encoded(_pattern(8, 8), "JPEG"),
    }
    images["images/z.webp"] = _encoded(_pattern(8, 8), "WEBP")
    images[name] = buf.getvalue()
    corpus = load_corpus(make_corpus(images=images))
    post = _post(corpus, name)
    full = corpus.load_image(post)
    small = corpus.load_image(post, min_side=288)
    assert small.mode == "RGB" and small.size == (450, 350)  # JPEG: libjpeg's 1/2 scale; else 700 // 288 = 2
    if (
        fmt == "JPEG"
    ):  # decoded at half scale: the same picture as the full decode box-reduced, within a few levels
        diff = np.abs(np.asarray(small).astype(np.float64) - np.asarray(full.reduce(2)).astype(np.float64))
        assert diff.mean() < 3.0
    else:  # decoded whole, converted as without min_side, then reduced: bit for bit
        assert np.array_equal(np.asarray(small), np.asarray(full.reduce(2)))
