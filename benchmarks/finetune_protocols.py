"""Does another fine-tuning protocol let MMGA's pre-trained stage 2 pull ahead of the same network from scratch?

Reads a finished bridge run folder (its corpus, training seeds, last round and evaluation settings from
``report/metrics.json``) and, per training seed, fine-tunes the last round's stage-2 network of ``mmga`` twice,
from its pre-trained weights and from scratch (``bridge.rounds.evaluate.finetune_network``, as the report's
``mmga_finetuned`` and ``scratch_finetuned`` rows do), under each protocol named:

- ``standard``: the report's protocol (``bridge.evaluation.networks``): Adam on every parameter, early-stopped on
  the val loss, learning rate and weight decay chosen on val, test scored once. It reproduces the report's two
  rows value for value, which checks that this script trains what the report trains;
- ``head_first``: LP-FT (Kumar et al., ICLR 2022, "Fine-tuning can distort pretrained features"): the linear head
  is trained first over the frozen network (eval mode, early-stopped on the val loss, its best weights kept), then
  everything as in ``standard``;
- ``low_body_lr``: the network's own parameters at a tenth of the head's learning rate;
- ``head_first_low``: both of the above;
- ``whole_embedding``: the head reads the whole user embedding that ``bridge.embed`` serves, ``[R^G || R^T || R^I]``
  (the cached R^T and R^I held fixed), instead of R^G alone.

With ``--train-fraction F`` only a seeded, per-topic share F of the train split's users keep their targets (the
others still pass messages; val and test are unchanged): where pre-training should pay most, with few labels.

Every protocol keeps the report's grid (learning rates x weight decays chosen on val per seed), and the two
networks differ only by their initial weights. Prints topic macro-F1 and fans MAE (mean ± sd over the training
seeds) per protocol and network, and the pre-trained network's margin over the scratch one, paired by training
seed, with the report's seed-aware verdict (``bridge.evaluation.verdict``).

    python benchmarks/finetune_protocols.py runs/default
    python benchmarks/finetune_protocols.py runs/default --protocols standard head_first --seeds 0 1
    python benchmarks/finetune_protocols.py runs/default --protocols standard --train-fraction 0.1

About 10 s per network, protocol and training seed on the default corpus (one thread).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmga_common import quiet_third_party  # noqa: E402

quiet_third_party()

from run_probe import RunRecord, add_run_arguments, read_run, summary_line  # noqa: E402

from bridge.evaluation.loop import Candidate, TaskTargets, evaluate_tasks, select_and_score  # noqa: E402
from bridge.evaluation.networks import TrainGrid, network_candidates, task_loss, train_network  # noqa: E402
from bridge.evaluation.peers import peer_grid  # noqa: E402
from bridge.evaluation.rows import Row  # noqa: E402
from bridge.evaluation.verdict import paired_margins, verdict  # noqa: E402
from bridge.rounds.evaluate import finetune_network, stage2_checkpoint  # noqa: E402
from bridge.runfolder import Manifest, RunPaths  # noqa: E402
from mmga_common.threads import torch_threads  # noqa: E402


@dataclass(frozen=True)
class Protocol:
    head_first: bool = False
    body_lr_scale: float = 1.0
    whole_embedding: bool = False


PROTOCOLS = {
    "standard": Protocol(),
    "head_first": Protocol(head_first=True),
    "low_body_lr": Protocol(body_lr_scale=0.1),
    "head_first_low": Protocol(head_first=True, body_lr_scale=0.1),
    "whole_embedding": Protocol(whole_embedding=True),
}


def with_whole_embedding(network: torch.nn.Module) -> None:
    """Widen the network's head to read ``[R^G || R^T || R^I]``: the fixed part of its input (R^G's content
    readout) gets the whole R^T and R^I that R^G's readout reads, and the head is drawn again at the new width."""
    system = network.system
    with torch.no_grad():
        own = [m.to(network.content.dtype) for m in system.readout_inputs(network.adj_t).modalities]
        network.content = torch.cat([network.content, *own], dim=1)
    head = network.head
    network.head = torch.nn.Linear(head.in_features + sum(m.shape[1] for m in own), head.out_features)


def train_head_first(
    network: torch.nn.Module,
    target: torch.Tensor,
    idx: dict[str, torch.Tensor],
    task: str,
    lr: float,
    weight_decay: float,
    grid: TrainGrid,
) -> int:
    """Train only the head over the frozen network's outputs (eval mode: no dropout), early-stopped on the val
    loss, and keep its best weights; returns the epochs run."""
    network.eval()
    with torch.no_grad():
        features = network.features()
    opt = torch.optim.Adam(network.head.parameters(), lr=lr, weight_decay=weight_decay)
    best, best_state, since, epochs = float("inf"), None, 0, 0
    while epochs < grid.max_epochs:
        epochs += 1
        opt.zero_grad(set_to_none=True)
        task_loss(network.head(features[idx["train"]]), target[idx["train"]], task, training=True).backward()
        opt.step()
        with torch.no_grad():
            val = float(
                task_loss(network.head(features[idx["val"]]), target[idx["val"]], task, training=False)
            )
        if val < best:
            best, best_state, since = val, copy.deepcopy(network.head.state_dict()), 0
        else:
            since += 1
            if since > grid.patience:
                break
    assert best_state is not None
    network.head.load_state_dict(best_state)
    return epochs


