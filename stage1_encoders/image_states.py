"""A frozen image trunk's output for every image of a corpus, computed once and shared.

With a frozen pretrained backbone (``ImageEncoder.frozen``) the trunk's output of an image never changes across
steps, rounds, seeds and variants, so stage 1 computes it once per corpus and weights, keeps it per process,
and stores it in the run folder (``data.text_states_dir``, beside the caption states) for the other processes:
training reads the rows of a batch's images and the export reads every image's, without loading pixels.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np
import torch

from stage1_encoders.pooling import UserSums
from stage1_encoders.states_store import stored_tensors

if TYPE_CHECKING:
    from stage1_encoders.encoders import ImageEncoder, Progress

log = logging.getLogger(__name__)

# One corpus's image states per process (the stage-1 runs of a process share them), until clear_image_states_memo.
_IMAGE_STATES_MEMO: dict[tuple, torch.Tensor] = {}


def clear_image_states_memo() -> None:
    """Forget the image states this process keeps; a later use loads or computes them again."""
    _IMAGE_STATES_MEMO.clear()


class ImageStates:
    """``rows [P, D]``: the frozen trunk's pooled output of each post's image (a zero row for a post without one), keyed
    by the corpus fingerprint, the tower's preprocessing and a digest of its weights.

    Shapes:
        rows(posts int64 [B]) -> [B, D]
    """

    def __init__(self, encoder: ImageEncoder, prep, batch_size: int = 256, store_dir=None):
        self.encoder, self.prep, self.batch_size, self.store_dir = encoder, prep, batch_size, store_dir
        self.states: torch.Tensor | None = None
        self.has_image: torch.Tensor | None = None
        self._user_means: tuple[torch.Tensor, torch.Tensor] | None = None

    def key(self) -> tuple:
        cfg = self.encoder.preprocess_cfg
        corpus = self.prep.corpus
        return (
            getattr(corpus, "fingerprint", id(corpus)),
            self.encoder.source,
            self.encoder.frozen_digest(),
            tuple(cfg["size"]) if isinstance(cfg["size"], (tuple, list)) else cfg["size"],
            tuple(cfg["mean"]),
            tuple(cfg["std"]),
            cfg.get("resize_mode"),
            cfg.get("interpolation"),
        )

    def compute(self, progress: Progress | None = None) -> None:
        """Load or compute the states (once per process and key); ``progress(images done, images)`` follows a
        computation here (not a load)."""
        key = self.key()
        if key not in _IMAGE_STATES_MEMO:
            _IMAGE_STATES_MEMO.clear()  # one corpus at a time
            stored = stored_tensors(
                self.store_dir, "image_states", key, lambda: {"states": self._run(progress)}
            )
            _IMAGE_STATES_MEMO[key] = stored["states"]
        self.states = _IMAGE_STATES_MEMO[key]
        self.has_image = torch.as_tensor(np.asarray(self.prep.corpus.post_has_image), dtype=torch.bool)

    def _run(self, progress: Progress | None = None) -> torch.Tensor:
        started = time.perf_counter()
        corpus = self.prep.corpus
        posts = np.flatnonzero(np.asarray(corpus.post_has_image))
        states = torch.zeros(corpus.num_posts, self.encoder.state_dim)
        device = next(self.encoder.parameters()).device
        if progress is not None:
            progress(0, len(posts))
        with torch.no_grad():
            for start in range(0, len(posts), self.batch_size):
                batch = posts[start : start + self.batch_size]
                pixels = self.prep.images(batch).to(device)
                states[torch.from_numpy(batch)] = self.encoder.trunk_rows(pixels).float().cpu()
                if progress is not None:
                    progress(start + len(batch), len(posts))
        log.info(
            "stage 1: the frozen image trunk's output computed for %d images in %.1f s (reused by later rounds, "
            "seeds and variants)",
            len(posts),
            time.perf_counter() - started,
        )
        return states

    def user_means(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each user's mean trunk output over its images ``[U, D]`` (zero without one) and whether it has one
        ``[U]``, computed on first use."""
        if self._user_means is None:
            if self.states is None:
                self.compute()
            corpus = self.prep.corpus
            posts = torch.nonzero(self.has_image).squeeze(1)
            post_user = torch.as_tensor(np.asarray(corpus.post_user), dtype=torch.long)[posts]
            sums = UserSums(corpus.num_users, self.states.shape[1])
            sums.add(self.states[posts], post_user)
            self._user_means = sums.means()
        return self._user_means

    def rows(self, posts: torch.Tensor) -> torch.Tensor:
        """The cached trunk outputs ``[B, D]`` of the images of ``posts``; each post must have an image."""
        if self.states is None:
            self.compute()
        posts = torch.as_tensor(posts, dtype=torch.long).cpu()
        if len(self.states) != len(self.has_image):
            raise RuntimeError("the cached image states were computed for another corpus")
        missing = posts[~self.has_image[posts]]
        if missing.numel():
            raise RuntimeError(f"post(s) {missing[:5].tolist()} have no image, so no cached image state")
        return self.states[posts]
