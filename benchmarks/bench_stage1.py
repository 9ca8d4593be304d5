"""Stage-1 benchmarks on a synthetic corpus (default preset unless flags say otherwise).

``throughput``: training posts/s under Lightning and under a plain PyTorch loop running the same steps
(same system, batches, optimizer and schedule) in this process, their ratio (Lightning's overhead), and
export posts/s with a cold and a warm image cache.

``probe``: a logistic-regression topic probe (train split -> test split) on exported user embeddings
[R^I || R^T], before training (random init) and after ``run_stage1``. Only this script reads labels and
splits; stage 1 never does.

``negatives``: the cost of one training step's negative sampling against the number of corpus edges
(10^4, 10^5, 10^6 by default, users = edges / 16.7 as in the paper), for the sampler before issue 23
(``torch.isin`` over every edge key, and the in-batch keys built by a pass over every edge) and the current
one (binary search in the sorted keys), and the training posts/s each gives: the model step and the
collation of everything else are timed once on a small generated corpus (``--users``, plain loop, they do
not depend on the edges), and each size's sampling time is added to them.

    python benchmarks/bench_stage1.py throughput --users 2000 --steps 60
    python benchmarks/bench_stage1.py probe --users 2000
``states``: the caption states of the bridge's default text side (``bridge/presets/default.json``: MiniLM-L6
mean-pooled, every layer frozen; ``--config`` replaces it), computed once as a run does: the time, posts/s, the
memory the cache holds (one pooled row per post) against what one row per token would hold (the layout of a
text encoder with tuned layers, computed from the token count), and the process's peak resident set before and
after (its growth is what the computation needs beyond the model). ``--precisions 32 bf16`` times the frozen
layers in float32 and under bfloat16 autocast (``model.text_frozen_precision``) one after the other, and prints
the ratio and how far the bf16 caption states are from float32's.

``chunks``: the float32 caption work of the same text side as before 2026-12-07 (night) against what the CPU runs
now, in turns in this process: the caption states (the export's batches over captions sorted by characters, against
chunks of ``CAPTION_CPU_CHUNK`` over captions sorted by token count, each tokenized on its own; chunks over the
character order in between), and the embeddings of captions without states (a new corpus's, through
``bridge.embed``: one pass over each batch, against length-sorted chunks of it cut to their tokens). The median time
of each, the ratio to before, and how far each result is from before's.

``export``: the export of the same default text side (every post encoded, pooled per user), which reads each
caption's row from the pooled caption states, against the export before 2026-12-06 (night), which tokenized every
caption again to check its token count against the cache: both in this process, taken in turns after one warm-up
export (the image cache then warm in both), with the ratio and whether the embeddings are equal. The caption states
are loaded from ``--states-dir`` when a run (or an earlier call) left them there, else computed once first.

    nice -n 10 python benchmarks/bench_stage1.py negatives --users 300 --steps 20
    python benchmarks/bench_stage1.py states --users 5000
    python benchmarks/bench_stage1.py states --users 2000 --precisions 32 bf16
    python benchmarks/bench_stage1.py chunks --corpus DIR --repeats 3
    python benchmarks/bench_stage1.py export --corpus DIR --states-dir RUN/text_states --precisions bf16
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corpus import load_corpus  # noqa: E402
from corpus.synthetic import SyntheticConfig, generate  # noqa: E402
from mmga_common.config import deep_merge  # noqa: E402
from stage1_encoders import Stage1Config, run_stage1  # noqa: E402
from stage1_encoders.data import sample_negative_pairs  # noqa: E402
from stage1_encoders.export import export_user_embeddings  # noqa: E402
from stage1_encoders.parts import build_parts  # noqa: E402


def corpus_dir(args, work: Path) -> Path:
    if args.corpus is not None:
        return Path(args.corpus)
    return generate(
        work / f"corpus_{args.users}_{args.seed}", SyntheticConfig(num_users=args.users, seed=args.seed)
    )


def make_config(corpus: Path, work: Path, args, **trainer) -> Stage1Config:
    data = {
        "corpus": str(corpus),
        "cache_dir": str(work / "cache"),
        "out_dir": str(work / "out"),
        "seed": args.seed,
        "trainer": {"enable_progress_bar": False, **trainer},
    }
    if args.config is not None:
        data = deep_merge(json.loads(Path(args.config).read_text()), data)
    return Stage1Config.from_dict(data)


def batches(parts, steps: int) -> list[dict]:
    """The first ``steps`` batches of the training loader (materialised so both loops see the same data)."""
    out = []
    while len(out) < steps:
        for batch in parts.datamodule.train_dataloader():
            out.append(batch)
            if len(out) == steps:
                break
    return out


def plain_loop(parts, data: list[dict], clip: float | None) -> float:
    system = parts.system
    optimizer, scheduler = system.build_optimizer(len(data))
    system.train()
    started = time.perf_counter()
    for batch in data:
        losses = system.compute_losses(batch)
        loss = system.total_loss(losses)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(system.parameters(), clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if system.ita_head is not None:
            system.ita_head.clamp_logit_scale()
        for name, value in {**losses, "loss": loss}.items():
            system.loss_history[name].append(float(value.detach()))  # the same bookkeeping as training_step
    return time.perf_counter() - started


class _ListData(L.LightningDataModule):
    def __init__(self, data: list[dict]):
        super().__init__()
        self.data = data

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.data, batch_size=None, shuffle=False)


def lightning_loop(parts, data: list[dict], cfg: Stage1Config, out: Path, csv_log: bool) -> float:
    logger = L.pytorch.loggers.CSVLogger(out, name="bench", version="") if csv_log else False
    trainer = L.Trainer(
        max_steps=len(data),
        accelerator="cpu",
        devices=1,
        logger=logger,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        gradient_clip_val=cfg.trainer.gradient_clip_val,
        log_every_n_steps=cfg.trainer.log_every_n_steps,
    )
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(parts.system, datamodule=_ListData(data))
    return time.perf_counter() - started


def throughput(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        corpus_path = corpus_dir(args, work)
        corpus = load_corpus(corpus_path)
        cfg = make_config(corpus_path, work, args)
        if cfg.trainer.num_threads is not None:  # what run_stage1 does for the run
            torch.set_num_threads(args.threads)
        torch.manual_seed(args.seed)
        parts = build_parts(cfg, corpus)
        initial = {k: v.clone() for k, v in parts.system.state_dict().items()}

        started = time.perf_counter()
        emb = export_user_embeddings(
            parts.system.image_encoder,
            parts.system.text_encoder,
            parts.prep,
            batch_size=cfg.data.export_batch_size,
        )
        export_cold = time.perf_counter() - started
        started = time.perf_counter()
        export_user_embeddings(
            parts.system.image_encoder,
            parts.system.text_encoder,
            parts.prep,
            batch_size=cfg.data.export_batch_size,
        )
        export_warm = time.perf_counter() - started

        torch.manual_seed(args.seed)
        data = batches(parts, args.steps)
        posts = sum(int(b["num_posts"]) for b in data)
        results: dict[str, list[float]] = {"plain": [], "lightning": [], "lightning+csv": []}
        for _ in range(args.repeats):  # interleaved, each from the same initial weights
            for name in results:
                parts.system.load_state_dict(initial)
                if name == "plain":
                    seconds = plain_loop(parts, data, cfg.trainer.gradient_clip_val)
                else:
                    seconds = lightning_loop(parts, data, cfg, work, csv_log=name == "lightning+csv")
                results[name].append(seconds)
        best = {name: min(times) for name, times in results.items()}
        report = {
            "corpus": {"users": corpus.num_users, "posts": corpus.num_posts, "edges": corpus.num_edges},
            "torch_threads": torch.get_num_threads(),
            "steps": args.steps,
            "posts_per_step": posts / args.steps,
            "train_posts_per_s": {name: posts / t for name, t in best.items()},
            "train_seconds_best": best,
            "train_seconds_all": results,
            "lightning_overhead_ratio": best["lightning"] / best["plain"],
            "lightning_csv_overhead_ratio": best["lightning+csv"] / best["plain"],
            "export_posts_per_s_cold_cache": corpus.num_posts / export_cold,
            "export_posts_per_s_warm_cache": corpus.num_posts / export_warm,
            "export_seconds": {"cold": export_cold, "warm": export_warm},
            "export_shapes": [list(emb.user_image_emb.shape), list(emb.user_text_emb.shape)],
        }
        print(json.dumps(report, indent=2))


def isin_negative_pairs(
    num_pairs: int, num_users: int, edge_keys: torch.Tensor, max_rounds: int = 50
) -> tuple[torch.Tensor, torch.Tensor]:
    """The sampler before issue 23 (the same draws, checked with ``torch.isin`` against every edge key)."""
    got_u, got_v, have = [], [], 0
    for _ in range(max_rounds):
        need = num_pairs - have
        if need <= 0 or num_users < 2:
            break
        u = torch.randint(num_users, (2 * need + 8,))
        v = torch.randint(num_users, (2 * need + 8,))
        key = torch.minimum(u, v) * num_users + torch.maximum(u, v)
        ok = (u != v) & ~torch.isin(key, edge_keys)
        got_u.append(u[ok][:need])
        got_v.append(v[ok][:need])
        have += len(got_u[-1])
    return torch.cat(got_u), torch.cat(got_v)


def negatives_step(old: bool, edges: torch.Tensor, keys: torch.Tensor, num_users: int, args) -> None:
    """One step's negatives as ``PairBatchCollator`` draws them: ``pairs_per_batch x negatives_per_positive``
    over all users, then ``batch_negatives_per_positive`` per positive among the batch's users."""
    pos = edges[torch.randint(len(edges), (args.pairs,))]
    num_neg = round(args.negatives * args.pairs)
    if old:
        neg_u, neg_v = isin_negative_pairs(num_neg, num_users, keys)
    else:
        neg_u, neg_v = sample_negative_pairs(num_neg, num_users, keys)
    num_extra = round(args.batch_negatives * args.pairs)
    if num_extra == 0:
        return
    users = torch.unique(torch.cat([pos.reshape(-1), neg_u, neg_v]))
    if old:  # the in-batch edge keys, built by a pass over every edge
        is_member = torch.zeros(num_users, dtype=torch.bool)
        is_member[users] = True
        local = torch.searchsorted(users, edges[is_member[edges[:, 0]] & is_member[edges[:, 1]]])
        isin_negative_pairs(num_extra, len(users), local[:, 0] * len(users) + local[:, 1])
    else:
        sample_negative_pairs(num_extra, len(users), keys, user_ids=users, key_base=num_users)


