"""Check a run folder against its manifest: ``python -m bridge.runfolder.verify RUN``.

Every file every completed step recorded is checked for its size and sha256, and every recorded folder for its
existence. Prints one line per step that no longer matches and exits 1 if any does (0 when all match, 2 when the
folder has no readable manifest). ``cache.inspect`` checks what a cache file holds; this checks that the files
are still the ones the run wrote (the cache package cannot read the run folder's manifest: it sits below it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bridge.runfolder.manifest import Manifest, ManifestError
from bridge.runfolder.paths import RunPaths


def changed_entries(run_dir: Path) -> tuple[list[str], int]:
    """(keys of the steps whose files no longer match their records, number of steps checked)."""
    paths = RunPaths(Path(run_dir))
    if not paths.manifest.is_file():
        raise ManifestError(f"{run_dir}: no manifest.json, so no bridge run folder")
    manifest = Manifest.load(paths.manifest, log=None)
    keys = list(manifest.keys())
    return [key for key in keys if not manifest.intact(key)], len(keys)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bridge.runfolder.verify", description=__doc__.split("\n")[0]
    )
    parser.add_argument("run_dir", type=Path, help="a bridge run folder")
    args = parser.parse_args(argv)
    try:
        changed, checked = changed_entries(args.run_dir)
    except ManifestError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for key in changed:
        print(
            f"{key}: its files changed, were truncated or deleted since the run recorded them (rerun the run)"
        )
    print(f"{checked - len(changed)} of {checked} recorded steps match their files (size and sha256)")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
