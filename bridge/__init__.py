"""The bridge: MMGA's round loop, its evaluation and report, and serving trained runs. See docs/bridge.md and the
rooms in docs/architecture.md:

- ``bridge.runfolder``: the run folder as a format (paths, typed manifest keys, the manifest, the lock);
- ``bridge.rounds``: orchestration (config, stage templates, chains over seeds and variants, ``run_bridge``);
- ``bridge.evaluation``: rows, heads, peers, metrics, tasks, typed results, the seed-aware verdict;
- ``bridge.report``: the report over typed results (metrics.json, report.md, plots, comparing runs);
- ``bridge.inference``: ``load_run`` and embedding new users;
- ``bridge.variants``: what each trained variant is (read by every room).

Entry points: ``python bridge/alternate.py`` (``bridge.alternate``), ``python -m bridge.embed``,
``bridge.load_run``. May import every other package of the project; nothing imports it.
"""

from bridge.runfolder import Manifest, ManifestConflict, ManifestError, RunPaths
from bridge.variants import REGISTRY as VARIANTS


def load_run(run_dir, seed: int | None = None, variant: str = "mmga"):
    """The trained models of a finished run's last round: ``run.embed(corpus_dir) -> (user_ids, embeddings)``,
    ``run.embeddings()`` for the run's own users (``bridge.inference.load_run``; torch is imported only when used)."""
    from bridge.inference import load_run as _load_run

    return _load_run(run_dir, seed=seed, variant=variant)


__all__ = ["VARIANTS", "Manifest", "ManifestConflict", "ManifestError", "RunPaths", "load_run"]
