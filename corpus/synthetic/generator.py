"""``generate``: write a synthetic corpus with planted structure (design: docs/corpus.md).

Design 'shared' (default): a post's image and caption both show the post's topic, but each modality confuses
some topic pairs: topics 2i and 2i+1 share an image pattern (told apart by the palette), topics sharing a caption
vocabulary family are paired differently (told apart by a few specific words), and some users' images or
captions do not show the difference at all. Design 'factorised' (the earlier one): topic k = (visual factor
k // T, textual factor k % T), the image shows only the first and the caption only the second. Each user also
has a secondary-interest topic: most off-topic posts are about it and most cross-topic edges go to users of it.
The ground truth goes to ``_truth.npz`` (outside the documented format; the reader ignores it).
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import warnings
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from corpus.ownership import remove_generated
from corpus.synthetic.config import SyntheticConfig
from corpus.synthetic.graph import dcsbm_edges, pareto_theta
from corpus.synthetic.render import render_chunk
from corpus.synthetic.text import make_captions

TRUTH_FILE = "_truth.npz"
CONFIG_FILE = "_synthetic_config.json"
OUTPUTS = ("users.csv", "posts.jsonl", "edges.csv", "images", TRUTH_FILE, CONFIG_FILE)
STAT_NAMES = (
    "posts_per_week",
    "likes_per_post",
    "comments_per_post",
    "account_age_days",
    "following",
    "hashtags_per_post",
    "video_share",
    "reply_rate",
)
QUALITY_BINS = 4
CHUNK = 1024  # images per render task; fixed so the bytes do not depend on the number of workers
IN_PROCESS_MAX = 4096  # fewer images than this render in-process (worker start-up would dominate)
_IMAGE_STREAM = 0x1A6E


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _zscore(x: np.ndarray) -> np.ndarray:
    std = x.std()
    return (x - x.mean()) / std if std > 0 else np.zeros_like(x)


def generate(
    out_dir: str | Path,
    cfg: SyntheticConfig | None = None,
    *,
    overwrite: bool = False,
    progress: bool | None = None,
) -> Path:
    """Write a synthetic corpus to ``out_dir`` and return the folder.

    Args:
        out_dir: target folder; created if needed. If it already holds generator outputs, ``overwrite``
            must be True (only the generator's own files are removed).
        cfg: knobs (``SyntheticConfig()`` when None).
        progress: progress bar while rendering (None: only for large corpora on a terminal).
    """
    cfg = cfg or SyntheticConfig()
    cfg.check()
    out = Path(out_dir)
    existing = [name for name in OUTPUTS if (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out} already holds {', '.join(existing)}; pass overwrite=True (--overwrite)")
    if existing:
        remove_generated(out)  # only files named like ours; refuses if anything else is there
    out.mkdir(parents=True, exist_ok=True)

    rng_users, rng_posts, rng_text, rng_graph, rng_stats = (
        np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(5)
    )
    truth = _users(cfg, rng_users)
    truth.update(_posts(cfg, truth, rng_posts))
    specific_share = cfg.specific_word_share if cfg.design == "shared" else 0.0
    captions = make_captions(
        truth["topic_text"][truth["post_topic"]],
        truth["post_text_cue"],
        truth["post_quality"],
        truth["post_has_text"],
        cfg.caption_words,
        cfg.topic_word_share,
        specific_share,
        rng_text,
    )
    theta = pareto_theta(cfg.num_users, cfg.degree_exponent, rng_graph)
    num_edges = _feasible_edges(cfg, truth["user_topic"])
    topic, secondary = truth["user_topic"], truth["user_secondary"]
    edges = (
        dcsbm_edges(topic, theta, num_edges, cfg.homophily, rng_graph, secondary, cfg.cross_edge_affinity)
        if num_edges
        else np.zeros((0, 2), np.int64)
    )
    a, b = edges[:, 0], edges[:, 1]
    truth.update(
        user_theta=theta,
        edges=edges,
        edge_same_topic=topic[a] == topic[b],
        edge_secondary=(topic[a] != topic[b]) & ((secondary[a] == topic[b]) | (secondary[b] == topic[a])),
    )
    truth.update(_stats_and_fans(cfg, truth, edges, rng_stats))

    user_ids = [f"u{i:0{max(5, len(str(cfg.num_users - 1)))}d}" for i in range(cfg.num_users)]
    image_paths = _image_paths(truth["image_visual"].shape[0])
    _write_users(out / "users.csv", cfg, user_ids, truth, rng_stats)
    _write_posts(out / "posts.jsonl", user_ids, truth, captions, image_paths)
    _write_edges(out / "edges.csv", user_ids, edges, rng_graph)
    _render_all(out, cfg, image_paths, truth, progress)
    truth["user_id"] = np.asarray(user_ids)  # keys the per-user truth by id: users.csv rows may be reordered
    _write_npz(out / TRUTH_FILE, truth)
    knobs = {k: v for k, v in asdict(cfg).items() if k != "workers"}  # workers do not change the bytes
    (out / CONFIG_FILE).write_text(json.dumps(knobs, indent=2, sort_keys=True) + "\n")
    return out


def _feasible_edges(cfg: SyntheticConfig, topic: np.ndarray) -> int:
    """``num_users * avg_degree / 2``, lowered (with a warning) when that would fill more than 70% of the
    same-topic or cross-topic user pairs, which only happens for tiny corpora."""
    wanted = int(round(cfg.num_users * cfg.avg_degree / 2))
    sizes = np.bincount(topic, minlength=cfg.num_topics)
    same_pairs = int((sizes * (sizes - 1) // 2).sum())
    cross_pairs = cfg.num_users * (cfg.num_users - 1) // 2 - same_pairs
    limit = float("inf")
    if cfg.homophily > 0:
        limit = min(limit, 0.7 * same_pairs / cfg.homophily)
    if cfg.homophily < 1:
        limit = min(limit, 0.7 * cross_pairs / (1 - cfg.homophily))
    if wanted > limit:
        warnings.warn(
            f"avg_degree {cfg.avg_degree} is too dense for {cfg.num_users} users at homophily {cfg.homophily}; "
            f"writing {int(limit)} edges instead of {wanted}",
            stacklevel=3,
        )
        return int(limit)
    return wanted


def _users(cfg: SyntheticConfig, rng: np.random.Generator) -> dict:
    k = np.arange(cfg.num_topics)
    topic = rng.permutation(np.arange(cfg.num_users) % cfg.num_topics)  # balanced classes
    n = 1 + rng.poisson(rng.lognormal(np.log(max(cfg.posts_per_user - 1, 1e-3)) - 0.245, 0.7, cfg.num_users))
    kind = rng.random(cfg.num_users)
    no_post = kind < cfg.no_post_share
    few = ~no_post & (kind < cfg.no_post_share + cfg.few_post_share)
    n = np.where(no_post, 0, np.where(few, rng.integers(1, 3, cfg.num_users), n))
    secondary = (topic + 1 + rng.integers(0, max(cfg.num_topics - 1, 1), cfg.num_users)) % cfg.num_topics
    image_ambiguous = rng.random(cfg.num_users) < cfg.image_ambiguous_share
    text_ambiguous = rng.random(cfg.num_users) < cfg.text_ambiguous_share
    if cfg.design == "factorised":
        visual, textual = k // cfg.num_text_factors, k % cfg.num_text_factors
        image_ambiguous[:] = text_ambiguous[:] = False
    else:
        # Image twins {2i, 2i+1} and caption twins {2i+1, 2i+2 mod K} differ, so (image family, caption
        # family) names the topic while each alone leaves a pair.
        visual, textual = k // 2, ((k + 1) % cfg.num_topics) // 2
    return {
        "topic_visual": visual,
        "topic_text": textual,
        "user_topic": topic,
        "user_secondary": secondary,
        "user_image_ambiguous": image_ambiguous,
        "user_text_ambiguous": text_ambiguous,
        "user_quality": rng.normal(size=cfg.num_users),
        "user_activity": rng.normal(size=cfg.num_users),
        "user_num_posts": n.astype(np.int64),
    }


def _random_member(family: np.ndarray, families: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each entry of ``family``, a uniformly random topic k with ``families[k] == family``."""
    order = np.argsort(families, kind="stable")
    counts = np.bincount(families)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pick = (rng.random(family.size) * counts[family]).astype(np.int64)
    return order[starts[family] + pick]


def _posts(cfg: SyntheticConfig, truth: dict, rng: np.random.Generator) -> dict:
    k = cfg.num_topics
    post_user = np.repeat(np.arange(cfg.num_users), truth["user_num_posts"])
    p = post_user.size
    own = truth["user_topic"][post_user]
    off = (rng.random(p) < cfg.off_topic_share) if k > 1 else np.zeros(p, dtype=bool)
    other = (own + 1 + rng.integers(0, max(k - 1, 1), p)) % k
    other = np.where(rng.random(p) < cfg.secondary_share, truth["user_secondary"][post_user], other)
    post_topic = np.where(off, other, own)
    # The cue that tells a topic from its twin follows the post's topic, or a random twin for ambiguous users.
    visual_twin = _random_member(truth["topic_visual"][post_topic], truth["topic_visual"], rng)
    text_twin = _random_member(truth["topic_text"][post_topic], truth["topic_text"], rng)
    image_cue = np.where(truth["user_image_ambiguous"][post_user], visual_twin, post_topic)
    text_cue = np.where(truth["user_text_ambiguous"][post_user], text_twin, post_topic)
    quality = _sigmoid(truth["user_quality"][post_user] + 0.3 * rng.normal(size=p))
    has_image = rng.random(p) >= cfg.no_image_share
    has_text = rng.random(p) >= cfg.empty_text_share
    visual = truth["topic_visual"][post_topic]
    shared = cfg.design == "shared"
    palette = image_cue % 2 if shared else np.full(p, -1, dtype=np.int64)
    if shared:  # a family with one topic (odd K) has no twin to tell apart: random palette
        single = np.bincount(truth["topic_visual"])[visual] == 1
        palette = np.where(single, rng.integers(0, 2, p), palette)
    image_id = np.full(p, -1, dtype=np.int64)
    if cfg.image_pool == 0:
        image_id[has_image] = np.arange(int(has_image.sum()))
        image_visual, image_palette, image_quality = visual[has_image], palette[has_image], quality[has_image]
    else:
        palettes = 2 if shared else 1
        cells = cfg.num_image_families * palettes * QUALITY_BINS
        pool = np.arange(cfg.image_pool)
        image_visual = (pool % cells) // (palettes * QUALITY_BINS)
        image_palette = ((pool % cells) // QUALITY_BINS) % palettes if shared else np.full(pool.size, -1)
        image_quality = ((pool % cells) % QUALITY_BINS + 0.5) / QUALITY_BINS
        q_bin = np.minimum((quality * QUALITY_BINS).astype(np.int64), QUALITY_BINS - 1)
        cell = (visual * palettes + np.maximum(palette, 0)) * QUALITY_BINS + q_bin
        per_cell = (cfg.image_pool - cell + cells - 1) // cells  # pool images i with i % cells == cell
        pick = cell + cells * (rng.random(p) * per_cell).astype(np.int64)
        image_id[has_image] = pick[has_image]
    return {
        "post_user": post_user,
        "post_topic": post_topic,
        "post_off_topic": off,
        "post_quality": quality,
        "post_has_image": has_image,
        "post_has_text": has_text,
        "post_image_id": image_id,
        "post_image_cue": image_cue,
        "post_text_cue": text_cue,
        "post_palette": palette.astype(np.int64),
        "image_visual": image_visual.astype(np.int64),
        "image_palette": image_palette.astype(np.int64),
        "image_quality": image_quality,
    }


def _stats_and_fans(cfg: SyntheticConfig, truth: dict, edges: np.ndarray, rng: np.random.Generator) -> dict:
    n = cfg.num_users
    degree = np.bincount(edges.ravel(), minlength=n)
    log_degree = _zscore(np.log1p(degree))
    nbr_sum = np.bincount(edges[:, 0], weights=log_degree[edges[:, 1]], minlength=n) + np.bincount(
        edges[:, 1], weights=log_degree[edges[:, 0]], minlength=n
    )
    neighbour = _zscore(nbr_sum / np.maximum(degree, 1))
    activity, quality = truth["user_activity"], truth["user_quality"]
    topic_effect = rng.normal(size=(cfg.num_stats, cfg.num_topics))
    loads = rng.uniform(0.4, 1.0, cfg.num_stats) * rng.choice([-1.0, 1.0], cfg.num_stats)
    z = (
        loads[:, None] * activity
        + cfg.stats_topic_effect * topic_effect[:, truth["user_topic"]]
        + 0.6 * rng.normal(size=(cfg.num_stats, n))
    )
    stats = np.round(np.exp(rng.uniform(0.0, 4.0, (cfg.num_stats, 1)) + 0.5 * z), 2).T  # [N, F], positive
    components = {
        "activity": 0.6 * activity,
        "quality": 0.6 * quality,
        "degree": 0.5 * log_degree,
        "neighbour": 0.4 * neighbour,
        "noise": 0.4 * rng.normal(size=n),
    }
    score = sum(components.values())
    fans = np.round(np.exp(4.0 + score)).astype(np.int64)
    return {
        "user_stats": stats,
        "user_degree": degree,
        "user_fans": fans,
        "fans_score": score,
        **{f"fans_{name}": value for name, value in components.items()},
    }


def _image_paths(num_images: int) -> list[str]:
    width = max(7, len(str(max(num_images - 1, 0))))
    return [f"images/{i // 1000:0{width - 3}d}/{i:0{width}d}.png" for i in range(num_images)]


def _write_users(path: Path, cfg: SyntheticConfig, user_ids: list[str], truth: dict, rng) -> None:
    names = [STAT_NAMES[j] if j < len(STAT_NAMES) else f"stat_{j}" for j in range(cfg.num_stats)]
    label_width = len(str(cfg.num_topics - 1))
    labels = np.array([f"topic_{k:0{label_width}d}" for k in range(cfg.num_topics)])[truth["user_topic"]]
    labels = np.where(rng.random(cfg.num_users) < cfg.unlabelled_share, "", labels)
    fans = truth["user_fans"].astype(str)
    fans = np.where(rng.random(cfg.num_users) < cfg.fans_unknown_share, "", fans)
    stats = [[f"{v:g}" for v in row] for row in truth["user_stats"].tolist()]
    lines = [",".join(["user_id", "label", "fans", *names])]
    lines += [
        ",".join([u, lab, fan, *row])
        for u, lab, fan, row in zip(user_ids, labels.tolist(), fans.tolist(), stats)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_posts(
    path: Path, user_ids: list[str], truth: dict, captions: list[str], image_paths: list[str]
) -> None:
    width = max(6, len(str(len(captions) - 1)))
    dumps = json.dumps
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for j, (u, text, img) in enumerate(
            zip(truth["post_user"].tolist(), captions, truth["post_image_id"].tolist())
        ):
            image = "null" if img < 0 else f'"{image_paths[img]}"'
            fh.write(
                f'{{"post_id": "p{j:0{width}d}", "user_id": "{user_ids[u]}", "text": {dumps(text)}, "image": {image}}}\n'
            )


def _write_edges(path: Path, user_ids: list[str], edges: np.ndarray, rng) -> None:
    """Edges in random order and random direction (the reader canonicalises them)."""
    order = rng.permutation(edges.shape[0])
    flip = rng.random(edges.shape[0]) < 0.5
    src = np.where(flip, edges[order, 1], edges[order, 0]).tolist()
    dst = np.where(flip, edges[order, 0], edges[order, 1]).tolist()
    lines = ["src,dst"] + [f"{user_ids[a]},{user_ids[b]}" for a, b in zip(src, dst)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _render_all(
    out: Path, cfg: SyntheticConfig, image_paths: list[str], truth: dict, progress: bool | None
) -> int:
    visual, palette, quality = truth["image_visual"], truth["image_palette"], truth["image_quality"]
    tasks = [
        (
            str(out),
            image_paths[s : s + CHUNK],
            visual[s : s + CHUNK],
            palette[s : s + CHUNK],
            quality[s : s + CHUNK],
            (cfg.seed, _IMAGE_STREAM, s // CHUNK),
            cfg.image_size,
            cfg.image_noise,
        )
        for s in range(0, len(image_paths), CHUNK)
    ]
    workers = cfg.workers or os.cpu_count() or 1
    disable = (None if len(image_paths) > IN_PROCESS_MAX else True) if progress is None else not progress
    bar = tqdm(total=len(image_paths), desc="rendering images", unit="img", disable=disable)
    written = 0
    if workers == 1 or len(image_paths) <= IN_PROCESS_MAX:
        for task in tasks:
            written += render_chunk(task)
            bar.update(len(task[1]))
    else:
        # spawn: safe even when the parent has threads (torch, tokenizers) loaded.
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for task, nbytes in zip(tasks, pool.imap(render_chunk, tasks)):
                written += nbytes
                bar.update(len(task[1]))
    bar.close()
    return written


def _write_npz(path: Path, arrays: dict) -> None:
    """Like ``np.savez`` but byte-deterministic (fixed zip timestamps)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())
