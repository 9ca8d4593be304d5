"""The embeddings of one corpus's users made by a trained run, and how they are written.

Everything is checked before anything is replaced: the blocks must be finite (a statistic that overflows once it is
standardized with the training corpus's means is refused, naming the column), and the ``.npz`` and the cache
folder are written to temporary names first and moved into place together, so an earlier good output is never
replaced by a bad or partial one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BLOCKS = ("graph", "text", "image")  # the order of [R^G || R^T || R^I], as in the report's rows


class EmbedError(RuntimeError):
    """A run or corpus that cannot be embedded, or an output that cannot be written; the message says what to do."""


def concat_blocks(graph, encoders) -> np.ndarray:
    """float32 ``[N, Dg + Dt + Di]`` = [R^G || R^T || R^I] from stage 2's and stage 1's cache records."""
    parts = (graph.user_graph_emb, encoders.user_text_emb, encoders.user_image_emb)
    return np.concatenate([np.asarray(p, dtype=np.float32) for p in parts], axis=1)


def standardize_like(corpus, train) -> np.ndarray:
    """X ``[N, F]`` of ``corpus`` standardized with ``train``'s column means and standard deviations.

    The reader standardized each corpus with its own statistics (a constant column -> 0); the raw values are
    recovered from them and standardized again with the training corpus's (a column constant in training -> 0).
    Columns are matched by name.

    Raises:
        EmbedError: the statistic columns differ from the training corpus's, or a value is not finite once
            standardized (e.g. far outside the training range), naming the column.
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
    with np.errstate(over="ignore", invalid="ignore"):
        raw = np.where(std > 0, features * np.where(std > 0, std, 1.0) + mean, mean)
        scaled = np.where(train_std > 0, (raw - train_mean) / np.where(train_std > 0, train_std, 1.0), 0.0)
        out = scaled.astype(np.float32)
    bad = ~np.isfinite(out)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise EmbedError(
            f"{corpus.root}/users.csv: column {train_names[col]!r} of user {corpus.user_ids[row]!r} is not a finite "
            f"number once standardized with the training corpus's mean and std ({int(bad.sum())} value(s) in all); "
            "values that far outside the training range cannot be embedded: fix or drop them"
        )
    return out


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

    @property
    def block_dims(self) -> tuple[int, int, int]:
        return (
            self.graph.user_graph_emb.shape[1],
            self.encoders.user_text_emb.shape[1],
            self.encoders.user_image_emb.shape[1],
        )

    def check_finite(self) -> None:
        """Raise :class:`EmbedError` when any block holds NaN or infinity (nothing is written then)."""
        matrix = self.matrix
        if not np.isfinite(matrix).all():
            rows = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
            raise EmbedError(
                f"{len(rows)} user(s) got non-finite embeddings (first: {self.user_ids[rows[0]]!r}); nothing was "
                "written. Check their statistics and posts."
            )

    def _write_npz(self, f) -> None:
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
            block_dims=np.asarray(self.block_dims),
        )

    def save_npz(self, path: Path) -> Path:
        """Write ``user_ids``, ``embeddings`` and the separate blocks to ``path`` (.npz), atomically."""
        self.check_finite()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                self._write_npz(f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def blocks(self) -> dict[str, np.ndarray]:
        """``{"graph": R^G, "text": R^T, "image": R^I}``."""
        return {
            "graph": np.asarray(self.graph.user_graph_emb, dtype=np.float32),
            "text": np.asarray(self.encoders.user_text_emb, dtype=np.float32),
            "image": np.asarray(self.encoders.user_image_emb, dtype=np.float32),
        }

    def masks(self) -> dict[str, np.ndarray]:
        return {
            "text_mask": np.asarray(self.encoders.text_mask),
            "image_mask": np.asarray(self.encoders.image_mask),
        }

    def write_table(self, path: Path, metadata: dict, fmt: str = ".npz") -> None:
        """Write the main output at ``path`` (not atomically: :meth:`save` writes it to a temporary name) in
        format ``fmt``: ``.npz`` (numpy) or ``.parquet`` (``bridge.inference.exports``)."""
        if fmt == ".parquet":
            from bridge.inference.exports import write_parquet

            write_parquet(path, self.user_ids, self.blocks(), self.masks(), metadata)
        else:
            with open(path, "wb") as f:
                self._write_npz(f)

    def save(
        self, out: Path, cache_dir: Path, producers: dict, metadata: dict | None = None
    ) -> tuple[Path, Path, Path]:
        """Write the main output (``.npz`` or ``.parquet``) and the cache folder's round
        (``<cache_dir>/round_<r>/{encoders,graph}.h5``) as one unit: both are written under temporary names first
        (the cache's own checks run then), and only when both succeeded are they moved into place. Returns
        (out, encoders.h5, graph.h5)."""
        from cache import write_encoder_embeddings, write_graph_outputs

        self.check_finite()
        out, cache_dir = Path(out), Path(cache_dir)
        for folder in (out.parent, cache_dir):
            folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_out = tempfile.mkstemp(prefix=out.name + ".", suffix=out.suffix + ".tmp", dir=out.parent)
        os.close(fd)
        staging = Path(tempfile.mkdtemp(prefix=".embed-", dir=cache_dir))
        try:
            meta = {**(metadata or {}), "round": self.round, "corpus_fingerprint": self.fingerprint}
            self.write_table(Path(tmp_out), meta, out.suffix)
            enc = write_encoder_embeddings(
                staging,
                self.round,
                self.encoders,
                fingerprint=self.fingerprint,
                producer=producers["stage1"],
                model="bridge.embed: stage 1 inference (no training)",
            )
            graph = write_graph_outputs(
                staging,
                self.round,
                self.graph,
                fingerprint=self.fingerprint,
                producer=producers["stage2"],
                model="bridge.embed: stage 2 inference (no training)",
            )
            round_dir = Path(enc).parent
            target = cache_dir / round_dir.name
            old = cache_dir / f".{round_dir.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            if target.exists():
                os.replace(target, old)
            os.replace(round_dir, target)
            os.replace(tmp_out, out)
            shutil.rmtree(old, ignore_errors=True)
            return out, target / Path(enc).name, target / Path(graph).name
        finally:
            Path(tmp_out).unlink(missing_ok=True)
            shutil.rmtree(staging, ignore_errors=True)
