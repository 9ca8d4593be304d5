"""Command line of the round loop: alternate stage 1 and stage 2, evaluate every row, write the report.

    python bridge/alternate.py --rounds 3              # the default run (see docs/bridge.md for its time)
    python -m bridge.alternate --rounds 3 --run-dir runs/exp1 --stage1 trainer.max_steps=100

Rerunning the same command skips every stage whose complete outputs exist. The work itself is done by
``bridge.rounds.runner.run_bridge``; this module maps flags onto a ``BridgeConfig``, builds every variant's typed stage
configs (a bad key fails in well under a second) and takes the run folder's lock, all before torch is imported.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script (python bridge/alternate.py): import the repo root's packages, and do not let this
    # folder's modules (config.py, metrics.py, paths.py, ...) shadow top-level modules of the same name.
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

from bridge.rounds.config import SECTIONS, build_config  # noqa: E402
from bridge.rounds.stages import check_stage_configs  # noqa: E402
from bridge.runfolder.lock import RunFolderLocked, RunFolderUnwritable, run_lock  # noqa: E402
from bridge.variants import ABLATIONS  # noqa: E402
from mmga_common import quiet_third_party  # noqa: E402
from mmga_common.cli import prog_name  # noqa: E402
from mmga_common.config import ConfigError  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog_name("python bridge/alternate.py"),
        description="Alternate MMGA's stage 1 (encoders) and stage 2 (graph) over rounds, evaluate the user "
        "representations against baselines, and write a report. Rerun the same command to resume.",
    )
    parser.add_argument("--rounds", type=int, default=None, help="number of rounds (default 3)")
    parser.add_argument(
        "--corpus",
        type=Path,
        default=None,
        help="corpus folder (default: generate the synthetic corpus into <run-dir>/corpus)",
    )
    parser.add_argument(
        "--run-dir", type=Path, default=Path("runs/default"), help="run folder (default runs/default)"
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"JSON or YAML file with any of the sections {', '.join(SECTIONS)}; flags on the command line win "
        "(docs/bridge.md has an example)",
    )
    parser.add_argument(
        "--stage1",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="stage 1 config override, dotted keys, repeatable (e.g. trainer.max_steps=100)",
    )
    parser.add_argument(
        "--stage2",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="stage 2 config override, dotted keys, repeatable (e.g. model.heads=2)",
    )
    parser.add_argument(
        "--eval",
        dest="eval_overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="evaluation override, repeatable (e.g. head_seeds=[0,1,2,3,4])",
    )
    parser.add_argument(
        "--synthetic",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="synthetic corpus knob when --corpus is not given (e.g. num_users=2000)",
    )
    parser.add_argument(
        "--frozen",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="stage-1 override of the frozen peers' encoders, repeatable (default: the MiniLM-L6 that ships "
        "offline, mean-pooled; e.g. model.text_model=pretrained --frozen model.text_name_or_path=DIR)",
    )
    _add_seed_and_variant_flags(parser)
    _add_work_flags(parser)
    _add_output_flags(parser)
    return parser


def _add_seed_and_variant_flags(parser: argparse.ArgumentParser) -> None:
    """Training seeds, the stage preset and the ablations."""
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="first training seed (default 0); training seed s runs round r with seed s + 1000 r",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        metavar="K",
        help="train every variant K times, with seeds seed .. seed+K-1 (default 5); the report gives mean ± sd "
        "over them and calls MMGA ahead only beyond that spread",
    )
    parser.add_argument(
        "--preset",
        default=None,
        metavar="NAME",
        help="the stage defaults, bridge/presets/NAME.json: 'default' (the pretrained MiniLM-L6 text encoder that "
        "ships offline, frozen and mean-pooled, with a graph head trained by the graph-contrastive InfoNCE loss; "
        "the ImageNet-pretrained EfficientNet-Lite0 that ships offline, its trunk frozen and its projection trained by "
        "image-text alignment), 'tiny' (tiny encoders trained from scratch, as the paper's losses say), 'real' "
        "(MiniLM fully fine-tuned) or 'pretrained' (MiniLM's top layer tuned over cached lower layers); "
        "docs/stage1.md gives their cost and quality",
    )
    parser.add_argument(
        "--finetune",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="report the fine-tuned rows (on by default): MMGA's last-round GNN + a task head trained end to end on "
        "each task, and the same network from scratch; --no-finetune saves about 1.5 minutes of the default run's "
        "8 on 2 cores",
    )
    parser.add_argument(
        "--encoder-peers",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also report mmga_sgc and mmga_gcn (with the baselines): peer_sgc's SGC and peer_gcn's GCN, unchanged, "
        "over MMGA's encoders, each compared with the same peer over the no-alignment and frozen encoders (what the "
        "alignment buys a user who runs that peer); off by default: about 16%% more time (1 to 1.5 minutes "
        "of the default run on 2 cores)",
    )
    parser.add_argument(
        "--skip-graph-head",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="stage 2's GNN and gate read R^T and R^I without stage 1's graph-head columns (each variant's "
        "stage-2 model.text_skip_last / image_skip_last = its stage-1 model.text_head_dim / image_head_dim), while "
        "R^G's content readout keeps them (the default preset's readout_text / readout_image=whole); on by "
        "default: --no-skip-graph-head feeds stage 2 all of R^T and R^I, the paper's input (docs/stage2.md, 'What "
        "stage 2 reads of R^T', measured on both corpora for R^T)",
    )
    parser.add_argument(
        "--ablations",
        nargs="*",
        default=None,
        metavar="NAME",
        help="also train MMGA with one part switched off and report them: every ablation when no NAME is given, "
        f"else the named ones ({', '.join(ABLATIONS)}; bridge/variants.py, docs/bridge.md 'Ablations'); each "
        "costs about as much as MMGA",
    )


def _add_work_flags(parser: argparse.ArgumentParser) -> None:
    """Worker processes, threads and the baselines switch."""
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="worker processes running independent (seed, variant) chains at once (default: CPU cores / threads, "
        "at most 4); results do not depend on it; 1 = everything in this process",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads of this process (default: $OMP_NUM_THREADS if set, else 1). On a small "
        "shared CPU one thread is the fastest for the default run's small matrices: with 2 threads and other jobs "
        "running, a stage-2 step was measured 5-8x slower. Raise it on a dedicated many-core machine.",
    )
    parser.add_argument("--skip-baselines", action="store_true", help="run and report MMGA (and X) only")


def _add_output_flags(parser: argparse.ArgumentParser) -> None:
    """How much the run prints, the image check and --force."""
    loud = parser.add_mutually_exclusive_group()
    loud.add_argument(
        "--quiet", action="store_true", help="print only errors, the verdict and where the report is"
    )
    loud.add_argument(
        "--verbose",
        action="store_true",
        help="print every stage and every (row, seed) evaluation, and third-party warnings",
    )
    parser.add_argument(
        "--check-images",
        action="store_true",
        help="decode every image of --corpus fully before training (default: headers only)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="recompute results made with another config or corpus instead of stopping",
    )


def _env_threads() -> int:
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS") or 1))
    except ValueError:
        return 1


def _jobs_and_threads(args: argparse.Namespace) -> tuple[int, int]:
    threads = args.threads if args.threads is not None else _env_threads()
    if threads < 1:
        raise ConfigError("command line", None, "--threads", f"must be >= 1, got {threads}")
    jobs = args.jobs if args.jobs is not None else max(1, min(4, (os.cpu_count() or 1) // threads))
    if jobs < 1:
        raise ConfigError("command line", None, "--jobs", f"must be >= 1, got {jobs}")
    return jobs, threads


def _closing_lines(metrics: dict, seeds: int) -> list[str]:
    """The verdict, or with one training seed the plain statement that no spread was measured."""
    if seeds == 1:
        return [
            "one training seed: no spread measured, so no verdict (use --seeds 3 or more; the default is 5); the scores are in "
            "the report"
        ]
    return list(metrics.get("verdict", []))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = build_config(
            args.config,
            rounds=args.rounds,
            seed=args.seed,
            seeds=args.seeds,
            preset=args.preset,
            corpus=args.corpus,
            stage1=args.stage1,
            stage2=args.stage2,
            eval_overrides=args.eval_overrides,
            synthetic=args.synthetic,
            frozen=args.frozen,
            baselines=False if args.skip_baselines else None,
            ablations=None if args.ablations is None else (args.ablations or True),
            finetune=args.finetune,
            skip_graph_head=args.skip_graph_head,
            encoder_peers=args.encoder_peers,
        )
        templates = check_stage_configs(cfg)  # every variant's typed stage configs, each built once
        jobs, threads = _jobs_and_threads(args)
        with run_lock(args.run_dir.resolve()):  # first, before torch: a busy folder is refused at once
            return _run(args, cfg, templates, jobs, threads)
    except (ConfigError, RunFolderLocked, RunFolderUnwritable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, cfg, templates, jobs: int, threads: int) -> int:
    """The run itself, holding the run folder's lock; the heavy imports happen here."""
    quiet_third_party(verbose=args.verbose)
    from bridge.rounds.console import NORMAL, QUIET, VERBOSE, Console
    from bridge.rounds.preflight import check_images, disk_full_message
    from bridge.rounds.runner import run_bridge
    from bridge.runfolder import ManifestConflict, ManifestError
    from cache import CacheError
    from corpus import CorpusError
    from mmga_common.threads import torch_threads

    user_errors = (ConfigError, ManifestConflict, ManifestError, CorpusError, CacheError)
    try:
        with torch_threads(
            threads
        ):  # restored afterwards: main() may be called in-process (tests, notebooks)
            if args.check_images:
                check_images(cfg.corpus)
            console = Console(QUIET if args.quiet else VERBOSE if args.verbose else NORMAL)
            result = run_bridge(
                cfg, args.run_dir, force=args.force, jobs=jobs, console=console, templates=templates
            )
    except user_errors as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as err:
        message = disk_full_message(err)  # a full disk is one clear error; the rerun resumes
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; rerun the same command to continue from the last completed stage ({args.run_dir})",
            file=sys.stderr,
        )
        return 130
    print()
    for line in _closing_lines(result.metrics, cfg.seeds):
        print(line)
    print(f"Report: {result.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