def random_corpus_edges(num_users: int, num_edges: int, seed: int) -> torch.Tensor:
    """int64 [E, 2] distinct pairs u < v in ``corpus.edges``' order (lexicographic)."""
    generator = torch.Generator().manual_seed(seed)
    keys = torch.empty(0, dtype=torch.long)
    while len(keys) < num_edges:
        a, b = torch.randint(num_users, (2, int(1.2 * (num_edges - len(keys))) + 16), generator=generator)
        low, high = torch.minimum(a, b), torch.maximum(a, b)
        keys = torch.unique(torch.cat([keys, (low * num_users + high)[low != high]]))
    keys = keys[torch.randperm(len(keys), generator=generator)[:num_edges]].sort().values
    return torch.stack([keys // num_users, keys % num_users], dim=1)


def negatives(args) -> None:
    load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        corpus_path = corpus_dir(args, work)
        corpus = load_corpus(corpus_path)
        cfg = make_config(corpus_path, work, args)
        if cfg.trainer.num_threads is not None:
            torch.set_num_threads(args.threads)
        torch.manual_seed(args.seed)
        parts = build_parts(cfg, corpus)
        args.pairs = cfg.data.pairs_per_batch
        args.negatives = cfg.data.negatives_per_positive
        if args.batch_negatives is None:
            args.batch_negatives = cfg.data.batch_negatives_per_positive
        data = batches(parts, args.steps)  # a first pass warms the image cache, as a long run would have it
        started = time.perf_counter()
        data = batches(parts, args.steps)  # collation of the small corpus (its sampling included)
        collate_s = (time.perf_counter() - started) / args.steps
        posts_per_step = sum(int(b["num_posts"]) for b in data) / args.steps
        model_s = min(plain_loop(parts, data, cfg.trainer.gradient_clip_val) for _ in range(args.repeats))
        model_s /= args.steps
    rows = []
    for num_edges in args.edges:
        num_users = max(int(num_edges / 16.7), 100)
        edges = random_corpus_edges(num_users, num_edges, args.seed)
        keys = edges[:, 0] * num_users + edges[:, 1]
        times = {"old": [], "new": []}
        for _ in range(args.repeats):  # interleaved, so the machine's load falls on both alike
            for name in times:
                step = (name == "old", edges, keys, num_users, args)
                negatives_step(*step)
                started = time.perf_counter()
                for _ in range(args.sample_steps):
                    negatives_step(*step)
                times[name].append((time.perf_counter() - started) / args.sample_steps)
        best = {name: min(t) for name, t in times.items()}
        rows.append({"edges": num_edges, "users": num_users, "sampling_s_per_step": best})
    print(
        f"torch threads {torch.get_num_threads()}; load average before {load_before}, after "
        f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])}\n"
        f"per step: {args.pairs} positives, {args.negatives:g} negatives per positive, {args.batch_negatives:g} "
        f"in-batch negatives per positive; {posts_per_step:.1f} posts; model step {model_s * 1e3:.1f} ms and "
        f"collation {collate_s * 1e3:.1f} ms measured on {corpus.num_users} users / {corpus.num_edges} edges"
    )
    header = (
        "edges",
        "users",
        "old ms/step",
        "new ms/step",
        "old/new",
        "old posts/s",
        "new posts/s",
        "new/old",
    )
    print(" ".join(f"{h:>12}" for h in header))
    for row in rows:
        old, new = row["sampling_s_per_step"]["old"], row["sampling_s_per_step"]["new"]
        rate = {k: posts_per_step / (model_s + collate_s + t) for k, t in (("old", old), ("new", new))}
        row["train_posts_per_s"] = rate
        values = (
            f"{row['edges']:,}",
            f"{row['users']:,}",
            f"{old * 1e3:.3f}",
            f"{new * 1e3:.3f}",
            f"{old / new:.1f}",
            f"{rate['old']:.0f}",
            f"{rate['new']:.0f}",
            f"{rate['new'] / rate['old']:.2f}",
        )
        print(" ".join(f"{v:>12}" for v in values))
    if args.json:
        Path(args.json).write_text(json.dumps({"model_s": model_s, "collate_s": collate_s, "rows": rows}))


