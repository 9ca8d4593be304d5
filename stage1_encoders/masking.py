"""BERT's masked-language-model corruption, applied in collate (never inside ``forward``)."""

from __future__ import annotations

import torch

IGNORE_INDEX = -100


def mask_tokens(
    input_ids: torch.Tensor,
    maskable: torch.Tensor,
    *,
    mask_token_id: int,
    random_token_ids: torch.Tensor,
    mlm_probability: float = 0.15,
    mask_fraction: float = 0.8,
    random_fraction: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Select each maskable token with probability ``mlm_probability``; of the selected ones replace 80% by
    ``[MASK]``, 10% by a random token from ``random_token_ids`` and keep 10% unchanged.

    Args:
        input_ids: int64 [B, L] token ids.
        maskable: bool [B, L], False at special tokens and padding (never selected).
        mask_token_id: id of ``[MASK]``.
        random_token_ids: int64 [K], ids a selected token may be replaced with (the non-special vocabulary).

    Returns:
        (corrupted ids [B, L], labels [B, L]: the original id at selected positions, ``-100`` elsewhere).
    """
    probs = torch.full(input_ids.shape, mlm_probability)
    selected = torch.bernoulli(probs, generator=generator).bool() & maskable
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    action = torch.rand(input_ids.shape, generator=generator)
    to_mask = selected & (action < mask_fraction)
    to_random = selected & (action >= mask_fraction) & (action < mask_fraction + random_fraction)
    corrupted = input_ids.clone()
    corrupted[to_mask] = mask_token_id
    picks = torch.randint(len(random_token_ids), (int(to_random.sum()),), generator=generator)
    corrupted[to_random] = random_token_ids[picks]
    return corrupted, labels


def maskable_positions(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, special_ids: torch.Tensor
) -> torch.Tensor:
    """bool [B, L]: real (non-padding) tokens that are not special tokens."""
    return attention_mask.bool() & ~torch.isin(input_ids, special_ids)
