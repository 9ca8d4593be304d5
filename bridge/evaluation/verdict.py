"""Statistics over training seeds and the seed-aware verdict "is MMGA ahead of this row?".

Each row of a run is trained once per training seed; each training seed's score is the mean over the downstream
heads' seeds. Margins are paired by training seed (MMGA of seed s against the other row of seed s), oriented so
that a positive margin means MMGA is better (higher macro-F1, lower MAE).

The rule: MMGA is **ahead** of a row when its margin is positive for every training seed, or when the mean margin
exceeds twice the sample standard deviation of the per-seed margins; **behind** by the mirrored rule; otherwise
**not measurably** different. With one training seed the first clause decides alone, and the report says that
no training spread was measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

Verdict = Literal["ahead", "behind", "not measurably", "n/a"]


def verdict(margins: Sequence[float]) -> Verdict:
    """The seed-aware verdict on per-training-seed margins (positive = MMGA better); see the module docstring."""
    m = np.asarray(list(margins), dtype=np.float64)
    if len(m) == 0 or not np.isfinite(m).all():
        return "n/a"
    sd = float(m.std(ddof=1)) if len(m) > 1 else 0.0
    mean = float(m.mean())
    if (m > 0).all() or (len(m) > 1 and mean > 2 * sd):
        return "ahead"
    if (m < 0).all() or (len(m) > 1 and mean < -2 * sd):
        return "behind"
    return "not measurably"


def paired_margins(mmga: Sequence[float], other: Sequence[float], higher_is_better: bool) -> list[float]:
    """Per-seed margins of MMGA over another row (both lists in training-seed order)."""
    if len(mmga) != len(other):
        raise ValueError(f"cannot pair {len(mmga)} MMGA seeds with {len(other)} seeds of the other row")
    a, b = np.asarray(mmga, dtype=np.float64), np.asarray(other, dtype=np.float64)
    return [float(v) for v in (a - b if higher_is_better else b - a)]
