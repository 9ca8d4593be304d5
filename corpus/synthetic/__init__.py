"""Synthetic social-media corpus with planted structure (``python -m corpus.synthetic --help``)."""

from pathlib import Path

import numpy as np

from corpus.synthetic.config import SyntheticConfig
from corpus.synthetic.generator import TRUTH_FILE, generate


def load_truth(root: str | Path) -> dict[str, np.ndarray]:
    """The generator's ground truth (``_truth.npz``, see docs/corpus.md) as a dict of numpy arrays."""
    with np.load(Path(root) / TRUTH_FILE, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


__all__ = ["TRUTH_FILE", "SyntheticConfig", "generate", "load_truth"]
