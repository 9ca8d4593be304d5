"""benchmarks/paper_scale.py's pieces that need no full round: the bridge command it runs (read back by the
bridge's own parser), the caption states' seconds read from the bridge's log, and the memory timeline written
as it is sampled."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the script's own imports

from benchmarks.paper_scale import PeakMemory, bridge_command, text_states_seconds  # noqa: E402
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


def test_the_memory_timeline_is_on_disk_while_the_round_runs(tmp_path):
    """Each sample reaches the timeline file as it is taken, not when the round ends: here the file holds the
    process's samples while it still runs (its log's last line included)."""
    log = tmp_path / "round.log"
    log.write_text("[stage 1/2] seed_0/mmga/round_0/stage1 started\n", encoding="utf-8")
    timeline = tmp_path / "round.memory.tsv"
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        sampler = PeakMemory(process.pid, interval=0.05, log=log, timeline_file=timeline)
        deadline = time.monotonic() + 10
        while len(timeline.read_text(encoding="utf-8").splitlines()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.poll() is None  # still running
        header, first = timeline.read_text(encoding="utf-8").splitlines()[:2]
        assert header == "seconds\ttree_rss_bytes\tlast_log_line"
        seconds, rss, line = first.split("\t")
        assert float(seconds) >= 0 and int(rss) > 0  # the first sample may come before the child has started
        assert line == "[stage 1/2] seed_0/mmga/round_0/stage1 started"
        sampler.stop()
        assert sampler.timeline[0] == (float(seconds), int(rss), line)
    finally:
        process.kill()
        process.wait()
