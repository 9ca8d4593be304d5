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
    return _means(sums, torch.bincount(post_user, minlength=num_users))


def _means(sums: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sums / counts, counts > 0)``, a zero row where the count is 0."""
    return sums / counts.clamp(min=1).unsqueeze(1).to(sums.dtype), counts > 0


class UserSums:
    """Each user's sum and count of post embeddings, added batch by batch: the users' means without holding the
    posts' rows (``[U, D]`` memory, not ``[P, D]``; at the paper's size the post rows and their copies were
    gigabytes, docs/performance.md).

    Rows added in post order give :func:`mean_by_user`'s means over all of them at once, bit for bit:
    ``index_add`` adds each user's rows in their order either way. The sums live on the CPU in float32.

    Args:
        num_users: U.
        dim: the embeddings' width D.
    """

    def __init__(self, num_users: int, dim: int):
        self.sums = torch.zeros(num_users, dim)
        self.counts = torch.zeros(num_users, dtype=torch.long)

    def add(self, rows: torch.Tensor, users: torch.Tensor) -> None:
        """Add the embeddings ``rows [B, D]`` (any device and float dtype) of posts of ``users`` (int64 ``[B]``)."""
        users = torch.as_tensor(users, dtype=torch.long).cpu()
        self.sums.index_add_(0, users, rows.detach().float().cpu())
        self.counts += torch.bincount(users, minlength=len(self.counts))

    def merged(self, other: UserSums) -> UserSums:
        """The sums of both (a shard's after this one's). A user whose posts both hold gets ``a + b`` for its sum,
        which can differ in the last bit from adding every row in one sequence."""
        if self.sums.shape != other.sums.shape:
            raise ValueError(
                f"cannot merge user sums of shape {tuple(other.sums.shape)} into {tuple(self.sums.shape)}"
            )
        out = UserSums(*self.sums.shape)
        out.sums, out.counts = self.sums + other.sums, self.counts + other.counts
        return out

    def means(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(user_emb [U, D], has_posts bool [U])`` as :func:`mean_by_user` returns them."""
        return _means(self.sums, self.counts)
