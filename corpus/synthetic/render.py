"""Rendering the synthetic images: the image family is a texture *pattern*; the palette is either random (colour
says nothing: design 'factorised') or warm / cool foreground on a grey background (design 'shared': the
palette tells the two topics of a family apart); the user's content quality sets contrast and noise.

Everything is vectorised over a chunk of images; each chunk has its own seed, so the bytes do not depend on
how chunks are spread over worker processes.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

PATTERNS = ("stripes", "rings", "checker", "diagonal", "spokes", "dots")


WARM_FG = ((0.75, 1.0), (0.3, 0.6), (0.0, 0.2))  # (low, high) per RGB channel
COOL_FG = ((0.0, 0.2), (0.4, 0.7), (0.75, 1.0))


def render_images(
    visual: np.ndarray,
    quality: np.ndarray,
    seed: tuple[int, ...],
    size: int,
    noise: float,
    palette: np.ndarray | None = None,
) -> np.ndarray:
    """Render one chunk.

    Args:
        visual: int [B], image family (index into PATTERNS).
        quality: float [B] in [0, 1]; higher = more contrast, less noise.
        seed: entropy of this chunk's random stream.
        size: image side in pixels.
        noise: standard deviation of the pixel noise at quality 0.5 (pixel range [0, 1]).
        palette: int [B] or None: -1 random colours, 0 warm, 1 cool foreground on a dark or light grey
            background (None: all -1).

    Returns:
        uint8 [B, size, size, 3].
    """
    rng = np.random.default_rng(list(seed))
    b = visual.shape[0]
    f32 = np.float32
    grid = ((np.arange(size, dtype=f32) + 0.5) / size).astype(f32)
    y, x = np.meshgrid(grid, grid, indexing="ij")  # [S, S]
    x, y = x[None], y[None]
    freq = rng.uniform(2.5, 4.5, size=(b, 1, 1)).astype(f32)
    phase = rng.uniform(0, 2 * np.pi, size=(b, 1, 1)).astype(f32)
    jitter = rng.uniform(-0.25, 0.25, size=(b, 1, 1)).astype(f32)
    centre = rng.uniform(0.3, 0.7, size=(b, 2, 1, 1)).astype(f32)
    spokes = rng.integers(3, 7, size=(b, 1, 1)).astype(f32)
    fg = rng.uniform(0, 1, size=(b, 1, 1, 3)).astype(f32)
    bg = np.clip(1 - fg + rng.normal(0, 0.1, size=(b, 1, 1, 3)).astype(f32), 0, 1)
    pixel_noise = rng.standard_normal(size=(b, size, size, 3), dtype=f32)
    if palette is not None and (palette >= 0).any():
        unit = rng.random(size=(b, 1, 1, 3)).astype(f32)
        grey = np.where(rng.random(size=(b, 1, 1, 1)) < 0.5, 0.05, 0.75) + 0.2 * rng.random(size=(b, 1, 1, 1))
        for value, ranges in ((0, WARM_FG), (1, COOL_FG)):
            sel = palette == value
            low = np.array([r[0] for r in ranges], dtype=f32)
            high = np.array([r[1] for r in ranges], dtype=f32)
            fg[sel] = low + (high - low) * unit[sel]
            bg[sel] = grey[sel].astype(f32)

    pattern = np.zeros((b, size, size), dtype=f32)
    kind = visual % len(PATTERNS)
    two_pi_f = f32(2 * np.pi) * freq
    for k, name in enumerate(PATTERNS):
        sel = kind == k
        if not sel.any():
            continue
        f, ph, jt, c = two_pi_f[sel], phase[sel], jitter[sel], centre[sel]
        if name == "stripes":
            m = np.sin(f * (x * np.cos(jt) + y * np.sin(jt)) + ph)
        elif name == "rings":
            m = np.sin(f * f32(1.5) * np.hypot(x - c[:, 0], y - c[:, 1]) + ph)
        elif name == "checker":
            m = np.tanh(f32(4) * np.sin(f * x + ph) * np.sin(f * y + ph))
        elif name == "diagonal":
            theta = f32(np.pi / 4) + jt
            m = np.sin(f * (x * np.cos(theta) + y * np.sin(theta)) + ph)
        elif name == "spokes":
            m = np.sin(spokes[sel] * np.arctan2(y - c[:, 1], x - c[:, 0]) + ph)
        else:  # dots
            m = np.tanh(f32(4) * (np.sin(f * x + ph) + np.sin(f * y) - f32(1)))
        pattern[sel] = m
    q = quality.astype(f32).reshape(b, 1, 1, 1)
    mix = (f32(0.5) + f32(0.5) * pattern)[..., None]
    img = bg + (fg - bg) * mix
    mean = img.mean(axis=(1, 2), keepdims=True)
    contrast = f32(0.5) + f32(0.5) * q
    sigma = f32(noise) * (f32(1.5) - q)
    img = mean + contrast * (img - mean) + sigma * pixel_noise
    img *= f32(255)
    np.rint(img, out=img)
    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8)


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of an 8-bit RGB image ``[H, W, 3]``, written by Pillow without compression (level 0: stored
    deflate blocks) and without metadata, so the same pixels give the same bytes (for one Pillow and zlib
    version). The rendered images are noisy and deflate saves ~2% on them, while compressing would cost about
    twice as much per image again (docs/corpus.md has the figures)."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=0)
    return buf.getvalue()


def render_chunk(task: tuple) -> int:
    """Render and write one chunk; returns the bytes written. ``task`` is picklable for worker processes."""
    root, rel_paths, visual, palette, quality, seed, size, noise = task
    pixels = render_images(visual, quality, seed, size, noise, palette)
    written = 0
    root = Path(root)
    made: set[str] = set()
    for rel, px in zip(rel_paths, pixels):
        folder = os.path.dirname(rel)
        if folder not in made:
            (root / folder).mkdir(parents=True, exist_ok=True)
            made.add(folder)
        data = encode_png(px)
        (root / rel).write_bytes(data)
        written += len(data)
    return written
