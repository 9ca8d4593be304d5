"""Would a graph head on the image side pay? A probe on a finished run, outside the pipeline.

The default text side is the frozen MiniLM with a **graph head**: a small MLP over each user's frozen text embedding,
trained by the graph-contrastive InfoNCE, its output appended to R^T (docs/stage1.md, "The default text side").
Until 2026-12-07 the image side had no such head: with the frozen EfficientNet-Lite0 trunk, MMGA's R^I was the same
ITA projection as ``no_align``'s. This script is the probe that led to the image graph head
(``model.image_head_dim``, docs/stage1.md): on a finished run **without** that head (a run of the earlier default,
or one with ``--stage1 model.image_head_dim=0 --stage1 losses.gcl_image_weight=0``; a run with it is refused), it
trains the image side's analogue of the text head and scores it with the report's own linear probe
(``run_probe.probe``: the same heads, splits and choice on val), per training seed:

- the head reads m_u, the mean of the frozen trunk's output over the user's images (read from the run folder's
  stored image states, ``text_states/image_states-*.pt``); users without an image get a zero row;
- it is the text head's architecture (LayerNorm, Linear to 256, GELU, Linear to ``--head-dim``), trained as the
  text head is: symmetric InfoNCE (``stage1_encoders.losses.GraphInfoNCELoss``) through a ``GraphProjectionHead``,
  ``--users`` anchor users per step each with one uniformly sampled neighbour, the other users of the batch as
  negatives, common-neighbour soft targets (``--soft-targets``), AdamW at the heads' learning rate with stage 1's
  warm-up and cosine schedule, gradients clipped at 1; ``--steps`` in all (the text head gets 150 per round over
  3 rounds). No labels are read: it trains on every edge, as stage 1 does;
- rows printed (mean ± sd over the training seeds): MMGA's R^I alone and [R^I || head]; MMGA's last-round fused
  [R^G || R^T || R^I] and the same with the head appended; then the margins of the fused row with the head over
  MMGA's own fused row, ``no_align``, ``peer_sgc`` and ``peer_frozen_sgc`` (the latter three read from the run's
  ``report/metrics.json``, per seed), each with the report's seed-aware verdict (``bridge.evaluation.verdict``).

The head is appended to the fused row, not smoothed by stage 2's content readout as the text head's columns are,
and stage 1 does not read it: what this measures is what the head's columns alone add next to MMGA's.

    python benchmarks/image_graph_head.py runs/default
    python benchmarks/image_graph_head.py runs/testbed --seeds 0 1 --steps 150

About 20 s per training seed on the default corpus (2 threads).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmga_common import quiet_third_party  # noqa: E402

quiet_third_party()

from run_probe import add_run_arguments, probe, read_run, summary_line  # noqa: E402

from bridge.evaluation.verdict import paired_margins, verdict  # noqa: E402
from bridge.report.compare import load_metrics  # noqa: E402
from bridge.runfolder.caches import read_encoders, read_graph  # noqa: E402
from corpus import Corpus  # noqa: E402
from stage1_encoders.encoders import graph_head_mlp  # noqa: E402
from stage1_encoders.heads import GraphProjectionHead  # noqa: E402
from stage1_encoders.losses import GraphInfoNCELoss  # noqa: E402
from stage1_encoders.pooling import UserSums  # noqa: E402


def image_states(run_dir: Path, explicit: Path | None) -> torch.Tensor:
    """``[P, D]`` the frozen trunk's output of every post's image, as the run stored it."""
    if explicit is not None:
        return torch.load(explicit, weights_only=True)["states"].float()
    found = sorted((run_dir / "text_states").glob("image_states-*.pt"))
    if len(found) != 1:
        raise SystemExit(
            f"{run_dir / 'text_states'}: expected one image_states-*.pt (a run with a frozen packaged image trunk), "
            f"found {len(found)}; name one with --states"
        )
    return torch.load(found[0], weights_only=True)["states"].float()


def user_means(corpus: Corpus, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, D]`` each user's mean trunk output over its images (zero without one) and ``[N]`` bool: has one."""
    has_image = torch.as_tensor(np.asarray(corpus.post_has_image), dtype=torch.bool)
    owner = torch.as_tensor(np.asarray(corpus.post_user), dtype=torch.long)[has_image]
    sums = UserSums(corpus.num_users, states.shape[1])
    sums.add(states[has_image], owner)
    return sums.means()


