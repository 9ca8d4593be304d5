"""Inductive embedding: the trained models of a finished run applied to a new corpus, without training.

::

    python -m bridge.embed --run-dir runs/default --corpus data/new_crawl --out new.npz [--seed S]

    import bridge
    run = bridge.load_run("runs/default")
    user_ids, emb = run.embed("data/new_crawl")      # emb: float32 [N, Dg + Dt + Di] = [R^G || R^T || R^I]

The models are those of the run's last round (of one training seed): stage 1's encoders with their tokenizer
(``stage1_encoders.infer``) encode every post of the new corpus, and stage 2's GNN (``stage2_graph.infer``)
runs on the new corpus's graph with its statistics X standardized with the *training* corpus's means and
standard deviations. Each stage's own inference code does the work; this module only orchestrates.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bridge.manifest import Manifest
from bridge.paths import RunPaths

BLOCKS = ("graph", "text", "image")  # the order of [R^G || R^T || R^I], as in the report's rows
_STAGE_KEY = re.compile(
    r"^(?:seed_(?P<seed>\d+)/)?(?P<variant>[A-Za-z0-9_]+)/round_(?P<round>\d+)/(?P<stage>stage[12])$"
)


def concat_blocks(graph, encoders) -> np.ndarray:
    """float32 ``[N, Dg + Dt + Di]`` = [R^G || R^T || R^I] from stage 2's and stage 1's cache records."""
    parts = (graph.user_graph_emb, encoders.user_text_emb, encoders.user_image_emb)
    return np.concatenate([np.asarray(p, dtype=np.float32) for p in parts], axis=1)


class EmbedError(RuntimeError):
    """A run or corpus that cannot be embedded; the message says what to do."""


@dataclass
class UserEmbeddings:
    """The embeddings of every user of one corpus, in its ``users.csv`` order.

    Attributes:
        user_ids: ``[N]`` user ids.
        encoders: stage 1's ``EncoderEmbeddings`` (R^I ``[N, Di]``, R^T ``[N, Dt]``, masks).
        graph: stage 2's ``GraphOutputs`` (R^G ``[N, Dg]``, gates of the corpus's edges).
        features: the statistics X ``[N, F]`` as the GNN saw them (standardized with the training statistics).
        fingerprint: the embedded corpus's fingerprint (the cache files are tied to it).
        round: the round of the models that made them.
    """

    user_ids: list[str]
    encoders: object
    graph: object
    features: np.ndarray
    fingerprint: str
    round: int

    @property
    def matrix(self) -> np.ndarray:
        """float32 ``[N, Dg + Dt + Di]``: [R^G || R^T || R^I]."""
        return concat_blocks(self.graph, self.encoders)

    def save_npz(self, path: Path) -> Path:
        """Write ``user_ids``, ``embeddings`` and the separate blocks to ``path`` (.npz), atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(
                    f,
                    user_ids=np.asarray(self.user_ids, dtype=str),
                    embeddings=self.matrix,
                    user_graph_emb=self.graph.user_graph_emb,
                    user_text_emb=self.encoders.user_text_emb,
                    user_image_emb=self.encoders.user_image_emb,
                    image_mask=self.encoders.image_mask,
                    text_mask=self.encoders.text_mask,
                    blocks=np.asarray(BLOCKS, dtype=str),
                    block_dims=np.asarray(
                        [
                            self.graph.user_graph_emb.shape[1],
                            self.encoders.user_text_emb.shape[1],
                            self.encoders.user_image_emb.shape[1],
                        ]
                    ),
                )
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def save_cache(self, cache_dir: Path, producers: dict) -> tuple[Path, Path]:
        """Write the cache's two files, ``<cache_dir>/round_<round>/{encoders,graph}.h5``, via ``cache``."""
        from cache import write_encoder_embeddings, write_graph_outputs

        enc = write_encoder_embeddings(
            cache_dir, self.round, self.encoders, fingerprint=self.fingerprint, producer=producers["stage1"],
            model="bridge.embed: stage 1 inference (no training)",
        )  # fmt: skip
        graph = write_graph_outputs(
            cache_dir, self.round, self.graph, fingerprint=self.fingerprint, producer=producers["stage2"],
            model="bridge.embed: stage 2 inference (no training)",
        )  # fmt: skip
        return Path(enc), Path(graph)


