"""The run folder as a format: where everything of a bridge run lives (``RunPaths``), the typed manifest keys
(``StageKey``, ``EvalKey``), the manifest and its records (``Manifest``, ``Entry``, ``FileRecord``: the one
"this file still matches its record" check), the run lock and what the bridge may remove.

Read by every room of the bridge (``rounds``, ``evaluation``, ``report``, ``inference``); imports none of them,
only ``cache`` and ``mmga_common`` (and the standard library).
"""

from bridge.runfolder.keys import CORPUS_KEY, STAGES, EvalKey, Stage, StageKey
from bridge.runfolder.lock import RunFolderLocked, RunFolderUnwritable, run_lock
from bridge.runfolder.manifest import Entry, Manifest, ManifestConflict, ManifestError, write_json_atomic
from bridge.runfolder.paths import STAGE_LOG, RunPaths
from bridge.runfolder.records import FileRecord, config_diff, digest, file_sha256, to_jsonable

__all__ = [
    "CORPUS_KEY",
    "STAGES",
    "STAGE_LOG",
    "Entry",
    "EvalKey",
    "FileRecord",
    "Manifest",
    "ManifestConflict",
    "ManifestError",
    "RunFolderLocked",
    "RunFolderUnwritable",
    "RunPaths",
    "Stage",
    "StageKey",
    "config_diff",
    "digest",
    "file_sha256",
    "run_lock",
    "to_jsonable",
    "write_json_atomic",
]
