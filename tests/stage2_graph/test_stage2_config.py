"""Stage2Config: dict/file round trips, errors that name the field, and the CLI's flag mapping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stage2_graph import ConfigError, Stage2Config
from stage2_graph.run import build_parser, config_from_argv


def test_round_trip_through_dict_and_json(tmp_path):
    cfg = Stage2Config(corpus=Path("c"), cache_dir=Path("k"), round=2, gate="uniform")
    cfg.model.heads = 4
    cfg.model.node_inputs = ("stats", "image")
    cfg.trainer.gradient_clip_val = None
    again = Stage2Config.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    cfg.save(tmp_path / "cfg.json")
    assert Stage2Config.from_file(tmp_path / "cfg.json") == cfg


def test_yaml_file_with_overrides(tmp_path):
    path = tmp_path / "stage2.yaml"
    path.write_text("corpus: data/c\ncache_dir: runs/k\nmodel:\n  hidden_dim: 32\n  heads: 2\n")
    cfg = Stage2Config.from_file(path, {"model": {"heads": 4}, "round": 1})
    assert (
        cfg.corpus == Path("data/c")
        and cfg.model.hidden_dim == 32
        and cfg.model.heads == 4
        and cfg.round == 1
    )


@pytest.mark.parametrize(
    "data,message",
    [
        (
            {"model": {"hiden_dim": 3}},
            "field 'model.hiden_dim': unknown field (did you mean 'model.hidden_dim'?)",
        ),
        ({"gate": "attention"}, "field 'gate': expected one of 'mgate', 'uniform', got 'attention'"),
        ({"model": {"heads": 3}}, "field 'model.heads': must divide model.hidden_dim=64"),
        ({"trainer": {"max_steps": "ten"}}, "field 'trainer.max_steps': expected int, got 'ten'"),
        ({"use_modalities": "yes"}, "field 'use_modalities': expected bool, got 'yes'"),
        (
            {"model": {"node_inputs": ["stats", "video"]}},
            "field 'model.node_inputs': expected a list of one of",
        ),
        (
            {"model": {"node_inputs": "stats"}},
            "field 'model.node_inputs': expected a list of one of 'stats', 'degree', 'image', 'text', got 'stats'",
        ),
        ({"model": {"node_inputs": []}}, "field 'model.node_inputs': must name at least one block"),
        ({"model": {"node_inputs": ["stats", "stats"]}}, "field 'model.node_inputs': must not repeat"),
        (
            {"use_modalities": False, "model": {"node_inputs": ["image"]}},
            "field 'model.node_inputs': has no block left with use_modalities=false",
        ),
        ({"model": {"gate_form": "dot"}}, "field 'model.gate_form': expected one of"),
        ({"model": {"degree_input": True}}, "field 'model.degree_input': unknown field"),
    ],
)
def test_errors_name_source_and_field(data, message):
    with pytest.raises(ConfigError) as err:
        Stage2Config.from_dict({"corpus": "c", "cache_dir": "k", **data}, source="my.yaml")
    assert str(err.value).startswith("my.yaml, field ")
    assert message in str(err.value)


def test_missing_required_field_and_bad_file(tmp_path):
    with pytest.raises(ConfigError, match="field 'cache_dir': required field is missing"):
        Stage2Config.from_dict({"corpus": "c"})
    bad = tmp_path / "bad.json"
    bad.write_text('{"corpus": "c",\n "round": }')
    with pytest.raises(ConfigError, match=r"bad.json, line 2: invalid JSON"):
        Stage2Config.from_file(bad)


def test_cli_flags_override_the_config_file(tmp_path):
    path = tmp_path / "stage2.json"
    path.write_text(json.dumps({"corpus": "c", "cache_dir": "k", "model": {"hidden_dim": 48, "heads": 2}}))
    argv = [
        "--config",
        str(path),
        "--round",
        "3",
        "--heads",
        "4",
        "--no-use-modalities",
        "--gate-normalization",
        "softmax",
        "--gradient-clip-val",
        "none",
        "--out",
        "o",
        "--node-inputs",
        "stats",
        "degree",
        "--gate-form",
        "additive",
    ]
    cfg, _ = config_from_argv(argv)
    assert cfg.round == 3 and cfg.model.hidden_dim == 48 and cfg.model.heads == 4
    assert cfg.use_modalities is False and cfg.model.gate_normalization == "softmax"
    assert cfg.trainer.gradient_clip_val is None and cfg.out_dir == Path("o")
    assert cfg.model.node_inputs == ("stats", "degree") and cfg.model.gate_form == "additive"


def test_cli_help_lists_every_field(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--corpus",
        "--cache",
        "--round",
        "--gate {mgate,uniform}",
        "--hidden-dim",
        "--edge-mask-ratio",
        "--max-steps",
        "--resume",
        "--init-checkpoint",
        "--loggers [{csv,tensorboard,mlflow,wandb} ...]",
        "--node-inputs {stats,degree,image,text}",
        "--gate-form {additive,cosine,gatv2}",
        "--gate-link-weight",
    ):
        assert flag in text, flag


def test_cli_rejects_bad_values(capsys):
    with pytest.raises(SystemExit):
        config_from_argv(["--corpus", "c", "--cache", "k", "--heads", "5"])
    assert "field 'model.heads': must divide" in capsys.readouterr().err