def standardize_like(corpus, train) -> np.ndarray:
    """X ``[N, F]`` of ``corpus`` standardized with ``train``'s column means and standard deviations.

    The reader standardized each corpus with its own statistics (a constant column -> 0); the raw values are
    recovered from them and standardized again with the training corpus's (a column constant in training -> 0).
    Columns are matched by name.

    Raises:
        EmbedError: the statistic columns differ from the training corpus's.
    """
    names, train_names = list(corpus.feature_names), list(train.feature_names)
    if set(names) != set(train_names):
        missing = [n for n in train_names if n not in names]
        extra = [n for n in names if n not in train_names]
        raise EmbedError(
            f"{corpus.root}: users.csv has other statistic columns than the training corpus {train.root} "
            f"(missing: {missing or 'none'}; not in training: {extra or 'none'}); give the new corpus exactly "
            f"the training corpus's columns: {', '.join(train_names)}"
        )
    order = [names.index(n) for n in train_names]
    features = np.asarray(corpus.features, dtype=np.float64)[:, order]
    mean, std = np.asarray(corpus.feature_mean)[order], np.asarray(corpus.feature_std)[order]
    train_mean, train_std = np.asarray(train.feature_mean), np.asarray(train.feature_std)
    if np.array_equal(mean, train_mean) and np.array_equal(std, train_std):
        return np.asarray(corpus.features, dtype=np.float32)[:, order]  # the same statistics: exactly as read
    raw = np.where(std > 0, features * np.where(std > 0, std, 1.0) + mean, mean)
    scaled = (raw - train_mean) / np.where(train_std > 0, train_std, 1.0)
    return np.where(train_std > 0, scaled, 0.0).astype(np.float32)


class TrainedRun:
    """The trained models of one training seed's last round of a finished bridge run.

    Build with :func:`load_run`. ``embed(corpus)`` embeds any corpus in the documented format;
    ``embeddings()`` returns the run's own users' embeddings from its cache.
    """

    def __init__(self, run_dir: Path, seed: int | None, variant: str, round_idx: int, manifest: Manifest):
        self.run_dir, self.seed, self.variant, self.round = Path(run_dir), seed, variant, round_idx
        self.manifest = manifest
        paths = RunPaths(self.run_dir) if seed is None else RunPaths(self.run_dir).for_seed(seed)
        self.paths = paths
        self.stage1_checkpoint = manifest.outputs(paths.stage_key(variant, round_idx, "stage1"))["checkpoint"]
        self.stage2_checkpoint = manifest.outputs(paths.stage_key(variant, round_idx, "stage2"))["checkpoint"]
        self._train = None
        self._encoders = None

    def __repr__(self) -> str:
        return f"TrainedRun({str(self.run_dir)!r}, seed={self.seed}, variant={self.variant!r}, round={self.round})"

    @property
    def training_corpus(self):
        """The run's training corpus (loaded once; needed for its statistics and users)."""
        if self._train is None:
            from corpus import load_corpus

            recorded = self.manifest.data.get("corpus") or {}
            raw_path = str(recorded.get("path", ""))
            path = self.run_dir / raw_path[len("$RUN/") :] if raw_path.startswith("$RUN/") else Path(raw_path)
            if not raw_path or not path.is_dir():
                raise EmbedError(
                    f"{self.run_dir}: the training corpus {path} is gone; it is needed for its statistics "
                    "(X is standardized with the training means and deviations): put it back there"
                )
            train = load_corpus(path, image_check="exists", progress=False)
            if train.fingerprint != recorded.get("fingerprint"):
                raise EmbedError(
                    f"{path}: the training corpus changed after the run (fingerprint {train.fingerprint[:12]}, "
                    f"the run recorded {str(recorded.get('fingerprint'))[:12]}); restore it or retrain"
                )
            self._train = train
        return self._train

    def _stage1(self):
        if self._encoders is None:
            from stage1_encoders.infer import load_trained_encoders

            self._encoders = load_trained_encoders(self.stage1_checkpoint)
        return self._encoders

    def embed_corpus(self, corpus, progress: bool = False) -> UserEmbeddings:
        """Embed a loaded ``corpus.Corpus`` (or a corpus folder) with the trained models; no training."""
        from corpus import load_corpus
        from stage1_encoders.infer import encode_corpus
        from stage2_graph.infer import infer_graph_outputs

        if not hasattr(corpus, "fingerprint"):
            # Labels play no part in embedding: a new crawl may have few or none.
            corpus = load_corpus(corpus, min_labelled_per_class=0, progress=False)
        features = standardize_like(corpus, self.training_corpus)
        encoders = encode_corpus(self._stage1(), corpus, progress=progress)
        _, graph = infer_graph_outputs(
            self.stage2_checkpoint, features, corpus.edges, corpus.fingerprint, encoders
        )
        return UserEmbeddings(
            list(corpus.user_ids), encoders, graph, features, corpus.fingerprint, self.round
        )

    def embed(self, corpus) -> tuple[list[str], np.ndarray]:
        """``(user_ids [N], embeddings float32 [N, Dg + Dt + Di])`` of a corpus folder, [R^G || R^T || R^I]."""
        out = self.embed_corpus(corpus)
        return out.user_ids, out.matrix

    def embeddings(self) -> tuple[list[str], np.ndarray]:
        """The run's own users' [R^G || R^T || R^I] of this round, read from the run's cache."""
        from cache import read_encoder_embeddings, read_graph_outputs

        train = self.training_corpus
        cache_dir = self.paths.cache_dir(self.variant)
        enc = read_encoder_embeddings(
            cache_dir, self.round, fingerprint=train.fingerprint, num_users=train.num_users
        )
        graph = read_graph_outputs(
            cache_dir, self.round, fingerprint=train.fingerprint, num_users=train.num_users,
            num_edges=train.num_edges,
        )  # fmt: skip
        return list(train.user_ids), concat_blocks(graph, enc)

    def producers(self) -> dict:
        """What the cache files written by ``embed`` record as their producer."""
        base = {"bridge.embed": {"run_dir": str(self.run_dir), "seed": self.seed, "variant": self.variant,
                                 "round": self.round}}  # fmt: skip
        return {
            "stage1": {
                **base,
                "checkpoint": str(self.stage1_checkpoint),
                "config": self._stage1().config.to_dict(),
            },
            "stage2": {**base, "checkpoint": str(self.stage2_checkpoint)},
        }


