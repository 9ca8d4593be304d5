"""The bridge: the round loop (``bridge.alternate``), per-round paths, the manifest, downstream evaluation and
the report. See docs/bridge.md."""

from bridge.manifest import Manifest, ManifestConflict, ManifestError
from bridge.paths import VARIANTS, RunPaths

__all__ = ["VARIANTS", "Manifest", "ManifestConflict", "ManifestError", "RunPaths"]
