"""The bridge: the round loop (``bridge.alternate``), per-round paths, the manifest, the variants (baselines and
ablations), downstream evaluation with the peers, the seed-aware verdict and the report. See docs/bridge.md.

May import every other package of the project (corpus, cache, stage1_encoders, stage2_graph); nothing imports it.
"""

from bridge.manifest import Manifest, ManifestConflict, ManifestError
from bridge.paths import RunPaths
from bridge.variants import REGISTRY as VARIANTS

__all__ = ["VARIANTS", "Manifest", "ManifestConflict", "ManifestError", "RunPaths"]
