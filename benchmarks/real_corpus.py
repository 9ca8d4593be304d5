"""The real-text testbed: a corpus in the project's format built from real captions and real images.

The synthetic generator (corpus/synthetic) plants every property it tests. This script keeps the social part
generative but takes the content from two real, openly licensed collections that Debian ships:

* captions: WordNet 3.0 noun glosses (``apt-get install wordnet-base``: ``/usr/share/wordnet/data.noun``),
  grouped by lexicographer file (``noun.animal``, ``noun.food``, ...: the two-digit ``lex_filenum`` of each
  synset line, numbered as in WordNet's lexnames(5WN));
* images: Tux Paint's stamps (``apt-get install tuxpaint-stamps-default``: ``/usr/share/tuxpaint/stamps``),
  the PNG files of each category folder (SVG stamps and the pre-mirrored ``*_mirror.png`` copies skipped).

**Topics.** Each of the K topics (``TOPICS``, 8 by default) is one lexicographer file for its captions and one
or a few stamp categories for its images (e.g. ``animals`` = ``noun.animal`` + ``animals/``). A generic pool
that no topic owns (captions of ``noun.attribute``, ``noun.cognition``, ``noun.feeling``, ``noun.state``; the
``symbols`` and ``people`` stamps) stands for posts that say nothing about the user's interest.

**Users and posts.** Topic sizes are mildly unequal (weights ``1 / sqrt(rank + 1)``, exact counts by largest
remainder, so every topic has users). Each user has a secondary topic and a latent activity ``a ~ N(0, 1)``;
``no_post_share`` users post nothing, the others ``1 + Poisson((posts_per_user - 1) exp(0.5 a - 0.125))``
posts. A post is about the user's topic, or with ``off_topic_share`` about another one (the secondary topic
with ``secondary_share``, else a random one). A user is *text-generic* with ``generic_text_user_share`` and
then ``generic_rate`` of their captions come from the generic pool (``generic_background_rate`` for everyone
else); image-generic users likewise, drawn independently, so for some users only one modality tells the
topic. A caption is the gloss of a random synset of the post's lexicographer file (quotes removed), prefixed
with one of its lemmas (``"koala: sluggish tailless Australian ..."``) with ``lemma_share``;
``empty_text_share`` of the captions are empty and ``no_image_share`` of the posts have no image. Every post
gets its own image file: a random stamp of the post's pool composited on a random light background
(independent of the topic), scaled to 60-100% of ``image_size``, at a random offset, mirrored with probability
1/2. File names say nothing about the topic.

**Graph.** The project's degree-corrected stochastic block model (``corpus.synthetic.graph.dcsbm_edges``):
``avg_degree * N / 2`` distinct edges whose endpoints are drawn proportionally to a Pareto propensity (tail
exponent ``degree_exponent``) times ``exp(0.4 a)``, so active users have more links; exactly
``round(homophily * E)`` edges join users of the same topic (default 0.55: far from ceiling), and a
cross-topic edge goes to the first user's secondary topic with ``cross_edge_affinity``.

**fans and statistics.** ``log fans = 4 + 0.6 z(log(1 + degree)) + 0.4 a + pop[topic] + 0.5 eps``, with a
per-topic popularity ``pop ~ N(0, 0.5^2)``: degree, activity and topic each explain part of it, noise the
rest. The numeric columns of ``users.csv`` are ``posts`` (count), ``mean_caption_words``, ``image_share``,
``posts_per_week = exp(0.6 a + 0.4 eps)``, ``account_age_days = 365 exp(0.3 a + 0.5 eps)`` and
``likes_per_post = exp(1 + 0.3 z(log(1 + fans)) + 0.8 eps)``: related to activity and fans, barely to the
topic (only through caption lengths, which differ between lexicographer files).

Same seed, same installed packages: byte-identical files. The script loads its output with
``corpus.load_corpus`` (and fails if the reader refuses it), writes ``_real_corpus.json`` (knobs, topic map,
sources, pool sizes, counts, measured homophily; the reader ignores it) and, with ``--probe``, prints how
separable the topics are from text alone (logistic regression on per-user TF-IDF of the captions), from
images alone (the generator probes' colour + spectrum features) and from X, 5-fold cross-validated macro-F1.
``--overwrite`` replaces the files it writes (``users.csv``, ``posts.jsonl``, ``edges.csv``, ``images/``,
``_real_corpus.json``). Measured figures: docs/bridge.md, "The real-text testbed".

    python benchmarks/real_corpus.py --out runs/real_corpus --users 1000 --seed 0 [--probe]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corpus import Corpus, load_corpus  # noqa: E402
from corpus.synthetic.graph import dcsbm_edges, pareto_theta  # noqa: E402

WORDNET_DIR = Path("/usr/share/wordnet")
STAMPS_DIR = Path("/usr/share/tuxpaint/stamps")
# WordNet 3.0 lexicographer file numbers of the noun files (lexnames(5WN)).
NOUN_LEXFILES = {
    "noun.Tops": 3,
    "noun.act": 4,
    "noun.animal": 5,
    "noun.artifact": 6,
    "noun.attribute": 7,
    "noun.body": 8,
    "noun.cognition": 9,
    "noun.communication": 10,
    "noun.event": 11,
    "noun.feeling": 12,
    "noun.food": 13,
    "noun.group": 14,
    "noun.location": 15,
    "noun.motive": 16,
    "noun.object": 17,
    "noun.person": 18,
    "noun.phenomenon": 19,
    "noun.plant": 20,
    "noun.possession": 21,
    "noun.process": 22,
    "noun.quantity": 23,
    "noun.relation": 24,
    "noun.shape": 25,
    "noun.state": 26,
    "noun.substance": 27,
    "noun.time": 28,
}
OUTPUTS = ("users.csv", "posts.jsonl", "edges.csv", "images", "_real_corpus.json")
SIDE_FILE = "_real_corpus.json"
STAT_NAMES = (
    "posts",
    "mean_caption_words",
    "image_share",
    "posts_per_week",
    "account_age_days",
    "likes_per_post",
)


@dataclass(frozen=True)
class Topic:
    """One topic: its label, the WordNet lexicographer file of its captions, the stamp folders of its
    images."""

    name: str
    lexfile: str
    stamps: tuple[str, ...]


TOPICS = (
    Topic("animals", "noun.animal", ("animals",)),
    Topic("food", "noun.food", ("food",)),
    Topic("plants", "noun.plant", ("plants",)),
    Topic("things", "noun.artifact", ("household", "clothes", "vehicles")),
    Topic("town", "noun.location", ("town",)),
    Topic("sky", "noun.object", ("space", "naturalforces")),
    Topic("sports", "noun.act", ("sports", "hobbies")),
    Topic("seasons", "noun.time", ("seasonal",)),
)
GENERIC = Topic("generic", "", ("symbols", "people"))
GENERIC_LEXFILES = ("noun.attribute", "noun.cognition", "noun.feeling", "noun.state")


@dataclass(frozen=True)
class RealCorpusConfig:
    """Knobs of the testbed (module docstring); ``topics`` is the list of ``Topic`` used, in label order."""

    num_users: int = 1000
    seed: int = 0
    topics: tuple[Topic, ...] = TOPICS
    posts_per_user: float = 7.0
    no_post_share: float = 0.05
    off_topic_share: float = 0.25
    secondary_share: float = 0.7
    generic_text_user_share: float = 0.35
    generic_image_user_share: float = 0.35
    generic_rate: float = 0.8
    generic_background_rate: float = 0.1
    lemma_share: float = 0.5
    empty_text_share: float = 0.1
    no_image_share: float = 0.1
    image_size: int = 64
    avg_degree: float = 10.0
    homophily: float = 0.55
    degree_exponent: float = 2.5
    cross_edge_affinity: float = 0.5
    generic: Topic = field(default=GENERIC)


class SourceMissing(RuntimeError):
    """The WordNet or Tux Paint files are not there; the message says which package to install."""


def read_glosses(data_noun: Path, lexfiles: list[str]) -> dict[str, list[tuple[list[str], str]]]:
    """``{lexfile: [(lemmas, gloss), ...]}`` from a WordNet ``data.noun`` file, in file order.

    A synset line is ``offset lex_filenum ss_type w_cnt word lex_id [word lex_id ...] p_cnt ... | gloss``
    (wndb(5WN)); lines starting with two spaces are the licence header. ``w_cnt`` is hexadecimal.
    """
    if not data_noun.is_file():
        raise SourceMissing(
            f"WordNet data not found at {data_noun}: install it with `apt-get install wordnet-base` "
            "(or pass --wordnet-dir)"
        )
    wanted = {NOUN_LEXFILES[name]: name for name in lexfiles}
    out: dict[str, list[tuple[list[str], str]]] = {name: [] for name in lexfiles}
    with open(data_noun, encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("  ") or " | " not in line:
                continue
            head, gloss = line.split(" | ", 1)
            fields = head.split()
            name = wanted.get(int(fields[1]))
            if name is None:
                continue
            num_words = int(fields[3], 16)
            lemmas = [fields[4 + 2 * i].replace("_", " ") for i in range(num_words)]
            out[name].append((lemmas, " ".join(gloss.replace('"', "").split())))
    for name, synsets in out.items():
        if not synsets:
            raise SourceMissing(f"{data_noun} has no synset of lexicographer file {name}")
    return out


def list_stamps(stamps_dir: Path, categories: tuple[str, ...]) -> list[Path]:
    """Sorted PNG stamps under the given category folders (``*_mirror.png`` copies excluded)."""
    if not stamps_dir.is_dir():
        raise SourceMissing(
            f"Tux Paint stamps not found at {stamps_dir}: install them with "
            "`apt-get install tuxpaint-stamps-default` (or pass --stamps-dir)"
        )
    found = []
    for category in categories:
        pngs = [p for p in sorted((stamps_dir / category).rglob("*.png")) if not p.stem.endswith("_mirror")]
        if not pngs:
            raise SourceMissing(f"no PNG stamp in {stamps_dir / category}")
        found += pngs
    return found


def _topic_sizes(num_users: int, num_topics: int) -> np.ndarray:
    """int [K]: users per topic, proportional to 1 / sqrt(rank + 1) by largest remainder."""
    weights = 1.0 / np.sqrt(np.arange(1, num_topics + 1))
    raw = num_users * weights / weights.sum()
    sizes = np.floor(raw).astype(np.int64)
    sizes[np.argsort(-(raw - sizes), kind="stable")[: num_users - sizes.sum()]] += 1
    return sizes


def _users_and_posts(cfg: RealCorpusConfig, rng: np.random.Generator) -> dict:
    """Per-user topic, secondary topic, activity and generic flags; per-post topic and content choices.
    Topic index K stands for the generic pool in ``post_text_pool`` / ``post_image_pool``."""
    n, k = cfg.num_users, len(cfg.topics)
    topic = rng.permutation(np.repeat(np.arange(k), _topic_sizes(n, k)))
    secondary = (topic + rng.integers(1, k, n)) % k
    activity = rng.standard_normal(n)
    lam = (cfg.posts_per_user - 1.0) * np.exp(0.5 * activity - 0.125)
    num_posts = np.where(rng.random(n) < cfg.no_post_share, 0, 1 + rng.poisson(lam))
    post_user = np.repeat(np.arange(n), num_posts)
    p = post_user.size
    off = rng.random(p) < cfg.off_topic_share
    random_other = (topic[post_user] + rng.integers(1, k, p)) % k
    other = np.where(rng.random(p) < cfg.secondary_share, secondary[post_user], random_other)
    post_topic = np.where(off, other, topic[post_user])
    pools = {}
    for modality, share in (("text", cfg.generic_text_user_share), ("image", cfg.generic_image_user_share)):
        rate = np.where(rng.random(n) < share, cfg.generic_rate, cfg.generic_background_rate)
        pools[f"post_{modality}_pool"] = np.where(rng.random(p) < rate[post_user], k, post_topic)
    return dict(
        user_topic=topic,
        user_secondary=secondary,
        user_activity=activity,
        user_num_posts=num_posts,
        post_user=post_user,
        post_topic=post_topic,
        post_has_text=rng.random(p) >= cfg.empty_text_share,
        post_has_image=rng.random(p) >= cfg.no_image_share,
        **pools,
    )


def _captions(cfg: RealCorpusConfig, truth: dict, glosses: dict, rng: np.random.Generator) -> list[str]:
    pools = [glosses[t.lexfile] for t in cfg.topics] + [sum((glosses[g] for g in GENERIC_LEXFILES), [])]
    captions = []
    for pool_id, has_text in zip(truth["post_text_pool"].tolist(), truth["post_has_text"].tolist()):
        lemmas, gloss = pools[pool_id][int(rng.integers(len(pools[pool_id])))]
        with_lemma = rng.random() < cfg.lemma_share
        lemma = lemmas[int(rng.integers(len(lemmas)))]
        captions.append((f"{lemma}: {gloss}" if with_lemma else gloss) if has_text else "")
    return captions


def _render(cfg: RealCorpusConfig, truth: dict, stamps: list[list[Path]], out: Path, rng) -> list[str | None]:
    """Writes one PNG per post with an image; returns each post's relative image path (or None)."""
    from PIL import Image

    size = cfg.image_size
    fitted: dict[Path, Image.Image] = {}
    paths: list[str | None] = []
    for post, (pool_id, has_image) in enumerate(
        zip(truth["post_image_pool"].tolist(), truth["post_has_image"].tolist())
    ):
        source = stamps[pool_id][int(rng.integers(len(stamps[pool_id])))]
        background = tuple(int(c) for c in rng.integers(150, 256, 3))
        scale, flip, ox, oy = rng.uniform(0.6, 1.0), rng.random() < 0.5, rng.random(), rng.random()
        if not has_image:
            paths.append(None)
            continue
        if source not in fitted:
            with Image.open(source) as img:
                stamp = img.convert("RGBA")
            stamp.thumbnail((size, size), Image.Resampling.LANCZOS)
            fitted[source] = stamp
        stamp = fitted[source]
        w, h = max(1, round(stamp.width * scale)), max(1, round(stamp.height * scale))
        stamp = stamp.resize((w, h), Image.Resampling.LANCZOS)
        if flip:
            stamp = stamp.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        canvas = Image.new("RGB", (size, size), background)
        canvas.paste(stamp, (int(ox * (size - w)), int(oy * (size - h))), stamp)
        rel = f"images/{post // 1000:04d}/p{post:07d}.png"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        canvas.save(out / rel, format="PNG")
        paths.append(rel)
    return paths


