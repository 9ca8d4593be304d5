"""Stage 1's losses: small modules that take features and return a dict of named losses.

- ``MLMLoss``: cross-entropy with label smoothing over the masked positions.
- ``ITALoss``: image-text alignment, symmetric InfoNCE over normalized features and a logit scale.
- ``GraphContrastiveLoss``: the paper's eq. 8, BCE over the pair classifier's logits.
- ``GraphInfoNCELoss``: the InfoNCE form of GCL, symmetric over a batch of (user, sampled neighbour) pairs.

The losses own no parameters: projections, logit scale and pair classifier are heads in
``stage1_encoders.heads``, owned by ``Stage1System``, which also weights the terms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stage1_encoders.masking import IGNORE_INDEX


class MLMLoss(nn.Module):
    """Masked-LM cross-entropy with label smoothing ``eps``:
    ``l = (1 - eps) * -log p_y + eps * mean_k(-log p_k)``, averaged over positions with a label.

    Shapes:
        logits [..., V], labels [...] (``-100`` = not a target) -> {"mlm_loss": scalar}
    """

    def __init__(self, label_smoothing: float = 0.1):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(),
            labels.reshape(-1),
            ignore_index=IGNORE_INDEX,
            label_smoothing=self.label_smoothing,
        )
        return {"mlm_loss": loss}


class ITALoss(nn.Module):
    """Image-text alignment (CLIP/ALBEF ITA) between the image and the text of the same post, as open_clip's
    ``ClipLoss``: ``S_ij = logit_scale * z_i . t_j`` and ``L = (CE(S, diag) + CE(S^T, diag)) / 2``. The
    projections and the logit scale live in ``stage1_encoders.heads.ITAHead``.

    Shapes:
        image_z [Q, E], text_z [Q, E] (normalized; row q of both = the same post), logit_scale []
        -> {"ita_loss": scalar}
    """

    def forward(
        self, image_z: torch.Tensor, text_z: torch.Tensor, logit_scale: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        logits = logit_scale * image_z @ text_z.t()
        target = torch.arange(logits.shape[0], device=logits.device)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
        return {"ita_loss": loss}


class GraphContrastiveLoss(nn.Module):
    """Graph-contrastive loss on one modality (paper eq. 8): ``L = (1 / |B|) sum_(u,v) w_uv * BCE(y_hat_uv, y_uv)``
    over the pairs B whose two users have the modality, ``y_hat_uv = sigmoid(pair_logits_uv)`` from
    ``stage1_encoders.heads.PairClassifier``; ``y_uv = 1`` for linked users and 0 for negative-sampled pairs;
    ``w_uv`` weighs positives by stage 2's edge gate (1 when not given, and always 1 for negatives).

    Args:
        name: "image" or "text", names the loss.

    Shapes:
        pair_logits [B], pair_label float [B], pair_weight float [B] or None -> {"gcl_<name>_loss": scalar}
    """

    def __init__(self, name: str = "image"):
        super().__init__()
        self.name = name

    def forward(
        self, pair_logits: torch.Tensor, pair_label: torch.Tensor, pair_weight: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        per_pair = F.binary_cross_entropy_with_logits(
            pair_logits.float(), pair_label.float(), reduction="none"
        )
        if pair_weight is not None:
            per_pair = per_pair * pair_weight.float()
        return {f"gcl_{self.name}_loss": per_pair.mean()}


class GraphInfoNCELoss(nn.Module):
    """Graph-contrastive loss in InfoNCE form on one modality (``losses.gcl_form=infonce``). Row i is an anchor
    user ``a_i`` with a sampled neighbour ``p_i``; the other rows' neighbours are its negatives:
    ``S_ij = logit_scale * z(a_i) . z(p_j)`` and ``L = (CE(S, T) + CE(S^T, T') ) / 2`` with soft cross-entropy
    ``CE(S, T) = mean_i -sum_j T_ij log softmax_j(S_ij)``.

    Targets: ``H_ij = 1[a_i = a_j or p_i = p_j]`` (a user drawn twice in the batch is not its own negative),
    normalised per row; ``S_ij`` where ``a_i = p_j`` (the anchor itself among the candidates) is left out of the
    softmax. With ``soft_targets = alpha > 0`` and ``common [P, P]`` (common neighbours of ``a_i`` and ``p_j``,
    from the data pipeline), ``T = (1 - alpha) H / rowsum(H) + alpha C / rowsum(C)`` on rows where C has a
    non-zero sum (as ConGraT smooths its targets by graph similarity), else ``H / rowsum(H)``. The other
    direction uses the transposes (``H`` is symmetric).

    Args:
        name: "image" or "text", names the loss. soft_targets: alpha in [0, 1] (default 0).

    Shapes:
        anchor_z, positive_z [P, E] (normalized), logit_scale [], anchor_user, positive_user int64 [P],
        common float [P, P] or None -> {"gcl_<name>_loss": scalar}
    """

    def __init__(self, name: str = "text", soft_targets: float = 0.0):
        super().__init__()
        self.name = name
        self.soft_targets = soft_targets

    def _direction(
        self, logits: torch.Tensor, same: torch.Tensor, self_hit: torch.Tensor, common: torch.Tensor | None
    ) -> torch.Tensor:
        target = same.float() / same.sum(1, keepdim=True)
        if self.soft_targets > 0 and common is not None:
            c = common.float().masked_fill(self_hit, 0.0)
            total = c.sum(1, keepdim=True)
            smoothed = (1 - self.soft_targets) * target + self.soft_targets * c / total.clamp(min=1e-12)
            target = torch.where(total > 0, smoothed, target)
        log_prob = F.log_softmax(logits.float().masked_fill(self_hit, -1e9), dim=1)
        return -(target * log_prob).sum(1).mean()

    def forward(
        self,
        anchor_z: torch.Tensor,
        positive_z: torch.Tensor,
        logit_scale: torch.Tensor,
        anchor_user: torch.Tensor,
        positive_user: torch.Tensor,
        common: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        logits = logit_scale * anchor_z @ positive_z.t()
        same = (anchor_user[:, None] == anchor_user[None, :]) | (
            positive_user[:, None] == positive_user[None, :]
        )
        self_hit = anchor_user[:, None] == positive_user[None, :]
        loss = (
            self._direction(logits, same, self_hit, common)
            + self._direction(logits.t(), same, self_hit.t(), None if common is None else common.t())
        ) / 2
        return {f"gcl_{self.name}_loss": loss}


def usable_pairs(user_mask: torch.Tensor, pair_u: torch.Tensor, pair_v: torch.Tensor) -> torch.Tensor:
    """bool [B]: the pairs whose two users have the modality (``user_mask`` bool [U])."""
    return user_mask[pair_u] & user_mask[pair_v]
