"""Stage 2's inputs (X, edges, stage 1's embeddings) and the per-step masks (the data pipeline).

Training is full-batch: the graph lives in the LightningModule (as non-persistent buffers) and each
"batch" is one step's random masks: which nodes' statistics are masked, which edges are held out of
message passing, and the negative pairs. Masks depend only on ``(seed, epoch, step)``, so a resumed run
sees the same masks as an uninterrupted one. Nothing here reads labels, fans or splits.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from cache import CacheError, check_owner, encoder_file, read_encoder_embeddings
from corpus import Corpus, reuse_or_load

STAGE1_COMMAND = "python -m stage1_encoders.run --corpus {corpus} --cache {cache} --round {round}"


class Stage2InputError(RuntimeError):
    """A missing or mismatched input of stage 2; the message says which command fixes it."""


@dataclass
class GraphInputs:
    """What stage 2 reads, as tensors in the corpus's user order.

    Attributes:
        features: float32 ``[N, F]`` standardized statistics X.
        edges: int64 ``[E, 2]`` undirected corpus edges (``u < v``).
        fingerprint: the corpus fingerprint (cache files are tied to it).
        modalities: stage 1's ``(user_image_emb [N, Di], user_text_emb [N, Dt])``; empty when not used.
        modality_masks: ``(image_mask [N], text_mask [N])`` bool; empty when not used.
        user_ids: the corpus's user ids [N] in row order (stored in the cache file; checked on reads).
    """

    features: Tensor
    edges: Tensor
    fingerprint: str
    modalities: tuple[Tensor, ...] = ()
    modality_masks: tuple[Tensor, ...] = ()
    user_ids: list[str] | None = None

    @property
    def num_nodes(self) -> int:
        return self.features.shape[0]

    @property
    def modality_dims(self) -> tuple[int, ...]:
        return tuple(t.shape[1] for t in self.modalities)


def load_graph_inputs(
    corpus_dir: Path, cache_dir: Path, round_idx: int, use_modalities: bool, corpus: Corpus | None = None
) -> GraphInputs:
    """Read X and the edges from the corpus and, if ``use_modalities``, stage 1's embeddings of the round.

    ``corpus``: the corpus of ``corpus_dir`` if the caller has it loaded already (else it is read here).

    Raises:
        Stage2InputError: stage 1's embeddings for the round are missing (names the command to run).
        CacheError: the embeddings belong to another corpus or are damaged (says what to do).
    """
    corpus = reuse_or_load(corpus_dir, corpus, image_check="exists", progress=False)
    features = torch.from_numpy(corpus.features.astype("float32", copy=False))
    edges = torch.from_numpy(corpus.edges.astype("int64", copy=False))
    path = encoder_file(cache_dir, round_idx)
    command = STAGE1_COMMAND.format(corpus=corpus_dir, cache=cache_dir, round=round_idx)
    if not use_modalities:
        # The embeddings are not read, but a cache of another corpus is still refused.
        try:
            check_owner(path, corpus.fingerprint)
        except CacheError as err:
            raise Stage2InputError(str(err)) from None
        return GraphInputs(features, edges, corpus.fingerprint, user_ids=corpus.user_ids)
    if not Path(path).is_file():
        raise Stage2InputError(
            f"{path}: stage 1's embeddings for round {round_idx} are missing; produce them with `{command}` "
            "(or run stage 2 without modalities: --no-use-modalities)"
        )
    try:
        emb = read_encoder_embeddings(
            cache_dir,
            round_idx,
            fingerprint=corpus.fingerprint,
            num_users=corpus.num_users,
            user_ids=corpus.user_ids,
        )
    except CacheError as err:
        raise Stage2InputError(f"{err} (stage 1 for this corpus and round: `{command}`)") from err
    return GraphInputs(
        features,
        edges,
        corpus.fingerprint,
        modalities=(torch.from_numpy(emb.user_image_emb), torch.from_numpy(emb.user_text_emb)),
        modality_masks=(torch.from_numpy(emb.image_mask), torch.from_numpy(emb.text_mask)),
        user_ids=corpus.user_ids,
    )


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(epoch, step)`` keys; Lightning calls ``set_epoch`` at the start of every epoch."""

    def __init__(self, steps_per_epoch: int = 1):
        self.steps_per_epoch = steps_per_epoch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(self.epoch, step) for step in range(self.steps_per_epoch)])

    def __len__(self) -> int:
        return self.steps_per_epoch