def _fans_and_stats(cfg: RealCorpusConfig, truth: dict, edges: np.ndarray, captions: list[str], rng) -> dict:
    def z(x: np.ndarray) -> np.ndarray:
        return (x - x.mean()) / (x.std() + 1e-12)

    n, a = cfg.num_users, truth["user_activity"]
    degree = np.bincount(edges.ravel(), minlength=n)
    popularity = rng.normal(0.0, 0.5, len(cfg.topics))
    log_fans = 4.0 + 0.6 * z(np.log1p(degree)) + 0.4 * a + popularity[truth["user_topic"]]
    log_fans += 0.5 * rng.standard_normal(n)
    fans = np.round(np.exp(log_fans)).astype(np.int64)
    count = np.maximum(truth["user_num_posts"], 1)
    words = np.array([len(c.split()) for c in captions], dtype=np.float64)
    stats = np.column_stack(
        [
            truth["user_num_posts"],
            np.bincount(truth["post_user"], weights=words, minlength=n) / count,
            np.bincount(truth["post_user"], weights=truth["post_has_image"], minlength=n) / count,
            np.exp(0.6 * a + 0.4 * rng.standard_normal(n)),
            365.0 * np.exp(0.3 * a + 0.5 * rng.standard_normal(n)),
            np.exp(1.0 + 0.3 * z(np.log1p(fans)) + 0.8 * rng.standard_normal(n)),
        ]
    )
    return dict(
        user_degree=degree, user_fans=fans, user_stats=np.round(stats, 4), topic_popularity=popularity
    )


