"""A finished run's trained models, found through the run folder's API and checked against its manifest.

``load_run(run_dir)`` picks one training seed's last round of a variant; every file the manifest recorded for
that round's stages is checked against its record (size and sha256, hashed once per file per process) before it
is used, so a tampered or truncated checkpoint or cache file is refused, not read.
"""

from __future__ import annotations

from pathlib import Path

from bridge.inference.embeddings import EmbedError, UserEmbeddings, standardize_like
from bridge.runfolder import Manifest, RunPaths, StageKey
from bridge.runfolder.caches import read_encoders, read_graph
from bridge.variants import REGISTRY

FINISH_HINT = "finish it with `python bridge/alternate.py --run-dir {run_dir}` (the same options as before)"


class TrainedRun:
    """The trained models of one training seed's last round of a finished bridge run.

    Build with :func:`load_run`. ``embed(corpus)`` embeds any corpus in the documented format;
    ``embeddings()`` returns the run's own users' embeddings from its cache.
    """

    def __init__(self, run_dir: Path, seed: int | None, variant: str, round_idx: int, manifest: Manifest):
        self.run_dir, self.seed, self.variant, self.round = Path(run_dir), seed, variant, round_idx
        self.manifest = manifest
        self.paths = RunPaths(self.run_dir) if seed is None else RunPaths(self.run_dir).for_seed(seed)
        self.stage1_checkpoint = manifest.outputs(self.stage_key("stage1"))["checkpoint"]
        self.stage2_checkpoint = manifest.outputs(self.stage_key("stage2"))["checkpoint"]
        self._train = None
        self._encoders = None

    def __repr__(self) -> str:
        return f"TrainedRun({str(self.run_dir)!r}, seed={self.seed}, variant={self.variant!r}, round={self.round})"

    def stage_key(self, stage: str) -> StageKey:
        return self.paths.stage_key(self.variant, self.round, stage)

    @property
    def training_corpus(self):
        """The run's training corpus (loaded once; needed for its statistics and users)."""
        if self._train is None:
            from corpus import load_corpus

            path = self.manifest.corpus_path
            if path is None or not path.is_dir():
                raise EmbedError(
                    f"{self.run_dir}: the training corpus {path} is gone; it is needed for its statistics "
                    "(X is standardized with the training means and deviations): put it back there"
                )
            train = load_corpus(path, image_check="exists", progress=False)
            if train.fingerprint != self.manifest.corpus_fingerprint:
                raise EmbedError(
                    f"{path}: the training corpus changed after the run (fingerprint {train.fingerprint[:12]}, "
                    f"the run recorded {str(self.manifest.corpus_fingerprint)[:12]}); restore it or retrain"
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
        out = UserEmbeddings(list(corpus.user_ids), encoders, graph, features, corpus.fingerprint, self.round)
        out.check_finite()
        return out

    def embed(self, corpus) -> tuple[list[str], object]:
        """``(user_ids [N], embeddings float32 [N, Dg + Dt + Di])`` of a corpus folder, [R^G || R^T || R^I]."""
        out = self.embed_corpus(corpus)
        return out.user_ids, out.matrix

    def embeddings(self) -> tuple[list[str], object]:
        """The run's own users' [R^G || R^T || R^I] of this round, read from the run's cache (the files checked
        against the manifest's sha256 when the run was loaded)."""
        own = self.own_embeddings()
        return own.user_ids, own.matrix

    def describe(self) -> dict:
        """Where these models come from (stored in exported files' metadata)."""
        return {"run_dir": str(self.run_dir), "seed": self.seed, "variant": self.variant, "round": self.round}

    def own_embeddings(self) -> UserEmbeddings:
        """The run's own users' embeddings of this round, read from the run's cache, as :class:`UserEmbeddings`."""

        train = self.training_corpus
        cache_dir = self.paths.cache_dir(self.variant)
        enc = read_encoders(cache_dir, self.round, train)
        graph = read_graph(cache_dir, self.round, train)
        return UserEmbeddings(list(train.user_ids), enc, graph, train.features, train.fingerprint, self.round)

    def producers(self) -> dict:
        """What the cache files written by ``embed`` record as their producer."""
        base = {
            "bridge.embed": {
                "run_dir": str(self.run_dir),
                "seed": self.seed,
                "variant": self.variant,
                "round": self.round,
            }
        }
        return {
            "stage1": {
                **base,
                "checkpoint": str(self.stage1_checkpoint),
                "config": self._stage1().config.to_dict(),
            },
            "stage2": {**base, "checkpoint": str(self.stage2_checkpoint)},
        }


def _trained_rounds(manifest: Manifest, variant: str) -> dict[int | None, dict[int, set[str]]]:
    """``{training seed: {round: stages recorded}}`` of ``variant``, from the manifest's typed keys."""
    rounds: dict[int | None, dict[int, set[str]]] = {}
    for key in manifest.stage_keys():
        if key.variant == variant:
            rounds.setdefault(key.seed, {}).setdefault(key.round, set()).add(key.stage)
    return rounds


def _check_finished(manifest: Manifest, run_dir: Path, paths: RunPaths, variant: str, last: int) -> None:
    """The last round's stages are complete and their files intact, and the run evaluated that round."""
    hint = FINISH_HINT.format(run_dir=run_dir)
    for stage in ("stage1", "stage2"):
        key = paths.stage_key(variant, last, stage)
        if manifest.entry(key) is None:
            raise EmbedError(
                f"{run_dir}: the run is not finished: {key} (the last round) is not complete; {hint}"
            )
        if not manifest.intact(key):
            raise EmbedError(
                f"{run_dir}: {key}'s files do not match what the run recorded (size or sha256 in manifest.json): "
                f"changed, truncated or deleted after the run; rerun `python bridge/alternate.py --run-dir "
                f"{run_dir}` (the same options as before) to recompute it"
            )
    # Evaluation is a run's last step and its entries name the last round: without them the run stopped
    # between rounds or before evaluating, and ``last`` may not be the round it was meant to end with.
    if not any(k.seed == paths.seed and k.round == last for k in manifest.eval_keys()):
        raise EmbedError(
            f"{run_dir}: the run is not finished: round {last} of training seed {paths.seed} is trained but was "
            f"not evaluated (the run stopped before its end); {hint}"
        )


def load_run(run_dir: str | Path, seed: int | None = None, variant: str = "mmga") -> TrainedRun:
    """The trained models of ``run_dir``'s last round for training seed ``seed`` (default: the run's first).

    Raises:
        EmbedError: no run there, the run is not finished, or its files no longer match the manifest.
    """
    spec = REGISTRY.get(variant)
    if spec is None or not spec.embeddable:
        usable = [name for name, v in REGISTRY.items() if v.embeddable]
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
    rounds = _trained_rounds(manifest, variant)
    if not rounds:
        raise EmbedError(
            f"{run_dir}: the run is not finished: manifest.json has no completed {variant} stage; "
            + FINISH_HINT.format(run_dir=run_dir)
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
    _check_finished(manifest, run_dir, seed_paths, variant, last)
    return TrainedRun(run_dir, seed, variant, last, manifest)
