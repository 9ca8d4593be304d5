"""The typed configuration of stage 2: one dataclass tree and its cross-field checks.

Reading it from dicts, JSON/YAML files and the command line is ``mmga_common.config``'s job (precedence:
dataclass defaults < config file < command-line flags). Every field carries a ``help`` text and, for numbers,
its bounds in its metadata; the CLI builds its ``--help`` from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mmga_common.config import SANITY_LIMIT, ConfigError, TypedConfig, at_most, check_bounds, config_field
from mmga_common.layout import default_out_dir
from mmga_common.trainer import TrainerConfig as BaseTrainerConfig

GateKind = Literal["mgate", "uniform"]
GateNormalization = Literal["sigmoid", "softmax"]
GateForm = Literal["additive", "cosine", "gatv2"]
NodeInput = Literal["stats", "degree", "image", "text"]
ReadoutText = Literal["inputs", "whole"]
MODALITY_INPUTS: tuple[str, ...] = ("image", "text")  # node-input blocks read from stage 1's cache


def resolve_node_inputs(node_inputs, use_modalities: bool) -> tuple[str, ...]:
    """The node-input blocks a run uses: ``node_inputs`` minus image/text when ``use_modalities`` is off (the one
    rule; ``Stage2Config.resolved_node_inputs`` and ``Stage2System`` both call it)."""
    return tuple(name for name in node_inputs if use_modalities or name not in MODALITY_INPUTS)


NormKind = Literal["none", "layer", "batch"]
ActivationKind = Literal["relu", "gelu", "elu"]
FeatureLossKind = Literal["mse", "smooth_l1"]
BatchingKind = Literal["full", "neighbor", "subgraph"]
InferenceKind = Literal["auto", "full", "layerwise"]
MAX_FANOUT = 1_000_000  # neighbours sampled per node and layer (trainer.fanouts); -1 takes them all
SEED_NODES = 256  # trainer.batch_size's default with batching=neighbor (and layer-wise inference chunks)
SUBGRAPH_ROOTS = 1_024  # trainer.batch_size's default with batching=subgraph


@dataclass
class ModelConfig:
    """The graph encoder: input projection, M-Gate, and the stack of propagation layers."""

    hidden_dim: int = config_field(64, "width of node states and of R^G", gt=0, **at_most(16384))
    num_layers: int = config_field(2, "number of propagation layers (eq. 6)", ge=1, **at_most(1024))
    heads: int = config_field(1, "gate heads; each weighs its own slice of channels", ge=1, **at_most(256))
    dropout: float = config_field(0.1, "dropout on node states before each layer", ge=0.0, lt=1.0)
    norm: NormKind = config_field("layer", "normalisation after each hidden layer")
    activation: ActivationKind = config_field("gelu", "nonlinearity after each hidden layer")
    input_proj: bool = config_field(
        True, "project the concatenated node inputs to hidden_dim first (off: propagate them raw)"
    )
    node_inputs: tuple[NodeInput, ...] = config_field(
        ("stats", "degree", "image", "text"),
        "blocks of each node's input, concatenated then projected (= a sum of per-block projections): "
        "stats = X, degree = log(1 + degree) in the propagated adjacency, image/text = stage 1's "
        "embeddings (a learned placeholder where the user has none); the paper's literal X-only "
        "setting is 'stats degree' (or 'stats'); use_modalities=false drops image/text",
    )
    gate_form: GateForm = config_field(
        "cosine",
        "additive: eq. 5 literally, W_t g_u + W_s g_v (static: every target ranks its neighbours "
        "alike); cosine: additive + sum_m beta_m cos(P_m R^m_u, P_m R^m_v) (pair-aware); gatv2: "
        "a^T LeakyReLU(W_t g_u + W_s g_v) (pair-aware)",
    )
    gate_rank: int = config_field(
        8, "cosine: rank r of the per-block projections P_m; gatv2: hidden width (per head)", ge=1, le=64
    )
    content_hops: int = config_field(
        2,
        "R^G also carries the node-input content (X, R^I, R^T) smoothed over 1..K hops with the learned "
        "gate as edge weights (parameter-free, after training); 0: R^G is the GNN's output only (the paper)",
        ge=0,
        **at_most(1024),
    )
    gate_normalization: GateNormalization = config_field(
        "sigmoid",
        "sigmoid: a_uv = sigmoid(logit) / deg(u); softmax: a_uv = softmax over u's neighbours of "
        "leaky_relu(logit) (docs/stage2.md says why sigmoid is the default)",
    )
    gate_negative_slope: float = config_field(
        0.2, "LeakyReLU slope applied to gate logits (softmax normalisation only)"
    )
    text_skip_last: int = config_field(
        0,
        "leave the last k columns of stage 1's R^T out of stage 2's inputs (node inputs and gate), e.g. k = stage 1's "
        "model.text_head_dim to leave the graph head's columns out (docs/stage2.md, measured); 0 reads R^T whole",
        ge=0,
    )
    readout_text: ReadoutText = config_field(
        "inputs",
        "the R^T that R^G's content readout (content_hops) smooths: inputs = the one the GNN reads (without "
        "text_skip_last's columns), whole = all of it, the graph head's columns included (docs/stage2.md)",
    )
    image_skip_last: int = config_field(
        0,
        "leave the last k columns of stage 1's R^I out of stage 2's inputs (node inputs and gate), e.g. k = stage "
        "1's model.image_head_dim to leave the image graph head's columns out; 0 reads R^I whole",
        ge=0,
    )
    readout_image: ReadoutText = config_field(
        "inputs",
        "the R^I that R^G's content readout smooths: inputs = the one the GNN reads (without image_skip_last's "
        "columns), whole = all of it, the image graph head's columns included",
    )


@dataclass
class ObjectiveConfig:
    """The two self-supervised objectives and their weights."""

    feature_weight: float = config_field(1.0, "weight of the node-feature modelling loss", ge=0.0)
    structure_weight: float = config_field(1.0, "weight of the graph-structure loss", ge=0.0)
    feature_mask_ratio: float = config_field(
        0.3, "share of nodes whose statistics X are masked in each step", gt=0.0, lt=1.0
    )
    edge_mask_ratio: float = config_field(
        0.2, "share of undirected edges held out of message passing in each step", gt=0.0, lt=1.0
    )
    negative_ratio: float = config_field(1.0, "negative pairs per held-out edge", gt=0.0, **at_most(1000))
    feature_loss: FeatureLossKind = config_field("mse", "regression loss on masked features")
    gate_link_weight: float = config_field(
        1.0,
        "weight of the gate's own link prediction: the gate's pair score e_uv must tell the step's "
        "held-out edges from the negative pairs (what makes the gate discriminative; 0 = off)",
        ge=0.0,
    )


@dataclass
class OptimConfig:
    """AdamW settings."""

    lr: float = config_field(5e-3, "learning rate")
    weight_decay: float = config_field(1e-4, "AdamW weight decay")


@dataclass
class TrainerConfig(BaseTrainerConfig):
    """The shared Lightning trainer section (``mmga_common.trainer``) with stage 2's defaults, plus batching
    (full-batch: one step per epoch; neighbor and subgraph: one step per mini-batch) and the export's inference
    mode."""

    max_steps: int = config_field(
        200,
        "optimisation steps (= epochs with batching=full, one per mini-batch otherwise; -1 = limited by "
        "max_epochs only)",
        ge=-1,
        **at_most(100_000_000),
    )
    devices: str = config_field(
        "1",
        "Lightning devices per node: a count, a list like 0,1, or auto (more than one needs mini-batches: "
        "batching=neighbor or subgraph)",
    )
    checkpoint_every_n_steps: int | None = config_field(
        100,
        "also save <out>/checkpoints/last.ckpt every n steps, so that a crashed run can resume "
        "(none = only at the end)",
        ge=1,
    )
    batching: BatchingKind = config_field(
        "full",
        "full: one step per epoch over the whole graph; neighbor: mini-batches of seed nodes with "
        "PyG's NeighborLoader (fanouts per layer); subgraph: the subgraphs that random walks of "
        "walk_length steps from batch_size roots induce (GraphSAINT); the last two for graphs whose full-batch "
        "step does not fit one process",
    )
    fanouts: tuple[int, ...] = config_field(
        (10, 5), "neighbours sampled per node and layer (batching=neighbor; -1 = all); one per model layer"
    )
    walk_length: int = config_field(
        2,
        "random-walk steps from each root (batching=subgraph)",
        ge=1,
        **at_most(1_000),
    )
    batch_size: int | None = config_field(
        None,
        "seed nodes per mini-batch (batching=neighbor), random-walk roots per subgraph (batching=subgraph), "
        "target nodes per chunk of layer-wise inference; each batch also seeds the endpoints of its share of "
        "pairs; none = 1,024 roots with batching=subgraph, 256 otherwise",
        ge=1,
        **at_most(1 << 30),
    )
    inference: InferenceKind = config_field(
        "auto",
        "export: full = one forward over the whole graph, without gradients; layerwise = one layer at a time over "
        "all nodes in chunks of batch_size (PyG's layer-wise inference: slower, and no smaller, since the gate "
        "and the content readout cover the whole graph either way); auto = full",
    )
    retain_freed_memory: bool = config_field(
        True,
        "batching=full: keep memory freed during training and export in the heap for the next step instead of "
        "returning large blocks to the system, which zeroes their pages again at each step (glibc only; "
        "mmga_common.allocator); off = glibc's default behaviour",
    )

    @property
    def resolved_batch_size(self) -> int:
        """``batch_size``, or its path's default: 1,024 random-walk roots with ``batching=subgraph`` (an epoch
        within about 2x a full-batch step at 10^6 edges, scores level with full batch at 10^5 users), 256 seed
        nodes otherwise (a neighbour batch of fan-outs ``[10, 5]`` stays a small share of a large graph;
        docs/performance.md)."""
        if self.batch_size is not None:
            return self.batch_size
        return SUBGRAPH_ROOTS if self.batching == "subgraph" else SEED_NODES


@dataclass
class Stage2Config(TypedConfig):
    """Everything stage 2 needs; ``to_dict`` of it is saved beside checkpoints and in the cache."""

    corpus: Path = config_field(help="corpus folder")
    cache_dir: Path = config_field(help="cache folder shared by the stages", flag="--cache")
    round: int = config_field(0, "round index: reads stage 1's embeddings of this round", ge=0)
    out_dir: Path | None = config_field(
        None, "checkpoints and logs; none = runs/stage2/round_<round>", flag="--out"
    )
    init_checkpoint: Path | None = config_field(
        None, "start from this stage-2 checkpoint (the previous round's GNN)"
    )
    seed: int = config_field(0, "seed for weights, masks and negative samples")
    gate: GateKind = config_field("mgate", "mgate, or uniform mean aggregation (baseline)")
    use_modalities: bool = config_field(
        True,
        "feed stage 1's image/text embeddings to the gate and (per model.node_inputs) to the node "
        "inputs; off = the GNN sees X (and degree) only, whatever model.node_inputs says",
    )
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def resolved_node_inputs(self) -> tuple[str, ...]:
        """The node-input blocks this run uses: ``model.node_inputs`` minus image/text when
        ``use_modalities`` is off."""
        return resolve_node_inputs(self.model.node_inputs, self.use_modalities)

    @property
    def needs_modalities(self) -> bool:
        """Whether the run reads stage 1's embeddings: for the M-Gate, or for image/text node inputs."""
        if not self.use_modalities:
            return False
        return self.gate == "mgate" or any(name in MODALITY_INPUTS for name in self.model.node_inputs)

    @property
    def resolved_out_dir(self) -> Path:
        """The folder for checkpoints and logs."""
        if self.out_dir is not None:
            return Path(self.out_dir)
        return default_out_dir("stage2", self.round)

    def validate(self, source: str = "config", lines: dict[str, int] | None = None) -> None:
        """Raise ``ConfigError`` naming the field for values outside their bounds or that do not fit together."""
        check_bounds(self, source, lines)
        self.trainer.check(source, lines)
        checks = [
            (
                self.model.hidden_dim % self.model.heads == 0,
                "model.heads",
                f"must divide model.hidden_dim={self.model.hidden_dim}",
            ),
            (len(self.model.node_inputs) > 0, "model.node_inputs", "must name at least one block"),
            (
                len(set(self.model.node_inputs)) == len(self.model.node_inputs),
                "model.node_inputs",
                "must not repeat a block",
            ),
            (
                len(self.resolved_node_inputs) > 0,
                "model.node_inputs",
                "has no block left with use_modalities=false",
            ),
            (
                self.trainer.batching != "neighbor" or len(self.trainer.fanouts) == self.model.num_layers,
                "trainer.fanouts",
                f"must give one fan-out per layer with batching=neighbor "
                f"(model.num_layers={self.model.num_layers})",
            ),
            (
                all(f == -1 or f >= 1 for f in self.trainer.fanouts),
                "trainer.fanouts",
                "must hold positive counts or -1 (all neighbours)",
            ),
            (
                all(f <= MAX_FANOUT for f in self.trainer.fanouts),
                "trainer.fanouts",
                f"must each be <= {MAX_FANOUT} (-1 takes all neighbours; {SANITY_LIMIT})",
            ),
            (
                self.trainer.batching != "full" or self.trainer.processes() == 1,
                "trainer.devices",
                "more than one process needs trainer.batching=neighbor or subgraph (full-batch training is one "
                "process)",
            ),
        ]
        for ok, name, message in checks:
            if not ok:
                raise ConfigError(source, (lines or {}).get(name), name, message)
