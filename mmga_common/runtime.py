"""What a trainer section asks of this machine, resolved and checked before any work: the device kind and the
precision that ``accelerator: auto`` / ``precision: auto`` mean here, impossible device requests, and tracking
loggers whose package is missing. Each check raises one ``ConfigError`` line naming the key.

torch is imported inside the functions (reading a config stays light); ``mmga_common.trainer`` re-exports these.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

from mmga_common.config import ConfigError

if TYPE_CHECKING:
    from mmga_common.trainer import TrainerConfig

# Optional tracking loggers: the packages each needs (pyproject's [tracking] extra). MLflow 3 refuses its plain
# file store by default ("maintenance mode"), so the local store is a SQLite file, which needs SQLAlchemy and Alembic.
TRACKING_PACKAGES = {"mlflow": ("mlflow", "sqlalchemy", "alembic"), "wandb": ("wandb",)}

# Where a plain torch loop (no Lightning) can run: the evaluation's ``eval.device`` and the benchmarks' --device.
TorchDevice = Literal["auto", "cpu", "cuda"]
TORCH_DEVICES: tuple[str, ...] = get_args(TorchDevice)


def _no_cuda(value: str) -> str:
    """The message for a CUDA request on a machine without a CUDA device."""
    return f"is {value!r} but torch sees no CUDA device on this machine; use auto or cpu"


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _mps_available() -> bool:
    import torch

    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def _bf16_supported() -> bool:
    """Native bf16 on the current CUDA device (Ampere and later); emulated bf16 (torch's default answer on older
    GPUs) is slower than 32-bit, so it does not count."""
    import torch

    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch < 2.3 has no including_emulation and answers for native support
        return bool(torch.cuda.is_bf16_supported())


def resolve_accelerator(tc: TrainerConfig) -> str:
    """The device kind ``tc.accelerator`` means on this machine: ``cuda``, ``mps`` or ``cpu`` (``auto``: the first
    available, as Lightning picks it; ``gpu`` is ``cuda``, or ``mps`` where only that exists)."""
    if tc.accelerator in ("cpu", "cuda", "mps"):
        return tc.accelerator
    if _cuda_count() > 0:
        return "cuda"
    if _mps_available():
        return "mps"
    return "cpu" if tc.accelerator == "auto" else "cuda"  # gpu without one: check_devices refuses it


def resolve_precision(tc: TrainerConfig) -> str:
    """``tc.precision``, with ``auto`` resolved: ``bf16-mixed`` when the run trains on a CUDA device that supports
    bf16 (Ampere and later), else ``32-true``."""
    if tc.precision != "auto":
        return tc.precision
    if resolve_accelerator(tc) == "cuda" and _cuda_count() > 0 and _bf16_supported():
        return "bf16-mixed"
    return "32-true"


def check_devices(tc: TrainerConfig, key_prefix: str = "trainer.", source: str = "config") -> None:
    """Refuse, before any work, a device request this machine cannot serve: a GPU accelerator without a CUDA device,
    more GPUs (or a device index) than there are, 16-bit precision off CUDA, bf16 on a GPU without it. Raises
    ``ConfigError`` naming the key (``key_prefix`` + field), in one line."""

    def fail(name: str, msg: str) -> None:
        raise ConfigError(source, None, key_prefix + name, msg)

    devices = tc.parsed_devices
    ids = devices if isinstance(devices, list) else []
    count = devices if isinstance(devices, int) else (len(ids) if ids else None)
    if count == 0:
        fail("devices", "asks for 0 devices; give at least 1 (or auto)")
    accelerator = resolve_accelerator(tc)
    if accelerator == "cuda":
        available = _cuda_count()
        if available == 0:
            fail("accelerator", _no_cuda(tc.accelerator))
        if count is not None and count > available:
            fail(
                "devices", f"asks for {count} GPUs but this machine has {available}; use at most {available}"
            )
        if ids and max(ids) >= available:
            fail(
                "devices",
                f"names GPU {max(ids)} but this machine has {available} (indices 0 to {available - 1})",
            )
    if accelerator == "mps" and not _mps_available():
        fail("accelerator", "is 'mps' but torch sees no MPS device on this machine; use auto or cpu")
    precision = resolve_precision(tc)
    if precision.startswith("16") and accelerator != "cuda":
        fail(
            "precision",
            f"{precision} needs a CUDA device (this run uses {accelerator}); use bf16-mixed or 32-true",
        )
    if precision.startswith("bf16") and accelerator == "cuda" and not _bf16_supported():
        fail("precision", f"{precision}: this GPU does not support bf16; use 16-mixed or 32-true")


def resolve_torch_device(requested: str) -> str:
    """The device a plain torch loop (no Lightning) runs on for ``requested`` (``auto``, ``cpu`` or ``cuda``):
    ``cuda`` when asked or, for ``auto``, when torch sees a CUDA device; else ``cpu``. MPS is not offered: the
    sparse kernels such loops use (torch-sparse, PyG) have none."""
    if requested not in TORCH_DEVICES:
        names = ", ".join(map(repr, TORCH_DEVICES[:-1])) + f" or {TORCH_DEVICES[-1]!r}"
        raise ValueError(f"device must be {names}, got {requested!r}")
    if requested == "auto":
        return "cuda" if _cuda_count() > 0 else "cpu"
    return requested


def check_torch_device(requested: str, key: str, source: str = "config") -> None:
    """Refuse, before any work, ``cuda`` on a machine where torch sees no CUDA device: one ``ConfigError`` line
    naming ``key``."""
    if requested == "cuda" and _cuda_count() == 0:
        raise ConfigError(source, None, key, _no_cuda(requested))


def check_loggers(tc: TrainerConfig, key_prefix: str = "trainer.", source: str = "config") -> None:
    """Refuse, before any work, a tracking logger whose package is not installed, in one line naming the key."""
    import importlib.util

    for name in tc.loggers:
        missing = [pkg for pkg in TRACKING_PACKAGES.get(name, ()) if importlib.util.find_spec(pkg) is None]
        if missing:
            raise ConfigError(
                source,
                None,
                key_prefix + "loggers",
                f"{name} needs the {', '.join(missing)} package{'s' * (len(missing) > 1)}, which "
                f"{'are' if len(missing) > 1 else 'is'} not installed: pip install 'mmga[tracking]'",
            )


def check_runtime(tc: TrainerConfig, key_prefix: str = "trainer.", source: str = "config") -> None:
    """``check_devices`` and ``check_loggers``: what a config can ask of this machine, checked before any work."""
    check_devices(tc, key_prefix, source)
    check_loggers(tc, key_prefix, source)


def stage_preflight(tc: TrainerConfig, folders: dict) -> str | None:
    """What a stage's command line checks before any work, in order: what the trainer section asks of this machine
    (devices, tracker packages; :func:`check_runtime`), then whether its output folders (``{folder: flag}``) can
    be written (:func:`mmga_common.writable.first_unwritable`). The first problem as one line, or None."""
    from mmga_common.writable import first_unwritable

    try:
        check_runtime(tc)
    except ConfigError as err:
        return str(err)
    return first_unwritable(folders)
