"""The rows of the report: which representation each one evaluates, where it comes from, and how.

Every row is computed in the same run, on the same corpus splits, with the same heads and seeds. The rows fall in
four sections (six with ``encoder_peers``), each with its own MMGA row that the others are compared with
(``SECTIONS``):

**Linear probe on frozen embeddings** (MMGA's last round ``mmga_round_<R>``):
- ``stats_x``: the per-user statistics X alone (the floor);
- ``image_only`` / ``text_only``: R^I / R^T of the no-alignment encoders (no GCL: ITA, and MLM where on), last round;
- ``graph_only``: R^G of the GNN trained on X alone (no image or text input), last round;
- ``no_align``: [R^G || R^T || R^I] of the no-alignment variant (uniform aggregation, no feedback), last round;
- ``frozen``: [R^T || R^I] of the frozen pretrained encoders (``bridge.variants``: nothing trained);
- ``peer_sgc`` / ``peer_frozen_sgc``: SGC's parameter-free K-hop propagation (K chosen on val) of the no-alignment
  / frozen encoders' [R^T || R^I || X], then the standard heads;
- ``mmga_round_<r>``: [R^G || R^T || R^I] of MMGA after round r, for every round; ``no_align_round_<r>`` the same
  of ``no_align`` for every round but the last (which is ``no_align``), for the rounds plot;
- ``mmga_image`` / ``mmga_text`` / ``mmga_graph``: the parts of MMGA's last round on their own;
- ``abl_*`` (with ``--ablations [NAME ...]``): [R^G || R^T || R^I] of MMGA's last round with one part switched off.

**Fine-tuned** (``mmga_finetuned``; with ``finetune``): networks trained end to end on each task
(``bridge.evaluation.networks``), the encoders frozen (their embeddings come from the cache):
- ``mmga_finetuned``: MMGA's last-round stage-2 GNN, its pre-trained weights and gate, plus a linear task head;
- ``scratch_finetuned``: the same network over the same inputs, randomly initialised, trained identically;
- ``peer_gcn`` / ``peer_gatv2``: a 2-layer GCN / GATv2 over the no-alignment encoders' [R^T || R^I || X];
- ``peer_cs``: Correct & Smooth on the linear heads over the same features;
- ``peer_frozen_gcn``: the GCN over the frozen encoders' features.

**The same peer over MMGA's encoders** (``mmga_sgc``, ``mmga_gcn``; with the baselines and ``encoder_peers``): two
peers' own recipes, run on MMGA's last-round encoders (SimTeG's protocol: an encoder tuned first, its embeddings
fed to a standard GNN):
- ``mmga_sgc``: ``peer_sgc``'s SGC over MMGA's [R^T || R^I || X], against ``peer_sgc`` and ``peer_frozen_sgc``;
- ``mmga_gcn``: ``peer_gcn``'s GCN over the same, against ``peer_gcn`` and ``peer_frozen_gcn``.
Each pair differs only in the encoders the features come from: what graph alignment buys a user who runs the peer.

**Cold start** (``mmga_cold``): the test users' edges removed (``cold_edges``), R^G recomputed by the trained GNN
on that graph (a test user's own inputs only, no neighbours), the heads trained on the train users as usual:
``mmga_cold``, ``no_align_cold`` and ``frozen_cold`` ([R^T || R^I || X] of the frozen encoders).

**Cold start, heads trained without edges** (``mmga_cold_isolated``): every user's edges removed, the train users'
too, so the heads are trained on the kind of R^G they are tested on: ``mmga_cold_isolated``,
``no_align_cold_isolated``, and ``frozen_cold`` again.

Every row that reads a trained variant is trained and evaluated once per training seed; ``stats_x`` and the rows
of the ``frozen`` variant (nothing trained) once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from bridge.runfolder import RunPaths, StageKey
from bridge.runfolder.caches import read_encoders, read_graph
from bridge.variants import ABLATIONS, ablation_names, get_variant
from corpus import Corpus

PART_ORDER = ("graph", "text", "image", "stats")  # [R^G || R^T || R^I], X only in the floor row and the peers
PART_SYMBOL = {"graph": "R^G", "text": "R^T", "image": "R^I", "stats": "X"}
# The headline metrics (task, metric, higher is better).
GOAL_METRICS = (("topic", "macro_f1", True), ("fans", "mae", False))

# How a row is evaluated: the linear probe on a frozen representation, a peer over it, or a network trained end to
# end (``finetune``).
Method = Literal["probe", "sgc", "gcn", "gatv2", "cs", "finetune"]
Section = Literal["probe", "finetuned", "encoders_sgc", "encoders_gcn", "cold_start", "cold_start_isolated"]


@dataclass(frozen=True)
class SectionSpec:
    """One section of the report: its title, the MMGA row the others are compared with (``None``: MMGA's last
    round), and the rows it compares MMGA with, in report order (those the run has)."""

    name: Section
    title: str
    mmga: str | None
    compared: tuple[str, ...]


SECTIONS = (
    SectionSpec(
        "probe",
        "Linear probe on frozen embeddings",
        None,
        (
            "no_align",
            "peer_sgc",
            "peer_frozen_sgc",
            "frozen",
            "graph_only",
            "image_only",
            "text_only",
            "stats_x",
        ),
    ),
    SectionSpec(
        "finetuned",
        "Fine-tuned",
        "mmga_finetuned",
        ("scratch_finetuned", "peer_gcn", "peer_gatv2", "peer_cs", "peer_frozen_gcn", "peer_frozen_sgc"),
    ),
    SectionSpec(
        "encoders_sgc", "The same SGC over MMGA's encoders", "mmga_sgc", ("peer_sgc", "peer_frozen_sgc")
    ),
    SectionSpec(
        "encoders_gcn", "The same GCN over MMGA's encoders", "mmga_gcn", ("peer_gcn", "peer_frozen_gcn")
    ),
    SectionSpec("cold_start", "Cold start", "mmga_cold", ("no_align_cold", "frozen_cold")),
    SectionSpec(
        "cold_start_isolated",
        "Cold start, heads trained without edges",
        "mmga_cold_isolated",
        ("no_align_cold_isolated", "frozen_cold"),
    ),
)


@dataclass(frozen=True)
class Row:
    """One evaluated representation.

    Attributes:
        name: key in metrics.json, e.g. ``"mmga_round_2"``.
        label: human-readable name for the table.
        group: ``"mmga"`` (MMGA per round), ``"baseline"``, ``"peer"``, ``"mmga_peer"`` (a peer over MMGA's
            encoders), ``"part"`` (MMGA's parts on their own), ``"ablation"``, ``"finetuned"`` or ``"cold"``.
        variant: the run variant the embeddings come from (None for X).
        round: the round the embeddings come from (None for X).
        parts: which blocks are concatenated, in :data:`PART_ORDER`.
        method: how the row is evaluated (:data:`Method`).
        section: the report section the row belongs to.
        init: for ``method="finetune"``: ``"pretrained"`` (the variant's stage-2 weights) or ``"scratch"``.
        cold: the test users' edges are removed before R^G is computed (the cold-start sections).
        isolated: with ``cold``, every user's edges are removed, the train users' too, so the heads are trained on
            the kind of R^G they are tested on (the section "Cold start, heads trained without edges").
    """

    name: str
    label: str
    group: str
    variant: str | None
    round: int | None
    parts: tuple[str, ...]
    method: Method = "probe"
    section: Section = "probe"
    init: Literal["pretrained", "scratch"] | None = None
    cold: bool = False
    isolated: bool = False

    @property
    def peer(self) -> str | None:
        """The peer method of a peer row (``"sgc"``, ``"gcn"``, ``"gatv2"``, ``"cs"``), else None."""
        return self.method if self.method in ("sgc", "gcn", "gatv2", "cs") else None

    @property
    def inputs(self) -> str:
        blocks = " || ".join(PART_SYMBOL[p] for p in self.parts)
        described = {
            "sgc": f"SGC (K chosen on val) of [{blocks}]",
            "gcn": f"GCN trained on [{blocks}]",
            "gatv2": f"GATv2 trained on [{blocks}]",
            "cs": f"linear head on [{blocks}], then Correct & Smooth",
            "finetune": f"stage-2 GNN ({self.init} weights) + head, trained on [R^T || R^I || X]",
        }.get(self.method, blocks)
        if self.isolated:
            return described + " (every user's edges removed)"
        return described + (" (test users' edges removed)" if self.cold else "")

    @property
    def once(self) -> bool:
        """True when the row is evaluated once, not per training seed: X, and the variants that run ``once``."""
        return self.variant is None or get_variant(self.variant).once

    @property
    def seeded(self) -> bool:
        """True when the row is trained once per training seed (every row that reads a variant trained per seed)."""
        return not self.once

    def depends_on(self, paths: RunPaths) -> tuple[StageKey, ...]:
        """Manifest keys of the stage runs whose outputs this row reads."""
        if self.variant is None:
            return ()
        keys = []
        if "text" in self.parts or "image" in self.parts or self.method == "finetune":
            if get_variant(self.variant).has_stage1:
                keys.append(paths.stage_key(self.variant, self.round, "stage1"))
        if "graph" in self.parts or self.method == "finetune":
            keys.append(paths.stage_key(self.variant, self.round, "stage2"))
        return tuple(keys)

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "name": self.name,
            "variant": self.variant,
            "round": self.round,
            "parts": list(self.parts),
        }
        if self.method != "probe":
            spec["method"] = self.method
            if self.peer:
                spec["peer"] = self.peer
        if self.init:
            spec["init"] = self.init
        if self.cold:
            spec["cold"] = True
        if self.isolated:
            spec["isolated"] = True
        return spec


def report_rows(
    rounds: int,
    baselines: bool = True,
    ablations: bool | Iterable[str] = False,
    finetune: bool = False,
    encoder_peers: bool = False,
) -> list[Row]:
    """All rows of a run with ``rounds`` rounds, in table order (``encoder_peers``: ``mmga_sgc`` and ``mmga_gcn``,
    with the baselines)."""
    last = rounds - 1
    rows = [Row("stats_x", "statistics X alone (floor)", "baseline", None, None, ("stats",))]
    content = ("text", "image", "stats")
    mixed = ("graph", "text", "image")
    if baselines:
        rows += [
            Row("image_only", "image only (no-align encoder)", "baseline", "no_align", last, ("image",)),
            Row("text_only", "text only (no-align encoder)", "baseline", "no_align", last, ("text",)),
            Row("graph_only", "graph only (GNN on X alone)", "baseline", "graph_only", last, ("graph",)),
            Row("no_align", "no alignment", "baseline", "no_align", last, ("graph", "text", "image")),
            Row("frozen", "frozen pretrained encoders", "baseline", "frozen", 0, ("text", "image")),
            Row("peer_sgc", "peer: SGC over no-align encoders", "peer", "no_align", last, content, "sgc"),
            Row("peer_frozen_sgc", "peer: SGC over frozen encoders", "peer", "frozen", 0, content, "sgc"),
        ]
    rows += [
        Row(f"mmga_round_{r}", f"MMGA after round {r}", "mmga", "mmga", r, ("graph", "text", "image"))
        for r in range(rounds)
    ]
    if baselines:  # no alignment per round too, for the rounds plot (the last round is ``no_align``)
        rows += [
            Row(
                f"no_align_round_{r}", f"no alignment after round {r}", "baseline_round", "no_align", r, mixed
            )
            for r in range(last)
        ]
    rows += [
        Row("mmga_graph", f"MMGA round {last}: graph part only", "part", "mmga", last, ("graph",)),
        Row("mmga_text", f"MMGA round {last}: text part only", "part", "mmga", last, ("text",)),
        Row("mmga_image", f"MMGA round {last}: image part only", "part", "mmga", last, ("image",)),
    ]
    rows += [
        Row(name, ABLATIONS[name].label, "ablation", name, last, ("graph", "text", "image"))
        for name in ablation_names(ablations)
    ]
    if finetune:  # the same network, pre-trained or from scratch
        rows += [
            Row(name, label, "finetuned", "mmga", last, mixed, "finetune", "finetuned", init)
            for name, label, init in (
                ("mmga_finetuned", "MMGA fine-tuned", "pretrained"),
                ("scratch_finetuned", "same network from scratch", "scratch"),
            )
        ]
    if baselines:
        peers = (
            ("peer_gcn", "peer: GCN over no-align encoders", "no_align", last, "gcn"),
            ("peer_gatv2", "peer: GATv2 over no-align encoders", "no_align", last, "gatv2"),
            ("peer_cs", "peer: Correct & Smooth over no-align encoders", "no_align", last, "cs"),
            ("peer_frozen_gcn", "peer: GCN over frozen encoders", "frozen", 0, "gcn"),
        )
        rows += [Row(n, label, "peer", v, r, content, m, "finetuned") for n, label, v, r, m in peers]
    # two peers over MMGA's own encoders, each compared with the same peer over the others' encoders
    if baselines and encoder_peers:
        for method, section in (("sgc", "encoders_sgc"), ("gcn", "encoders_gcn")):
            label = f"{method.upper()} over MMGA's encoders"
            rows.append(Row(f"mmga_{method}", label, "mmga_peer", "mmga", last, content, method, section))
    if baselines:  # the cold-start section (its MMGA row only means something next to the others)
        rows += [
            Row("mmga_cold", "MMGA, test users without edges", "cold", "mmga", last, mixed, **COLD),
            Row(
                "no_align_cold",
                "no alignment, test users without edges",
                "cold",
                "no_align",
                last,
                mixed,
                **COLD,
            ),
            Row("frozen_cold", "frozen encoders (no graph part)", "cold", "frozen", 0, content, **COLD),
            Row(
                "mmga_cold_isolated",
                "MMGA, every user without edges",
                "cold",
                "mmga",
                last,
                mixed,
                **ISOLATED,
            ),
            Row(
                "no_align_cold_isolated",
                "no alignment, every user without edges",
                "cold",
                "no_align",
                last,
                mixed,
                **ISOLATED,
            ),
        ]
    return rows


COLD: dict[str, Any] = {"section": "cold_start", "cold": True}
ISOLATED: dict[str, Any] = {"section": "cold_start_isolated", "cold": True, "isolated": True}


def last_round_row(rows: list[Row]) -> Row:
    """MMGA's last round (the linear-probe section's MMGA row)."""
    return [r for r in rows if r.group == "mmga"][-1]


def section_rows(rows: list[Row]) -> list[tuple[SectionSpec, str, tuple[str, ...]]]:
    """The sections this run has: ``(section, its MMGA row, the rows compared with it)``, in report order. The
    probe section also compares with the ablation rows."""
    names = {r.name for r in rows}
    out = []
    for spec in SECTIONS:
        mmga = spec.mmga or last_round_row(rows).name
        if mmga not in names:
            continue
        compared = tuple(n for n in spec.compared if n in names)
        if spec.name == "probe":
            compared += tuple(r.name for r in rows if r.group == "ablation")
        out.append((spec, mmga, compared))
    return out


def compared_rows(rows: list[Row]) -> tuple[str, ...]:
    """The rows MMGA's last round is judged against in the linear-probe section, in report order."""
    return section_rows(rows)[0][2]


def cold_edges(edges: np.ndarray, splits: np.ndarray) -> np.ndarray:
    """``[E', 2]`` the edges that touch no test user (split 2): the graph a cold-start test user arrives in."""
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    test = np.asarray(splits) == 2
    return edges[~(test[edges[:, 0]] | test[edges[:, 1]])]


def representation_blocks(
    row: Row, corpus: Corpus, paths: RunPaths, graph_emb: np.ndarray | None = None
) -> list[np.ndarray]:
    """The row's blocks ``[N, D_k]`` in :data:`PART_ORDER`, read from the cache of ``paths``' training seed;
    ``graph_emb`` replaces the cached R^G (the cold-start rows' R^G, recomputed on the graph without the test
    users' edges)."""
    blocks = []
    if "graph" in row.parts:
        if graph_emb is None:
            if row.cold:
                raise ValueError(f"row {row.name}: a cold-start row needs its R^G recomputed (graph_emb)")
            graph_emb = read_graph(paths.cache_dir(row.variant), row.round, corpus).user_graph_emb
        blocks.append(graph_emb)
    if "text" in row.parts or "image" in row.parts:
        emb = read_encoders(paths.cache_dir(row.variant), row.round, corpus)
        if "text" in row.parts:
            blocks.append(emb.user_text_emb)
        if "image" in row.parts:
            blocks.append(emb.user_image_emb)
    if "stats" in row.parts:
        blocks.append(corpus.features)
    return [np.asarray(b, dtype=np.float32) for b in blocks]


def representation(
    row: Row, corpus: Corpus, paths: RunPaths, graph_emb: np.ndarray | None = None
) -> np.ndarray:
    """The row's user representation ``[N, D]`` in corpus user order (blocks concatenated in PART_ORDER).
    ``paths`` are those of the training seed the row is read for. A peer row's input features are returned as
    they are (the peer propagates or trains on them, ``bridge.evaluation.peers``)."""
    return np.concatenate(representation_blocks(row, corpus, paths, graph_emb), axis=1)
