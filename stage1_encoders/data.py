"""Stage 1's data pipeline: batches built around sampled user pairs, with a few posts per user, so the LM,
ITA and GCL losses all come from one batch. Collation tokenizes, masks and loads images.

Stage 1 never reads labels, fans or splits: pre-training is self-supervised and transductive over every
user's posts and the corpus edges.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import lightning as L
import numpy as np
import torch
from open_clip.transform import ResizeKeepRatio
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import Compose, Normalize, Resize, ToTensor

from corpus import Corpus
from stage1_encoders.masking import mask_tokens, maskable_positions


def split_to_tensor(image_transform) -> tuple[Callable | None, torch.Tensor | None, torch.Tensor | None]:
    """Split a torchvision ``Compose([..., ToTensor, Normalize])`` (open_clip's preprocessing) into its PIL part
    and the normalisation's ``(mean, std)`` as [1, C, 1, 1] tensors, so images can be kept as uint8 and
    normalised a batch at a time. ``(None, None, None)`` for any other transform (then it runs per image)."""
    steps = list(getattr(image_transform, "transforms", []))
    if len(steps) < 2 or not isinstance(steps[-2], ToTensor) or not isinstance(steps[-1], Normalize):
        return None, None, None
    norm = steps[-1]
    mean = torch.as_tensor(norm.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.as_tensor(norm.std, dtype=torch.float32).view(1, -1, 1, 1)
    return Compose(steps[:-2]), mean, std


# An image is decoded no larger than this many times the model's input side (``Corpus.load_image``'s
# ``min_side``), so the resize that follows still shrinks it at least this much: Pillow's ``reducing_gap``, at
# which its documentation calls the two-step result indistinguishable from one resampling in most cases.
REDUCING_GAP = 3

# A batch's images are decoded in threads only once a batch decoded in turn took at least this long per image:
# below it the threads cost more than they save (Python's share of the work holds the GIL). Measured on this
# project's 2-core machine: 32 x 32 PNGs (0.4 ms each) took 1.7x as long in 2 threads, 256-pixel images (1.2 ms)
# 0.9x, 1,080-pixel ones (4-9 ms) 0.6x (benchmarks/bench_image_decode.py).
THREADED_DECODE_SECONDS = 2e-3


def decode_side(pil_stage: Callable | None, image_size: tuple[int, ...]) -> int | None:
    """The least side an image needs before ``pil_stage`` (the PIL part of open_clip's preprocessing) resizes it
    to ``image_size``: ``REDUCING_GAP`` times the larger output side when the stage starts by resizing the whole
    image (torchvision's ``Resize``, open_clip's ``ResizeKeepRatio``), else None (decode at full size)."""
    steps = list(getattr(pil_stage, "transforms", []))
    if not steps or not isinstance(steps[0], (Resize, ResizeKeepRatio)):
        return None
    return REDUCING_GAP * max(image_size)


class PostPreprocessor:
    """Turns posts into model inputs: captions -> token ids, images -> normalised pixel tensors.

    Decoding and resizing an image costs far more than encoding it with a small ViT, and training draws each
    post many times, so decoded images are kept in memory up to ``image_cache_mb`` (per process; a DataLoader
    worker has its own). The cache is keyed by image file, so posts that share one (reposts) decode it once,
    and it holds the resized uint8 pixels (a quarter of float32); torchvision's ``ToTensor`` + ``Normalize``
    then run on the whole batch, with the same float operations, so the pixels equal the per-image transform's
    bit for bit. A transform of another shape runs per image and its float output is cached instead.

    A large image is decoded small: with open_clip's preprocessing, which starts by resizing, an image whose
    sides are both at least ``2 * REDUCING_GAP`` times the model's input side is decoded at a reduced scale
    (JPEG) and box-reduced by an integer factor before it (``decode_side``, ``Corpus.load_image``'s
    ``min_side``), so its cost no longer grows with the file's pixels. Smaller images are decoded exactly as
    before. The images of a batch are decoded by ``decode_threads`` threads (Pillow decodes and resizes
    without holding the GIL), in the batch's order; by default only once a batch decoded in turn has shown
    that an image costs at least ``THREADED_DECODE_SECONDS``. Threads or not, the pixels are the same.

    Args:
        corpus: the corpus. tokenizer: a ``PreTrainedTokenizerFast``. image_transform: PIL -> [3, H, W]
        (open_clip's preprocessing of the image tower). image_size: (H, W). max_length: token limit.
        image_cache_mb: memory for decoded images (0 = no cache). decode_threads: threads decoding a batch's
        images, always (None: torch's intra-op thread count at the time of the batch, once images have been seen
        to cost at least ``THREADED_DECODE_SECONDS`` each).
    """

    def __init__(
        self,
        corpus: Corpus,
        tokenizer,
        image_transform,
        image_size: tuple[int, int],
        max_length: int,
        image_cache_mb: float = 0.0,
        decode_threads: int | None = None,
    ):
        if decode_threads is not None and decode_threads < 1:
            raise ValueError(f"decode_threads must be >= 1 or None, got {decode_threads}")
        self.corpus = corpus
        self.tokenizer = tokenizer
        self.image_transform = image_transform
        self.image_size = tuple(image_size)
        self.max_length = max_length
        self.image_cache_bytes = int(image_cache_mb * 2**20)
        self._pil_stage, self._mean, self._std = split_to_tensor(image_transform)
        self.decode_side = decode_side(self._pil_stage, self.image_size)
        self.decode_threads = decode_threads
        self._seconds_per_image: float | None = None  # of the last batch decoded in turn
        self._image_cache: dict[str, torch.Tensor] = {}
        self._cached_bytes = 0

    def texts(self, post_idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids [T, L], attention_mask [T, L]) of the captions of ``post_idx`` (padded to the longest)."""
        if len(post_idx) == 0:
            empty = torch.zeros(0, 2, dtype=torch.long)
            return empty, empty.clone()
        enc = self._tokenize(post_idx, padding="longest", return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    def token_counts(self, post_idx: np.ndarray, block: int = 4096) -> np.ndarray:
        """int64 ``[T]``: the number of tokens :meth:`texts` gives each caption of ``post_idx`` (its attention
        mask's sum), tokenized ``block`` captions at a time without padding."""
        counts = np.zeros(len(post_idx), dtype=np.int64)
        for start in range(0, len(post_idx), block):
            ids = self._tokenize(post_idx[start : start + block], return_attention_mask=False)["input_ids"]
            counts[start : start + len(ids)] = [len(row) for row in ids]
        return counts

    def _tokenize(self, post_idx: np.ndarray, **options):
        """The tokenizer over the captions of ``post_idx`` with the settings every caption shares (truncation to
        ``max_length``), so that :meth:`texts` and :meth:`token_counts` cannot disagree; ``options`` add padding
        and the output form."""
        return self.tokenizer(
            [self.corpus.post_text[i] for i in post_idx],
            truncation=True,
            max_length=self.max_length,
            **options,
        )

    def images(self, post_idx: np.ndarray) -> torch.Tensor:
        """float32 [I, 3, H, W] pixels of the images of ``post_idx``."""
        if len(post_idx) == 0:
            return torch.zeros(0, 3, *self.image_size)
        pixels = torch.stack(self._pixels([int(i) for i in post_idx]))
        if self._pil_stage is None:
            return pixels
        return pixels.to(torch.float32).div(255).sub_(self._mean).div_(self._std)  # ToTensor, Normalize

    def _pixels(self, posts: list[int]) -> list[torch.Tensor]:
        """Each post's transformed pixels, from the cache or decoded (each file once per call, by
        ``decode_threads`` threads), in the order of ``posts``."""
        keys = [self.corpus.post_image[post] for post in posts]
        todo: dict[str, int] = {}  # file -> the first post that shows it
        for post, key in zip(posts, keys):
            if key not in self._image_cache:
                todo.setdefault(key, post)
        threads = min(len(todo), self.decode_threads or torch.get_num_threads())
        costly = self._seconds_per_image is not None and self._seconds_per_image >= THREADED_DECODE_SECONDS
        if threads > 1 and (self.decode_threads is not None or costly):
            with ThreadPoolExecutor(threads) as pool:
                fresh = dict(zip(todo, pool.map(self._decode, todo.values())))
        else:
            start = time.perf_counter()
            fresh = {key: self._decode(post) for key, post in todo.items()}
            if fresh:
                self._seconds_per_image = (time.perf_counter() - start) / len(fresh)
        for key, pixels in fresh.items():
            size = pixels.numel() * pixels.element_size()
            if self._cached_bytes + size <= self.image_cache_bytes:
                self._image_cache[key] = pixels
                self._cached_bytes += size
        return [fresh[key] if key in fresh else self._image_cache[key] for key in keys]

    def _decode(self, post: int) -> torch.Tensor:
        """The post's image through the transform (uint8 [C, H, W] before ``ToTensor`` with open_clip's
        preprocessing, else the transform's output); safe to run in several threads at once."""
        image = self.corpus.load_image(post, min_side=self.decode_side)
        if self._pil_stage is None:
            return self.image_transform(image)
        resized = self._pil_stage(image)  # ToTensor's layout before its float conversion: uint8 [C, H, W]
        if resized.mode not in ("RGB", "L"):  # ToTensor would not divide these by 255
            raise ValueError(f"post {post}: the image transform gave a {resized.mode} image, not RGB")
        pixels = torch.from_numpy(np.array(resized, dtype=np.uint8, copy=True))
        return pixels.view(pixels.shape[0], pixels.shape[1], -1).permute(2, 0, 1).contiguous()


def is_edge_key(keys: torch.Tensor, sorted_edge_keys: torch.Tensor) -> torch.Tensor:
    """bool [n]: which of ``keys`` (int64 [n]) occur in ``sorted_edge_keys`` (int64 [E], ascending).

    Equal to ``torch.isin(keys, sorted_edge_keys)`` at O(n log E) cost (a binary search per key), where
    ``isin`` costs O((n + E) log(n + E)): it reads every edge key at every call.
    """
    if sorted_edge_keys.numel() == 0:
        return torch.zeros(keys.shape, dtype=torch.bool)
    slot = torch.searchsorted(sorted_edge_keys, keys).clamp_(max=sorted_edge_keys.numel() - 1)
    return sorted_edge_keys[slot] == keys


def sample_negative_pairs(
    num_pairs: int,
    num_users: int,
    sorted_edge_keys: torch.Tensor,
    max_rounds: int = 50,
    *,
    user_ids: torch.Tensor | None = None,
    key_base: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniformly sampled pairs (u != v) of ``num_users`` users that are not linked; int64 [n] each,
    n <= num_pairs (fewer only when the graph is so dense that rejection sampling gives up). A round costs
    O(num_pairs log E), independent of the number of edges E up to the binary search.

    ``sorted_edge_keys`` holds ``a * key_base + b`` (a < b) of every edge, ascending; ``key_base`` defaults to
    ``num_users``. With ``user_ids`` (int64 [num_users], ascending and distinct, e.g. a batch's users) the
    pairs are drawn among those users and returned as indices into ``user_ids``, and the edge check uses
    their ids ``user_ids[u]`` (``key_base`` then is the number of users the ids index).
    """
    base = num_users if key_base is None else key_base
    got_u, got_v, have = [], [], 0
    for _ in range(max_rounds):
        need = num_pairs - have
        if need <= 0 or num_users < 2:
            break
        u = torch.randint(num_users, (2 * need + 8,))
        v = torch.randint(num_users, (2 * need + 8,))
        lo, hi = torch.minimum(u, v), torch.maximum(u, v)
        if user_ids is not None:  # ascending ids: the order of a pair's indices is the order of its ids
            lo, hi = user_ids[lo], user_ids[hi]
        ok = (u != v) & ~is_edge_key(lo * base + hi, sorted_edge_keys)
        u, v = u[ok][:need], v[ok][:need]
        got_u.append(u)
        got_v.append(v)
        have += len(u)
    if not got_u:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.cat(got_u), torch.cat(got_v)


class PairBatchCollator:
    """Collate a list of edge ids into one training batch.

    For the positive pairs (the given edges, randomly oriented) and ``negatives_per_positive`` times as many
    uniformly sampled non-linked pairs, take up to ``posts_per_user`` random posts of every user in a pair, tokenize
    their captions (and mask them for MLM), and load their images. ``batch_negatives_per_positive`` adds
    non-linked pairs drawn uniformly among the users already in the batch (GCL pairs without encoder cost).

    Batch (U users, T captions, I images, Q posts with both, B pairs):
        text_post int64 [T], image_post int64 [I]: corpus post indices of the caption and image rows;
        input_ids, attention_mask [T, L]; mlm_input_ids, mlm_labels [T, L] (when ``mlm``);
        text_post_user int64 [T]; pixel_values [I, 3, H, W] (None with ``load_pixels=False``: a frozen image
        tower reads its cached output of each image); image_post_user int64 [I];
        ita_text_row, ita_image_row int64 [Q]; pair_u, pair_v int64 [B] (indices into the U batch users);
        pair_label float32 [B]; pair_weight float32 [B]; users int64 [U] (corpus indices); num_users int U; num_posts int P.

    ``positives="neighbours"`` (the InfoNCE form of GCL) makes the items anchor users instead of edges (every user
    with an edge once per epoch, ``num_items`` of them): each anchor's positive is one of its neighbours drawn
    with probability proportional to ``edge_weight`` (uniformly without it, or when all its edges weigh 0), and
    positives carry weight 1. ``common_neighbours`` adds ``pair_common`` float32 [P, P]: the number of common
    neighbours of positive pair i's first user and positive pair j's second user (P positives, first in B).

    ``text_gcl_users=A > 0`` (the graph head over frozen text) adds a batch of its own for the text GCL, which
    reads cached per-user embeddings and so needs no posts: ``text_gcl_anchor`` int64 [A'] (A' = min(A, users
    with an edge), drawn without replacement), ``text_gcl_positive`` int64 [A'] (one neighbour of each, drawn
    by edge weight as above), both corpus user indices, and with ``common_neighbours`` ``text_gcl_common``
    float32 [A', A'] (common neighbours of anchor i and positive j).
    """

    def __init__(
        self,
        corpus: Corpus,
        preprocessor: PostPreprocessor,
        *,
        negatives_per_positive: float = 1.0,
        batch_negatives_per_positive: float = 0.0,
        posts_per_user: int = 2,
        mlm: bool = True,
        mlm_probability: float = 0.15,
        edge_weight: np.ndarray | None = None,
        positives: str = "edges",
        common_neighbours: bool = False,
        text_gcl_users: int = 0,
        load_pixels: bool = True,
    ):
        if positives not in ("edges", "neighbours"):
            raise ValueError(f"positives must be 'edges' or 'neighbours', got {positives!r}")
        self.prep = preprocessor
        self.num_users = corpus.num_users
        self.edges = torch.as_tensor(corpus.edges, dtype=torch.long).reshape(-1, 2)
        # sorted once (corpus edges are sorted already): each step's negative check is then a binary search
        self.edge_keys = torch.sort(self.edges[:, 0] * self.num_users + self.edges[:, 1]).values
        self.edge_weight = None if edge_weight is None else torch.as_tensor(edge_weight, dtype=torch.float32)
        self.post_offsets = np.asarray(corpus.post_offsets, dtype=np.int64)
        self.has_text = np.asarray(corpus.post_has_text)
        self.has_image = np.asarray(corpus.post_has_image)
        self.negatives_per_positive = negatives_per_positive
        self.batch_negatives_per_positive = batch_negatives_per_positive
        self.posts_per_user = posts_per_user
        self.mlm = mlm
        self.mlm_probability = mlm_probability
        tok = preprocessor.tokenizer
        self.special_ids = torch.tensor(sorted(set(tok.all_special_ids)), dtype=torch.long)
        vocab = torch.arange(len(tok))
        self.random_token_ids = vocab[~torch.isin(vocab, self.special_ids)]
        self.mask_token_id = tok.mask_token_id
        self.positives = positives
        self.common_neighbours = common_neighbours
        self.text_gcl_users = text_gcl_users
        self.load_pixels = load_pixels
        self._text_gcl_rng: torch.Generator | None = None
        if positives == "neighbours" or common_neighbours or text_gcl_users > 0:
            self._build_neighbours()

    def _build_neighbours(self) -> None:
        """CSR of the symmetric graph (both directions of each edge, with its weight) and its binary matrix."""
        import scipy.sparse as sp

        src = torch.cat([self.edges[:, 0], self.edges[:, 1]])
        dst = torch.cat([self.edges[:, 1], self.edges[:, 0]])
        weight = torch.ones(len(self.edges)) if self.edge_weight is None else self.edge_weight
        weight = torch.cat([weight, weight]).double()
        order = torch.argsort(src, stable=True)
        self.nbr, self.nbr_weight = dst[order], weight[order]
        degree = torch.bincount(src, minlength=self.num_users)
        self.nbr_offsets = torch.zeros(self.num_users + 1, dtype=torch.long)
        self.nbr_offsets[1:] = torch.cumsum(degree, 0)
        self.nbr_cum = torch.cumsum(self.nbr_weight, 0)
        self.anchors = torch.nonzero(degree > 0).squeeze(1)
        ones = np.ones(len(src), dtype=np.float32)
        self.adjacency = sp.csr_matrix((ones, (src.numpy(), dst.numpy())), shape=(self.num_users,) * 2)

    @property
    def num_items(self) -> int:
        """Items of one epoch: corpus edges, or anchor users (users with an edge) for ``positives="neighbours"``."""
        return len(self.anchors) if self.positives == "neighbours" else len(self.edges)

    def sample_neighbours(
        self, users: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """One neighbour per user (int64 [n]), drawn with probability proportional to the edge weight
        (uniformly when the user's edges weigh 0 in total). Every user must have an edge."""
        start, end = self.nbr_offsets[users], self.nbr_offsets[users + 1]
        before = torch.where(
            start > 0, self.nbr_cum[(start - 1).clamp(min=0)], torch.zeros(len(users)).double()
        )
        total = self.nbr_cum[end - 1] - before
        draw = before + torch.rand(len(users), dtype=torch.float64, generator=generator) * total
        pick = torch.searchsorted(self.nbr_cum, draw, right=True)
        uniform = start + (torch.rand(len(users), generator=generator) * (end - start)).long()
        pick = torch.where(total > 0, pick, uniform)
        return self.nbr[torch.minimum(torch.maximum(pick, start), end - 1)]

    def sample_pairs(
        self, edge_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(u [B], v [B], label [B], weight [B]) in corpus user indices: positives first, then negatives."""
        if self.positives == "neighbours":
            pos_u = self.anchors[edge_ids]
            pos_v = self.sample_neighbours(pos_u)
            neg_u, neg_v = sample_negative_pairs(
                int(round(self.negatives_per_positive * len(pos_u))), self.num_users, self.edge_keys
            )
            label = torch.cat([torch.ones(len(pos_u)), torch.zeros(len(neg_u))])
            weight = torch.ones(len(label))
            return torch.cat([pos_u, neg_u]), torch.cat([pos_v, neg_v]), label, weight
        pos = self.edges[edge_ids]
        flip = torch.rand(len(pos)) < 0.5  # the pair MLP is not symmetric: show both orders
        pos_u = torch.where(flip, pos[:, 1], pos[:, 0])
        pos_v = torch.where(flip, pos[:, 0], pos[:, 1])
        num_neg = int(round(self.negatives_per_positive * len(pos)))
        neg_u, neg_v = sample_negative_pairs(num_neg, self.num_users, self.edge_keys)
        label = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg_u))])
        pos_weight = torch.ones(len(pos)) if self.edge_weight is None else self.edge_weight[edge_ids]
        weight = torch.cat([pos_weight, torch.ones(len(neg_u))])
        return torch.cat([pos_u, neg_u]), torch.cat([pos_v, neg_v]), label, weight

    def common_counts(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """float32 [len(first), len(second)]: common neighbours of ``first[i]`` and ``second[j]``."""
        a, b = first.numpy(), second.numpy()
        return torch.from_numpy((self.adjacency[a] @ self.adjacency[b].T).toarray().astype(np.float32))

    def sample_text_gcl(self) -> dict[str, torch.Tensor]:
        """The text GCL's own batch (see the class docstring), drawn from a random stream of its own (seeded from
        the run's seed on first use): the post batches are then the very ones the no-GCL baseline draws."""
        if self._text_gcl_rng is None:
            self._text_gcl_rng = torch.Generator().manual_seed(torch.initial_seed() + 7919)
        count = min(self.text_gcl_users, len(self.anchors))
        anchor = self.anchors[torch.randperm(len(self.anchors), generator=self._text_gcl_rng)[:count]]
        positive = self.sample_neighbours(anchor, self._text_gcl_rng)
        out = {"text_gcl_anchor": anchor, "text_gcl_positive": positive}
        if self.common_neighbours:
            out["text_gcl_common"] = self.common_counts(anchor, positive)
        return out

    def sample_posts(self, users: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(post index [P], batch-user index [P]): up to ``posts_per_user`` random posts of each user."""
        post_idx, post_user = [], []
        for row, user in enumerate(users.tolist()):
            start, end = self.post_offsets[user], self.post_offsets[user + 1]
            count = end - start
            if count > self.posts_per_user:
                chosen = start + torch.randperm(int(count))[: self.posts_per_user].numpy()
            else:
                chosen = np.arange(start, end)
            post_idx.append(chosen)
            post_user.append(np.full(len(chosen), row))
        if not post_idx:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate(post_idx).astype(np.int64), np.concatenate(post_user).astype(np.int64)

    def __call__(self, edge_ids: list[int]) -> dict:
        pair_u, pair_v, label, weight = self.sample_pairs(torch.as_tensor(edge_ids, dtype=torch.long))
        users, inverse = torch.unique(torch.cat([pair_u, pair_v]), return_inverse=True)
        pair_u, pair_v = inverse[: len(pair_u)], inverse[len(pair_u) :]
        num_extra = int(round(self.batch_negatives_per_positive * len(edge_ids)))
        if num_extra > 0:  # more negatives among users the batch encodes anyway: no extra encoder work
            extra_u, extra_v = sample_negative_pairs(
                num_extra, len(users), self.edge_keys, user_ids=users, key_base=self.num_users
            )
            pair_u, pair_v = torch.cat([pair_u, extra_u]), torch.cat([pair_v, extra_v])
            label = torch.cat([label, torch.zeros(len(extra_u))])
            weight = torch.cat([weight, torch.ones(len(extra_u))])
        common = None
        if self.common_neighbours:
            positive = label > 0
            common = self.common_counts(users[pair_u[positive]], users[pair_v[positive]])
        post_idx, post_user = self.sample_posts(users)
        has_text = self.has_text[post_idx]
        has_image = self.has_image[post_idx]
        input_ids, attention_mask = self.prep.texts(post_idx[has_text])
        both = has_text & has_image
        batch = {
            "text_post": torch.from_numpy(post_idx[has_text]),
            "image_post": torch.from_numpy(post_idx[has_image]),
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "text_post_user": torch.from_numpy(post_user[has_text]),
            # a frozen image tower reads its cached output of each image (image_post): no pixels to load
            "pixel_values": self.prep.images(post_idx[has_image]) if self.load_pixels else None,
            "image_post_user": torch.from_numpy(post_user[has_image]),
            "ita_text_row": torch.from_numpy((np.cumsum(has_text) - 1)[both]),
            "ita_image_row": torch.from_numpy((np.cumsum(has_image) - 1)[both]),
            "pair_u": pair_u,
            "pair_v": pair_v,
            "pair_label": label,
            "pair_weight": weight,
            "users": users,
            "num_users": len(users),
            "num_posts": len(post_idx),
        }
        if common is not None:
            batch["pair_common"] = common
        if self.text_gcl_users > 0:
            batch.update(self.sample_text_gcl())
        if self.mlm:
            maskable = maskable_positions(input_ids, attention_mask, self.special_ids)
            batch["mlm_input_ids"], batch["mlm_labels"] = mask_tokens(
                input_ids,
                maskable,
                mask_token_id=self.mask_token_id,
                random_token_ids=self.random_token_ids,
                mlm_probability=self.mlm_probability,
            )
        return batch


class _Indices(Dataset):
    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, idx: int) -> int:
        return idx


class Stage1DataModule(L.LightningDataModule):
    """One epoch = every corpus edge once as a positive pair (shuffled), ``pairs_per_batch`` per batch.

    Under DDP Lightning shards the edges across ranks with a ``DistributedSampler``.
    """

    def __init__(
        self, collator: PairBatchCollator, num_edges: int, pairs_per_batch: int = 32, num_workers: int = 0
    ):
        super().__init__()
        self.collator = collator
        self.num_edges = num_edges
        self.pairs_per_batch = pairs_per_batch
        self.num_workers = num_workers

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            _Indices(self.num_edges),
            batch_size=self.pairs_per_batch,
            shuffle=True,
            collate_fn=self.collator,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
