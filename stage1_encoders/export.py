"""Encode every post without gradients and pool per user into the cache's ``EncoderEmbeddings``.

Each batch's embeddings are added to per-user sums at once (``UserSums``) and dropped: the export holds ``[U, D]``
per modality, never a row per post (at the paper's size, 2 million posts, those rows and their copies were
gigabytes). The posts are cut into fixed batches first and the batches are then split across ranks, so a rank's
shard runs exactly the batches a single process would; the ranks' sums are added in rank order, which equals the
single-process export up to the last bit of a user whose posts two ranks share.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from cache import EncoderEmbeddings
from stage1_encoders.data import PostPreprocessor
from stage1_encoders.encoders import ImageEncoder, TextEncoder
from stage1_encoders.pooling import UserSums


@dataclass
class PostSums:
    """Per-user sums of the encoded posts of each modality (of one shard, or of all after ``merge_shards``).

    Attributes:
        image: the image embeddings' sums ``[U, Di]`` and counts.
        text: the caption embeddings' sums ``[U, Dt]`` and counts.
        image_trunk: with an image graph head, the frozen trunk outputs' sums ``[U, state_dim]`` (what the head
            reads); else None.
    """

    image: UserSums
    text: UserSums
    image_trunk: UserSums | None = None


def export_batches(num_posts: int, batch_size: int) -> list[np.ndarray]:
    """The fixed batches of post indices every export uses: ``[0, b), [b, 2b), ...``."""
    return [np.arange(start, min(start + batch_size, num_posts)) for start in range(0, num_posts, batch_size)]


def shard_range(num_items: int, rank: int, world_size: int) -> range:
    """Contiguous, balanced share of ``range(num_items)`` for ``rank`` (shards cover it exactly once)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside [0, {world_size})")
    base, extra = divmod(num_items, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


class _PostBatches(Dataset):
    """One export batch's inputs; with ``tokenize=False`` (the text encoder reads its captions from the pooled
    cache) no token ids: ``input_ids`` and ``attention_mask`` are None."""

    def __init__(
        self,
        batches: list[np.ndarray],
        prep: PostPreprocessor,
        has_text: np.ndarray,
        has_image: np.ndarray,
        tokenize: bool = True,
        load_pixels: bool = True,
    ):
        self.batches, self.prep, self.has_text, self.has_image = batches, prep, has_text, has_image
        self.tokenize, self.load_pixels = tokenize, load_pixels

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, idx: int) -> dict:
        posts = self.batches[idx]
        text_post = posts[self.has_text[posts]]
        image_post = posts[self.has_image[posts]]
        input_ids, attention_mask = self.prep.texts(text_post) if self.tokenize else (None, None)
        return {
            "text_post": text_post,
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "image_post": image_post,
            "pixel_values": self.prep.images(image_post) if self.load_pixels else None,
        }


@torch.no_grad()
def encode_posts(
    image_encoder: ImageEncoder,
    text_encoder: TextEncoder,
    prep: PostPreprocessor,
    batches: list[np.ndarray],
    *,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    progress: bool = False,
) -> PostSums:
    """Encode the posts of ``batches`` (eval mode, no gradients, float32) and add each batch to its users' sums.
    A text encoder that reads its captions from the pooled cache (``reads_cached_captions``) gets no token ids: the
    captions are not tokenized."""
    corpus = prep.corpus
    cached_text = text_encoder.reads_cached_captions
    cached_image = image_encoder.reads_cached_states
    loader = DataLoader(
        _PostBatches(
            batches,
            prep,
            np.asarray(corpus.post_has_text),
            np.asarray(corpus.post_has_image),
            tokenize=not cached_text,
            load_pixels=not cached_image,
        ),
        batch_size=None,
        num_workers=num_workers,
    )
    modes = (image_encoder.training, text_encoder.training)
    image_encoder.eval()
    text_encoder.eval()
    post_user = torch.as_tensor(np.asarray(corpus.post_user), dtype=torch.long)
    head = image_encoder.graph_head is not None
    sums = PostSums(
        UserSums(corpus.num_users, image_encoder.dim),
        UserSums(corpus.num_users, text_encoder.dim),
        UserSums(corpus.num_users, image_encoder.state_dim) if head else None,
    )
    try:
        for item in tqdm(
            loader, desc="encoding posts", unit="batch", disable=not progress or not sys.stderr.isatty()
        ):
            image_post = torch.as_tensor(item["image_post"], dtype=torch.long)
            if len(image_post):
                if cached_image or head:  # the trunk's rows once: the projection and the graph head read them
                    trunk = (
                        image_encoder.cached_trunk_rows(image_post)
                        if cached_image
                        else image_encoder.trunk_rows(item["pixel_values"].to(device))
                    )
                    image_emb = image_encoder.project(trunk)
                else:
                    image_emb = image_encoder(item["pixel_values"].to(device))
                sums.image.add(image_emb, post_user[image_post])
                if sums.image_trunk is not None:
                    sums.image_trunk.add(trunk, post_user[image_post])
            text_post = torch.as_tensor(item["text_post"], dtype=torch.long)
            if len(text_post):
                if cached_text:
                    emb = text_encoder.cached_caption_rows(text_post)
                else:  # cached lower states when the encoder has them
                    ids, mask = item["input_ids"].to(device), item["attention_mask"].to(device)
                    emb = text_encoder(ids, mask, text_post)
                sums.text.add(emb, post_user[text_post])
    finally:
        image_encoder.train(modes[0])
        text_encoder.train(modes[1])
    return sums


