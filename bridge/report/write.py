"""Write a finished run's report into ``<run>/report``: plots first (a plot that fails becomes a warning in the
report, never a lost run), then ``metrics.json``, ``timings.md`` and ``report.md``, each atomically."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.evaluation.rows import representation_blocks
from bridge.report.build import ReportInputs, RunReport, compute_report
from bridge.report.markdown import confusion, render_markdown, timings_markdown
from bridge.runfolder import Manifest, StageKey, write_json_atomic
from cache.atomic import DiskFullError, atomic_write_bytes, is_disk_full


def write_report(inputs: ReportInputs) -> dict[str, Any]:
    """Write report.md, metrics.json and the plots into ``inputs.paths.report_dir``; returns metrics.json's
    content."""
    out = inputs.paths.report_dir
    out.mkdir(parents=True, exist_ok=True)
    report = compute_report(inputs)
    has_losses, failed = write_plots(report, inputs)
    metrics = report.to_json()
    if failed:
        metrics["plot_warnings"] = failed
    write_json_atomic(out / "metrics.json", metrics)
    markdown = render_markdown(report, inputs.facts, has_losses)
    if failed:
        markdown += "\n## Plot warnings\n\n" + "\n".join(f"- {line}" for line in failed) + "\n"
    atomic_write_bytes(out / "timings.md", timings_markdown(report).encode())
    atomic_write_bytes(out / "report.md", markdown.encode())
    return metrics


def _recorded_log_dir(manifest: Manifest, key: StageKey) -> Path | None:
    """The log folder the stage's result named, as the manifest recorded it (None when not recorded)."""
    entry = manifest.entry(key)
    return None if entry is None else entry.outputs.get("log_dir")


def _try_plot(name: str, draw: Callable[[], Any], failed: list[str]) -> Any:
    """Draw one plot; a failure (other than a full disk, which the caller reports) becomes a warning line."""
    try:
        return draw()
    except (DiskFullError, KeyboardInterrupt):
        raise
    except Exception as err:  # noqa: BLE001 - a plot must never cost the run its report
        if isinstance(err, OSError) and is_disk_full(err):
            raise
        failed.append(f"{name} was not drawn: {type(err).__name__}: {err}")
        warnings.warn(f"report: {failed[-1]}", stacklevel=2)
        return None


def write_plots(report: RunReport, inputs: ReportInputs) -> tuple[bool, list[str]]:
    """The report's PNG plots into ``inputs.paths.report_dir``: (whether loss curves were drawn, warnings for
    plots that failed). The loss curves come from the log folders the manifest recorded for every training seed's
    MMGA stages."""
    from bridge.report.plots import (
        plot_confusion,
        plot_loss_curves,
        plot_margins,
        plot_metrics_by_round,
        plot_projections,
    )

    facts, paths, corpus, rows = inputs.facts, inputs.paths, inputs.corpus, inputs.rows
    out = paths.report_dir
    first = paths.for_seed(facts.training_seeds[0])
    final = [r for r in rows if r.group == "mmga"][-1]
    failed: list[str] = []
    _try_plot(
        "metrics_by_round.png",
        lambda: plot_metrics_by_round(rows, report.rows, out / "metrics_by_round.png"),
        failed,
    )
    log_dirs = [
        {
            stage: [
                _recorded_log_dir(inputs.manifest, paths.for_seed(seed).stage_key("mmga", r, stage))
                for r in range(facts.rounds)
            ]
            for stage in ("stage1", "stage2")
        }
        for seed in facts.training_seeds
    ]
    has_losses = _try_plot(
        "loss_curves.png", lambda: plot_loss_curves(log_dirs, out / "loss_curves.png"), failed
    )
    _try_plot("margins.png", lambda: plot_margins(report.comparison, out / "margins.png"), failed)
    matrix = confusion(report.rows[final.name])
    if matrix is not None:
        title = f"MMGA round {final.round}: test topics, summed over training and head seeds"
        _try_plot(
            "confusion.png",
            lambda: plot_confusion(matrix, list(corpus.label_names), out / "confusion.png", title),
            failed,
        )
    by_name = {r.name: r for r in rows}

    def projections() -> None:
        panels = [(f"MMGA round {final.round}", representation_blocks(final, corpus, first))]
        if "no_align" in by_name:
            panels.append(("no alignment", representation_blocks(by_name["no_align"], corpus, first)))
        plot_projections(panels, corpus, out / "embedding_tsne.png")

    _try_plot("embedding_tsne.png", projections, failed)
    return bool(has_losses), failed
