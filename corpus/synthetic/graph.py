"""Social graph: a degree-corrected stochastic block model over topics.

Each user has a heavy-tailed propensity ``theta`` (Pareto); an edge's endpoints are drawn proportionally to
``theta``, the second one inside the first one's topic (a same-topic edge) or in another topic. Same-topic and
cross-topic edges are drawn to exact targets ``round(homophily * E)`` and the rest, so the share of same-topic
edges equals the knob up to rounding, with the degrees following ``theta``. A cross-topic edge goes, with
probability ``affinity``, to the first user's secondary-interest topic: such edges join users whose content
overlaps (the first one posts about the second one's topic), while neither endpoint is chosen by anything but
``theta``, so degrees say nothing about which edges cross topics.
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
    secondary: np.ndarray | None = None,
    affinity: float = 0.0,
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
        secondary: int [N] or None, each user's secondary-interest topic (different from its topic).
        affinity: probability that a cross-topic edge drawn from user u goes to ``secondary[u]``.
    """
    if not 0.0 <= homophily <= 1.0:
        raise ValueError(f"homophily must be in [0, 1], got {homophily}")
    num_users = topic.shape[0]
    num_topics = int(topic.max()) + 1
    sizes = np.bincount(topic, minlength=num_topics)
    target_same = int(round(homophily * num_edges))
    target_cross = num_edges - target_same
    max_same = int((sizes * (sizes - 1) // 2).sum())
    max_cross = num_users * (num_users - 1) // 2 - max_same
    if target_same > max_same or target_cross > max_cross:
        raise ValueError(
            f"cannot place {target_same} same-topic and {target_cross} cross-topic edges among {num_users} users; "
            "lower avg_degree or change homophily"
        )
    same = _draw_edges(topic, theta, target_same, True, rng, None, 0.0, max_rounds)
    # Same-topic pairs of hubs saturate (edges are distinct): a pair drawn x times on average exists with
    # probability 1 - exp(-x). Accepting cross-topic candidates with (1 - exp(-x)) / x, x their same-topic
    # rate, gives both kinds the same shape in theta_u * theta_v, so degrees do not tell them apart.
    rate = 2.0 * target_same / (theta.sum() * theta.sum() / num_topics)
    cross = _draw_edges(topic, theta, target_cross, False, rng, secondary, affinity, max_rounds, rate)
    keys = np.sort(np.concatenate([same, cross]) @ np.array([num_users, 1]))
    return np.stack([keys // num_users, keys % num_users], axis=1).astype(np.int64)


def _draw_edges(
    topic: np.ndarray,
    theta: np.ndarray,
    want: int,
    same: bool,
    rng: np.random.Generator,
    secondary: np.ndarray | None,
    affinity: float,
    max_rounds: int,
    saturation_rate: float = 0.0,
) -> np.ndarray:
    """int64 [want, 2]: distinct same-topic (or cross-topic) pairs (u < v), endpoints drawn proportionally to
    ``theta`` (in draw order); with ``saturation_rate`` r > 0 a candidate is kept with probability
    ``(1 - exp(-x)) / x``, ``x = r * theta_u * theta_v``."""
    num_users = topic.shape[0]
    num_topics = int(topic.max()) + 1
    order = np.argsort(topic, kind="stable")
    cum_sorted = np.cumsum(theta[order])
    total = np.bincount(topic, weights=theta, minlength=num_topics)
    start = np.concatenate([[0.0], np.cumsum(total)[:-1]])
    cum_all = np.cumsum(theta)
    keys = np.zeros(0, dtype=np.int64)
    for _ in range(max_rounds):
        missing = want - keys.size
        if missing <= 0:
            break
        batch = int(missing * 1.3) + 16
        u = np.minimum(np.searchsorted(cum_all, rng.random(batch) * cum_all[-1], side="right"), num_users - 1)
        if same:
            v_topic = topic[u]
        else:
            weights = np.broadcast_to(total, (batch, num_topics)).copy()
            weights[np.arange(batch), topic[u]] = 0.0
            cum_w = np.cumsum(weights, axis=1)
            draw = rng.random(batch) * cum_w[:, -1]
            v_topic = np.minimum((cum_w < draw[:, None]).sum(axis=1), num_topics - 1)
            if secondary is not None and affinity > 0:
                v_topic = np.where(rng.random(batch) < affinity, secondary[u], v_topic)
        v = _sample_in_groups(v_topic, cum_sorted, order, start, total, rng)
        ok = u != v
        if saturation_rate > 0:
            x = saturation_rate * theta[u] * theta[v]
            ok &= rng.random(batch) * x < -np.expm1(-x)
        lo, hi = np.minimum(u[ok], v[ok]), np.maximum(u[ok], v[ok])
        new = lo * num_users + hi
        # Keep first occurrences in draw order, so the kept set does not depend on sorting.
        merged = np.concatenate([keys, new])
        _, first = np.unique(merged, return_index=True)
        keys = merged[np.sort(first)]
    if keys.size < want:
        raise ValueError(f"could not draw {want} distinct edges in {max_rounds} rounds; lower avg_degree")
    keys = keys[:want]
    return np.stack([keys // num_users, keys % num_users], axis=1)
