"""Probes of a synthetic corpus's planted structure, computed from its files and ``_truth.npz`` only.

No trained encoder is involved: simple per-user features (bag of words of the captions, colour and pooled
spectrum of the images, the statistics X, neighbour means over the graph) and scikit-learn's logistic and linear
regressions. They say how much of each property the files carry to a simple reader; a trained model may do
better or worse. Used by tests/corpus/test_synthetic_probes.py and benchmarks/probe_generator.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from corpus import Corpus, load_corpus
from corpus.pixels import to_rgb
from corpus.synthetic.text import QUALITY_WORDS

SPECTRUM_POOL = 4  # the centred log-spectrum is averaged over POOL x POOL blocks


def image_features(pixels: np.ndarray) -> np.ndarray:
    """float64 [D]: mean and std of each RGB channel and the pooled centred log-magnitude spectrum of the grey
    image (pattern shape and frequency, independent of phase). ``pixels``: uint8 [S, S, 3]."""
    rgb = pixels.astype(np.float64) / 255.0
    grey = rgb.mean(axis=2)
    spectrum = np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(grey - grey.mean()))))
    s = grey.shape[0] // SPECTRUM_POOL * SPECTRUM_POOL
    pooled = spectrum[:s, :s].reshape(s // SPECTRUM_POOL, SPECTRUM_POOL, -1, SPECTRUM_POOL).mean(axis=(1, 3))
    return np.concatenate([rgb.mean(axis=(0, 1)), rgb.std(axis=(0, 1)), pooled.ravel()])


def user_image_features(corpus: Corpus) -> np.ndarray:
    """float64 [N, D]: mean image features of each user's images (zeros without one); shared files read once."""
    cache: dict[str, np.ndarray] = {}
    rows = []
    for p, rel in enumerate(corpus.post_image):
        if rel is None:
            continue
        if rel not in cache:
            with Image.open(Path(corpus.root) / rel) as img:
                cache[rel] = image_features(np.asarray(to_rgb(img)))
        rows.append((corpus.post_user[p], cache[rel]))
    dim = next(iter(cache.values())).size if cache else 1
    total, count = np.zeros((corpus.num_users, dim)), np.zeros(corpus.num_users)
    for u, feats in rows:
        total[u] += feats
        count[u] += 1
    return total / np.maximum(count, 1)[:, None]


def user_text_features(corpus: Corpus) -> tuple[np.ndarray, list[str]]:
    """(float64 [N, W], vocabulary): each user's word frequencies over all captions (rows sum to 1, or 0)."""
    vocab: dict[str, int] = {}
    pairs = []
    for p, text in enumerate(corpus.post_text):
        for word in text.split():
            pairs.append((corpus.post_user[p], vocab.setdefault(word, len(vocab))))
    counts = np.zeros((corpus.num_users, max(len(vocab), 1)))
    if pairs:
        users, words = np.array(pairs).T
        np.add.at(counts, (users, words), 1.0)
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0), list(vocab)


def normalized_adjacency(corpus: Corpus) -> np.ndarray:
    """float64 [N, N]: D^-1/2 (A + I) D^-1/2 (dense; probes run on corpora of a few thousand users)."""
    n = corpus.num_users
    adj = np.eye(n)
    adj[corpus.edges[:, 0], corpus.edges[:, 1]] = 1.0
    adj[corpus.edges[:, 1], corpus.edges[:, 0]] = 1.0
    inv_sqrt = 1.0 / np.sqrt(adj.sum(axis=1))
    return adj * inv_sqrt[:, None] * inv_sqrt[None, :]


def _standardize(x: np.ndarray, train: np.ndarray) -> np.ndarray:
    return (x - x[train].mean(axis=0)) / (x[train].std(axis=0) + 1e-9)


