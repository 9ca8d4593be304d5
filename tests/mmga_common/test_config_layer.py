"""mmga_common.config (the one config layer) and mmga_common.threads, on a small dataclass tree of their own."""

from __future__ import annotations

import argparse
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import torch

from mmga_common.config import (
    ConfigError,
    add_arguments,
    deep_merge,
    flags,
    from_dict,
    load_file,
    nest,
    overrides_from_args,
    parse_override,
    to_dict,
)
from mmga_common.config import config_field as knob
from mmga_common.threads import torch_threads


@dataclass
class Inner:
    width: int = knob(8, "width", ge=1)
    rate: float = knob(0.5, "rate", gt=0.0, lt=1.0)
    kinds: tuple[Literal["a", "b"], ...] = knob(("a",), "kinds")
    sizes: list[int] = knob([1, 2], "sizes")
    clip: float | None = knob(1.0, "clip")
    on: bool = knob(True, "switch")

    def __post_init__(self) -> None:
        if self.width % 2:
            raise ConfigError("config", None, "width", "must be even")


@dataclass
class Outer:
    root: Path = knob(help="a folder", flag="--dir")
    mode: Literal["x", "y"] = knob("x", "mode")
    inner: Inner = field(default_factory=Inner)


def test_error_names_source_line_field_and_survives_pickling():
    err = ConfigError("cfg.yaml", 4, "inner.width", "must be >= 1, got 0")
    assert str(err) == "cfg.yaml, line 4, field 'inner.width': must be >= 1, got 0"
    assert str(ConfigError("command line", None, None, "bad")) == "command line: bad"
    again = pickle.loads(pickle.dumps(err))
    assert (again.source, again.line, again.field, again.msg) == (
        "cfg.yaml",
        4,
        "inner.width",
        "must be >= 1, got 0",
    )


def test_from_dict_types_defaults_and_round_trip():
    cfg = from_dict(
        Outer, {"root": "r", "inner": {"rate": 0.25, "kinds": ["b", "a"], "sizes": [3], "clip": None}}
    )
    assert cfg == Outer(root=Path("r"), inner=Inner(rate=0.25, kinds=("b", "a"), sizes=[3], clip=None))
    assert to_dict(cfg)["inner"]["kinds"] == ["b", "a"] and to_dict(cfg)["root"] == "r"
    assert from_dict(Outer, to_dict(cfg)) == cfg
    assert Outer(root=Path("a")).inner.sizes is not Outer(root=Path("b")).inner.sizes  # list default copied


@pytest.mark.parametrize(
    "data,message",
    [
        (
            {"root": "r", "inner": {"widht": 4}},
            "field 'inner.widht': unknown field (did you mean 'inner.width'?)",
        ),
        ({"root": "r", "mode": "z"}, "field 'mode': expected one of 'x', 'y', got 'z'"),
        ({"root": "r", "inner": {"width": 2.0}}, "field 'inner.width': expected int, got 2.0"),
        ({"root": "r", "inner": {"on": "yes"}}, "field 'inner.on': expected bool, got 'yes'"),
        ({"root": "r", "inner": {"rate": 1}}, "field 'inner.rate': must be < 1.0, got 1.0"),
        ({"root": "r", "inner": {"width": 3}}, "field 'inner.width': must be even"),  # from __post_init__
        ({}, "field 'root': required field is missing"),
        ({"root": "r", "inner": [1]}, "field 'inner': expected a mapping, got list"),
    ],
)
def test_from_dict_errors(data, message):
    with pytest.raises(ConfigError) as err:
        from_dict(Outer, data, "src")
    assert str(err.value) == f"src, {message}"


def test_load_file_gives_the_line_of_every_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("root: r\ninner:\n  rate: 1e-1\n  width: 0\n")
    data, lines = load_file(path)
    assert data["inner"]["rate"] == 0.1  # a float, though PyYAML's YAML 1.1 reads 1e-1 as text
    with pytest.raises(ConfigError, match=r"c.yaml, line 4, field 'inner.width': must be >= 1, got 0"):
        from_dict(Outer, data, str(path), lines)
    bad = tmp_path / "c.json"
    bad.write_text('{"root": "r",\n "mode": }')
    with pytest.raises(ConfigError, match=r"c.json, line 2: invalid JSON"):
        load_file(bad)
    (tmp_path / "c.toml").write_text("")
    with pytest.raises(ConfigError, match="must end in .json, .yaml or .yml"):
        load_file(tmp_path / "c.toml")
    (tmp_path / "l.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="l.yaml, line 1: the top level must be a mapping"):
        load_file(tmp_path / "l.yaml")


def test_merge_and_dotted_overrides():
    base = {"a": {"b": 1, "c": 2}}
    assert deep_merge(base, {"a": {"c": 3}, "d": 4}) == {"a": {"b": 1, "c": 3}, "d": 4}
    assert base == {"a": {"b": 1, "c": 2}}  # inputs untouched
    assert parse_override("inner.rate=1e-3", "--x") == ("inner.rate", 0.001)
    assert parse_override("inner.kinds=[a, b]", "--x") == ("inner.kinds", ["a", "b"])
    with pytest.raises(ConfigError, match=r"command line: --x 'rate': expected KEY=VALUE"):
        parse_override("rate", "--x")
    assert nest({"inner.width": 4, "inner": {"on": False}}) == {"inner": {"width": 4, "on": False}}


def test_argparse_builder_maps_flags_onto_the_fields():
    parser = argparse.ArgumentParser()
    add_arguments(parser, Outer, {"inner": "inner section"})
    text = parser.format_help()
    assert "--dir PATH" in text and "(required)" in text and "inner section:" in text
    assert "--kinds {a,b} [{a,b} ...]" in text and "(default: 1 2)" in text and "--on, --no-on" in text
    args = parser.parse_args(["--dir", "r", "--width", "4", "--clip", "none", "--no-on", "--kinds", "b"])
    overrides = overrides_from_args(args)
    assert overrides == {"root": "r", "inner": {"width": 4, "clip": None, "on": False, "kinds": ["b"]}}
    assert from_dict(Outer, overrides).inner == Inner(width=4, clip=None, on=False, kinds=("b",))
    assert overrides_from_args(parser.parse_args([])) == {}  # flags left out stay out
    assert flags(Outer)["root"] == "--dir" and flags(Outer)["inner.rate"] == "--rate"


def test_torch_threads_restores_the_count_also_on_errors():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with torch_threads(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


def test_both_stages_share_one_output_layout_and_result_type(tmp_path):
    from mmga_common.layout import StageResult, checkpoint_path, config_path, default_out_dir
    from stage1_encoders import Stage1Config, Stage1Result
    from stage2_graph import Stage2Config, Stage2Result

    assert Stage1Result is StageResult and Stage2Result is StageResult
    assert checkpoint_path(tmp_path) == tmp_path / "checkpoints" / "last.ckpt"
    assert config_path(tmp_path) == tmp_path / "checkpoints" / "config.json"
    one = Stage1Config.from_dict({"corpus": str(tmp_path), "cache_dir": str(tmp_path), "round": 2})
    two = Stage2Config.from_dict({"corpus": str(tmp_path), "cache_dir": str(tmp_path), "round": 2})
    assert one.resolved_out_dir == default_out_dir("stage1", 2) == Path("runs/stage1/round_2")
    assert two.resolved_out_dir == default_out_dir("stage2", 2)
