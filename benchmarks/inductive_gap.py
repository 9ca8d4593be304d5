"""The inductive gap: how much worse are the embeddings of users the models never saw?

1. Generate the synthetic corpus (``--users``, default 1,000; the bridge's default generator settings) and hold
   out ``--holdout`` (default 20%) of its users, stratified by topic: their ``users.csv`` rows, their posts and
   every edge that touches them are removed, giving the training corpus.
2. Train one bridge run on the training corpus (``--skip-baselines``) and one on the full corpus (the
   transductive reference); the same rounds, steps and training seeds.
3. Embed the full corpus with the first run's last-round models (``bridge.embed``, no training), so the held-out
   users are embedded inductively, their edges to the training users included.
4. For both runs fit the standard heads (``bridge.evaluation.heads``) on the same training users' [R^G || R^T || R^I]
   (train / val = the training corpus's split; its test users join train) and score them on the held-out users.

    python benchmarks/inductive_gap.py --out runs/inductive_gap                  # 1,000 users, default steps
    python benchmarks/inductive_gap.py --out /tmp/gap --users 200 --rounds 1 \\
        --stage1 trainer.max_steps=20 --stage2 trainer.max_steps=20             # a quick check that it works

Finished runs are reused (the bridge resumes). Prints one table and writes ``<out>/inductive_gap.json``.
With ``--seeds K`` each training seed's embeddings are scored and the table shows mean ± sd over seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bridge.evaluation.heads import evaluate_representation  # noqa: E402
from bridge.inference import load_run  # noqa: E402
from bridge.inference.holdout import held_out_splits, holdout_mask, write_user_subset  # noqa: E402
from bridge.rounds.config import build_config  # noqa: E402
from bridge.rounds.corpus import synthetic_config  # noqa: E402
from bridge.rounds.runner import run_bridge  # noqa: E402
from corpus import load_corpus  # noqa: E402
from corpus.synthetic import generate  # noqa: E402
from mmga_common.threads import torch_threads  # noqa: E402

TARGETS = {"topic_macro_f1": 0.03, "fans_mae": 0.03}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the corpora and both runs")
    p.add_argument("--users", type=int, default=1000, help="users of the generated corpus (default 1000)")
    p.add_argument("--holdout", type=float, default=0.2, help="share of users held out (default 0.2)")
    p.add_argument("--holdout-seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=3, help="bridge rounds (default 3)")
    p.add_argument("--seeds", type=int, default=1, help="training seeds per run (default 1)")
    p.add_argument("--synthetic", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--stage1", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--stage2", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--eval", dest="eval_overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def score(x: np.ndarray, full, splits: np.ndarray, eval_cfg) -> dict[str, float]:
    metrics = evaluate_representation(x, full.labels, full.fans, splits, eval_cfg)
    return {
        "topic_macro_f1": metrics.topic["macro_f1"].mean,
        "fans_mae": metrics.fans["mae"].mean,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    synth = [f"num_users={args.users}", *args.synthetic]
    base = build_config(
        rounds=args.rounds,
        seeds=args.seeds,
        synthetic=synth,
        stage1=args.stage1,
        stage2=args.stage2,
        eval_overrides=args.eval_overrides,
        baselines=False,
    )
    full_dir = out / "full_corpus"
    if not (full_dir / "users.csv").is_file():
        generate(full_dir, synthetic_config(base), overwrite=True)
    full = load_corpus(full_dir)
    held = holdout_mask(full, args.holdout, seed=args.holdout_seed)
    train_dir = out / "train_corpus"
    if not (train_dir / "users.csv").is_file():
        write_user_subset(full_dir, train_dir, {u for u, h in zip(full.user_ids, held) if not h})
    train = load_corpus(train_dir)
    splits = held_out_splits(full, held, train)
    print(
        f"[gap] full corpus {full.num_users} users / {full.num_edges} edges; training corpus {train.num_users} "
        f"users / {train.num_edges} edges; {int(held.sum())} held-out users",
        flush=True,
    )

    from dataclasses import replace

    timings = {}
    with torch_threads(args.threads):
        for name, corpus_dir in (("inductive", train_dir), ("transductive", full_dir)):
            start = time.perf_counter()
            run_bridge(replace(base, corpus=corpus_dir), out / f"{name}_run")
            timings[name] = time.perf_counter() - start
        rows: dict[str, list[dict[str, float]]] = {"inductive": [], "transductive": []}
        for seed in base.training_seeds:
            start = time.perf_counter()
            ids, x_ind = load_run(out / "inductive_run", seed=seed).embed(full_dir)
            timings[f"embed_seed_{seed}"] = time.perf_counter() - start
            assert ids == full.user_ids
            ids, x_trans = load_run(out / "transductive_run", seed=seed).embeddings()
            assert ids == full.user_ids
            rows["inductive"].append(score(x_ind, full, splits, base.eval))
            rows["transductive"].append(score(x_trans, full, splits, base.eval))

    summary: dict[str, dict[str, dict[str, float]]] = {}
    print(
        f"\nHeld-out users ({int(held.sum())}), heads fit on the {int((~held).sum())} training users; "
        f"{len(base.training_seeds)} training seed(s), mean ± sd over seeds"
    )
    print("| run | topic macro-F1 | fans MAE |\n|---|---|---|")
    for name, per_seed in rows.items():
        summary[name] = {}
        cells = []
        for metric in TARGETS:
            values = np.array([r[metric] for r in per_seed])
            sd = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            summary[name][metric] = {"mean": float(values.mean()), "sd": sd, "values": values.tolist()}
            cells.append(f"{values.mean():.3f} ± {sd:.3f}")
        print(f"| {name} | {' | '.join(cells)} |")
    gap_f1 = (
        summary["transductive"]["topic_macro_f1"]["mean"] - summary["inductive"]["topic_macro_f1"]["mean"]
    )
    gap_mae = summary["inductive"]["fans_mae"]["mean"] - summary["transductive"]["fans_mae"]["mean"]
    met_f1, met_mae = gap_f1 <= TARGETS["topic_macro_f1"], gap_mae <= TARGETS["fans_mae"]
    print(
        f"\ngap (positive = inductive worse): topic macro-F1 {gap_f1:+.3f} (target <= 0.03: "
        f"{'met' if met_f1 else 'MISSED'}), fans MAE {gap_mae:+.3f} (target <= 0.03: "
        f"{'met' if met_mae else 'MISSED'})"
    )
    result = {
        "users": full.num_users,
        "held_out": int(held.sum()),
        "rounds": args.rounds,
        "training_seeds": list(base.training_seeds),
        "stage1": args.stage1,
        "stage2": args.stage2,
        "synthetic": synth,
        "scores": summary,
        "gap": {"topic_macro_f1": gap_f1, "fans_mae": gap_mae},
        "target_met": {"topic_macro_f1": met_f1, "fans_mae": met_mae},
        "seconds": timings,
    }
    (out / "inductive_gap.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {out / 'inductive_gap.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
