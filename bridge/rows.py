"""The rows of the report: which representation each one evaluates and where it comes from.

Every row is computed in the same run, on the same corpus splits, with the same heads and seeds:

- ``stats_x``: the per-user statistics X alone (the floor);
- ``image_only`` / ``text_only``: R^I / R^T of the no-alignment encoders (LM + ITA only), last round;
- ``graph_only``: R^G of the GNN trained on X alone (no image or text input), last round;
- ``no_align``: [R^G || R^T || R^I] of the no-alignment variant (uniform aggregation, no feedback), last round;
- ``mmga_round_<r>``: [R^G || R^T || R^I] of MMGA after round r, for every round;
- ``mmga_image`` / ``mmga_text`` / ``mmga_graph``: the parts of MMGA's last round on their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bridge.paths import RunPaths
from cache import read_encoder_embeddings, read_graph_outputs
from corpus import Corpus

PART_ORDER = ("graph", "text", "image", "stats")  # [R^G || R^T || R^I], X only in the floor row
PART_SYMBOL = {"graph": "R^G", "text": "R^T", "image": "R^I", "stats": "X"}
# The rows MMGA's last round is compared with, and the two headline metrics (task, metric, higher is better).
COMPARED_ROWS = ("no_align", "image_only", "text_only", "graph_only", "stats_x")
GOAL_METRICS = (("topic", "macro_f1", True), ("fans", "mae", False))


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
    """

    name: str
    label: str
    group: str
    variant: str | None
    round: int | None
    parts: tuple[str, ...]

    @property
    def inputs(self) -> str:
        return " || ".join(PART_SYMBOL[p] for p in self.parts)

    def depends_on(self, paths: RunPaths) -> tuple[str, ...]:
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
        return {"name": self.name, "variant": self.variant, "round": self.round, "parts": list(self.parts)}


def report_rows(rounds: int, baselines: bool = True) -> list[Row]:
    """All rows of a run with ``rounds`` rounds, in table order."""
    last = rounds - 1
    rows = [Row("stats_x", "statistics X alone (floor)", "baseline", None, None, ("stats",))]
    if baselines:
        rows += [
            Row("image_only", "image only (no-align encoder)", "baseline", "no_align", last, ("image",)),
            Row("text_only", "text only (no-align encoder)", "baseline", "no_align", last, ("text",)),
            Row("graph_only", "graph only (GNN on X alone)", "baseline", "graph_only", last, ("graph",)),
            Row("no_align", "no alignment", "baseline", "no_align", last, ("graph", "text", "image")),
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
    return rows


def representation(row: Row, corpus: Corpus, paths: RunPaths) -> np.ndarray:
    """The row's user representation ``[N, D]`` in corpus user order (blocks concatenated in PART_ORDER)."""
    blocks = []
    if "graph" in row.parts:
        graph = read_graph_outputs(
            paths.cache_dir(row.variant),
            row.round,
            fingerprint=corpus.fingerprint,
            num_users=corpus.num_users,
            num_edges=corpus.num_edges,
        )
        blocks.append(graph.user_graph_emb)
    if "text" in row.parts or "image" in row.parts:
        emb = read_encoder_embeddings(
            paths.cache_dir(row.variant),
            row.round,
            fingerprint=corpus.fingerprint,
            num_users=corpus.num_users,
        )
        if "text" in row.parts:
            blocks.append(emb.user_text_emb)
        if "image" in row.parts:
            blocks.append(emb.user_image_emb)
    if "stats" in row.parts:
        blocks.append(corpus.features)
    return np.concatenate([np.asarray(b, dtype=np.float32) for b in blocks], axis=1)