class MaskingDataset(Dataset):
    """One step's masks for full-batch training, drawn from a generator seeded by ``(seed, epoch, step)``.

    Args:
        num_nodes (int): ``N``.
        edge_pairs (Tensor): merged undirected edges ``[E_m, 2]``, ``u < v``, sorted (``GraphStructure``).
        feature_mask_ratio (float): share of nodes whose X is masked.
        edge_mask_ratio (float): share of undirected edges held out of message passing.
        negative_ratio (float): negative pairs per held-out edge.
        seed (int): base seed.

    Each item is a dict of tensors:
        - ``node_mask`` bool ``[N]``: True = X masked (at least one node).
        - ``keep_edges`` bool ``[E_m]``: False = held out (both directions); at least one when ``E_m > 0``.
        - ``pos_pairs`` int64 ``[2, P]``: the held-out edges.
        - ``neg_pairs`` int64 ``[2, Q]``: random pairs ``a != b`` that are not edges.
    """

    def __init__(
        self,
        num_nodes: int,
        edge_pairs: Tensor,
        feature_mask_ratio: float = 0.3,
        edge_mask_ratio: float = 0.2,
        negative_ratio: float = 1.0,
        seed: int = 0,
    ):
        self.num_nodes = num_nodes
        self.edge_pairs = edge_pairs.cpu()
        self.edge_keys = self.edge_pairs[:, 0] * num_nodes + self.edge_pairs[:, 1]
        self.feature_mask_ratio = feature_mask_ratio
        self.edge_mask_ratio = edge_mask_ratio
        self.negative_ratio = negative_ratio
        self.seed = seed

    def __len__(self) -> int:
        return 1

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Tensor]:
        epoch, step = key
        generator = torch.Generator().manual_seed(
            ((self.seed * 1_000_003 + epoch) * 1_000_003 + step) % 2**63
        )
        num_masked = max(1, round(self.feature_mask_ratio * self.num_nodes))
        node_mask = torch.zeros(self.num_nodes, dtype=torch.bool)
        node_mask[torch.randperm(self.num_nodes, generator=generator)[:num_masked]] = True

        num_edges = self.edge_pairs.shape[0]
        keep_edges = torch.ones(num_edges, dtype=torch.bool)
        if num_edges:
            num_held = max(1, round(self.edge_mask_ratio * num_edges))
            keep_edges[torch.randperm(num_edges, generator=generator)[:num_held]] = False
        pos_pairs = self.edge_pairs[~keep_edges].t().contiguous()
        neg_pairs = self.negative_pairs(math.ceil(self.negative_ratio * pos_pairs.shape[1]), generator)
        return {
            "node_mask": node_mask,
            "keep_edges": keep_edges,
            "pos_pairs": pos_pairs,
            "neg_pairs": neg_pairs,
        }

    def negative_pairs(self, count: int, generator: torch.Generator) -> Tensor:
        """``[2, <=count]`` uniformly drawn node pairs that are neither self pairs nor edges."""
        draw = count + count // 4 + 8
        first = torch.randint(0, self.num_nodes, (draw,), generator=generator)
        second = torch.randint(0, self.num_nodes, (draw,), generator=generator)
        low, high = torch.minimum(first, second), torch.maximum(first, second)
        keys = low * self.num_nodes + high
        if self.edge_keys.numel():
            slot = torch.searchsorted(self.edge_keys, keys).clamp(max=self.edge_keys.numel() - 1)
            is_edge = self.edge_keys[slot] == keys
        else:
            is_edge = torch.zeros_like(keys, dtype=torch.bool)
        valid = (low != high) & ~is_edge
        return torch.stack([first[valid], second[valid]])[:, :count]


class Stage2DataModule(L.LightningDataModule):
    """Serves one :class:`MaskingDataset` item per training step (full-batch, one step per epoch)."""

    def __init__(self, dataset: MaskingDataset, steps_per_epoch: int = 1):
        super().__init__()
        self.dataset = dataset
        self.steps_per_epoch = steps_per_epoch

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.dataset, sampler=EpochSampler(self.steps_per_epoch), batch_size=None, num_workers=0
        )
