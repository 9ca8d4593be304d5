"""benchmarks/paper_scale.py's pieces that need no full round: the bridge command it runs (read back by the
bridge's own parser) and the caption states' seconds read from the bridge's log."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the script's own imports

from benchmarks.paper_scale import bridge_command, text_states_seconds  # noqa: E402
from bridge.alternate import build_parser  # noqa: E402


def test_the_round_is_one_bridge_round_with_the_stage1_overrides(tmp_path):
    cmd = bridge_command(tmp_path / "c", tmp_path / "r", 2, ["model.text_frozen_precision=bf16", "seed=3"])
    assert cmd[1].endswith("bridge/alternate.py")
    args = build_parser().parse_args(cmd[2:])
    assert (args.rounds, args.seeds, args.jobs, args.threads) == (1, 1, 1, 2)
    assert args.skip_baselines and args.run_dir == tmp_path / "r"
    assert args.stage1 == ["model.text_frozen_precision=bf16", "seed=3"]
    assert build_parser().parse_args(bridge_command(tmp_path, tmp_path, 2)[2:]).stage1 in (None, [])


def test_caption_states_seconds_come_from_the_bridge_log():
    log = (
        "[corpus] /x/corpus: 6000 users, 203348 posts, 100020 edges (loaded in 2.0 s)\n"
        "[text states] the frozen text layers' states of every caption, once for this run folder: 183,050 "
        "captions (roughly 11 min on a 2-core CPU)\n"
        "[text states] 36,864 of 183,050 captions (20%), about 9 min left\n"
        "[text states] the frozen text layers' caption states computed in 645.3 s (2 threads); the stage-1 runs "
        "reuse them\n"
        "[stage 1/2] seed_0/mmga/round_0/stage1 done in 40.2 s\n"
    )
    assert text_states_seconds(log) == {"text_states_seconds": 645.3}
    assert text_states_seconds("[stage 1/2] seed_0/mmga/round_0/stage1 done in 40.2 s\n") == {
        "text_states_seconds": None
    }
