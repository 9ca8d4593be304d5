"""Mean-pooling post embeddings into user embeddings (used by the GCL loss in a batch and by the export)."""

from __future__ import annotations

import torch


def mean_by_user(
    post_emb: torch.Tensor, post_user: torch.Tensor, num_users: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of the rows of ``post_emb`` that belong to each user.

    Args:
        post_emb: [P, D] embeddings of the posts that have the modality.
        post_user: int64 [P], user (0..num_users-1) of each row.
        num_users: U.

    Returns:
        (user_emb [U, D], has_posts bool [U]); users without a row get a zero vector and False.
    """
    sums = post_emb.new_zeros(num_users, post_emb.shape[1]).index_add(0, post_user, post_emb)
    counts = torch.bincount(post_user, minlength=num_users)
    has_posts = counts > 0
    user_emb = sums / counts.clamp(min=1).unsqueeze(1).to(post_emb.dtype)
    return user_emb, has_posts
