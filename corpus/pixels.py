"""Turning a decoded image of any Pillow mode into the 8-bit RGB the encoders read, and a large one into a
smaller one for a caller that resizes it anyway (``reduce_to``).

Pillow's ``convert("RGB")`` clips high-depth modes instead of scaling them: a 16-bit grayscale PNG (mode
``I;16``, values 0..65535) comes out almost white (every value above 255 becomes 255). Here those modes are
scaled to 0..255 by the range of their values first.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# Modes holding more than 8 bits per sample (Pillow's names); everything else converts to RGB losslessly enough.
HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_UINT16_MAX = 65535.0


def high_depth_to_8bit(values: np.ndarray, mode: str) -> np.ndarray:
    """uint8 [H, W] of a high-depth grayscale image's samples ``values`` [H, W], scaled by range:

    - ``I;16*`` (16-bit unsigned): ``x / 65535 * 255``, the whole 16-bit range onto 0..255;
    - ``I`` (32-bit signed, how Pillow may open a 16-bit PNG) and ``F`` (32-bit float): values already in
      0..255 stay (``F`` in 0..1 is scaled by 255), values in 0..65535 are read as 16-bit, anything else is
      stretched from its minimum to its maximum (a constant image becomes 0).

    Non-finite ``F`` values count as 0.
    """
    x = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if mode.startswith("I;16"):
        scaled = x / _UINT16_MAX * 255.0
    else:
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        if mode == "F" and lo >= 0.0 and hi <= 1.0:
            scaled = x * 255.0
        elif lo >= 0.0 and hi <= 255.0:
            scaled = x
        elif lo >= 0.0 and hi <= _UINT16_MAX:
            scaled = x / _UINT16_MAX * 255.0
        else:
            scaled = (x - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(x)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` as 8-bit RGB; high-depth modes (``HIGH_DEPTH_MODES``) are scaled by range, not clipped."""
    if img.mode in HIGH_DEPTH_MODES:
        gray = high_depth_to_8bit(np.asarray(img), img.mode)
        return Image.fromarray(gray, mode="L").convert("RGB")
    return img.convert("RGB")


def reduce_to(img: Image.Image, min_side: int) -> Image.Image:
    """``img`` box-reduced (``Image.reduce``: each output pixel the mean of a k x k block) by the largest integer
    factor k that keeps both sides at least ``min_side``; ``img`` itself when that factor is below 2.

    A caller that then resizes to at most ``min_side / g`` per side still shrinks by at least g, which is
    Pillow's ``reducing_gap`` (``Image.resize``): with g >= 3 the two steps give what the one resampling would
    "in most cases indistinguishably" (Pillow's documentation), at a cost that no longer grows with the file's
    pixels.
    """
    if min_side < 1:
        raise ValueError(f"min_side must be >= 1, got {min_side}")
    factor = min(img.size) // min_side
    return img.reduce(factor) if factor >= 2 else img
