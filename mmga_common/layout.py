"""The one on-disk layout of a stage's output folder, and the one result type both stages return.

    <out_dir>/checkpoints/last.ckpt     the final Lightning checkpoint (the next round's init_checkpoint)
    <out_dir>/checkpoints/config.json   the resolved config (also in the cache file's producer attribute)
    <out_dir>/logs/version_<k>/         Lightning's CSV log of each fit (metrics.csv, hparams.yaml); TensorBoard in
                                        tensorboard/, MLflow in mlruns/, W&B in wandb/ (trainer.loggers)

Stage 1 also saves its two encoders in the formats of their libraries, beside the checkpoint:

    <out_dir>/checkpoints/text_encoder/   transformers ``save_pretrained`` (model + tokenizer):
                                          ``AutoModel.from_pretrained`` / ``AutoTokenizer.from_pretrained``
    <out_dir>/checkpoints/image_encoder/  open_clip: open_clip_config.json + open_clip_model.safetensors
                                          (``open_clip.create_model("local-dir:<folder>")``), and
                                          ``<model name>.json`` for ``open_clip.add_model_config(<folder>)``

Without an explicit ``out_dir`` a stage writes to ``runs/<stage>/round_<R>``, the same ``round_<R>`` folder name
the cache and the bridge use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_FILE = "last.ckpt"
CONFIG_FILE = "config.json"
LOG_DIR = "logs"
TENSORBOARD_DIR = "tensorboard"
MLFLOW_DIR = "mlruns"  # trainer.loggers mlflow: mlflow.db (SQLite) and artifacts/
WANDB_DIR = "wandb"  # trainer.loggers wandb: offline runs (WandbLogger's own folder name under save_dir)
# Every top-level entry a stage may write into its output folder (what a cleaner may remove as the stage's).
OUTPUT_ENTRIES = frozenset({CHECKPOINT_DIR, LOG_DIR, TENSORBOARD_DIR, MLFLOW_DIR, WANDB_DIR})
TEXT_ENCODER_DIR = "text_encoder"
IMAGE_ENCODER_DIR = "image_encoder"
OPEN_CLIP_CONFIG_FILE = "open_clip_config.json"  # the names open_clip's local-dir: and hf-hub: loaders read
OPEN_CLIP_WEIGHTS_FILE = "open_clip_model.safetensors"


def default_out_dir(stage: str, round_idx: int) -> Path:
    """``runs/<stage>/round_<R>``: where a stage writes when its config names no ``out_dir``."""
    return Path("runs") / stage / f"round_{round_idx}"


def checkpoint_path(out_dir: Path) -> Path:
    """``<out_dir>/checkpoints/last.ckpt``."""
    return Path(out_dir) / CHECKPOINT_DIR / CHECKPOINT_FILE


def config_path(out_dir: Path) -> Path:
    """``<out_dir>/checkpoints/config.json``."""
    return Path(out_dir) / CHECKPOINT_DIR / CONFIG_FILE


def text_encoder_dir(out_dir: Path) -> Path:
    """``<out_dir>/checkpoints/text_encoder``: stage 1's text encoder, Hugging Face style."""
    return Path(out_dir) / CHECKPOINT_DIR / TEXT_ENCODER_DIR


def image_encoder_dir(out_dir: Path) -> Path:
    """``<out_dir>/checkpoints/image_encoder``: stage 1's image tower, open_clip style."""
    return Path(out_dir) / CHECKPOINT_DIR / IMAGE_ENCODER_DIR


@dataclass
class StageResult:
    """What one stage run wrote; both stages return it.

    Attributes:
        checkpoint: the final Lightning checkpoint (``checkpoint_path(out_dir)``).
        cache_file: the round's cache file (``encoders.h5`` or ``graph.h5``).
        log_dir: the Lightning CSV log folder of this fit (``metrics.csv``: every loss term per logged step), or
            ``None`` when the csv logger is off.
        metrics: the stage's loss summary, timings and throughputs (docs/stage1.md, docs/stage2.md).
        config_file: the resolved config saved beside the checkpoint (``config_path(out_dir)``).
        global_rank: this process's rank (0 without DDP; under ``ddp`` every rank returns, rank 0 writes).
    """

    checkpoint: Path
    cache_file: Path
    log_dir: Path | None
    metrics: dict = field(default_factory=dict)
    config_file: Path | None = None
    global_rank: int = 0