def candidates(make, targets: TaskTargets, grid: TrainGrid, protocol: Protocol) -> list[Candidate]:
    """``bridge.evaluation.networks.network_candidates`` under ``protocol``: the same grid, seeds and networks,
    each widened (``whole_embedding``) and trained as the protocol says."""

    def make_for(task_targets: TaskTargets, seed: int, lr: float):
        network, groups = make(task_targets, seed, lr)
        if protocol.whole_embedding:
            with_whole_embedding(network)
        return network, groups

    def train(network, groups, target, idx, task, lr, wd, max_epochs, patience):
        first = train_head_first(network, target, idx, task, lr, wd, grid) if protocol.head_first else 0
        groups = network.parameter_groups()  # the network's own, then the head's (of the width trained)
        groups[0]["lr"] = lr * protocol.body_lr_scale
        val, outputs, epochs = train_network(network, groups, target, idx, task, lr, wd, max_epochs, patience)
        return val, outputs, first + epochs

    return network_candidates(make_for, targets, grid, train)


def fewer_train_labels(splits: np.ndarray, labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """``splits`` with all but a share ``fraction`` of each topic's train users (at least one, drawn with ``seed``)
    moved out of every split (code -1): they keep their place in the graph and lose their targets."""
    out = np.array(splits, copy=True)
    rng = np.random.default_rng(seed)
    for topic in np.unique(labels[splits == 0]):
        members = np.flatnonzero((splits == 0) & (labels == topic))
        keep = max(1, int(round(fraction * len(members))))
        out[rng.permutation(members)[keep:]] = -1
    return out


def scores(
    run: RunRecord, manifest: Manifest, seed: int, init: str, protocol: Protocol
) -> tuple[float, float]:
    """``(topic macro-F1, fans MAE)`` of the fine-tuned network of one training seed, each the mean over the
    network seeds (on ``run.corpus``'s splits)."""
    paths = RunPaths(run.run_dir).for_seed(seed)
    row = Row(f"{init}_finetuned", init, "finetuned", "mmga", run.round, ("graph", "text", "image"), "finetune",
              "finetuned", init)  # fmt: skip
    make, _ = finetune_network(row, run.corpus, paths, stage2_checkpoint(row, paths, manifest))
    grid = peer_grid("finetuned", run.eval_config)
    corpus = run.corpus
    with torch_threads(1):
        result = evaluate_tasks(
            corpus.labels,
            corpus.fans,
            corpus.splits,
            run.eval_config.fans_buckets,
            lambda targets: select_and_score(targets, candidates(make, targets, grid, protocol), grid.seeds),
        )
    return result["topic"].scores["macro_f1"].mean, result["fans"].scores["mae"].mean


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(parser)
    parser.add_argument(
        "--protocols",
        nargs="+",
        choices=list(PROTOCOLS),
        default=list(PROTOCOLS),
        help="the protocols to run (default: all of them)",
    )
    parser.add_argument(
        "--train-fraction",
        type=float,
        default=1.0,
        help="keep the targets of this share of each topic's train users (default 1: all of them)",
    )
    args = parser.parse_args(argv)
    if not 0.0 < args.train_fraction <= 1.0:
        parser.error(f"--train-fraction must be in (0, 1], got {args.train_fraction}")
    run = read_run(parser, args)
    if args.train_fraction < 1.0:
        splits = fewer_train_labels(run.corpus.splits, run.corpus.labels, args.train_fraction)
        print(
            f"train users with targets: {int((splits == 0).sum())} of {int((run.corpus.splits == 0).sum())}"
        )
        run = dataclasses.replace(run, corpus=dataclasses.replace(run.corpus, splits=splits))
    manifest = Manifest.load(run.run_dir / "manifest.json", log=None)
    print(
        f"{run.run_dir}: round {run.round}, training seeds {run.seeds}; mean ± sd over the seeds", flush=True
    )
    for name in args.protocols:
        result = {
            init: [scores(run, manifest, seed, init, PROTOCOLS[name]) for seed in run.seeds]
            for init in ("pretrained", "scratch")
        }
        print(f"{name}:")
        for init, values in result.items():
            topic, fans = zip(*values)
            print(
                summary_line(
                    f"{init} ({'mmga' if init == 'pretrained' else 'scratch'}_finetuned)", topic, fans, 34
                )
            )
        for k, (task, higher) in enumerate((("topic", True), ("fans", False))):
            margins = paired_margins(
                [v[k] for v in result["pretrained"]], [v[k] for v in result["scratch"]], higher
            )
            sd = float(np.std(margins, ddof=1)) if len(margins) > 1 else 0.0
            print(
                f"    pre-trained - scratch, {task}: {np.mean(margins):+.3f} ± {sd:.3f} "
                f"(per seed {' '.join(f'{m:+.3f}' for m in margins)}): {verdict(margins)}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
