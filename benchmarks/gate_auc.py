"""Does stage 2's gate tell same-topic from cross-topic edges? ROC AUC of the cached edge weights.

For a synthetic corpus (one with ``_truth.npz``) and a cache holding round R's stage-1 and stage-2 outputs,
prints the ROC AUC (scikit-learn) of ``edge_weight`` for same-topic against cross-topic edges, next to the
parameter-free references: the cosine of the two users' statistics X, of their image embeddings and of their
text embeddings (edges where either user lacks the modality score 0).

    python benchmarks/gate_auc.py --corpus /tmp/s11 --cache /tmp/s11c --round 0

Reads the generator's topics here, for diagnosis; the stages never do.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cache import CacheError, read_encoder_embeddings, read_graph_outputs  # noqa: E402
from corpus import load_corpus  # noqa: E402
from corpus.synthetic import load_truth  # noqa: E402


def edge_cosine(embedding: np.ndarray, mask: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``[E]`` cosine of the two endpoints' rows; 0 where either lacks the modality."""
    unit = embedding / np.maximum(np.linalg.norm(embedding, axis=1, keepdims=True), 1e-12)
    cosine = (unit[edges[:, 0]] * unit[edges[:, 1]]).sum(1)
    return np.where(mask[edges[:, 0]] & mask[edges[:, 1]], cosine, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, required=True, help="synthetic corpus folder")
    parser.add_argument("--cache", type=Path, required=True, help="cache folder with the round's outputs")
    parser.add_argument("--round", type=int, default=0, help="round index (default 0)")
    args = parser.parse_args()

    corpus = load_corpus(args.corpus, image_check="exists", progress=False)
    topic = load_truth(args.corpus)["user_topic"]
    edges = corpus.edges
    same = topic[edges[:, 0]] == topic[edges[:, 1]]
    graph = read_graph_outputs(
        args.cache,
        args.round,
        fingerprint=corpus.fingerprint,
        num_users=corpus.num_users,
        num_edges=corpus.num_edges,
    )
    rows = {
        "edge_weight (stage 2)": graph.edge_weight,
        "stats X cosine (reference)": edge_cosine(corpus.features, np.ones(corpus.num_users, bool), edges),
    }
    try:
        emb = read_encoder_embeddings(
            args.cache, args.round, fingerprint=corpus.fingerprint, num_users=corpus.num_users
        )
        rows["image cosine (reference)"] = edge_cosine(emb.user_image_emb, emb.image_mask, edges)
        rows["text cosine (reference)"] = edge_cosine(emb.user_text_emb, emb.text_mask, edges)
    except CacheError as err:  # the references are optional (an X-only run has no stage 1)
        print(f"(no stage-1 references: {err})")
    print(f"{len(edges):,} edges, {same.mean():.3f} same-topic")
    for name, scores in rows.items():
        print(f"  {name:<28} AUC {roc_auc_score(same, scores):.3f}")


if __name__ == "__main__":
    main()