def merge_shards(parts: list[PostSums]) -> PostSums:
    """The ranks' sums added in the order given (rank order, as ``all_gather_object`` returns them)."""
    if not parts:
        raise ValueError("no shard to merge")
    merged = parts[0]
    for part in parts[1:]:
        trunk = None if merged.image_trunk is None else merged.image_trunk.merged(part.image_trunk)
        merged = PostSums(merged.image.merged(part.image), merged.text.merged(part.text), trunk)
    return merged


def pool_users(
    sums: PostSums, text_encoder: TextEncoder | None = None, image_encoder: ImageEncoder | None = None
) -> EncoderEmbeddings:
    """Mean over each user's posts per modality; users lacking it get a zero row and mask False. With
    ``text_encoder``, the text means pass through its ``finish_users`` (the graph head, when it has one), and
    with ``image_encoder`` the image means through its own (the image graph head, over the trunk means)."""
    image_emb, image_mask = sums.image.means()
    text_emb, text_mask = sums.text.means()
    if text_encoder is not None:
        with torch.no_grad():
            device = next(text_encoder.parameters()).device
            text_emb = text_encoder.finish_users(text_emb.to(device), text_mask.to(device)).float().cpu()
    if image_encoder is not None and image_encoder.graph_head is not None:
        if sums.image_trunk is None:
            raise ValueError(
                "the image graph head needs the trunk outputs' sums (encode_posts with the head)"
            )
        trunk_means, _ = sums.image_trunk.means()
        with torch.no_grad():
            device = next(image_encoder.graph_head.parameters()).device
            image_emb = (
                image_encoder.finish_users(
                    image_emb.to(device), image_mask.to(device), trunk_means.to(device)
                )
                .float()
                .cpu()
            )
    return EncoderEmbeddings(
        user_image_emb=image_emb.numpy().astype(np.float32),
        user_text_emb=text_emb.numpy().astype(np.float32),
        image_mask=image_mask.numpy(),
        text_mask=text_mask.numpy(),
    )


def encode_shard(
    image_encoder: ImageEncoder,
    text_encoder: TextEncoder,
    prep: PostPreprocessor,
    *,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    progress: bool = False,
) -> PostSums:
    """This rank's share of the fixed export batches, encoded."""
    batches = export_batches(prep.corpus.num_posts, batch_size)
    mine = [batches[i] for i in shard_range(len(batches), rank, world_size)]
    return encode_posts(
        image_encoder, text_encoder, prep, mine, device=device, num_workers=num_workers, progress=progress
    )


def export_user_embeddings(
    image_encoder: ImageEncoder,
    text_encoder: TextEncoder,
    prep: PostPreprocessor,
    *,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    progress: bool = False,
) -> EncoderEmbeddings:
    """Every user's pooled embeddings. Under an initialised ``torch.distributed`` process group each rank
    encodes its shard and the shards are gathered (every rank returns the full result)."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank = torch.distributed.get_rank() if distributed else 0
    world_size = torch.distributed.get_world_size() if distributed else 1
    shard = encode_shard(
        image_encoder,
        text_encoder,
        prep,
        batch_size=batch_size,
        rank=rank,
        world_size=world_size,
        device=device,
        num_workers=num_workers,
        progress=progress and rank == 0,
    )
    parts = [shard]
    if distributed:
        parts = [None] * world_size
        torch.distributed.all_gather_object(parts, shard)
    return pool_users(merge_shards(parts), text_encoder, image_encoder)
