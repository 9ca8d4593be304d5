"""What the learned user embeddings of a bridge run know about the synthetic generator's hidden factors.

For a run on a synthetic corpus (one with ``_truth.npz``), fits ridge regressions (train split -> test split,
regularisation chosen by cross-validation on train) from each cached block (R^I, R^T, R^G of every variant, at
one round) to the generator's per-user factors: post quality, activity, log(1 + degree) and log(1 + fans), and
prints the test R^2 (0 = nothing, 1 = all of it). It also prints the fans MAE that a ridge head reaches from X
alone and from X plus the true factors, as the ceiling of what a representation could add.

    python benchmarks/probe_truth.py runs/default --round 2

Reads labels and truth only here, for diagnosis; the stages never do.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import RidgeCV

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cache import CacheError, read_encoder_embeddings, read_graph_outputs  # noqa: E402
from corpus import load_corpus  # noqa: E402
from corpus.synthetic import TRUTH_FILE, load_truth  # noqa: E402

ALPHAS = np.logspace(-3, 4, 15)


def _standardize(x: np.ndarray, train: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return (x - x[train].mean(0)) / (x[train].std(0) + 1e-9)


def ridge(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    """(test R^2, test MAE) of a ridge regression fitted on the train rows."""
    x = _standardize(x, train)
    model = RidgeCV(alphas=ALPHAS).fit(x[train], y[train])
    pred = model.predict(x[test])
    return float(model.score(x[test], y[test])), float(np.abs(pred - y[test]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=Path, help="a finished bridge run folder on a synthetic corpus")
    parser.add_argument("--round", type=int, default=None, help="round to read (default: the last one found)")
    args = parser.parse_args()
    corpus_dir = args.run_dir / "corpus"
    if not (corpus_dir / TRUTH_FILE).is_file():
        sys.exit(
            f"error: {corpus_dir / TRUTH_FILE} not found: this diagnosis needs the synthetic generator's truth"
        )
    corpus = load_corpus(corpus_dir, image_check="exists", progress=False)
    truth = load_truth(corpus_dir)
    train, test = corpus.splits == 0, corpus.splits == 2
    degree = np.bincount(corpus.edges.reshape(-1), minlength=corpus.num_users)
    log_fans = np.log1p(corpus.fans)
    known = np.isfinite(log_fans)
    targets = {
        "quality": truth["user_quality"],
        "activity": truth["user_activity"],
        "log degree": np.log1p(degree),
        "log fans": np.where(known, log_fans, 0.0),
    }
    variants = sorted(p.parent.name for p in args.run_dir.glob("*/cache"))
    rounds = sorted(
        {int(p.name.split("_")[1]) for v in variants for p in (args.run_dir / v / "cache").glob("round_*")}
    )
    if not rounds:
        sys.exit(f"error: no cache rounds under {args.run_dir}/*/cache")
    round_idx = rounds[-1] if args.round is None else args.round
    print(
        f"{args.run_dir} round {round_idx}: test R^2 of a ridge probe (train {train.sum()} -> test {test.sum()} users)"
    )
    print(f"  {'variant':<11} {'block':<4} {'dim':>4} " + " ".join(f"{name:>10}" for name in targets))
    for variant in variants:
        cache_dir = args.run_dir / variant / "cache"
        blocks = {}
        try:
            emb = read_encoder_embeddings(
                cache_dir, round_idx, fingerprint=corpus.fingerprint, num_users=corpus.num_users
            )
            blocks.update({"R^I": emb.user_image_emb, "R^T": emb.user_text_emb})
        except CacheError:
            pass  # graph_only has no stage 1
        try:
            graph = read_graph_outputs(
                cache_dir,
                round_idx,
                fingerprint=corpus.fingerprint,
                num_users=corpus.num_users,
                num_edges=corpus.num_edges,
            )
            blocks["R^G"] = graph.user_graph_emb
        except CacheError:
            pass
        for name, block in blocks.items():
            scores = []
            for target, y in targets.items():
                mask_train, mask_test = (
                    (train & known, test & known) if target == "log fans" else (train, test)
                )
                scores.append(ridge(block, y, mask_train, mask_test)[0])
            print(f"  {variant:<11} {name:<4} {block.shape[1]:>4} " + " ".join(f"{s:>10.2f}" for s in scores))

    x = corpus.features
    col = lambda name: truth[name].reshape(-1, 1)  # noqa: E731
    ceilings = {
        "X": x,
        "X + log degree": np.hstack([x, np.log1p(degree).reshape(-1, 1)]),
        "X + true degree/neighbour terms": np.hstack([x, col("fans_degree"), col("fans_neighbour")]),
        "X + true quality": np.hstack([x, col("user_quality")]),
        "X + true quality, degree, neighbour": np.hstack(
            [x, col("user_quality"), col("fans_degree"), col("fans_neighbour")]
        ),
    }
    print("\nfans MAE in log(1 + fans) of a ridge head on known inputs (what a representation could add):")
    for name, inputs in ceilings.items():
        print(f"  {name:<38} {ridge(inputs, log_fans, train & known, test & known)[1]:.3f}")


if __name__ == "__main__":
    main()