def _write(
    out: Path, cfg: RealCorpusConfig, truth: dict, captions: list, image_paths: list, edges, rng
) -> None:
    user_ids = [f"u{i:05d}" for i in range(cfg.num_users)]
    labels = [cfg.topics[t].name for t in truth["user_topic"].tolist()]
    rows = [",".join(["user_id", "label", "fans", *STAT_NAMES])]
    for u, label, fans, stats in zip(
        user_ids, labels, truth["user_fans"].tolist(), truth["user_stats"].tolist()
    ):
        rows.append(",".join([u, label, str(fans), *(f"{v:g}" for v in stats)]))
    (out / "users.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    with open(out / "posts.jsonl", "w", encoding="utf-8", newline="\n") as fh:
        for j, (u, text, image) in enumerate(zip(truth["post_user"].tolist(), captions, image_paths)):
            post = {"post_id": f"p{j:07d}", "user_id": user_ids[u], "text": text, "image": image}
            fh.write(json.dumps(post) + "\n")
    flip = rng.random(edges.shape[0]) < 0.5
    order = rng.permutation(edges.shape[0])
    src, dst = (
        np.where(flip, edges[:, 1], edges[:, 0])[order],
        np.where(flip, edges[:, 0], edges[:, 1])[order],
    )
    lines = ["src,dst"] + [f"{user_ids[a]},{user_ids[b]}" for a, b in zip(src.tolist(), dst.tolist())]
    (out / "edges.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def homophily(corpus: Corpus) -> float:
    """Share of the corpus's edges whose two users have the same label."""
    labels = np.asarray(corpus.labels)
    return float((labels[corpus.edges[:, 0]] == labels[corpus.edges[:, 1]]).mean())


def build(
    out_dir: str | Path,
    cfg: RealCorpusConfig | None = None,
    *,
    wordnet_dir: str | Path = WORDNET_DIR,
    stamps_dir: str | Path = STAMPS_DIR,
    overwrite: bool = False,
) -> Corpus:
    """Write the testbed corpus to ``out_dir``, load it with ``corpus.load_corpus`` and return it.

    Raises ``SourceMissing`` (message names the package) when WordNet or the stamps are absent, and
    ``FileExistsError`` when ``out_dir`` already holds a corpus and ``overwrite`` is False.
    """
    cfg = cfg or RealCorpusConfig()
    sizes = _topic_sizes(cfg.num_users, len(cfg.topics))
    if len(cfg.topics) < 2 or sizes.min() < 5:
        raise ValueError(
            f"need at least 2 topics and 5 users in the smallest one; {cfg.num_users} users "
            f"give {sizes.tolist()} over {len(cfg.topics)} topics"
        )
    out = Path(out_dir)
    glosses = read_glosses(
        Path(wordnet_dir) / "data.noun", [t.lexfile for t in cfg.topics] + list(GENERIC_LEXFILES)
    )
    stamps = [list_stamps(Path(stamps_dir), t.stamps) for t in (*cfg.topics, cfg.generic)]
    existing = [name for name in OUTPUTS if (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out} already holds {', '.join(existing)}; pass --overwrite")
    for name in existing:
        shutil.rmtree(out / name) if (out / name).is_dir() else (out / name).unlink()
    out.mkdir(parents=True, exist_ok=True)

    rng_users, rng_text, rng_images, rng_graph, rng_stats = (
        np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(5)
    )
    truth = _users_and_posts(cfg, rng_users)
    captions = _captions(cfg, truth, glosses, rng_text)
    image_paths = _render(cfg, truth, stamps, out, rng_images)
    theta = pareto_theta(cfg.num_users, cfg.degree_exponent, rng_graph) * np.exp(0.4 * truth["user_activity"])
    num_edges = int(round(cfg.avg_degree * cfg.num_users / 2))
    topic, secondary = truth["user_topic"], truth["user_secondary"]
    edges = dcsbm_edges(topic, theta, num_edges, cfg.homophily, rng_graph, secondary, cfg.cross_edge_affinity)
    truth.update(_fans_and_stats(cfg, truth, edges, captions, rng_stats))
    _write(out, cfg, truth, captions, image_paths, edges, rng_graph)

    corpus = load_corpus(out, progress=False)
    off_topic = truth["post_topic"] != topic[truth["post_user"]]
    pool_sizes = {
        t.name: {"glosses": len(glosses[t.lexfile]), "stamps": len(s)} for t, s in zip(cfg.topics, stamps)
    }
    pool_sizes["generic"] = {
        "glosses": sum(len(glosses[g]) for g in GENERIC_LEXFILES),
        "stamps": len(stamps[-1]),
    }
    side = {
        "config": {**asdict(cfg), "topics": [asdict(t) for t in cfg.topics], "generic": asdict(cfg.generic)},
        "generic_lexfiles": list(GENERIC_LEXFILES),
        "sources": {"wordnet_data_noun": str(Path(wordnet_dir) / "data.noun"), "stamps_dir": str(stamps_dir)},
        "pool_sizes": pool_sizes,
        "users": corpus.num_users,
        "posts": corpus.num_posts,
        "edges": corpus.num_edges,
        "images": sum(p is not None for p in image_paths),
        "homophily": round(homophily(corpus), 4),
        "off_topic_posts": round(float(off_topic.mean()), 4),
    }
    (out / SIDE_FILE).write_text(json.dumps(side, indent=2) + "\n", encoding="utf-8")
    return corpus


def probe(corpus: Corpus, seed: int = 0) -> dict[str, float]:
    """5-fold cross-validated topic macro-F1 of a logistic regression on per-user TF-IDF of all captions
    (``text``), on the colour + spectrum image features of corpus/synthetic/probes.py (``image``), on both
    (``image+text``), and on the statistics X (``X``)."""
    from scipy.sparse import csr_matrix, hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from corpus.synthetic.probes import user_image_features

    labels = np.asarray(corpus.labels)
    docs = [
        " ".join(corpus.post_text[corpus.post_offsets[u] : corpus.post_offsets[u + 1]])
        for u in range(corpus.num_users)
    ]
    text = TfidfVectorizer(min_df=2, sublinear_tf=True).fit_transform(docs)
    image = StandardScaler().fit_transform(user_image_features(corpus))
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    inputs = {"text": text, "image": image, "image+text": hstack([text, csr_matrix(image * 0.1)]).tocsr()}
    scores = {}
    for name, x in inputs.items():
        model = LogisticRegression(C=10.0 if name != "image" else 0.1, max_iter=3000)
        scores[name] = float(f1_score(labels, cross_val_predict(model, x, labels, cv=folds), average="macro"))
    stats_model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    scores["X"] = float(
        f1_score(labels, cross_val_predict(stats_model, corpus.features, labels, cv=folds), average="macro")
    )
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output corpus folder")
    parser.add_argument("--users", type=int, default=1000, help="number of users (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--homophily",
        type=float,
        default=RealCorpusConfig.homophily,
        help="share of same-topic edges (default %(default)s)",
    )
    parser.add_argument("--wordnet-dir", default=str(WORDNET_DIR), help="folder with WordNet's data.noun")
    parser.add_argument("--stamps-dir", default=str(STAMPS_DIR), help="Tux Paint's stamps folder")
    parser.add_argument("--overwrite", action="store_true", help="replace a corpus already in --out")
    parser.add_argument("--probe", action="store_true", help="print text-only / image-only separability")
    args = parser.parse_args(argv)
    cfg = RealCorpusConfig(num_users=args.users, seed=args.seed, homophily=args.homophily)
    try:
        corpus = build(
            args.out, cfg, wordnet_dir=args.wordnet_dir, stamps_dir=args.stamps_dir, overwrite=args.overwrite
        )
    except (SourceMissing, FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    side = json.loads((Path(args.out) / SIDE_FILE).read_text())
    print(
        f"{args.out}: {side['users']} users, {side['posts']} posts, {side['images']} images, "
        f"{side['edges']} edges, {len(cfg.topics)} topics, homophily {side['homophily']:.3f}, "
        f"off-topic posts {side['off_topic_posts']:.3f}"
    )
    if args.probe:
        scores = probe(corpus, seed=args.seed)
        chance = 1.0 / len(cfg.topics)
        print(
            "topic macro-F1 (5-fold CV, logistic regression; chance about "
            f"{chance:.3f}): " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items())
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
