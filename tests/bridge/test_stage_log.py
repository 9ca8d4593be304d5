"""A stage's output goes to its stage.log, and nothing keeps pointing at that file once the stage returned."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_stage_output_is_captured_and_logging_still_works_afterwards(tmp_path):
    script = textwrap.dedent(f"""
        import logging, sys
        from types import SimpleNamespace
        from bridge.rounds import schedule, stages

        def fake_stage(stage, config, corpus=None):
            print("from the stage", flush=True)
            logging.warning("first use of logging: the root logger gets its handler now")
            return "done"

        stages.call_stage = fake_stage
        cfg = SimpleNamespace(out_dir={str(tmp_path / "stage")!r})
        assert schedule._call_stage_logged("stage1", cfg) == "done"
        print("after the stage", flush=True)
        logging.warning("a later warning")
    """)
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "Logging error" not in out.stderr and "closed file" not in out.stderr
    assert "a later warning" in out.stderr and "after the stage" in out.stdout
    log = (tmp_path / "stage" / "stage.log").read_text()
    assert "from the stage" in log and "first use of logging" in log
    assert "from the stage" not in out.stdout
