"""The entry points answer --help and refuse a bad flag or override without importing torch, Lightning or the
encoders (each in a fresh interpreter, so that what this test process imported does not count)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import sys
sys.argv = {argv!r}
from {module} import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit_:
    code = exit_.code
heavy = sorted(m for m in ("torch", "lightning", "transformers", "open_clip", "torch_sparse") if m in sys.modules)
print("HEAVY", heavy, "CODE", code)
"""


def _probe(module: str, argv: list[str]) -> tuple[str, str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module, argv=["prog", *argv])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.stdout, done.stderr


@pytest.mark.parametrize(
    ("module", "argv"),
    [
        ("stage1_encoders.run", ["--help"]),
        ("stage2_graph.run", ["--help"]),
        ("bridge.alternate", ["--help"]),
        ("stage1_encoders.run", ["--corpus", "c", "--cache", "k", "--max-steps", "-2"]),
        ("stage2_graph.run", ["--corpus", "c", "--cache", "k", "--heads", "5"]),
    ],
)
def test_help_and_flag_errors_do_not_import_torch(module, argv):
    out, err = _probe(module, argv)
    assert "HEAVY [] CODE" in out, (out, err)
    assert "Warning" not in err, err  # no third-party noise either


def test_a_bad_bridge_override_fails_before_torch_is_imported(tmp_path):
    run_dir = tmp_path / "run"
    out, err = _probe("bridge.alternate", ["--run-dir", str(run_dir), "--stage2", "trainer.csv_logger=false"])
    assert "HEAVY [] CODE 2" in out, (out, err)
    assert "field 'trainer.csv_logger': unknown field (did you mean 'trainer.loggers'?)" in err
    assert not run_dir.exists()
