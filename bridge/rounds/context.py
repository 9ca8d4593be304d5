"""What every step of one bridge invocation shares (:class:`BridgeRun`, built once by ``run_bridge``) and what
the invocation produced (:class:`BridgeResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.rounds.config import BridgeConfig
from bridge.rounds.console import Console
from bridge.runfolder import Manifest, RunPaths


@dataclass
class BridgeResult:
    """What a bridge run produced."""

    run_dir: Path
    report: Path
    metrics: dict[str, Any]
    timings: list[dict[str, Any]] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)  # manifest keys computed in this invocation
    skipped: list[str] = field(default_factory=list)  # manifest keys found complete


@dataclass
class BridgeRun:
    """What every step of one bridge invocation shares.

    Attributes:
        cfg: the resolved bridge configuration.
        paths: the run folder's layout.
        manifest: the run's manifest (what is complete, with which inputs).
        result: what this invocation ran, skipped and timed so far (filled in as it goes).
        force: recompute what is complete.
        console: where progress goes (its verbosity).
    """

    cfg: BridgeConfig
    paths: RunPaths
    manifest: Manifest
    result: BridgeResult
    force: bool = False
    console: Console = field(default_factory=Console)

    def note_step(self, key: str, ran: bool, seconds: float) -> None:
        """Record that step ``key`` ran now (or was found complete) and how long it took."""
        (self.result.ran if ran else self.result.skipped).append(key)
        self.result.timings.append({"step": key, "seconds": seconds, "ran_now": ran})
