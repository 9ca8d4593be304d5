"""The ``mmga`` console command: the subcommand list stays light, dispatch passes argv and the exit status, parsers
name themselves ``mmga <command>``, and a missing module is one line."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

from mmga_common import cli

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys
from mmga_common.cli import main
code = main({argv!r})
heavy = sorted(m for m in ("torch", "lightning", "transformers", "open_clip", "h5py", "bridge", "stage1_encoders",
                           "stage2_graph", "cache", "corpus") if m in sys.modules)
print("HEAVY", heavy, "CODE", code)
"""


def _probe(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_help_lists_every_subcommand_in_one_line_each_without_importing_anything():
    done = _probe(["--help"])
    assert "HEAVY [] CODE 0" in done.stdout, (done.stdout, done.stderr)
    lines = done.stdout.splitlines()
    for name in ("run", "stage1", "stage2", "embed", "export", "inspect", "synthetic"):
        assert sum(line.startswith(f"  {name} ") for line in lines) == 1, name
    assert lines[0] == "usage: mmga <command> [args ...]"


def test_no_command_prints_the_list_and_fails(capsys):
    assert cli.main([]) == 2
    assert "commands:" in capsys.readouterr().out


def test_unknown_command_is_one_line(capsys):
    assert cli.main(["stage3", "--x"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "mmga: unknown command 'stage3'; choose from run, stage1, stage2, embed, export, inspect, synthetic\n"
    )


@pytest.fixture
def fake_command(monkeypatch):
    """A subcommand ``fake`` whose module records the argv and the program name it was given."""
    seen: dict = {}
    module = types.ModuleType("fake_mmga_command")

    def main(argv):
        seen["argv"], seen["prog"] = argv, cli.prog_name("python -m fake")
        return 3

    module.main = main
    monkeypatch.setitem(sys.modules, "fake_mmga_command", module)
    monkeypatch.setitem(cli.BY_NAME, "fake", cli.Subcommand("fake", "fake_mmga_command", "a test command"))
    return seen


def test_dispatch_passes_the_rest_of_argv_and_returns_the_status(fake_command):
    assert cli.main(["fake", "--corpus", "c", "-x"]) == 3
    assert fake_command == {"argv": ["--corpus", "c", "-x"], "prog": "mmga fake"}
    assert cli.prog_name("python -m fake") == "python -m fake"  # outside a dispatch: the module's own name


def test_a_missing_module_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(cli.BY_NAME, "export", cli.Subcommand("export", "bridge.no_such_export", "x"))
    assert cli.main(["export", "--run-dir", "r"]) == 2
    assert capsys.readouterr().err == (
        "mmga export: not available in this installation (no module bridge.no_such_export)\n"
    )


@pytest.mark.parametrize(
    ("command", "usage"),
    [
        ("stage1", "usage: mmga stage1 "),
        ("stage2", "usage: mmga stage2 "),
        ("inspect", "usage: mmga inspect "),
        ("synthetic", "usage: mmga synthetic "),
    ],
)
def test_subcommand_help_names_itself_and_exits_0(command, usage, capsys):
    assert cli.main([command, "--help"]) == 0
    assert capsys.readouterr().out.startswith(usage)


def test_subcommand_usage_error_keeps_argparse_status(capsys):
    assert cli.main(["inspect"]) == 2  # argparse: the path argument is missing
    assert "usage: mmga inspect" in capsys.readouterr().err


def test_each_command_module_has_a_main_taking_argv():
    import importlib
    import inspect

    for sub in cli.SUBCOMMANDS:
        if sub.name == "export" and importlib.util.find_spec("bridge.export") is None:
            continue  # created with the bridge's redesign
        main = importlib.import_module(sub.module).main
        assert list(inspect.signature(main).parameters) == ["argv"], sub.module


def test_pyproject_installs_the_console_command():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == {"mmga": "mmga_common.cli:main"}
    assert "tracking" in project["optional-dependencies"]
    assert not any(dep.startswith(("mlflow", "wandb")) for dep in project["dependencies"])