def _completed(manifest: Manifest, key: str) -> bool:
    """The manifest has ``key`` and every file it recorded is still there with its recorded size."""
    entry = manifest.get(key)
    if entry is None:
        return False
    for rel, rec in entry.get("files", {}).items():
        path = Path(rel) if Path(rel).is_absolute() else manifest.base / rel
        if not path.is_file() or path.stat().st_size != rec["size"]:
            return False
    return True


def load_run(run_dir: str | Path, seed: int | None = None, variant: str = "mmga") -> TrainedRun:
    """The trained models of ``run_dir``'s last round for training seed ``seed`` (default: the run's first).

    Raises:
        EmbedError: no run there, or the run is not finished (its last round lacks a completed stage).
    """
    from bridge.variants import REGISTRY

    spec = REGISTRY.get(variant)
    if spec is None or not spec.has_stage1:
        usable = [name for name, v in REGISTRY.items() if v.has_stage1]
        raise EmbedError(
            f"variant {variant!r} cannot embed users (it needs both stages); use one of {usable}"
        )
    run_dir = Path(run_dir)
    paths = RunPaths(run_dir)
    if not paths.manifest.is_file():
        raise EmbedError(
            f"{run_dir}: no manifest.json, so no finished bridge run; train one with "
            f"`python bridge/alternate.py --run-dir {run_dir}`"
        )
    manifest = Manifest.load(paths.manifest)
    rounds: dict[int | None, dict[int, set[str]]] = {}
    for key in manifest.data["entries"]:
        match = _STAGE_KEY.match(key)
        if match and match["variant"] == variant:
            s = None if match["seed"] is None else int(match["seed"])
            rounds.setdefault(s, {}).setdefault(int(match["round"]), set()).add(match["stage"])
    if not rounds:
        raise EmbedError(
            f"{run_dir}: the run is not finished: manifest.json has no completed {variant} stage; finish it with "
            f"`python bridge/alternate.py --run-dir {run_dir}` (the same options as before)"
        )
    seeds = sorted(rounds, key=lambda s: -1 if s is None else s)
    if seed is None:
        seed = seeds[0]
    elif seed not in rounds:
        raise EmbedError(
            f"{run_dir}: no {variant} stage was trained with training seed {seed}; the run has seeds "
            f"{', '.join(str(s) for s in seeds)} (--seed)"
        )
    last = max(rounds[seed])
    seed_paths = paths if seed is None else paths.for_seed(seed)
    for stage in ("stage1", "stage2"):
        key = seed_paths.stage_key(variant, last, stage)
        if stage not in rounds[seed][last] or not _completed(manifest, key):
            raise EmbedError(
                f"{run_dir}: the run is not finished: {key} (the last round) is not complete in manifest.json; "
                f"finish it with `python bridge/alternate.py --run-dir {run_dir}` (the same options as before)"
            )
    # Evaluation is a run's last step and its entries name the last round: without them the run stopped
    # between rounds or before evaluating, and ``last`` may not be the round it was meant to end with.
    evaluated = f"eval/{'' if seed is None else f'seed_{seed}/'}"
    if not any(k.startswith(evaluated) and k.endswith(f"/round_{last}") for k in manifest.data["entries"]):
        raise EmbedError(
            f"{run_dir}: the run is not finished: round {last} of training seed {seed} is trained but was not "
            f"evaluated (the run stopped before its end); finish it with `python bridge/alternate.py --run-dir "
            f"{run_dir}` (the same options as before)"
        )
    return TrainedRun(run_dir, seed, variant, last, manifest)


