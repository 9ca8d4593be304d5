"""Serving a finished run: ``load_run`` finds one training seed's last round through the run folder's API and
checks its files against the manifest; ``TrainedRun.embed`` embeds any corpus with the trained models (no
training); ``embeddings`` writes the results (``.npz`` and the cache format) as one checked unit; ``holdout``
writes a corpus without some users (the inductive benchmark's and tests' tool).

Imports ``runfolder``, ``cache``, ``corpus``, ``bridge.variants`` and the stages' inference modules (on first
use); nothing imports it but the ``bridge.load_run`` entry and ``bridge.embed``'s command line.
"""

from bridge.inference.embeddings import BLOCKS, EmbedError, UserEmbeddings, concat_blocks, standardize_like
from bridge.inference.run import TrainedRun, load_run

__all__ = [
    "BLOCKS",
    "EmbedError",
    "TrainedRun",
    "UserEmbeddings",
    "concat_blocks",
    "load_run",
    "standardize_like",
]
