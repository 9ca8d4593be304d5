"""Does a label-free signal of stage 2 track the report's probe over its training steps? (issue 20)

Reads a finished bridge run folder. For each training seed, stage 2 is trained again from scratch, with the run's
own round-0 config, on that variant's round-0 encoders, with a tenth of the edges held out of training (seeded);
at a few step counts it prints

- the AUC of the held-out edges against as many sampled non-edges twice over, scored by the structure decoder
  (``StructureReconstructionLoss.score``) and by the gate's pair scores: the label-free signals a stopping rule
  could read;
- the report's own linear probe (``bridge.evaluation.heads.evaluate_representation``) on [R^G || R^T || R^I], R^G
  exported on the whole graph: topic macro-F1 on val (what the heads chose on) and test, and fans MAE; and the
  same probe's topic macro-F1 (test) on the GNN's own output alone (R^G's first ``model.hidden_dim`` columns).

Step 0 is the untrained network: its R^G still carries the content readout (the node inputs smoothed over the
graph, ``model.content_hops``), so the distance from step 0 is what stage 2's training adds to the probe.

    python benchmarks/stage2_steps.py runs/default
    python benchmarks/stage2_steps.py runs/default --seeds 0 1 --steps 0 50 100 300 --variant no_align

One torch thread (the other core stays free); about a minute per seed at 1,000 users.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmga_common import quiet_third_party  # noqa: E402

quiet_third_party()

import lightning as L  # noqa: E402
import torch  # noqa: E402
from run_probe import RunRecord, add_run_arguments, read_run  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from bridge.evaluation.heads import evaluate_representation  # noqa: E402
from bridge.evaluation.rows import Row, representation_blocks  # noqa: E402
from bridge.runfolder import RunPaths  # noqa: E402
from mmga_common.layout import config_path  # noqa: E402
from stage2_graph.config import Stage2Config  # noqa: E402
from stage2_graph.data import MaskingDataset, load_graph_inputs  # noqa: E402
from stage2_graph.export import compute_graph_outputs  # noqa: E402
from stage2_graph.system import Stage2System  # noqa: E402


def held_out_pairs(
    edges: torch.Tensor, num_nodes: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """(training edges, held-out edges and twice as many non-edges as pairs ``[2, P]``, their 0/1 labels)."""
    generator = torch.Generator().manual_seed(1000 + seed)
    order = torch.randperm(edges.shape[0], generator=generator)
    num_val = max(1, edges.shape[0] // 10)
    val, train = edges[order[:num_val]], edges[order[num_val:]]
    known = {(min(a, b), max(a, b)) for a, b in edges.tolist()}
    negatives: list[tuple[int, int]] = []
    while len(negatives) < 2 * num_val:
        a, b = torch.randint(0, num_nodes, (2,), generator=generator).tolist()
        if a != b and (min(a, b), max(a, b)) not in known:
            negatives.append((a, b))
    pairs = torch.cat([val.t(), torch.tensor(negatives).t()], dim=1)
    return train, pairs, np.r_[np.ones(num_val), np.zeros(len(negatives))]


def trajectory(run: RunRecord, seed: int, variant: str, steps: list[int]) -> list[dict]:
    """One row per step count in ``steps`` for one training seed (see the module docstring)."""
    corpus = run.corpus
    paths = RunPaths(run.run_dir).for_seed(seed)
    cfg = Stage2Config.from_file(config_path(paths.stage_dir(paths.stage_key(variant, 0, "stage2"))))
    graph = load_graph_inputs(Path(cfg.corpus), Path(cfg.cache_dir), 0, cfg.needs_modalities, corpus)
    train_edges, pairs, labels = held_out_pairs(torch.as_tensor(graph.edges), graph.num_nodes, seed)
    L.seed_everything(cfg.seed, verbose=False)
    system = Stage2System.from_config(replace(graph, edges=train_edges), cfg)
    whole = Stage2System.from_config(graph, cfg)  # the same weights, exported on every edge
    objective = cfg.objective
    masks = MaskingDataset(
        graph.num_nodes,
        system.structure.edge_pairs,
        objective.feature_mask_ratio,
        objective.edge_mask_ratio,
        objective.negative_ratio,
        cfg.seed,
    )
    optimizer = system.configure_optimizers()
    content = representation_blocks(
        Row(variant, variant, "mmga", variant, 0, ("text", "image")), corpus, paths
    )
    rows = []
    for step in range(max(steps) + 1):
        if step in steps:
            system.eval()
            with torch.no_grad():
                inputs = system.node_inputs(system.structure.adj_t()[0])
                emb = system.model(inputs)
                structure_auc = roc_auc_score(labels, system.structure_loss.score(emb, pairs).numpy())
                gate_auc = float("nan")
                if system.model.gate is not None:
                    gate_auc = roc_auc_score(
                        labels, system.model.gate_pair_logits(inputs, pairs).mean(1).numpy()
                    )
            whole.load_state_dict(system.state_dict())
            graph_emb = compute_graph_outputs(whole).user_graph_emb
            own = evaluate_representation(  # the GNN's own output, without the content readout
                graph_emb[:, : cfg.model.hidden_dim], corpus.labels, corpus.fans, corpus.splits
            )
            ev = evaluate_representation(
                np.concatenate([graph_emb, *content], axis=1), corpus.labels, corpus.fans, corpus.splits
            )
            rows.append(
                {
                    "step": step,
                    "structure_auc": structure_auc,
                    "gate_auc": gate_auc,
                    "topic_val": float(np.mean([c.val_score for c in ev.topic.chosen])),
                    "topic_test": ev.topic.scores["macro_f1"].mean,
                    "fans_mae": ev.fans.scores["mae"].mean,
                    "gnn_topic_test": own.topic.scores["macro_f1"].mean,
                }
            )
        if step == max(steps):
            break
        system.train()
        loss = system.compute_losses(masks[(step, 0)])["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.trainer.gradient_clip_val:
            torch.nn.utils.clip_grad_norm_(system.parameters(), cfg.trainer.gradient_clip_val)
        optimizer.step()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(parser, rounds=False)
    parser.add_argument(
        "--variant", default="mmga", help="whose round-0 encoders and stage-2 config (default: mmga)"
    )
    parser.add_argument(
        "--steps", type=int, nargs="+", default=[0, 10, 25, 50, 100, 200, 300], help="step counts to score at"
    )
    args = parser.parse_args(argv)
    if min(args.steps) < 0:
        parser.error("--steps: step counts must be >= 0")
    run = read_run(parser, args)
    for seed in run.seeds:
        paths = RunPaths(args.run_dir).for_seed(seed)
        if not config_path(paths.stage_dir(paths.stage_key(args.variant, 0, "stage2"))).is_file():
            trained = sorted(p.name for p in paths.seed_dir.iterdir() if (p / "round_0" / "stage2").is_dir())
            parser.error(
                f"{args.run_dir}: training seed {seed} has no round-0 stage 2 of {args.variant!r} "
                f"(this run trained: {', '.join(trained) or 'none'})"
            )
    torch.set_num_threads(1)
    print(
        f"{args.run_dir}: {args.variant}, round-0 encoders, stage 2 from scratch, a tenth of the edges held out"
    )
    print("seed  step  structure AUC  gate AUC  topic val  topic test  fans MAE  GNN alone: topic test")
    table: dict[int, list[dict]] = {}
    for seed in run.seeds:
        for row in trajectory(run, seed, args.variant, sorted(set(args.steps))):
            table.setdefault(row["step"], []).append(row)
            print(
                f"{seed:4d}  {row['step']:4d}  {row['structure_auc']:13.3f}  {row['gate_auc']:8.3f}  "
                f"{row['topic_val']:9.3f}  {row['topic_test']:10.3f}  {row['fans_mae']:8.3f}  {row['gnn_topic_test']:21.3f}",
                flush=True,
            )
    print("mean over the seeds")
    for step, rows in sorted(table.items()):
        mean = {key: float(np.mean([r[key] for r in rows])) for key in rows[0] if key != "step"}
        print(
            f"   -  {step:4d}  {mean['structure_auc']:13.3f}  {mean['gate_auc']:8.3f}  "
            f"{mean['topic_val']:9.3f}  {mean['topic_test']:10.3f}  {mean['fans_mae']:8.3f}  {mean['gnn_topic_test']:21.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
