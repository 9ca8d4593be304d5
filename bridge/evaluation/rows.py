"""The rows of the report: which representation each one evaluates and where it comes from.

Every row is computed in the same run, on the same corpus splits, with the same heads and seeds:

- ``stats_x``: the per-user statistics X alone (the floor);
- ``image_only`` / ``text_only``: R^I / R^T of the no-alignment encoders (LM + ITA only), last round;
- ``graph_only``: R^G of the GNN trained on X alone (no image or text input), last round;
- ``no_align``: [R^G || R^T || R^I] of the no-alignment variant (uniform aggregation, no feedback), last round;
- ``mmga_round_<r>``: [R^G || R^T || R^I] of MMGA after round r, for every round;
- ``mmga_image`` / ``mmga_text`` / ``mmga_graph``: the parts of MMGA's last round on their own;
- ``peer_sgc``: SGC's parameter-free K-hop propagation (K chosen on val) of the no-alignment encoders' [R^T || R^I || X], then the
  standard heads; ``peer_gcn``: a 2-layer GCN trained on each task over the same features (``bridge.peers``);
- ``abl_*`` (with ``--ablations``): [R^G || R^T || R^I] of MMGA's last round with one part switched off.

Every row but ``stats_x`` is trained and evaluated once per training seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from bridge.runfolder import RunPaths, StageKey
from bridge.runfolder.caches import read_encoders, read_graph
from bridge.variants import ABLATIONS
from corpus import Corpus

PART_ORDER = ("graph", "text", "image", "stats")  # [R^G || R^T || R^I], X only in the floor row and the peers
PART_SYMBOL = {"graph": "R^G", "text": "R^T", "image": "R^I", "stats": "X"}
# The rows MMGA's last round is compared with (ablation rows are added when they exist), and the two headline
# metrics (task, metric, higher is better).
COMPARED_ROWS = ("no_align", "peer_sgc", "peer_gcn", "graph_only", "image_only", "text_only", "stats_x")
GOAL_METRICS = (("topic", "macro_f1", True), ("fans", "mae", False))

Peer = Literal["sgc", "gcn"]


@dataclass(frozen=True)
class Row:
    """One evaluated representation.

    Attributes:
        name: key in metrics.json, e.g. ``"mmga_round_2"``.
        label: human-readable name for the table.
        group: ``"mmga"`` (MMGA per round), ``"baseline"`` or ``"part"`` (MMGA's parts on their own).
        variant: the run variant the embeddings come from (None for X).
        round: the round the embeddings come from (None for X).
        parts: which blocks are concatenated, in :data:`PART_ORDER`.
        peer: ``"sgc"`` (the blocks propagated by SGC, then the heads) or ``"gcn"`` (a GCN trained on the blocks)
            for the peer rows; None for frozen-embedding rows.
    """

    name: str
    label: str
    group: str
    variant: str | None
    round: int | None
    parts: tuple[str, ...]
    peer: Peer | None = None

    @property
    def inputs(self) -> str:
        blocks = " || ".join(PART_SYMBOL[p] for p in self.parts)
        if self.peer == "sgc":
            return f"SGC (K chosen on val) of [{blocks}]"
        if self.peer == "gcn":
            return f"GCN trained on [{blocks}]"
        return blocks

    @property
    def seeded(self) -> bool:
        """True when the row is trained once per training seed (every row that reads a trained variant)."""
        return self.variant is not None

    def depends_on(self, paths: RunPaths) -> tuple[StageKey, ...]:
        """Manifest keys of the stage runs whose outputs this row reads."""
        if self.variant is None:
            return ()
        keys = []
        if "text" in self.parts or "image" in self.parts:
            keys.append(paths.stage_key(self.variant, self.round, "stage1"))
        if "graph" in self.parts:
            keys.append(paths.stage_key(self.variant, self.round, "stage2"))
        return tuple(keys)

    def spec(self) -> dict[str, Any]:
        spec = {"name": self.name, "variant": self.variant, "round": self.round, "parts": list(self.parts)}
        return {**spec, "peer": self.peer} if self.peer else spec


def report_rows(rounds: int, baselines: bool = True, ablations: bool = False) -> list[Row]:
    """All rows of a run with ``rounds`` rounds, in table order."""
    last = rounds - 1
    rows = [Row("stats_x", "statistics X alone (floor)", "baseline", None, None, ("stats",))]
    if baselines:
        content = ("text", "image", "stats")
        rows += [
            Row("image_only", "image only (no-align encoder)", "baseline", "no_align", last, ("image",)),
            Row("text_only", "text only (no-align encoder)", "baseline", "no_align", last, ("text",)),
            Row("graph_only", "graph only (GNN on X alone)", "baseline", "graph_only", last, ("graph",)),
            Row("no_align", "no alignment", "baseline", "no_align", last, ("graph", "text", "image")),
            Row(
                "peer_sgc", "peer: SGC over no-align encoders", "peer", "no_align", last, content, peer="sgc"
            ),
            Row(
                "peer_gcn",
                "peer: GCN trained per task (ceiling)",
                "peer",
                "no_align",
                last,
                content,
                peer="gcn",
            ),
        ]
    rows += [
        Row(f"mmga_round_{r}", f"MMGA after round {r}", "mmga", "mmga", r, ("graph", "text", "image"))
        for r in range(rounds)
    ]
    rows += [
        Row("mmga_graph", f"MMGA round {last}: graph part only", "part", "mmga", last, ("graph",)),
        Row("mmga_text", f"MMGA round {last}: text part only", "part", "mmga", last, ("text",)),
        Row("mmga_image", f"MMGA round {last}: image part only", "part", "mmga", last, ("image",)),
    ]
    if ablations:
        rows += [
            Row(v.name, v.label, "ablation", v.name, last, ("graph", "text", "image"))
            for v in ABLATIONS.values()
        ]
    return rows


def compared_rows(rows: list[Row]) -> tuple[str, ...]:
    """The rows MMGA's last round is judged against, in report order."""
    names = {r.name for r in rows}
    return tuple(n for n in COMPARED_ROWS if n in names) + tuple(
        r.name for r in rows if r.group == "ablation"
    )


def representation_blocks(row: Row, corpus: Corpus, paths: RunPaths) -> list[np.ndarray]:
    """The row's blocks ``[N, D_k]`` in :data:`PART_ORDER`, read from the cache of ``paths``' training seed."""
    blocks = []
    if "graph" in row.parts:
        graph = read_graph(paths.cache_dir(row.variant), row.round, corpus)
        blocks.append(graph.user_graph_emb)
    if "text" in row.parts or "image" in row.parts:
        emb = read_encoders(paths.cache_dir(row.variant), row.round, corpus)
        if "text" in row.parts:
            blocks.append(emb.user_text_emb)
        if "image" in row.parts:
            blocks.append(emb.user_image_emb)
    if "stats" in row.parts:
        blocks.append(corpus.features)
    return [np.asarray(b, dtype=np.float32) for b in blocks]


def representation(row: Row, corpus: Corpus, paths: RunPaths) -> np.ndarray:
    """The row's user representation ``[N, D]`` in corpus user order (blocks concatenated in PART_ORDER; for
    ``peer_sgc`` propagated by SGC). ``paths`` are those of the training seed the row is read for. The
    ``peer_gcn`` row's input features are returned as they are (``bridge.peers.evaluate_gcn`` trains on them)."""
    return np.concatenate(representation_blocks(row, corpus, paths), axis=1)
