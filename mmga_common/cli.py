"""The ``mmga`` console command: one entry point that dispatches to each package's own command line.

    mmga run ...        the bridge's round loop      (bridge.alternate, = python bridge/alternate.py)
    mmga stage1 ...     stage 1 alone                (stage1_encoders.run)
    mmga stage2 ...     stage 2 alone                (stage2_graph.run)
    ...

Each subcommand is a module with ``main(argv) -> int``; the module is imported only when its subcommand runs
(by name, with importlib: this neutral package imports no project package), so ``mmga --help`` stays light (no
torch). The module's parser names itself ``mmga <subcommand>`` through :func:`prog_name`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass

PROG = "mmga"


@dataclass(frozen=True)
class Subcommand:
    """One ``mmga`` subcommand: the module whose ``main(argv)`` it runs, and a one-line summary."""

    name: str
    module: str
    summary: str


SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand("run", "bridge.alternate", "the whole method: rounds of stage 1 and stage 2, then the report"),
    Subcommand(
        "stage1", "stage1_encoders.run", "train the image and text encoders for one round (encoders.h5)"
    ),
    Subcommand("stage2", "stage2_graph.run", "train the graph encoder for one round (graph.h5)"),
    Subcommand("embed", "bridge.embed", "embed users with a finished run's encoders"),
    Subcommand("export", "bridge.export", "export a finished run's user embeddings"),
    Subcommand("inspect", "cache.inspect", "show what a cache file or folder holds, and check it"),
    Subcommand("synthetic", "corpus.synthetic.__main__", "generate a synthetic corpus"),
)
BY_NAME = {sub.name: sub for sub in SUBCOMMANDS}

# The subcommand running now, so that its parser reads "mmga stage1" in usage and --help. sys.argv is left as it
# is: Lightning's ddp strategy relaunches `python <sys.argv>` per rank, which must be `mmga stage1 ...` again.
_running: list[str] = []


def prog_name(default: str) -> str:
    """The program name a module's parser should show: ``mmga <subcommand>`` when ``mmga`` dispatched to it,
    else ``default`` (e.g. ``python -m stage1_encoders.run``)."""
    return f"{PROG} {_running[-1]}" if _running else default


def usage() -> str:
    width = max(len(sub.name) for sub in SUBCOMMANDS)
    lines = [
        f"usage: {PROG} <command> [args ...]",
        "",
        "MMGA: multimodal user embeddings from images, texts and the follow graph.",
        "",
        "commands:",
        *(f"  {sub.name:<{width}}  {sub.summary}" for sub in SUBCOMMANDS),
        "",
        f"`{PROG} <command> --help` shows a command's options.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mmga <command> [args]``: the command's module ``main`` gets ``args``; its return is the status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    sub = BY_NAME.get(name)
    if sub is None:
        print(f"{PROG}: unknown command {name!r}; choose from {', '.join(BY_NAME)}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(sub.module)
    except ModuleNotFoundError as err:
        if err.name is None or not sub.module.startswith(err.name):
            raise  # a dependency of the module is missing: that traceback is the useful message
        print(f"{PROG} {name}: not available in this installation (no module {sub.module})", file=sys.stderr)
        return 2
    _running.append(name)
    try:
        status = module.main(rest)
    except SystemExit as exit_:  # argparse's --help and usage errors
        code = exit_.code
        status = code if isinstance(code, int) else (0 if code is None else 1)
        if not isinstance(code, int) and code is not None:
            print(code, file=sys.stderr)
    finally:
        _running.pop()
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
