"""What each trained variant of a bridge run is: a small registry of stage overrides.

A variant is MMGA's recipe with some stage fields changed. The baselines and the ablations are all written the
same way, so a new model option becomes an ablation by one line in :data:`ABLATIONS`::

    Variant("additive_gate", "MMGA with the literal (static) eq. 5 gate", stage2={"model.gate_form": "additive"})

Fields:
- ``stage1``: dotted overrides of stage 1's config, or ``None`` when the variant trains no encoders (its rows read
  no R^I / R^T);
- ``stage2``: dotted overrides of stage 2's config, or ``None`` when the variant trains no GNN;
- ``feedback``: from round 1 on, stage 1 weights its graph-contrastive positives by the edge weights stage 2 wrote
  in the previous round (the multi-step alignment);
- ``restarts``: the stages that, from round 1 on, start again from their initial weights (stage 1: the pretrained
  encoders and a fresh graph head; stage 2: a fresh GNN) instead of continuing from their previous round's
  checkpoint; the feedback still steers stage 1's positives. Empty for MMGA: every stage continues;
- ``once``: the variant runs round 0 of the first training seed only and its rows are evaluated once (``frozen``:
  nothing is trained, so nothing depends on the training seed or the round).

The overrides are applied on top of the user's ``--stage1`` / ``--stage2`` values, so a variant always differs
from MMGA in exactly the fields it names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# No graph-contrastive terms, hence no graph head over the text encoder or the image trunk (each is trained by its
# modality's GCL alone).
NO_GCL = {
    "losses.gcl_image_weight": 0.0,
    "losses.gcl_text_weight": 0.0,
    "model.text_head_dim": 0,
    "model.image_head_dim": 0,
}
# The frozen peers' text encoder: the pretrained MiniLM-L6 that ships offline, pooled the way it was trained.
# Every layer frozen and no graph head: the export reads the per-corpus cache of MiniLM's states.
FROZEN_ENCODERS = {
    "model.text_model": "minilm",
    "model.text_pooling": "mean",
    "model.text_tuned_layers": 0,
    "losses.lm_weight": 0.0,
    **NO_GCL,
}


@dataclass(frozen=True)
class Variant:
    """One trained variant of a run (see the module docstring)."""

    name: str
    label: str
    stage1: dict[str, Any] | None = field(default_factory=dict)
    stage2: dict[str, Any] | None = field(default_factory=dict)
    feedback: bool = True
    restarts: tuple[str, ...] = ()
    once: bool = False

    @property
    def has_stage1(self) -> bool:
        return self.stage1 is not None

    @property
    def has_stage2(self) -> bool:
        return self.stage2 is not None

    @property
    def stages(self) -> tuple[str, ...]:
        return tuple(s for s, has in (("stage1", self.has_stage1), ("stage2", self.has_stage2)) if has)

    @property
    def embeddable(self) -> bool:
        """True when ``bridge.embed`` can serve the variant: it trains both stages."""
        return self.has_stage1 and self.has_stage2


MMGA = Variant("mmga", "MMGA", stage2={"gate": "mgate", "use_modalities": True})

# The baselines every report carries.
BASELINES: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            "no_align",
            "no alignment: encoders without the graph-contrastive loss, uniform aggregation, no feedback",
            stage1=NO_GCL,
            stage2={"gate": "uniform", "use_modalities": True},
            feedback=False,
        ),
        Variant(
            "graph_only",
            "the GNN without image or text input",
            stage1=None,
            stage2={"gate": "mgate", "use_modalities": False},
            feedback=False,
        ),
        Variant(
            "frozen",
            "the pretrained encoders, frozen: MiniLM-L6 mean-pooled text (shipped offline) and the image encoder as "
            "configured, no training at all",
            stage1={**FROZEN_ENCODERS, "trainer.max_steps": 0},
            stage2=None,
            feedback=False,
            once=True,
        ),
    )
}

# MMGA with one part switched off (``--ablations``).
ABLATIONS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            "abl_no_gcl",
            "MMGA without the graph-contrastive loss",
            stage1=NO_GCL,
            stage2=MMGA.stage2,
            feedback=False,
        ),
        Variant(
            "abl_no_feedback",
            "MMGA without edge-weight feedback to stage 1",
            stage2=MMGA.stage2,
            feedback=False,
        ),
        Variant(
            "abl_stage1_restarts",
            "MMGA whose stage 1 starts again from its initial weights every round (feedback kept)",
            stage2=MMGA.stage2,
            restarts=("stage1",),
        ),
        Variant(
            "abl_stage2_restarts",
            "MMGA whose stage 2 starts again from fresh weights every round (stage 1 continues)",
            stage2=MMGA.stage2,
            restarts=("stage2",),
        ),
        Variant(
            "abl_uniform_gate",
            "MMGA with the uniform gate",
            stage2={"gate": "uniform", "use_modalities": True},
        ),
        Variant(
            "abl_additive_gate",
            "MMGA with the literal (static) eq. 5 gate",
            stage2={**MMGA.stage2, "model.gate_form": "additive"},
        ),
        Variant(
            "abl_stage2_reads_head",
            "MMGA whose stage 2 reads all of R^T and R^I, the graph heads' columns included (the paper's input)",
            stage2={**MMGA.stage2, "model.text_skip_last": 0, "model.image_skip_last": 0},
        ),
        Variant(
            "abl_x_only_inputs",
            "MMGA propagating X and degree only (the paper's literal node inputs)",
            stage2={**MMGA.stage2, "model.node_inputs": ["stats", "degree"]},
        ),
    )
}

REGISTRY: dict[str, Variant] = {MMGA.name: MMGA, **BASELINES, **ABLATIONS}


def get_variant(name: str) -> Variant:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; expected one of {', '.join(REGISTRY)}") from None


def ablation_names(choice: bool | Iterable[str]) -> tuple[str, ...]:
    """The ablations a run trains, in :data:`ABLATIONS`' order: every one for ``True`` (``--ablations`` alone),
    none for ``False``, else the named ones (``--ablations abl_no_feedback ...``). An unknown name is a
    ``ValueError`` that lists the known ones."""
    if isinstance(choice, bool):
        return tuple(ABLATIONS) if choice else ()
    if isinstance(choice, str):
        choice = (choice,)
    wanted = set(choice)
    unknown = sorted(wanted - set(ABLATIONS))
    if unknown:
        raise ValueError(f"unknown ablation(s) {', '.join(unknown)}; expected some of {', '.join(ABLATIONS)}")
    return tuple(name for name in ABLATIONS if name in wanted)


def run_variants(baselines: bool, ablations: bool | Iterable[str]) -> tuple[Variant, ...]:
    """The variants one run trains, in training order (``ablations``: as :func:`ablation_names` reads it)."""
    out = [MMGA]
    if baselines:
        out += BASELINES.values()
    out += [ABLATIONS[name] for name in ablation_names(ablations)]
    return tuple(out)