def topic_macro_f1(features, labels: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Macro-F1 of a logistic regression on standardized features, pooled over stratified ``folds``-fold
    cross-validation of all users (steadier than one small test split).

    Args:
        features: float [N, D], or a callable ``train_mask -> [N, D]`` for features that may only use the
            training fold's labels.
        labels: int [N].
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold

    predicted = np.empty_like(labels)
    for train_idx, test_idx in StratifiedKFold(folds, shuffle=True, random_state=seed).split(labels, labels):
        train = np.zeros(labels.size, dtype=bool)
        train[train_idx] = True
        x = features(train) if callable(features) else features
        x = _standardize(np.asarray(x, dtype=np.float64), train)
        model = LogisticRegression(C=0.1, max_iter=3000).fit(x[train], labels[train])
        predicted[test_idx] = model.predict(x[test_idx])
    return float(f1_score(labels, predicted, average="macro"))


def edge_auc(x: np.ndarray, target: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """ROC AUC of a logistic regression from per-edge features ``x`` [E, D] to bool ``target``, its decision
    values pooled over stratified ``folds``-fold cross-validation of the edges."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    x = np.asarray(x, dtype=np.float64).reshape(len(target), -1)
    score = np.empty(len(target))
    for train_idx, test_idx in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, target):
        train = np.zeros(len(target), dtype=bool)
        train[train_idx] = True
        xs = _standardize(x, train)
        model = LogisticRegression(C=1.0, max_iter=3000).fit(xs[train], target[train])
        score[test_idx] = model.decision_function(xs[test_idx])
    return float(roc_auc_score(target, score))


def r_squared(x: np.ndarray, y: np.ndarray) -> float:
    """In-sample R^2 of an ordinary least-squares fit with intercept."""
    design = np.column_stack([x, np.ones(len(y))])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(1.0 - (y - design @ coef).var() / y.var())


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def probe(root: str | Path) -> dict[str, float]:
    """Every probe score of the corpus at ``root`` (see docs/corpus.md, "Probes").

    Topic probes (5-fold cross-validated macro-F1 over all users): ``image``, ``text``, ``image+text``, ``X``,
    ``graph X`` (X with its 1- and 2-hop normalized neighbour means, an SGC-like reader of X and the graph),
    ``graph labels`` (1- and 2-hop neighbour means of the one-hot train labels). Edge probes (ROC AUC of
    same-topic vs cross-topic, on edges whose endpoints both have posts): ``edge content``, ``edge X``,
    ``edge degree``; ``edge secondary content``: among cross-topic edges, secondary-interest vs others.
    Fans (in-sample R^2 of log fans, users with posts): ``fans X+degree``, then adding the praise-word rate
    (``... caption quality``), the image spectrum energy (``... image quality``) or both (``... content quality``).
    """
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    # Small fits: multi-threaded BLAS only adds overhead, and on a shared machine it is 20-50x slower.
    with threadpool_limits(1):
        return _probe(Path(root))


def _probe(root: Path) -> dict[str, float]:
    from corpus.synthetic import load_truth

    corpus = load_corpus(root, image_check="exists", progress=False)
    truth = load_truth(root)
    labels = truth["user_topic"]
    image = user_image_features(corpus)
    text, vocab = user_text_features(corpus)
    adj = normalized_adjacency(corpus)
    x = corpus.features

    def neighbour_labels(train: np.ndarray) -> np.ndarray:
        one_hot = np.eye(labels.max() + 1)[labels] * train[:, None]
        return np.hstack([adj @ one_hot, adj @ (adj @ one_hot)])

    scores = {
        "image": topic_macro_f1(image, labels),
        "text": topic_macro_f1(text, labels),
        "image+text": topic_macro_f1(np.hstack([image, text]), labels),
        "X": topic_macro_f1(x, labels),
        "graph X": topic_macro_f1(np.hstack([x, adj @ x, adj @ (adj @ x)]), labels),
        "graph labels": topic_macro_f1(neighbour_labels, labels),
    }

    a, b = corpus.edges[:, 0], corpus.edges[:, 1]
    with_posts = (corpus.user_num_posts[a] > 0) & (corpus.user_num_posts[b] > 0)
    a, b = a[with_posts], b[with_posts]
    same = labels[a] == labels[b]
    content = _standardize(np.hstack([image, text]), np.ones(corpus.num_users, dtype=bool))
    content_pair = np.column_stack([_cosine(text[a], text[b]), _cosine(content[a], content[b])])
    log_degree = np.log1p(np.bincount(corpus.edges.ravel(), minlength=corpus.num_users))
    scores["edge content"] = edge_auc(content_pair, same)
    scores["edge X"] = edge_auc(np.hstack([np.abs(x[a] - x[b]), x[a] * x[b]]), same)
    scores["edge degree"] = edge_auc(
        np.column_stack([log_degree[a] + log_degree[b], np.abs(log_degree[a] - log_degree[b])]), same
    )
    secondary_truth = truth["edge_secondary"][with_posts]
    scores["edge secondary content"] = edge_auc(content_pair[~same], secondary_truth[~same])

    praise = np.array(
        [sum(w in QUALITY_WORDS for w in t.split()) for t in corpus.post_text], dtype=np.float64
    )
    per_user_praise = np.bincount(corpus.post_user, weights=praise, minlength=corpus.num_users)
    per_user_praise /= np.maximum(corpus.user_num_posts, 1)
    has = corpus.user_num_posts > 0
    # Quality raises the pattern's contrast (low frequencies) and lowers the noise (high frequencies).
    side = int(round(np.sqrt(image.shape[1] - 6)))
    spectrum = image[:, 6:].reshape(-1, side, side)
    centre = np.zeros((side, side), dtype=bool)
    centre[side // 4 : side - side // 4, side // 4 : side - side // 4] = True
    image_quality = np.column_stack([spectrum[:, centre].mean(axis=1), spectrum[:, ~centre].mean(axis=1)])
    log_fans = np.log1p(corpus.fans)  # fans may be 0
    base = np.column_stack([x, log_degree])
    scores["fans X+degree"] = r_squared(base[has], log_fans[has])
    scores["fans X+degree+caption quality"] = r_squared(
        np.column_stack([base, per_user_praise])[has], log_fans[has]
    )
    scores["fans X+degree+image quality"] = r_squared(
        np.column_stack([base, image_quality])[has], log_fans[has]
    )
    quality = np.column_stack([base, per_user_praise, image_quality])
    scores["fans X+degree+content quality"] = r_squared(quality[has], log_fans[has])
    return scores
