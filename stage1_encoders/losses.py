"""Stage 1's losses: small modules that take features and return a dict of named losses.

- ``MLMLoss``: cross-entropy with label smoothing over the masked positions.
- ``ITALoss``: image-text alignment, symmetric InfoNCE in a shared space with a learnable logit scale.
- ``GraphContrastiveLoss``: the paper's eq. 7-8, a pair classifier on user embeddings trained with BCE.

Projections and the pair classifier are heads owned by their loss; the ``Stage1System`` weights the terms.
"""

from __future__ import annotations

import math

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
    """Image-text alignment (CLIP/ALBEF ITA) between the image and the text of the same post.

    ``z_i = normalize(W_I r_i)``, ``t_j = normalize(W_T s_j)``, ``S_ij = exp(tau) z_i . t_j`` and
    ``L = (CE(S, diag) + CE(S^T, diag)) / 2``. The log logit scale ``tau`` starts at ``log(1/init_temperature)``
    and is clamped to ``[0, log(max_logit_scale)]`` by ``clamp_logit_scale()`` after each optimizer step, as CLIP does.

    Args:
        image_dim: Di. text_dim: Dt. embed_dim: shared dimension (default 64).
        init_temperature: 0.07. max_logit_scale: 100.

    Shapes:
        image_emb [Q, Di], text_emb [Q, Dt] (row q of both = the same post) -> {"ita_loss": scalar}
    """

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        embed_dim: int = 64,
        init_temperature: float = 0.07,
        max_logit_scale: float = 100.0,
    ):
        super().__init__()
        self.image_proj = nn.Linear(image_dim, embed_dim)
        self.text_proj = nn.Linear(text_dim, embed_dim)
        self.logit_scale = nn.Parameter(torch.empty(()))
        self.init_temperature = init_temperature
        self.max_logit_scale = max_logit_scale
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.image_proj.reset_parameters()
        self.text_proj.reset_parameters()
        with torch.no_grad():
            self.logit_scale.fill_(math.log(1.0 / self.init_temperature))

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        self.logit_scale.clamp_(0.0, math.log(self.max_logit_scale))

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> dict[str, torch.Tensor]:
        image_z = F.normalize(self.image_proj(image_emb).float(), dim=-1)
        text_z = F.normalize(self.text_proj(text_emb).float(), dim=-1)
        logits = self.logit_scale.exp() * image_z @ text_z.t()
        target = torch.arange(logits.shape[0], device=logits.device)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
        return {"ita_loss": loss}


class GraphContrastiveLoss(nn.Module):
    """Graph-contrastive loss on one modality (paper eq. 7-8).

    ``form="mlp"`` (the paper): ``y_hat_uv = sigmoid(W_2 ReLU(W_1 [R_u || R_v] + b_1) + b_2)``;
    ``form="cosine"``: ``y_hat_uv = sigmoid(s cos(R_u, R_v) + b)`` with a learnable scale ``s`` (kept >= 0) and
    bias ``b``, so the loss can only be lowered by moving linked users' embeddings together; and
    ``L = (1 / |B|) sum_(u,v) w_uv * BCE(y_hat_uv, y_uv)`` over the pairs B whose two users have the modality;
    ``y_uv = 1`` for linked users and 0 for negative-sampled pairs; ``w_uv`` weighs positives by stage 2's
    edge gate (1 when not given, and always 1 for negatives).

    Args:
        emb_dim: D of R. hidden_dim: width of the MLP (default 64). name: "image" or "text", names the loss.
        form: "mlp" or "cosine" (default "mlp").

    Shapes:
        user_emb [U, D], user_mask bool [U], pair_u / pair_v int64 [B], pair_label float [B],
        pair_weight float [B] or None -> {"gcl_<name>_loss": scalar}, or {} when no pair is usable.
    """

    def __init__(self, emb_dim: int, hidden_dim: int = 64, name: str = "image", form: str = "mlp"):
        super().__init__()
        if form not in ("mlp", "cosine"):
            raise ValueError(f"GCL form must be 'mlp' or 'cosine', got {form!r}")
        self.name = name
        self.form = form
        if form == "mlp":
            self.mlp = nn.Sequential(nn.Linear(2 * emb_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 1))
        else:
            self.log_scale = nn.Parameter(torch.empty(()))
            self.bias = nn.Parameter(torch.empty(()))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.form == "mlp":
            for layer in self.mlp:
                if isinstance(layer, nn.Linear):
                    layer.reset_parameters()
        else:
            with torch.no_grad():
                self.log_scale.fill_(math.log(5.0))
                self.bias.fill_(0.0)

    def pair_logits(self, user_emb: torch.Tensor, pair_u: torch.Tensor, pair_v: torch.Tensor) -> torch.Tensor:
        """[B] logits of ``y_hat`` for the pairs."""
        if self.form == "cosine":
            cos = F.cosine_similarity(user_emb[pair_u].float(), user_emb[pair_v].float(), dim=-1)
            return self.log_scale.exp() * cos + self.bias
        return self.mlp(torch.cat([user_emb[pair_u], user_emb[pair_v]], dim=-1)).squeeze(-1)

    def forward(
        self,
        user_emb: torch.Tensor,
        user_mask: torch.Tensor,
        pair_u: torch.Tensor,
        pair_v: torch.Tensor,
        pair_label: torch.Tensor,
        pair_weight: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        usable = user_mask[pair_u] & user_mask[pair_v]
        if not bool(usable.any()):
            return {}
        pair_u, pair_v, pair_label = pair_u[usable], pair_v[usable], pair_label[usable]
        logits = self.pair_logits(user_emb, pair_u, pair_v).float()
        per_pair = F.binary_cross_entropy_with_logits(logits, pair_label.float(), reduction="none")
        if pair_weight is not None:
            per_pair = per_pair * pair_weight[usable].float()
        return {f"gcl_{self.name}_loss": per_pair.mean()}
