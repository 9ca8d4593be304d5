"""Stage 1's trainable heads: the ITA projections with their logit scale, the GCL pair classifier (forms mlp and
cosine) and the GCL projection with its logit scale (form infonce).

They turn encoder features into what the losses (``stage1_encoders.losses``) compare, as open_clip's ``CLIP``
returns normalized features and a logit scale for ``ClipLoss``. ``Stage1System`` owns them, so checkpoints
hold every parameter under the system and load strictly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from stage1_encoders.config import GclForm


class ITAHead(nn.Module):
    """Projects image and text features into a shared space: ``z_i = normalize(W_I r_i)``,
    ``t_j = normalize(W_T s_j)``, and returns them with the logit scale ``exp(tau)``. The log logit scale ``tau``
    starts at ``log(1/init_temperature)`` and is clamped to ``[0, log(max_logit_scale)]`` by
    ``clamp_logit_scale()`` after each optimizer step, as CLIP does.

    Args:
        image_dim: Di. text_dim: Dt. embed_dim: shared dimension E (default 64).
        init_temperature: 0.07. max_logit_scale: 100.

    Shapes:
        image_emb [Q, Di], text_emb [Q, Dt] -> image_z [Q, E] float32, text_z [Q, E] float32, logit_scale []
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

    def forward(
        self, image_emb: torch.Tensor, text_emb: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image_z = F.normalize(self.image_proj(image_emb).float(), dim=-1)
        text_z = F.normalize(self.text_proj(text_emb).float(), dim=-1)
        return image_z, text_z, self.logit_scale.exp()


class PairClassifier(nn.Module):
    """Logit of "users u and v are linked" from their embeddings (paper eq. 7).

    ``form="mlp"`` (the paper): ``W_2 ReLU(W_1 [R_u || R_v] + b_1) + b_2``;
    ``form="cosine"``: ``s cos(R_u, R_v) + b`` with a learnable scale ``s = exp(log_scale)`` (so >= 0) and bias
    ``b``, so the loss can only be lowered by moving linked users' embeddings together.

    Args:
        emb_dim: D of R. hidden_dim: width of the MLP (default 64). form: "mlp" or "cosine" (default "mlp").

    Shapes:
        user_emb [U, D], pair_u / pair_v int64 [B] -> logits [B]
    """

    def __init__(self, emb_dim: int, hidden_dim: int = 64, form: GclForm = "mlp"):
        super().__init__()
        if form not in ("mlp", "cosine"):
            raise ValueError(f"GCL form must be 'mlp' or 'cosine', got {form!r}")
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

    def forward(self, user_emb: torch.Tensor, pair_u: torch.Tensor, pair_v: torch.Tensor) -> torch.Tensor:
        if self.form == "cosine":
            cos = F.cosine_similarity(user_emb[pair_u].float(), user_emb[pair_v].float(), dim=-1)
            return self.log_scale.exp() * cos + self.bias
        return self.mlp(torch.cat([user_emb[pair_u], user_emb[pair_v]], dim=-1)).squeeze(-1)


class GraphProjectionHead(nn.Module):
    """Projection of user embeddings for the InfoNCE form of GCL: ``z_u = normalize(W_2 ReLU(W_1 R_u + b_1) +
    b_2)``, with a learnable logit scale ``exp(tau)`` that starts at ``1/init_temperature`` and is clamped to
    ``[1, max_logit_scale]`` by ``clamp_logit_scale()`` after each optimizer step (as ``ITAHead``).

    Args:
        emb_dim: D of R. hidden_dim: MLP width (default 64). embed_dim: output E (default 64).
        init_temperature: 0.07. max_logit_scale: 100.

    Shapes:
        user_emb [U, D] -> z [U, E] float32, logit_scale []
    """

    def __init__(
        self,
        emb_dim: int,
        hidden_dim: int = 64,
        embed_dim: int = 64,
        init_temperature: float = 0.07,
        max_logit_scale: float = 100.0,
    ):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(emb_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, embed_dim))
        self.logit_scale = nn.Parameter(torch.empty(()))
        self.init_temperature = init_temperature
        self.max_logit_scale = max_logit_scale
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
        with torch.no_grad():
            self.logit_scale.fill_(math.log(1.0 / self.init_temperature))

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        self.logit_scale.clamp_(0.0, math.log(self.max_logit_scale))

    def forward(self, user_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.normalize(self.mlp(user_emb).float(), dim=-1), self.logit_scale.exp()
