"""The bridge: the round loop (``bridge.alternate``), per-round paths, the manifest, the variants (baselines and
ablations), downstream evaluation with the peers, the seed-aware verdict and the report. See docs/bridge.md.

May import every other package of the project (corpus, cache, stage1_encoders, stage2_graph); nothing imports it.
"""

from bridge.manifest import Manifest, ManifestConflict, ManifestError
from bridge.paths import RunPaths
from bridge.variants import REGISTRY as VARIANTS


def load_run(run_dir, seed: int | None = None, variant: str = "mmga"):
    """The trained models of a finished run's last round: ``run.embed(corpus_dir) -> (user_ids, embeddings)``,
    ``run.embeddings()`` for the run's own users (``bridge.embed.load_run``; torch is imported only now)."""
    from bridge.embed import load_run as _load_run

    return _load_run(run_dir, seed=seed, variant=variant)


__all__ = ["VARIANTS", "Manifest", "ManifestConflict", "ManifestError", "RunPaths", "load_run"]
