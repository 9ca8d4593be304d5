"""Inductive embedding from the command line: a finished run's trained models applied to a new corpus.

::

    python -m bridge.embed --run-dir runs/default --corpus data/new_crawl --out new.npz [--seed S]

    import bridge
    run = bridge.load_run("runs/default")
    user_ids, emb = run.embed("data/new_crawl")      # emb: float32 [N, Dg + Dt + Di] = [R^G || R^T || R^I]

The models are those of the run's last round (of one training seed): stage 1's encoders with their tokenizer
encode every post of the new corpus, and stage 2's GNN runs on the new corpus's graph with its statistics X
standardized with the *training* corpus's means and standard deviations (``bridge.inference``).

Outputs are never written into the run folder (the run's manifest owns it), are checked for writability before
any work, and replace an earlier output only once complete and checked.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import warnings
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the repo root's packages
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.inference.embeddings import EmbedError  # noqa: E402
from mmga_common.cli import prog_name  # noqa: E402


def default_cache_dir(out: Path) -> Path:
    """Where the cache-format copy goes when ``--cache-out`` is not given: ``new.npz`` -> ``new_cache/``."""
    return out.with_name(out.stem + "_cache")


def check_outputs(run_dir: Path, out: Path, cache_out: Path) -> None:
    """Refuse, before any work, outputs inside the run folder and outputs that cannot be written."""
    run = Path(run_dir).resolve()
    for flag, path in (("--out", out), ("--cache-out", cache_out)):
        resolved = Path(path).resolve()
        if resolved == run or run in resolved.parents:
            raise EmbedError(
                f"{flag} {path} is inside the run folder {run_dir}, which the run's manifest owns (writing there "
                "would overwrite the trained run's own files); choose a path outside it"
            )
    for flag, folder in (("--out", Path(out).parent), ("--cache-out", Path(cache_out))):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as err:
            raise EmbedError(
                f"{flag}: cannot write to {folder} ({err.strerror or err}); choose a writable folder"
            ) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog_name("python -m bridge.embed"),
        description="Embed the users of a new corpus with the trained models of a finished bridge run "
        "(no training): writes [R^G || R^T || R^I] per user to an .npz file and a cache folder.",
    )
    parser.add_argument("--run-dir", type=Path, required=True, help="a finished bridge run folder")
    parser.add_argument(
        "--corpus", type=Path, required=True, help="the corpus folder to embed (docs/corpus.md)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output .npz (user_ids, embeddings, blocks) or .parquet (user_id and one list column "
        "per block: graph, text, image; needs pyarrow)",
    )
    parser.add_argument(
        "--cache-out", type=Path, default=None, help="cache folder (default: <out stem>_cache next to --out)"
    )
    parser.add_argument("--seed", type=int, default=None, help="training seed (default: the run's first)")
    parser.add_argument("--variant", default="mmga", help="which trained variant (default: mmga)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--progress", action="store_true", help="show a progress bar while encoding posts")
    return parser


def _quiet_third_party() -> None:
    """At this entry point only: torch-sparse's use of ``torch.jit.script`` is not ours, and the encoders are
    built without weights on purpose (the checkpoint supplies them)."""
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)
    logging.getLogger().addFilter(lambda record: "No pretrained weights loaded" not in record.getMessage())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.out.suffix not in (".npz", ".parquet"):
        print(f"error: --out must end in .npz or .parquet, got {args.out}", file=sys.stderr)
        return 2
    if args.threads < 1:
        print(f"error: --threads must be >= 1, got {args.threads}", file=sys.stderr)
        return 2
    cache_out = args.cache_out or default_cache_dir(args.out)
    try:
        check_outputs(args.run_dir, args.out, cache_out)
    except EmbedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    _quiet_third_party()
    from bridge.inference import load_run
    from bridge.runfolder import ManifestError
    from cache import CacheError
    from cache.atomic import DiskFullError, is_disk_full
    from corpus import CorpusError
    from mmga_common.config import ConfigError
    from mmga_common.threads import torch_threads
    from stage2_graph import Stage2InputError

    user_errors = (
        EmbedError,
        ManifestError,
        CorpusError,
        CacheError,
        ConfigError,
        Stage2InputError,
        DiskFullError,
    )
    try:
        with torch_threads(args.threads):
            run = load_run(args.run_dir, seed=args.seed, variant=args.variant)
            out = run.embed_corpus(args.corpus, progress=args.progress)
            npz, enc, graph = out.save(args.out, cache_out, run.producers(), run.describe())
    except user_errors as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        what = "no space left on the disk" if is_disk_full(err) else (err.strerror or str(err))
        print(f"error: {err.filename or args.out}: {what}; nothing was replaced", file=sys.stderr)
        return 2
    dims = "+".join(str(d) for d in out.block_dims)
    print(
        f"embedded {len(out.user_ids)} users of {args.corpus} with {run.variant} round {run.round} "
        f"(training seed {run.seed}): [R^G || R^T || R^I], {out.matrix.shape[1]} dims ({dims})"
    )
    how = (
        "numpy.load: user_ids, embeddings, user_graph_emb, user_text_emb, user_image_emb"
        if npz.suffix == ".npz"
        else "pandas.read_parquet: user_id, graph, text, image, text_mask, image_mask"
    )
    print(f"  {npz}   ({how})")
    print(f"  {enc}\n  {graph}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
