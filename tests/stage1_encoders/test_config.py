"""Stage1Config: round trips, file loading with located errors, and the CLI flags built from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmga_common.config import flag_of, leaf_fields
from stage1_encoders.config import ConfigError, Stage1Config
from stage1_encoders.run import build_parser, config_from_args, main


def test_to_dict_from_dict_round_trip():
    cfg = Stage1Config(corpus=Path("c"), cache_dir=Path("k"), round=2, init_checkpoint=Path("x.ckpt"))
    cfg.losses.gcl_image_weight = 0.0
    cfg.trainer.loggers = ["csv", "tensorboard"]
    data = cfg.to_dict()
    json.dumps(data)  # JSON-ready
    again = Stage1Config.from_dict(data)
    assert again == cfg
    assert isinstance(again.init_checkpoint, Path) and again.losses.gcl_image_weight == 0.0


def test_yaml_file_errors_name_file_line_and_field(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("corpus: c\ncache_dir: k\ntrainer:\n  max_steps: 10\n  precision: bf17\n")
    with pytest.raises(ConfigError) as err:
        Stage1Config.from_file(path)
    assert str(err.value).startswith(
        f"{path}, line 5, field 'trainer.precision': expected one of 'auto', '32-true'"
    )


def test_unknown_field_suggests_the_close_name(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"corpus": "c", "cache_dir": "k", "losses": {"lm_wieght": 1.0}}, indent=1))
    with pytest.raises(
        ConfigError,
        match=r"line 5, field 'losses.lm_wieght': unknown field \(did you mean 'losses.lm_weight'\?\)",
    ):
        Stage1Config.from_file(path)


def test_range_and_type_checks():
    base = {"corpus": "c", "cache_dir": "k"}
    with pytest.raises(ConfigError, match="field 'trainer.max_steps': expected int, got 1.5"):
        Stage1Config.from_dict({**base, "trainer": {"max_steps": 1.5}})
    with pytest.raises(ConfigError, match="every loss weight is 0"):
        Stage1Config.from_dict(
            {**base, "losses": {"lm_weight": 0, "ita_weight": 0, "gcl_image_weight": 0, "gcl_text_weight": 0}}
        )
    with pytest.raises(ConfigError, match="field 'corpus': required field is missing"):
        Stage1Config.from_dict({"cache_dir": "k"})
    with pytest.raises(ConfigError, match="text_model=pretrained needs"):
        Stage1Config.from_dict({**base, "model": {"text_model": "pretrained"}})


def test_every_field_has_a_flag_with_help():
    help_text = build_parser().format_help()
    for dotted, field, _ in leaf_fields(Stage1Config):
        assert flag_of(dotted, field) in help_text, dotted
        assert field.metadata.get("help"), dotted


def test_flags_override_the_config_file(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("trainer:\n  max_steps: 10\n  precision: bf16-mixed\nlosses:\n  gcl_text_weight: 0.5\n")
    cfg = config_from_args(
        [
            "--config",
            str(path),
            "--corpus",
            "c",
            "--cache",
            "k",
            "--round",
            "3",
            "--max-steps",
            "7",
            "--no-enable-progress-bar",
            "--loggers",
            "csv",
            "tensorboard",
            "--init-checkpoint",
            "none",
        ]
    )
    assert cfg.trainer.max_steps == 7 and cfg.trainer.precision == "bf16-mixed"
    assert cfg.losses.gcl_text_weight == 0.5 and cfg.round == 3
    assert cfg.trainer.enable_progress_bar is False and cfg.trainer.loggers == ["csv", "tensorboard"]
    assert cfg.init_checkpoint is None and cfg.cache_dir == Path("k")


def test_cli_bad_values_give_clear_errors(capsys):
    assert main(["--corpus", "c", "--cache", "k", "--lm-weight", "-1"]) == 2
    assert (
        "error: command line, field 'losses.lm_weight': must be >= 0.0, got -1.0 (flag --lm-weight)"
        in capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        main(["--corpus", "c", "--cache", "k", "--precision", "fp8"])
    assert "invalid choice: 'fp8'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--corpus", "c", "--cache", "k", "--max-step", "5"])
    assert "unrecognized arguments: --max-step 5" in capsys.readouterr().err


def test_bounds_from_field_metadata_cover_nested_and_optional_fields():
    base = {"corpus": "c", "cache_dir": "k"}
    cases = {
        ("losses", "mlm_probability", 1.0): "must be < 1.0, got 1.0",
        ("optim", "lr", 0.0): "must be > 0.0, got 0.0",
        ("trainer", "num_threads", 0): "must be >= 1, got 0",
        ("data", "posts_per_user", 0): "must be >= 1, got 0",
    }
    for (section, name, value), msg in cases.items():
        with pytest.raises(ConfigError, match=f"field '{section}.{name}': {msg}"):
            Stage1Config.from_dict({**base, section: {name: value}})
    Stage1Config.from_dict(
        {**base, "trainer": {"num_threads": None, "gradient_clip_val": None}}
    )  # null skips
    with pytest.raises(ConfigError, match="field 'trainer.max_steps': must be >= -1"):
        Stage1Config.from_dict({**base, "trainer": {"max_steps": -2}})
    assert Stage1Config.from_dict({**base, "trainer": {"max_steps": 0}}).trainer.max_steps == 0  # frozen
