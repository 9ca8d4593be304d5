"""The typed report of a finished run (:class:`RunReport`, whose ``to_json`` is ``metrics.json``), computed from
the rows' evaluations and what the run folder recorded; writes nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bridge.evaluation.config import EvalConfig
from bridge.evaluation.results import Evaluation
from bridge.evaluation.rows import Row
from bridge.report.diagnostics import edge_weight_diagnostics
from bridge.report.provenance import provenance
from bridge.report.summary import Comparison, RowSummary, compare_rows, summarize_row, verdict_lines
from bridge.runfolder import Manifest, RunPaths
from bridge.variants import Variant
from corpus import Corpus


@dataclass(frozen=True)
class RunFacts:
    """What the report needs to know of the run that made it (built once by the orchestration).

    Attributes:
        run_dir: the run folder.
        rounds: rounds of every variant.
        training_seeds: the training seeds, in order.
        eval: the evaluation's configuration.
        variants: the variants the run trained (their labels describe them in the report).
        config_json: the resolved bridge configuration as JSON (metrics.json's ``config.bridge``).
        stage_steps: each stage's ``trainer.max_steps`` per round (for the report's prose).
        stage2_reads: one sentence on which of R^T's columns MMGA's stage 2 reads (its GNN and gate, and R^G's
            content readout); empty when the run does not train MMGA.
    """

    run_dir: Path
    rounds: int
    training_seeds: tuple[int, ...]
    eval: EvalConfig
    variants: tuple[Variant, ...]
    config_json: dict[str, Any]
    stage_steps: dict[str, int | None]
    stage2_reads: str = ""


@dataclass(frozen=True)
class ReportInputs:
    """What a finished run hands to its report.

    Attributes:
        facts: the run's facts (:class:`RunFacts`).
        paths: the run folder's layout; the report goes into ``paths.report_dir``.
        manifest: the run's manifest (the stages' resolved configs and log folders).
        corpus: the corpus every row was trained and evaluated on.
        rows: the report rows in report order.
        evaluated: ``{row: {training seed (None for X): Evaluation}}``.
        timings: one ``{"step", "seconds", "ran_now"}`` per step, in the order the run met them.
        total_seconds: this invocation's wall time.
        environment: torch threads, jobs, CPU count and load averages (``{}`` when not measured).
    """

    facts: RunFacts
    paths: RunPaths
    manifest: Manifest
    corpus: Corpus
    rows: list[Row]
    evaluated: dict[str, dict[int | None, Evaluation]]
    timings: list[dict[str, Any]]
    total_seconds: float
    environment: dict[str, Any]


@dataclass(frozen=True)
class RunReport:
    """Everything ``report.md`` and ``metrics.json`` say, typed."""

    created: str
    corpus: dict[str, Any]
    training_seeds: tuple[int, ...]
    rows: dict[str, RowSummary]
    comparison: list[Comparison]
    verdict: list[str]
    diagnostics: dict[str, Any] | None
    timings: list[dict[str, Any]]
    wall_seconds: float
    environment: dict[str, Any]
    config: dict[str, Any]
    provenance: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """metrics.json's content."""
        return {
            "created": self.created,
            "corpus": self.corpus,
            "training_seeds": list(self.training_seeds),
            "rows": {name: summary.to_json() for name, summary in self.rows.items()},
            "comparison": [c.to_json() for c in self.comparison],
            "verdict": self.verdict,
            "edge_weight_diagnostics": self.diagnostics,
            "timings": self.timings,
            "wall_seconds": self.wall_seconds,
            "environment": self.environment,
            "config": self.config,
            "provenance": self.provenance,
        }


def corpus_info(corpus: Corpus) -> dict[str, Any]:
    return {
        "path": str(corpus.root),
        "fingerprint": corpus.fingerprint,
        "users": corpus.num_users,
        "posts": corpus.num_posts,
        "edges": corpus.num_edges,
        "topics": len(corpus.label_names),
        "topic_names": list(corpus.label_names),
    }


def first_stage_configs(inputs: ReportInputs) -> dict[str, Any]:
    """The resolved configs of the first training seed's MMGA round-0 stages, keyed by their manifest key."""
    first = inputs.paths.for_seed(inputs.facts.training_seeds[0])
    out = {}
    for stage in ("stage1", "stage2"):
        entry = inputs.manifest.entry(first.stage_key("mmga", 0, stage))
        if entry is not None:
            out[str(first.stage_key("mmga", 0, stage))] = entry.config["config"]
    return out


def compute_report(inputs: ReportInputs) -> RunReport:
    """The typed report: per row its summary over training seeds, the comparison and verdict, the edge-weight
    diagnostics, timings, environment and the resolved configs."""
    facts, rows = inputs.facts, inputs.rows
    seeds = facts.training_seeds
    summaries = {row.name: summarize_row(row, inputs.evaluated[row.name], seeds) for row in rows}
    comparison = compare_rows(rows, summaries)
    variants = tuple(dict.fromkeys(r.variant for r in rows if r.variant is not None and "graph" in r.parts))
    diagnostics = edge_weight_diagnostics(inputs.corpus, inputs.paths, facts.rounds, variants, seeds)
    return RunReport(
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        corpus=corpus_info(inputs.corpus),
        training_seeds=tuple(seeds),
        rows=summaries,
        comparison=comparison,
        verdict=verdict_lines(comparison),
        diagnostics=diagnostics,
        timings=inputs.timings,
        wall_seconds=inputs.total_seconds,
        environment=inputs.environment,
        config={"bridge": facts.config_json, "stages": first_stage_configs(inputs)},
        provenance=provenance(),
    )
