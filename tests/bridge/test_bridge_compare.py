"""``python -m bridge.report.compare``: statistics over finished runs, and MMGA's margins with the verdict over runs."""

from __future__ import annotations

import json

import pytest

from bridge.report.compare import CompareError, main, summarize_runs


def fake_metrics(f1: dict[str, float], mae: dict[str, float]) -> dict:
    return {
        "rows": {
            name: {"topic": {"macro_f1": {"mean": f1[name]}}, "fans": {"mae": {"mean": mae[name]}}}
            for name in f1
        }
    }


RUN_A = fake_metrics(
    {"stats_x": 0.6, "no_align": 0.90, "mmga_round_0": 0.80, "mmga_round_1": 0.95},
    {"stats_x": 0.7, "no_align": 0.65, "mmga_round_0": 0.70, "mmga_round_1": 0.60},
)
RUN_B = fake_metrics(
    {"stats_x": 0.6, "no_align": 0.94, "mmga_round_0": 0.80, "mmga_round_1": 0.92},
    {"stats_x": 0.7, "no_align": 0.61, "mmga_round_0": 0.70, "mmga_round_1": 0.64},
)


def test_summary_statistics_and_margins():
    summary = summarize_runs({"a": RUN_A, "b": RUN_B})
    assert summary["final"] == "mmga_round_1"
    f1 = summary["rows"]["no_align"]["topic_macro_f1"]
    assert f1["values"] == [0.90, 0.94]
    assert f1["mean"] == pytest.approx(0.92) and f1["std"] == pytest.approx(0.04 / 2**0.5)
    # positive = MMGA ahead: higher macro-F1, lower MAE
    assert summary["margins"]["no_align"]["topic_macro_f1"] == pytest.approx([0.05, -0.02])
    assert summary["margins"]["no_align"]["fans_mae"] == pytest.approx([0.05, -0.03])
    assert summary["margins"]["stats_x"]["fans_mae"] == pytest.approx([0.10, 0.06])
    assert set(summary["margins"]) == {"no_align", "stats_x"}  # rows absent from the runs are skipped
    assert list(summary["rows"]) == [
        "stats_x",
        "no_align",
        "mmga_round_0",
        "mmga_round_1",
    ]  # the report's order


def test_cli_prints_tables_and_names_a_missing_file(tmp_path, capsys):
    for name, metrics in (("a", RUN_A), ("b", RUN_B)):
        (tmp_path / name / "report").mkdir(parents=True)
        (tmp_path / name / "report" / "metrics.json").write_text(json.dumps(metrics))
    assert main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "| `no_align` | 0.920 ± 0.028 |" in out
    assert (
        "| `no_align` | +0.050 / -0.020 (1 of 2: not measurably) | +0.050 / -0.030 (1 of 2: not measurably) |"
        in out
    )
    assert main([str(tmp_path / "a"), str(tmp_path / "missing")]) == 2
    assert f"{tmp_path / 'missing' / 'report' / 'metrics.json'}: no metrics.json" in capsys.readouterr().err


def test_runs_must_end_with_the_same_round():
    shorter = fake_metrics({"mmga_round_0": 0.8}, {"mmga_round_0": 0.7})
    with pytest.raises(CompareError, match="same MMGA round"):
        summarize_runs({"a": RUN_A, "b": shorter})
