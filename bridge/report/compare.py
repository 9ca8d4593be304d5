"""Compare finished runs, e.g. the same config at other ``--seed`` values or on another machine: the spread
between whole runs, which one run's report (mean ± sd over its own training seeds) cannot show.

Reads several runs' ``report/metrics.json`` and prints, per row, the mean and sample std over the runs of each
run's headline scores (topic macro-F1, fans MAE), and MMGA's last-round margin over each compared row in every
run (positive = MMGA ahead) with the seed-aware verdict of ``bridge.evaluation.verdict`` applied over runs.

    python -m bridge.report.compare runs/seed0 runs/seed5 runs/seed10
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bridge.evaluation.results import Stat
from bridge.evaluation.rows import GOAL_METRICS, SECTIONS, report_rows
from bridge.evaluation.verdict import paired_margins, verdict
from bridge.runfolder import RunPaths
from mmga_common.cli import prog_name

_LABELS = {("topic", "macro_f1"): "topic macro-F1", ("fans", "mae"): "fans MAE"}


class CompareError(ValueError):
    """A run folder without a usable metrics.json, or runs that cannot be compared."""


def load_metrics(run_dir: Path) -> dict[str, Any]:
    path = RunPaths(Path(run_dir)).report_dir / "metrics.json"
    if not path.is_file():
        raise CompareError(
            f"{path}: no metrics.json (has `python bridge/alternate.py --run-dir {run_dir}` finished?)"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CompareError(f"{path}, line {err.lineno}: not valid JSON ({err.msg})") from err


def _value(metrics: dict[str, Any], row: str, task: str, metric: str) -> float:
    return float(metrics["rows"][row][task][metric]["mean"])


def summarize_runs(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per-row statistics over runs and MMGA's per-run margins against each compared row.

    Args:
        runs: run name -> its parsed metrics.json.

    Returns ``{"rows": {row: {"topic_macro_f1": {"mean", "std", "values"}, "fans_mae": {...}}},
    "final": the last MMGA row, "margins": {baseline: {"topic_macro_f1": [per run], "fans_mae": [...]}}}``.
    Rows missing from any run are left out; a margin is > 0 when MMGA is ahead (higher F1, lower MAE).
    """
    if len(runs) < 1:
        raise CompareError("give at least one run folder")
    common = set.intersection(*(set(m["rows"]) for m in runs.values()))
    finals = {
        name: max(
            (r for r in m["rows"] if r.startswith("mmga_round_")), key=lambda r: int(r.rsplit("_", 1)[1])
        )
        for name, m in runs.items()
        if any(r.startswith("mmga_round_") for r in m["rows"])
    }
    if len(finals) != len(runs) or len(set(finals.values())) != 1:
        raise CompareError(
            f"the runs do not end with the same MMGA round: {finals or 'none has an MMGA row'}"
        )
    final = next(iter(finals.values()))
    # the report's row order (X, baselines, MMGA per round, MMGA's parts), then anything else alphabetically
    known = [
        row.name for row in report_rows(int(final.rsplit("_", 1)[1]) + 1, finetune=True, encoder_peers=True)
    ]
    order = [r for r in known if r in common] + sorted(common - set(known))
    out_rows: dict[str, Any] = {}
    for row in order:
        out_rows[row] = {}
        for task, metric, _ in GOAL_METRICS:
            values = [_value(m, row, task, metric) for m in runs.values()]
            out_rows[row][f"{task}_{metric}"] = Stat.of(values).to_json()
    margins: dict[str, Any] = {}
    for other in SECTIONS[0].compared:  # the linear-probe section's rows, against MMGA's last round
        if other not in common:
            continue
        margins[other] = {}
        for task, metric, higher in GOAL_METRICS:
            mmga = [_value(m, final, task, metric) for m in runs.values()]
            others = [_value(m, other, task, metric) for m in runs.values()]
            margins[other][f"{task}_{metric}"] = paired_margins(mmga, others, higher)
    return {"runs": list(runs), "final": final, "rows": out_rows, "margins": margins}


def markdown(summary: dict[str, Any]) -> str:
    """Two tables: rows over runs, and MMGA's margins per run."""
    runs, final = summary["runs"], summary["final"]
    keys = [
        (f"{task}_{metric}", _LABELS.get((task, metric), f"{task} {metric}"))
        for task, metric, _ in GOAL_METRICS
    ]
    lines = [
        f"{len(runs)} runs: {', '.join(runs)}",
        "",
        "| row | " + " | ".join(f"{label} (mean ± sd over runs)" for _, label in keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for row, stats in summary["rows"].items():
        cells = [f"{stats[k]['mean']:.3f} ± {stats[k]['std']:.3f}" for k, _ in keys]
        lines.append(f"| `{row}` | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"`{final}` vs | "
        + " | ".join(f"{label} margin per run (ahead in: verdict)" for _, label in keys)
        + " |",
        "|---|" + "---|" * len(keys),
    ]
    for other, per_metric in summary["margins"].items():
        cells = []
        for key, _ in keys:
            values = per_metric[key]
            ahead = sum(v > 0 for v in values)
            word = verdict(values)
            cells.append(" / ".join(f"{v:+.3f}" for v in values) + f" ({ahead} of {len(values)}: {word})")
        lines.append(f"| `{other}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog_name("python -m bridge.report.compare"),
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "run_dirs", nargs="+", type=Path, help="finished run folders (each with report/metrics.json)"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON instead of Markdown")
    args = parser.parse_args(argv)
    try:
        summary = summarize_runs({str(d): load_metrics(d) for d in args.run_dirs})
    except CompareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        json.dumps(summary, indent=2) if args.json else markdown(summary), end="" if not args.json else "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
