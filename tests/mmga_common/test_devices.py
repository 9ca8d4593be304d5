"""Device and precision resolution, the early one-line refusal of impossible device requests, and the tracking
loggers' package check (CPU only: CUDA is monkeypatched)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

from mmga_common import runtime as runtime_mod
from mmga_common.config import ConfigError
from mmga_common.trainer import (
    TrainerConfig,
    check_devices,
    check_loggers,
    resolve_accelerator,
    resolve_precision,
)
from stage1_encoders.config import Stage1Config
from stage2_graph.config import Stage2Config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake_cuda(monkeypatch):
    """``fake_cuda(count, bf16)``: torch sees ``count`` CUDA devices, with or without bf16 support."""

    def set_cuda(count: int, bf16: bool = True) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
        monkeypatch.setattr(runtime_mod, "_mps_available", lambda: False)

    return set_cuda


def test_both_stages_default_to_auto_device_and_auto_precision():
    for cls in (Stage1Config, Stage2Config):
        tc = cls.from_dict({"corpus": "c", "cache_dir": "k"}).trainer
        assert (tc.accelerator, tc.precision) == ("auto", "auto")


@pytest.mark.parametrize(
    ("count", "bf16", "accelerator", "precision", "want_device", "want_precision"),
    [
        (0, False, "auto", "auto", "cpu", "32-true"),
        (1, True, "auto", "auto", "cuda", "bf16-mixed"),
        (1, False, "auto", "auto", "cuda", "32-true"),  # e.g. a V100: no bf16
        (1, True, "cpu", "auto", "cpu", "32-true"),  # a GPU that the run does not use
        (2, True, "gpu", "auto", "cuda", "bf16-mixed"),
        (1, True, "auto", "32-true", "cuda", "32-true"),  # an explicit choice is kept
        (0, False, "cpu", "bf16-mixed", "cpu", "bf16-mixed"),
    ],
)
def test_auto_resolution(fake_cuda, count, bf16, accelerator, precision, want_device, want_precision):
    fake_cuda(count, bf16)
    tc = TrainerConfig(accelerator=accelerator, precision=precision)
    assert resolve_accelerator(tc) == want_device
    assert resolve_precision(tc) == want_precision
    check_devices(tc)  # all of these are possible


@pytest.mark.parametrize(
    ("count", "bf16", "fields", "message"),
    [
        (
            0,
            False,
            {"accelerator": "gpu"},
            "config, field 'trainer.accelerator': is 'gpu' but torch sees no CUDA device on this machine; use auto or cpu",
        ),
        (
            0,
            False,
            {"accelerator": "cuda"},
            "config, field 'trainer.accelerator': is 'cuda' but torch sees no CUDA device on this machine; use auto or cpu",
        ),
        (
            1,
            True,
            {"devices": "4"},
            "config, field 'trainer.devices': asks for 4 GPUs but this machine has 1; use at most 1",
        ),
        (
            2,
            True,
            {"accelerator": "gpu", "devices": "0,2"},
            "config, field 'trainer.devices': names GPU 2 but this machine has 2 (indices 0 to 1)",
        ),
        (
            1,
            True,
            {"devices": "0"},
            "config, field 'trainer.devices': asks for 0 devices; give at least 1 (or auto)",
        ),
        (
            0,
            False,
            {"precision": "16-mixed"},
            "config, field 'trainer.precision': 16-mixed needs a CUDA device (this run uses cpu); use bf16-mixed or 32-true",
        ),
        (
            1,
            False,
            {"precision": "bf16-mixed"},
            "config, field 'trainer.precision': bf16-mixed: this GPU does not support bf16; use 16-mixed or 32-true",
        ),
    ],
)
def test_impossible_requests_fail_in_one_line_naming_the_key(fake_cuda, count, bf16, fields, message):
    fake_cuda(count, bf16)
    with pytest.raises(ConfigError) as err:
        check_devices(TrainerConfig(**fields))
    assert str(err.value) == message


def test_the_key_prefix_names_the_section(fake_cuda):
    fake_cuda(0)
    with pytest.raises(ConfigError, match=r"field 'stage1\.trainer\.accelerator'"):
        check_devices(TrainerConfig(accelerator="gpu"), "stage1.trainer.")


def test_cpu_processes_are_not_limited_by_gpus(fake_cuda):
    fake_cuda(0)
    check_devices(TrainerConfig(accelerator="cpu", devices="4"))
    check_devices(TrainerConfig(accelerator="auto", devices="4"))  # auto = cpu here: 4 CPU processes


def test_stage1_refuses_a_missing_gpu_before_reading_the_corpus(fake_cuda, tmp_path, capsys):
    from stage1_encoders.run import main

    fake_cuda(0)
    code = main(
        [
            "--corpus",
            str(tmp_path / "no_corpus"),
            "--cache",
            str(tmp_path / "cache"),
            "--out",
            str(tmp_path / "out"),
            "--accelerator",
            "gpu",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    # one line, about the device: the corpus (which does not exist) was never read
    assert err == [
        "error: config, field 'trainer.accelerator': is 'gpu' but torch sees no CUDA device on this machine; "
        "use auto or cpu"
    ]
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_stage2_refuses_too_many_gpus_before_reading_the_corpus(fake_cuda, tmp_path, capsys):
    from stage2_graph.run import main

    fake_cuda(1)
    code = main(
        [
            "--corpus",
            str(tmp_path / "no_corpus"),
            "--cache",
            str(tmp_path / "cache"),
            "--out",
            str(tmp_path / "out"),
            "--devices",
            "4",
            "--batching",
            "neighbor",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "stage2_graph.run: error: config, field 'trainer.devices': asks for 4 GPUs but this machine has 1; "
        "use at most 1"
    ]
    assert not (tmp_path / "out").exists()


def test_a_tracking_logger_without_its_package_is_refused_in_one_line(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real_find_spec(name, *a)
    )
    with pytest.raises(ConfigError) as err:
        check_loggers(TrainerConfig(loggers=["csv", "wandb"]))
    assert str(err.value) == (
        "config, field 'trainer.loggers': wandb needs the wandb package, which is not installed: "
        "pip install 'mmga[tracking]'"
    )
    check_loggers(TrainerConfig(loggers=["csv", "tensorboard"]))  # core dependencies: never refused
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("mlflow", "alembic") else object(),  # sqlalchemy: "installed"
    )
    with pytest.raises(ConfigError) as err:
        check_loggers(TrainerConfig(loggers=["mlflow"]))
    assert str(err.value) == (
        "config, field 'trainer.loggers': mlflow needs the mlflow, alembic packages, which are not installed: "
        "pip install 'mmga[tracking]'"
    )


def test_no_hard_coded_cuda_calls():
    """Devices are Lightning's to place: no ``.cuda()`` anywhere in the project's code."""
    pattern = re.compile(r"\.cuda\(\s*\)")
    offenders = []
    for package in (
        "corpus",
        "cache",
        "stage1_encoders",
        "stage2_graph",
        "bridge",
        "mmga_common",
        "benchmarks",
    ):
        for path in (ROOT / package).rglob("*.py"):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


@pytest.mark.parametrize(
    ("count", "requested", "want"),
    [(0, "auto", "cpu"), (1, "auto", "cuda"), (1, "cpu", "cpu"), (2, "cuda", "cuda"), (0, "cpu", "cpu")],
)
def test_a_plain_torch_loop_resolves_its_device(fake_cuda, count, requested, want):
    fake_cuda(count)
    assert runtime_mod.resolve_torch_device(requested) == want


def test_a_plain_torch_loop_refuses_cuda_without_a_gpu_in_one_line(fake_cuda):
    fake_cuda(0)
    with pytest.raises(ConfigError) as err:
        runtime_mod.check_torch_device("cuda", "eval.device", "bridge config")
    assert str(err.value) == (
        "bridge config, field 'eval.device': is 'cuda' but torch sees no CUDA device on this machine; use auto or cpu"
    )
    runtime_mod.check_torch_device("auto", "eval.device")  # auto and cpu always run
    runtime_mod.check_torch_device("cpu", "eval.device")
    fake_cuda(1)
    runtime_mod.check_torch_device("cuda", "eval.device")
    with pytest.raises(ValueError, match="'auto', 'cpu' or 'cuda', got 'mps'"):
        runtime_mod.resolve_torch_device("mps")