def probe_accuracy(corpus, emb) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.preprocessing import StandardScaler

    features = np.concatenate([emb.user_image_emb, emb.user_text_emb], axis=1)
    train = (corpus.splits == 0) & (corpus.labels >= 0)
    test = (corpus.splits == 2) & (corpus.labels >= 0)
    scaler = StandardScaler().fit(features[train])
    clf = LogisticRegression(max_iter=3000).fit(scaler.transform(features[train]), corpus.labels[train])
    pred = clf.predict(scaler.transform(features[test]))
    return {
        "accuracy": float(accuracy_score(corpus.labels[test], pred)),
        "macro_f1": float(f1_score(corpus.labels[test], pred, average="macro")),
        "train_users": int(train.sum()),
        "test_users": int(test.sum()),
    }


def probe(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        corpus_path = corpus_dir(args, work)
        corpus = load_corpus(corpus_path)
        extra = {} if args.steps is None else {"max_steps": args.steps}
        cfg = make_config(corpus_path, work, args, **extra)

        if cfg.trainer.num_threads is not None:
            torch.set_num_threads(args.threads)
        L.seed_everything(cfg.seed, verbose=False)  # the same initial weights run_stage1 starts from
        parts = build_parts(cfg, corpus)
        before = export_user_embeddings(
            parts.system.image_encoder,
            parts.system.text_encoder,
            parts.prep,
            batch_size=cfg.data.export_batch_size,
        )
        started = time.perf_counter()
        result = run_stage1(cfg)
        wall = time.perf_counter() - started
        from cache import read_encoder_embeddings

        after = read_encoder_embeddings(
            cfg.cache_dir, cfg.round, fingerprint=corpus.fingerprint, num_users=corpus.num_users
        )
        terms = {
            name: {
                k: round(v, 4) for k, v in result.metrics[name].items() if k in ("first_mean", "last_mean")
            }
            for name in (*result.metrics["loss_terms"], "loss")
        }
        report = {
            "corpus": {"users": corpus.num_users, "posts": corpus.num_posts, "edges": corpus.num_edges},
            "steps": result.metrics["global_step"],
            "run_stage1_wall_seconds": wall,
            "train_seconds": result.metrics["train_seconds"],
            "export_seconds": result.metrics["export_seconds"],
            "train_posts_per_s": result.metrics["train_posts_per_second"],
            "loss_first_vs_last_mean": terms,
            "every_loss_fell": all(t["last_mean"] < t["first_mean"] for t in terms.values()),
            "probe_before_training": probe_accuracy(corpus, before),
            "probe_after_training": probe_accuracy(corpus, after),
        }
        print(json.dumps(report, indent=2))


DEFAULT_PRESET = Path(__file__).resolve().parents[1] / "bridge" / "presets" / "default.json"


def text_side_config(args, corpus_path: Path, work: Path) -> dict:
    """The stage-1 config the ``states`` and ``export`` modes start from: the bridge's default text side, or
    ``--config``'s."""
    if args.config is None:
        preset = json.loads(DEFAULT_PRESET.read_text())["stage1"]
        return deep_merge(preset, {"corpus": str(corpus_path), "cache_dir": str(work / "cache")})
    return make_config(corpus_path, work, args).to_dict()


def states(args) -> None:
    import resource

    from stage1_encoders.encoders import clear_lower_states_memo

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        corpus_path = corpus_dir(args, work)
        base = text_side_config(args, corpus_path, work)
        corpus = load_corpus(corpus_path)
        torch.set_num_threads(args.threads)
        captions = int(np.asarray(corpus.post_has_text).sum())
        timed = {}
        for precision in args.precisions:  # in this order, one after the other in this process
            cfg = Stage1Config.from_dict(deep_merge(base, {"model": {"text_frozen_precision": precision}}))
            if cfg.model.text_tuned_layers is None:
                raise SystemExit("states: the config trains every text layer, so there are no cached states")
            torch.manual_seed(args.seed)
            encoder = build_parts(cfg, corpus).system.text_encoder
            clear_lower_states_memo()
            peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            started = time.perf_counter()
            encoder.compute_lower_states()
            seconds = time.perf_counter() - started
            peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            cache = encoder._lower_states
            timed[precision] = (seconds, cache.states)
            held = (cache.states.numel() * cache.states.element_size() + cache.offsets.numel() * 8) / 2**20
            tokens = int(cache.offsets[-1])
            per_token = (tokens * encoder.dim * 4 + cache.offsets.numel() * 8) / 2**20
            print(
                f"{corpus.num_posts:,} posts, {captions:,} captions, {tokens:,} tokens "
                f"({cfg.model.text_model}, frozen layers in {precision}, {args.threads} threads, "
                f"{'pooled rows' if cache.pooled else 'token rows'})"
            )
            print(f"  caption states: {seconds:.1f} s, {captions / seconds:,.0f} captions/s")
            print(
                f"  held: {held:,.1f} MiB ({held * 2**20 / corpus.num_posts / 1024:.2f} KiB a post); one row per "
                f"token would hold {per_token:,.1f} MiB ({per_token / held:.1f}x)"
            )
            print(
                f"  peak resident set: {peak_before:,.0f} MiB before, {peak_after:,.0f} MiB after "
                f"(+{peak_after - peak_before:,.0f} MiB; the process's high-water mark, so a later row "
                "shows only what exceeds the earlier ones)"
            )
            del encoder, cache
            clear_lower_states_memo()
    if "32" in timed and len(timed) > 1:
        seconds_32, states_32 = timed["32"]
        for precision, (seconds, states_p) in timed.items():
            if precision == "32":
                continue
            rows = states_32.norm(dim=1) > 0  # rows of a caption (pooled layout) or a token
            cosine = torch.nn.functional.cosine_similarity(states_p[rows], states_32[rows]).min().item()
            print(
                f"{precision} against 32: {seconds / seconds_32:.2f}x the time ({seconds_32 / seconds:.2f}x the "
                f"speed); largest difference of a cached state row {(states_p - states_32).abs().max().item():.2e}, "
                f"lowest cosine {cosine:.6f}"
            )


def chunks(args) -> None:
    """The float32 caption work of the CPU as before 2026-12-07 (night) against what runs now, in turns, in this
    process. The caption states: the export's batches over captions sorted by characters (before), chunks of
    ``CAPTION_CPU_CHUNK`` over the same order (the first change), and chunks over captions sorted by token count
    (now); each chunk tokenized on its own. The embeddings of captions that have no states (a new corpus's, as
    ``bridge.embed`` embeds them, the export's batches in post order): one pass over each batch (before) against
    length-sorted chunks of it cut to their tokens (now)."""
    import os
    import statistics

    from stage1_encoders import encoders as enc
    from stage1_encoders.export import export_batches

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        corpus_path = corpus_dir(args, work)
        cfg = Stage1Config.from_dict(text_side_config(args, corpus_path, work))
        if cfg.model.text_tuned_layers is None or cfg.model.text_frozen_precision != "32":
            raise SystemExit(
                "chunks: the config must freeze text layers in float32 (model.text_frozen_precision 32)"
            )
        corpus = load_corpus(corpus_path)
        torch.set_num_threads(args.threads)
        text_posts = np.flatnonzero(np.asarray(corpus.post_has_text))
        torch.manual_seed(args.seed)
        parts = build_parts(cfg, corpus)
        prep, encoder = parts.prep, parts.system.text_encoder.eval()
        batch = cfg.data.export_batch_size
        tokenized = [prep.texts(text_posts[b]) for b in export_batches(len(text_posts), batch)]

        def by_characters(
            posts: np.ndarray,
        ) -> np.ndarray:  # the states' order before: captions by characters
            return np.array([len(corpus.post_text[p]) for p in posts])

        def caption_states(order: str) -> torch.Tensor:
            if order == "characters":
                prep.token_counts = by_characters  # the instance's attribute hides the method
            enc.clear_lower_states_memo()
            try:
                encoder.compute_lower_states()
            finally:
                prep.__dict__.pop("token_counts", None)
            return encoder._lower_states.states

        def new_captions(order: str) -> torch.Tensor:
            with torch.no_grad():
                return torch.cat([encoder(ids, mask) for ids, mask in tokenized])

        now = enc.CAPTION_CPU_CHUNK
        tasks = {
            "caption states": (
                caption_states,
                {
                    f"batches of {batch}, by characters (before)": (batch, "characters"),
                    f"chunks of {now}, by characters": (now, "characters"),
                    f"chunks of {now}, by tokens (now)": (now, "tokens"),
                },
            ),
            "new captions' embeddings": (
                new_captions,
                {
                    f"one pass over batches of {batch} (before)": (batch, ""),
                    f"sorted chunks of {now} (now)": (now, ""),
                },
            ),
        }
        load = os.getloadavg()[0]
        print(
            f"{len(text_posts):,} captions ({cfg.model.text_model}, float32, {args.threads} threads), median of "
            f"{args.repeats} in turns"
        )
        try:
            for what, (run, arms) in tasks.items():
                names = list(arms)
                times: dict[str, list[float]] = {name: [] for name in names}
                out: dict[str, torch.Tensor] = {}
                for repeat in range(args.repeats):
                    shift = repeat % len(names)
                    for name in names[shift:] + names[:shift]:  # each arm first in turn
                        enc.CAPTION_CPU_CHUNK, order = arms[name]
                        started = time.perf_counter()
                        out[name] = run(order)
                        times[name].append(time.perf_counter() - started)
                base = statistics.median(times[names[0]])
                scale = float(out[names[0]].abs().max())
                print(f"  {what}:")
                for name in names:
                    median = statistics.median(times[name])
                    diff = float((out[name] - out[names[0]]).abs().max()) / scale
                    print(
                        f"    {name:42s} {median:6.1f} s, {median / len(text_posts) * 1e3:.2f} ms a caption, "
                        f"{median / base:.2f}x; largest difference {diff:.1e} of the largest"
                    )
        finally:
            enc.CAPTION_CPU_CHUNK = now
            enc.clear_lower_states_memo()
    print(f"1-minute load {load:.2f} before, {os.getloadavg()[0]:.2f} after")


def export(args) -> None:
    from unittest import mock

    from stage1_encoders.encoders import TextEncoder, clear_lower_states_memo

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        corpus_path = corpus_dir(args, work)
        states_dir = Path(args.states_dir) if args.states_dir else work / "text_states"
        overrides = {
            "data": {"text_states_dir": str(states_dir)},
            "model": {"text_frozen_precision": args.precisions[0]},
        }
        cfg = Stage1Config.from_dict(deep_merge(text_side_config(args, corpus_path, work), overrides))
        corpus = load_corpus(corpus_path)
        torch.set_num_threads(args.threads)
        torch.manual_seed(args.seed)
        parts = build_parts(cfg, corpus)
        text_encoder = parts.system.text_encoder
        if not text_encoder.fully_frozen:
            raise SystemExit("export: the config tunes text layers, so there are no pooled caption states")
        clear_lower_states_memo()
        started = time.perf_counter()
        text_encoder.compute_lower_states()
        print(
            f"{corpus.num_posts:,} posts, {int(np.asarray(corpus.post_has_text).sum()):,} captions; caption states "
            f"ready in {time.perf_counter() - started:.1f} s ({states_dir}), {args.threads} threads"
        )

        def run() -> tuple[float, object]:
            started = time.perf_counter()
            emb = export_user_embeddings(
                parts.system.image_encoder, text_encoder, parts.prep, batch_size=cfg.data.export_batch_size
            )
            return time.perf_counter() - started, emb

        # the export before: every caption tokenized and its token count checked against the cache
        tokenizing = mock.patch.object(
            TextEncoder, "reads_cached_captions", new_callable=mock.PropertyMock, return_value=False
        )
        run()  # warm-up: the image cache filled as in both timed rows
        times: dict[str, list[float]] = {"tokenized (before)": [], "cached rows (now)": []}
        outputs = {}
        for _ in range(args.repeats):
            with tokenizing:
                seconds, outputs["tokenized (before)"] = run()
            times["tokenized (before)"].append(seconds)
            seconds, outputs["cached rows (now)"] = run()
            times["cached rows (now)"].append(seconds)
        before, now = (min(v) for v in times.values())
        for name, seconds in zip(times, (before, now)):
            print(f"  export, {name:20s} {seconds:6.1f} s  {corpus.num_posts / seconds:8,.0f} posts/s")
        old, new = outputs.values()
        same = np.array_equal(old.user_text_emb, new.user_text_emb) and np.array_equal(
            old.user_image_emb, new.user_image_emb
        )
        print(f"  now / before: {now / before:.2f}x the time; user embeddings equal: {same}")
        clear_lower_states_memo()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=["throughput", "probe", "negatives", "states", "chunks", "export"])
    parser.add_argument("--corpus", help="existing corpus folder (default: generate a synthetic one)")
    parser.add_argument("--users", type=int, default=2000, help="users of the generated corpus")
    parser.add_argument("--seed", type=int, default=0, help="corpus and training seed")
    parser.add_argument(
        "--steps", type=int, default=None, help="training steps (throughput default 60; probe: config)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="throughput, export: interleaved repeats, best kept; chunks: median",
    )
    parser.add_argument("--config", help="JSON file with Stage1Config sections to override the defaults")
    parser.add_argument(
        "--work", help="keep corpus, cache and logs in this folder instead of a temporary one"
    )
    parser.add_argument(
        "--edges", type=int, nargs="+", default=[10_000, 100_000, 1_000_000], help="negatives: edge counts"
    )
    parser.add_argument(
        "--sample-steps", type=int, default=50, help="negatives: timed sampling steps per size and repeat"
    )
    parser.add_argument(
        "--batch-negatives",
        type=float,
        default=None,
        help="negatives: in-batch negatives per positive "
        "(default: the config's data.batch_negatives_per_positive)",
    )
    parser.add_argument("--json", help="negatives: write the figures to this file")
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=["32", "bf16"],
        default=["32"],
        help="states: model.text_frozen_precision values, timed one after the other in this process, with the "
        "ratio to 32 (e.g. --precisions 32 bf16); export: the first one is the states' precision",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="states, chunks, export: torch threads (the bridge computes the states up front with every core)",
    )
    parser.add_argument(
        "--states-dir",
        help="export: the caption states' folder (a run's text_states/), loaded when they are there "
        "(default: in --work, computed once)",
    )
    args = parser.parse_args()
    if args.mode == "throughput":
        args.steps = args.steps or 60
        throughput(args)
    elif args.mode == "negatives":
        args.steps = args.steps or 20
        negatives(args)
    elif args.mode == "states":
        states(args)
    elif args.mode == "chunks":
        chunks(args)
    elif args.mode == "export":
        export(args)
    else:
        probe(args)


if __name__ == "__main__":
    main()
