"""benchmarks/finetune_epochs.py: the epochs of the report's chosen networks, read from a finished run's metrics."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the script's own imports

from benchmarks.finetune_epochs import report_epochs  # noqa: E402


def test_report_epochs_are_every_seed_and_tasks_chosen_networks(tmp_path):
    assert report_epochs(tmp_path, "mmga_finetuned") == []  # no finished report
    chosen = lambda epochs: {"chosen": [{"epochs": epochs, "head": "finetuned(lr=0.01)", "seed": 0}]}  # noqa: E731
    rows = {
        "mmga_finetuned": {
            "per_seed": {
                "0": {"topic": chosen(114), "fans": chosen(179)},
                "1": {"topic": chosen(90), "fans": {}},
            }
        },
        "scratch_finetuned": {"per_seed": {"0": {"topic": chosen(12)}}},
    }
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "metrics.json").write_text(json.dumps({"rows": rows}), encoding="utf-8")
    assert sorted(report_epochs(tmp_path, "mmga_finetuned")) == [90, 114, 179]
    assert report_epochs(tmp_path, "scratch_finetuned") == [12]
    assert report_epochs(tmp_path, "peer_gcn") == []