class EdgeSampler:
    """Anchor users (with an image and a neighbour that has one) and one uniform neighbour each, as the text
    head's batches (``stage1_encoders.data``, before stage 2's edge weights), with common-neighbour counts."""

    def __init__(self, corpus: Corpus, usable: torch.Tensor):
        import scipy.sparse as sp

        edges = np.asarray(corpus.edges).reshape(-1, 2)
        keep = usable.numpy()[edges[:, 0]] & usable.numpy()[edges[:, 1]]
        src = np.concatenate([edges[keep, 0], edges[keep, 1]])
        dst = np.concatenate([edges[keep, 1], edges[keep, 0]])
        n = corpus.num_users
        self.adjacency = sp.csr_matrix((np.ones(len(src), np.float32), (src, dst)), shape=(n, n))
        self.anchors = torch.from_numpy(np.flatnonzero(np.diff(self.adjacency.indptr) > 0))

    def sample(
        self, users: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        count = min(users, len(self.anchors))
        anchor = self.anchors[torch.randperm(len(self.anchors), generator=generator)[:count]]
        start = torch.from_numpy(self.adjacency.indptr[anchor.numpy()])
        degree = torch.from_numpy(np.diff(self.adjacency.indptr)[anchor.numpy()])
        pick = start + (torch.rand(count, generator=generator) * degree).long()
        positive = torch.from_numpy(self.adjacency.indices[pick.numpy()]).long()
        a, p = anchor.numpy(), positive.numpy()
        common = torch.from_numpy((self.adjacency[a] @ self.adjacency[p].T).toarray())
        return anchor, positive, common


@dataclass(frozen=True)
class HeadRecipe:
    """How the head is trained (the text graph head's settings by default: docs/stage1.md)."""

    steps: int = 450
    users: int = 512
    head_dim: int = 128
    soft_targets: float = 0.5
    lr: float = 9e-3


def train_head(means: torch.Tensor, sampler: EdgeSampler, recipe: HeadRecipe, seed: int) -> np.ndarray:
    """The head's output ``[N, head_dim]`` for every user after ``recipe.steps`` steps (seeded by ``seed``)."""
    torch.manual_seed(seed)
    width = means.shape[1]
    head = graph_head_mlp(width, 256, recipe.head_dim)  # the text head's architecture
    projection = GraphProjectionHead(recipe.head_dim)
    loss_fn = GraphInfoNCELoss("image", recipe.soft_targets)
    params = [*head.parameters(), *projection.parameters()]
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.01)
    warmup = min(20, recipe.steps)

    def factor(step: int) -> float:  # stage 1's schedule: linear warm-up, then cosine to a tenth
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, recipe.steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    generator = torch.Generator().manual_seed(seed + 7919)
    for _ in range(recipe.steps):
        anchor, positive, common = sampler.sample(recipe.users, generator)
        users, inverse = torch.unique(torch.cat([anchor, positive]), return_inverse=True)
        z, scale = projection(head(means[users]))
        a, p = inverse[: len(anchor)], inverse[len(anchor) :]
        loss = loss_fn(z[a], z[p], scale, a, p, common)["gcl_image_loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        projection.clamp_logit_scale()
    head.eval()
    with torch.no_grad():
        return head(means).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(parser)
    parser.add_argument(
        "--states", type=Path, default=None, help="the image states file (default: the run's)"
    )
    default = HeadRecipe()
    for flag, kind, value, help_text in (
        ("--steps", int, default.steps, "the head's training steps"),
        ("--users", int, default.users, "anchor users per step"),
        ("--head-dim", int, default.head_dim, "the head's output width"),
        ("--soft-targets", float, default.soft_targets, "share of the target spread by common neighbours"),
        ("--lr", float, default.lr, "peak learning rate (stage 1's 3e-3 x the heads' scale 3)"),
    ):
        parser.add_argument(flag, type=kind, default=value, help=f"{help_text} (default {value:g})")
    args = parser.parse_args()
    recipe = HeadRecipe(args.steps, args.users, args.head_dim, args.soft_targets, args.lr)
    run = read_run(parser, args)
    # the run's report, read once: its stage configs here, and the rows compared with below
    metrics = load_metrics(run.run_dir)
    stage1 = metrics["config"]["stages"].get(f"seed_{run.seeds[0]}/mmga/round_0/stage1", {})
    if stage1.get("model", {}).get("image_head_dim"):
        parser.error(
            f"{run.run_dir}: MMGA's R^I there already has an image graph head (model.image_head_dim)"
        )
    corpus = run.corpus
    means, has_image = user_means(corpus, image_states(run.run_dir, args.states))
    sampler = EdgeSampler(corpus, has_image)
    rows: dict[str, tuple[list[float], list[float]]] = {}

    def record(name: str, x: np.ndarray) -> None:
        topic, fans = probe(x, corpus, run.eval_config)
        rows.setdefault(name, ([], []))[0].append(topic)
        rows[name][1].append(fans)

    for seed in run.seeds:
        cache = run.run_dir / f"seed_{seed}" / "mmga" / "cache"
        encoders = read_encoders(cache, run.round, corpus)
        graph = read_graph(cache, run.round, corpus).user_graph_emb
        text, image = encoders.user_text_emb, encoders.user_image_emb
        head = train_head(means, sampler, recipe, seed)
        head[~has_image.numpy()] = 0.0
        fused = np.concatenate([graph, text, image], 1)
        record("R^I (mmga_image)", image)
        record("[R^I || image head]", np.concatenate([image, head], 1))
        record(f"mmga_round_{run.round}", fused)
        record("the same + image head", np.concatenate([fused, head], 1))
        print(f"seed {seed}: " + ", ".join(f"{k} {v[0][-1]:.3f}" for k, v in rows.items()), flush=True)
    width = max(len(name) for name in rows)
    print(f"\n{run.run_dir}, round {run.round}, seeds {run.seeds}, {args.steps} head steps")
    for name, (topic, fans) in rows.items():
        print(summary_line(name, topic, fans, width))
    print("\nthe fused row with the image head against (topic macro-F1; fans MAE):")
    seed_index = [run.training_seeds.index(s) for s in run.seeds]
    metrics = metrics["rows"]
    others = {f"mmga_round_{run.round} (without the head)": rows[f"mmga_round_{run.round}"]}
    for name in ("no_align", "peer_sgc", "peer_frozen_sgc"):
        if name in metrics:
            values = [
                metrics[name][t]["macro_f1" if t == "topic" else "mae"]["values"] for t in ("topic", "fans")
            ]
            others[name] = tuple([v[i] if len(v) > 1 else v[0] for i in seed_index] for v in values)
    mine = rows["the same + image head"]
    for name, (topic, fans) in others.items():
        margins = (paired_margins(mine[0], topic, True), paired_margins(mine[1], fans, False))
        text = "; ".join(
            f"{np.mean(m):+.3f} ± {np.std(m, ddof=1) if len(m) > 1 else 0.0:.3f} ({verdict(m)})"
            for m in margins
        )
        print(f"  {name:{width + 16}s} {text}")


if __name__ == "__main__":
    main()