def default_cache_dir(out: Path) -> Path:
    """Where the cache-format copy goes when ``--cache-out`` is not given: ``new.npz`` -> ``new_cache/``."""
    return out.with_name(out.stem + "_cache")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bridge.embed",
        description="Embed the users of a new corpus with the trained models of a finished bridge run "
        "(no training): writes [R^G || R^T || R^I] per user to an .npz file and a cache folder.",
    )
    parser.add_argument("--run-dir", type=Path, required=True, help="a finished bridge run folder")
    parser.add_argument(
        "--corpus", type=Path, required=True, help="the corpus folder to embed (docs/corpus.md)"
    )
    parser.add_argument("--out", type=Path, required=True, help="output .npz (user_ids, embeddings, blocks)")
    parser.add_argument(
        "--cache-out", type=Path, default=None, help="cache folder (default: <out stem>_cache)"
    )
    parser.add_argument("--seed", type=int, default=None, help="training seed (default: the run's first)")
    parser.add_argument("--variant", default="mmga", help="which trained variant (default: mmga)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--progress", action="store_true", help="show a progress bar while encoding posts")
    return parser


def _quiet_third_party() -> None:
    """At this entry point only: warnings the user cannot act on. The encoders are built without weights on
    purpose (the checkpoint supplies them), and torch-sparse's use of ``torch.jit.script`` is not ours."""
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)
    logging.getLogger().addFilter(lambda record: "No pretrained weights loaded" not in record.getMessage())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.out.suffix != ".npz":
        print(f"error: --out must end in .npz, got {args.out}", file=sys.stderr)
        return 2
    if args.threads < 1:
        print(f"error: --threads must be >= 1, got {args.threads}", file=sys.stderr)
        return 2
    _quiet_third_party()
    from bridge.manifest import ManifestError
    from cache import CacheError
    from corpus import CorpusError
    from mmga_common.config import ConfigError
    from mmga_common.threads import torch_threads
    from stage2_graph import Stage2InputError

    user_errors = (EmbedError, ManifestError, CorpusError, CacheError, ConfigError,
                   Stage2InputError)  # fmt: skip
    try:
        with torch_threads(args.threads):
            run = load_run(args.run_dir, seed=args.seed, variant=args.variant)
            out = run.embed_corpus(args.corpus, progress=args.progress)
            npz = out.save_npz(args.out)
            enc, graph = out.save_cache(args.cache_out or default_cache_dir(args.out), run.producers())
    except user_errors as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    dims = "+".join(str(d) for d in (out.graph.user_graph_emb.shape[1], out.encoders.user_text_emb.shape[1],
                                     out.encoders.user_image_emb.shape[1]))  # fmt: skip
    print(f"embedded {len(out.user_ids)} users of {args.corpus} with {run.variant} round {run.round} "
          f"(training seed {run.seed}): [R^G || R^T || R^I], {out.matrix.shape[1]} dims ({dims})")  # fmt: skip
    print(f"  {npz}   (numpy.load: user_ids, embeddings, user_graph_emb, user_text_emb, user_image_emb)")
    print(f"  {enc}\n  {graph}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
