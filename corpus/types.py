"""The in-memory corpus (``Corpus``) and the error every bad input raises (``CorpusError``).

The field table lives in docs/architecture.md; this module is its single implementation.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from corpus.pixels import reduce_to, to_rgb
from mmga_common.config import located

SPLIT_NAMES = ("train", "val", "test")


class CorpusError(ValueError):
    """A bad corpus input, located by file, line and field.

    ``str(err)`` reads ``"posts.jsonl, line 7, field 'image': image file not found: images/a.png"``.
    ``line`` is 1-based (``users.csv``'s header is line 1) or ``None`` when the problem is the whole file;
    ``field`` is ``None`` when no single field is at fault.
    """

    def __init__(self, file: str | Path, line: int | None, field: str | None, msg: str):
        self.file = str(file)
        self.line = line
        self.field = field
        self.msg = msg
        super().__init__(located(self.file, line, field, msg))

    def __reduce__(self):
        return (type(self), (self.file, self.line, self.field, self.msg))


class CorpusWarning(UserWarning):
    """Something the reader fixed on its own but wants you to know about (e.g. self-loops dropped)."""


@dataclass
class Corpus:
    """A validated corpus. The user order of ``user_ids`` is THE user order everywhere (cache rows too).

    Documented fields (docs/architecture.md) come first; the extras after them have defaults so that
    code building a ``Corpus`` by hand with the documented fields keeps working.
    """

    root: Path
    user_ids: list[str]  # [N]
    features: np.ndarray  # float32 [N, F], standardized per column (constant column -> 0)
    feature_names: list[str]  # [F]
    labels: np.ndarray  # int64 [N], index into label_names, -1 = unlabelled
    label_names: list[str]  # sorted topic names
    fans: np.ndarray  # float64 [N], nan = unknown
    splits: np.ndarray  # int8 [N]: 0 train, 1 val, 2 test
    edges: np.ndarray  # int64 [E, 2], u < v, unique, sorted lexicographically
    post_offsets: np.ndarray  # int64 [N+1], CSR over users
    post_text: list[str]  # [P]
    post_image: list[str | None]  # [P], path relative to root, validated
    fingerprint: str  # sha256 hex
    # Extras (not in the original contract; all optional).
    split_source: str = "users.csv"  # "users.csv" or "seeded-stratified-60/20/20(seed=S)"
    post_ids: list[str | None] | None = (
        None  # [P] (None where a line has no post_id); None when no line has one
    )
    post_lines: np.ndarray | None = None  # int64 [P], 1-based line of each post in posts.jsonl
    feature_mean: np.ndarray | None = None  # float64 [F], raw column means used for standardization
    feature_std: np.ndarray | None = None  # float64 [F], raw column stds (0 for a constant column)
    max_image_pixels: int | None = None  # load_image refuses larger images (set by load_corpus)

    # ---- sizes -------------------------------------------------------------------------------------
    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_posts(self) -> int:
        return len(self.post_text)

    @property
    def num_edges(self) -> int:
        return int(self.edges.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    # ---- posts -------------------------------------------------------------------------------------
    @cached_property
    def post_user(self) -> np.ndarray:
        """int64 [P]: user index of each post."""
        counts = np.diff(self.post_offsets)
        return np.repeat(np.arange(self.num_users, dtype=np.int64), counts)

    @cached_property
    def user_num_posts(self) -> np.ndarray:
        """int64 [N]: number of posts of each user (0 is legal)."""
        return np.diff(self.post_offsets).astype(np.int64)

    @cached_property
    def post_has_image(self) -> np.ndarray:
        """bool [P]: the post has an image."""
        return np.fromiter((p is not None for p in self.post_image), dtype=bool, count=self.num_posts)

    @cached_property
    def post_has_text(self) -> np.ndarray:
        """bool [P]: the caption has a non-whitespace character."""
        return np.fromiter((bool(t.strip()) for t in self.post_text), dtype=bool, count=self.num_posts)

    def _any_per_user(self, post_flag: np.ndarray) -> np.ndarray:
        return np.bincount(self.post_user[post_flag], minlength=self.num_users) > 0

    @cached_property
    def user_image_mask(self) -> np.ndarray:
        """bool [N]: the user has at least one image (the cache's ``image_mask``)."""
        return self._any_per_user(self.post_has_image)

    @cached_property
    def user_text_mask(self) -> np.ndarray:
        """bool [N]: the user has at least one non-empty caption (the cache's ``text_mask``)."""
        return self._any_per_user(self.post_has_text)

    def image_path(self, post_idx: int) -> Path | None:
        """Absolute path of the post's image, or None when the post has no image."""
        rel = self.post_image[post_idx]
        return None if rel is None else self.root / rel

    def load_image(self, post_idx: int, min_side: int | None = None) -> Image.Image:
        """Decode the post's image as 8-bit RGB (16-bit and float images are scaled by range, not clipped:
        ``corpus.pixels.to_rgb``). Raises CorpusError naming posts.jsonl, the line and the image.

        With ``min_side``, an image whose sides are both at least twice ``min_side`` comes back smaller, each side
        still at least ``min_side``, for a caller that resizes it further anyway: a JPEG is decoded at a reduced
        scale (libjpeg's DCT scaling, 1/2 to 1/8, Pillow's ``draft``), and the decoded image is box-reduced by
        the largest integer factor that keeps both sides at least ``min_side`` (``corpus.pixels.reduce_to``).
        The limit of ``max_image_pixels`` applies to the file's own size.

        Containment is checked again at open time (the real path must still be a regular file inside the
        corpus folder), so an image swapped for a symlink after loading is not read from outside it.
        """
        rel = self.post_image[post_idx]
        line = None if self.post_lines is None else int(self.post_lines[post_idx])
        if rel is None:
            raise CorpusError("posts.jsonl", line, "image", f"post {post_idx} has no image (image is null)")
        root_real = os.path.realpath(self.root)
        real = os.path.realpath(os.path.join(root_real, rel))
        if not real.startswith(root_real.rstrip(os.sep) + os.sep):
            raise CorpusError(
                "posts.jsonl",
                line,
                "image",
                f"path now resolves outside the corpus folder to {real!r}: {rel!r}",
            )
        if not os.path.isfile(real):
            raise CorpusError(
                "posts.jsonl", line, "image", f"image file not found or not a regular file: {rel!r}"
            )
        try:
            with Image.open(real) as img:
                width, height = img.size
                if self.max_image_pixels is not None and width * height > self.max_image_pixels:
                    raise CorpusError(
                        "posts.jsonl",
                        line,
                        "image",
                        f"image is {width}x{height} = {width * height} pixels, over the limit of "
                        f"{self.max_image_pixels} (max_image_pixels): {rel!r}",
                    )
                if min_side is not None and img.format == "JPEG":
                    img.draft(img.mode, (min_side, min_side))
                img.load()
                rgb = to_rgb(img)
                return rgb if min_side is None else reduce_to(rgb, min_side)
        except CorpusError:
            raise
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            raise CorpusError(
                "posts.jsonl", line, "image", f"cannot decode image ({type(err).__name__}: {err}): {rel!r}"
            ) from None

    # ---- labels and splits -------------------------------------------------------------------------
    @property
    def labelled_mask(self) -> np.ndarray:
        """bool [N]: the user has a label."""
        return self.labels >= 0

    def split_mask(self, split: str | int) -> np.ndarray:
        """bool [N] for ``"train"``/``"val"``/``"test"`` (or 0/1/2)."""
        code = SPLIT_NAMES.index(split) if isinstance(split, str) else int(split)
        return self.splits == code

    def save_splits(self, path: str | Path) -> Path:
        """Write ``user_id,split`` rows (users.csv order) so a seeded split can be reused or audited."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["user_id", "split"])
            for uid, code in zip(self.user_ids, self.splits.tolist()):
                writer.writerow([uid, SPLIT_NAMES[code]])
        return path

    def summary(self) -> dict:
        """Counts for logs and reports."""
        return {
            "users": self.num_users,
            "posts": self.num_posts,
            "edges": self.num_edges,
            "features": len(self.feature_names),
            "classes": self.num_classes,
            "labelled": int(self.labelled_mask.sum()),
            "users_without_posts": int((self.user_num_posts == 0).sum()),
            "users_with_image": int(self.user_image_mask.sum()),
            "users_with_text": int(self.user_text_mask.sum()),
            "split_source": self.split_source,
            "fingerprint": self.fingerprint,
        }
