"""Social graph: a degree-corrected stochastic block model over topics.

Each user has a heavy-tailed propensity ``theta`` (Pareto); an edge's endpoints are drawn proportionally to
``theta``, the second one inside the first one's topic (a same-topic edge) or in another topic. Same-topic and
cross-topic edges are drawn to exact targets ``round(homophily * E)`` and the rest, so the share of same-topic
edges equals the knob up to rounding, with the degrees following ``theta``.
"""

from __future__ import annotations

import numpy as np


def pareto_theta(
    num_users: int, exponent: float, rng: np.random.Generator, cap_share: float = 0.05
) -> np.ndarray:
    """float64 [N]: degree propensities with tail ``P(theta > t) ~ t^-(exponent-1)``, capped at
    ``cap_share * sum(theta)`` so no user is linked to everyone."""
    if exponent <= 1:
        raise ValueError(f"degree_exponent must be > 1, got {exponent}")
    theta = (1.0 - rng.random(num_users)) ** (-1.0 / (exponent - 1.0))
    cap = cap_share * theta.sum()
    return np.minimum(theta, max(cap, 1.0))


def _sample_in_groups(
    groups: np.ndarray, cum_sorted: np.ndarray, order: np.ndarray, start: np.ndarray, total: np.ndarray, rng
) -> np.ndarray:
    """One user per entry of ``groups``, drawn inside that group proportionally to theta."""
    target = start[groups] + rng.random(groups.size) * total[groups]
    pos = np.searchsorted(cum_sorted, target, side="right")
    return order[np.minimum(pos, order.size - 1)]


def dcsbm_edges(
    topic: np.ndarray,
    theta: np.ndarray,
    num_edges: int,
    homophily: float,
    rng: np.random.Generator,
    max_rounds: int = 200,
) -> np.ndarray:
    """int64 [E, 2]: unique undirected edges (u < v, no self-loops, sorted), ``round(homophily * E)`` of them
    between users of the same topic.

    Args:
        topic: int [N], topic of each user.
        theta: float [N] > 0, degree propensity.
        num_edges: E.
        homophily: share of same-topic edges in [0, 1].
        rng: random stream.
    """
    if not 0.0 <= homophily <= 1.0:
        raise ValueError(f"homophily must be in [0, 1], got {homophily}")
    num_users = topic.shape[0]
    num_topics = int(topic.max()) + 1
    order = np.argsort(topic, kind="stable")
    cum_sorted = np.cumsum(theta[order])
    total = np.bincount(topic, weights=theta, minlength=num_topics)
    start = np.concatenate([[0.0], np.cumsum(total)[:-1]])
    cum_all = np.cumsum(theta)
    sizes = np.bincount(topic, minlength=num_topics)

    target_same = int(round(homophily * num_edges))
    targets = {True: target_same, False: num_edges - target_same}
    max_same = int((sizes * (sizes - 1) // 2).sum())
    max_cross = num_users * (num_users - 1) // 2 - max_same
    if targets[True] > max_same or targets[False] > max_cross:
        raise ValueError(
            f"cannot place {targets[True]} same-topic and {targets[False]} cross-topic edges among {num_users} users; "
            "lower avg_degree or change homophily"
        )
    out = []
    for same, want in targets.items():
        keys = np.zeros(0, dtype=np.int64)
        for _ in range(max_rounds):
            missing = want - keys.size
            if missing <= 0:
                break
            batch = int(missing * 1.3) + 16
            u = np.minimum(
                np.searchsorted(cum_all, rng.random(batch) * cum_all[-1], side="right"), num_users - 1
            )
            if same:
                v_topic = topic[u]
            else:
                weights = np.broadcast_to(total, (batch, num_topics)).copy()
                weights[np.arange(batch), topic[u]] = 0.0
                cum_w = np.cumsum(weights, axis=1)
                draw = rng.random(batch) * cum_w[:, -1]
                v_topic = np.minimum((cum_w < draw[:, None]).sum(axis=1), num_topics - 1)
            v = _sample_in_groups(v_topic, cum_sorted, order, start, total, rng)
            ok = u != v
            lo, hi = np.minimum(u[ok], v[ok]), np.maximum(u[ok], v[ok])
            new = lo * num_users + hi
            # Keep first occurrences in draw order, so the kept set does not depend on sorting.
            merged = np.concatenate([keys, new])
            _, first = np.unique(merged, return_index=True)
            keys = merged[np.sort(first)]
        if keys.size < want:
            raise ValueError(f"could not draw {want} distinct edges in {max_rounds} rounds; lower avg_degree")
        out.append(keys[:want])
    keys = np.sort(np.concatenate(out))
    return np.stack([keys // num_users, keys % num_users], axis=1).astype(np.int64)
