"""Export a finished run's own users' embeddings: ``python -m bridge.export --run-dir RUN --out users.parquet``.

Reads the last round's cache of one training seed and variant (its files checked against the manifest's sha256)
and writes ``.parquet`` (``user_id``, one float32 list column per block ``graph``, ``text``, ``image``, the masks;
needs pyarrow) or ``.npz`` (the same layout as ``bridge.embed``'s). New users: ``python -m bridge.embed``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the repo root's packages
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.inference.embeddings import EmbedError  # noqa: E402
from mmga_common.cli import prog_name  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog_name("python -m bridge.export"),
        description="Write a finished bridge run's own users' embeddings [R^G || R^T || R^I] to parquet or npz.",
    )
    parser.add_argument("--run-dir", type=Path, required=True, help="a finished bridge run folder")
    parser.add_argument(
        "--out", type=Path, required=True, help="output file: .parquet (needs pyarrow) or .npz"
    )
    parser.add_argument("--seed", type=int, default=None, help="training seed (default: the run's first)")
    parser.add_argument("--variant", default="mmga", help="which trained variant (default: mmga)")
    return parser


def export_run(run_dir: Path, out: Path, seed: int | None = None, variant: str = "mmga") -> Path:
    """Write the run's own users' embeddings to ``out`` (atomically); returns ``out``."""
    from bridge.embed import check_outputs
    from bridge.inference import load_run

    out = Path(out)
    if out.suffix not in (".parquet", ".npz"):
        raise EmbedError(f"--out must end in .parquet or .npz, got {out}")
    check_outputs(run_dir, out, out.parent)
    run = load_run(run_dir, seed=seed, variant=variant)
    own = run.own_embeddings()
    own.check_finite()
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        own.write_table(Path(tmp), {**run.describe(), "corpus_fingerprint": own.fingerprint}, out.suffix)
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from bridge.runfolder import ManifestError
    from cache import CacheError
    from corpus import CorpusError

    try:
        out = export_run(args.run_dir, args.out, seed=args.seed, variant=args.variant)
    except (EmbedError, ManifestError, CacheError, CorpusError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(
            f"error: {err.filename or args.out}: {err.strerror or err}; nothing was written", file=sys.stderr
        )
        return 2
    print(f"exported the run's own users' embeddings to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
