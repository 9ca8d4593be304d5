"""The Lightning system: which losses, their weights, optimisation and logging. The computation lives in the
encoders (``stage1_encoders.encoders``), the heads (``stage1_encoders.heads``: ITA projections and logit scale,
GCL pair classifiers) and the parameter-free loss modules (``stage1_encoders.losses``)."""

from __future__ import annotations

import lightning as L
import torch
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from stage1_encoders.config import TextFeatureInput
from stage1_encoders.encoders import (
    FROZEN_IMAGE_KEY,
    FROZEN_TEXT_KEY,
    ImageEncoder,
    TextEncoder,
    frozen_record,
    restore_frozen_image,
    restore_frozen_text,
)
from stage1_encoders.heads import GraphProjectionHead, ITAHead, PairClassifier
from stage1_encoders.losses import GraphContrastiveLoss, GraphInfoNCELoss, ITALoss, MLMLoss, usable_pairs
from stage1_encoders.pooling import mean_by_user

LOSS_NAMES = ("mlm_loss", "ita_loss", "gcl_image_loss", "gcl_text_loss")
HEAD_NAMES = ("ita_head", "gcl_image_head", "gcl_text_head")
# Checkpoints written before the heads moved out of the losses named them after their loss.
_LEGACY_HEAD_PREFIXES = {
    "ita_loss.": "ita_head.",
    "gcl_image_loss.": "gcl_image_head.",
    "gcl_text_loss.": "gcl_text_head.",
}


def upgrade_legacy_state_dict(state: dict) -> dict:
    """``state`` with the head keys of an older checkpoint (``ita_loss.*``, ``gcl_<modality>_loss.*``, when the
    losses owned the heads) renamed to the heads' names (``ita_head.*``, ``gcl_<modality>_head.*``)."""
    out = {}
    for key, value in state.items():
        old = next((prefix for prefix in _LEGACY_HEAD_PREFIXES if key.startswith(prefix)), None)
        out[key if old is None else _LEGACY_HEAD_PREFIXES[old] + key[len(old) :]] = value
    return out


class Stage1System(L.LightningModule):
    """Image + text encoders trained with ``lm_weight * MLM + ita_weight * ITA + gcl_image_weight * GCL_I +
    gcl_text_weight * GCL_T``. A loss with weight 0 is not built and not computed.

    ``text_feature_input`` says which text the ITA/GCL text features R^T come from while training:
    ``"masked"`` = the MLM-corrupted caption, in the same pass as MLM (as BERT's next-sentence head; half
    the text cost), ``"clean"`` = a second pass over the uncorrupted caption (as ALBEF). The export
    always encodes clean captions.

    ``loss_history`` keeps every logged value per loss name (this rank's), for the run summary.
    """

    def __init__(
        self,
        image_encoder: ImageEncoder,
        text_encoder: TextEncoder,
        *,
        lm_weight: float = 1.0,
        ita_weight: float = 1.0,
        gcl_image_weight: float = 1.0,
        gcl_text_weight: float = 1.0,
        label_smoothing: float = 0.1,
        ita_dim: int = 64,
        init_temperature: float = 0.07,
        max_logit_scale: float = 100.0,
        gcl_hidden_dim: int = 64,
        gcl_form: str = "mlp",
        gcl_embed_dim: int = 64,
        gcl_soft_targets: float = 0.0,
        text_feature_input: TextFeatureInput = "masked",
        lr: float = 1e-3,
        head_lr_scale: float = 1.0,
        weight_decay: float = 0.01,
        warmup_steps: int = 20,
        min_lr_ratio: float = 0.1,
    ):
        super().__init__()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.weights = {
            "mlm_loss": lm_weight,
            "ita_loss": ita_weight,
            "gcl_image_loss": gcl_image_weight,
            "gcl_text_loss": gcl_text_weight,
        }
        # heads are created in this order (ITA, GCL image, GCL text): it fixes the random initialisation
        self.ita_head = (
            ITAHead(image_encoder.dim, text_encoder.dim, ita_dim, init_temperature, max_logit_scale)
            if ita_weight > 0
            else None
        )
        self.gcl_form = gcl_form

        def gcl_head(dim: int) -> torch.nn.Module:
            if gcl_form == "infonce":
                return GraphProjectionHead(
                    dim, gcl_hidden_dim, gcl_embed_dim, init_temperature, max_logit_scale
                )
            return PairClassifier(dim, gcl_hidden_dim, gcl_form)

        def gcl_loss(name: str) -> torch.nn.Module:
            if gcl_form == "infonce":
                return GraphInfoNCELoss(name, gcl_soft_targets)
            return GraphContrastiveLoss(name)

        if image_encoder.graph_head is not None and gcl_image_weight > 0:
            # the image GCL contrasts the image graph head's output, from a stream of its own (as the text's)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(torch.initial_seed() + 2)
                self.gcl_image_head = gcl_head(image_encoder.user_dim - image_encoder.dim)
        else:
            self.gcl_image_head = gcl_head(image_encoder.dim) if gcl_image_weight > 0 else None
        # with the graph head, the text GCL contrasts the head's output over the users' frozen embeddings
        text_gcl_dim = (
            text_encoder.user_dim - text_encoder.dim if text_encoder.head is not None else text_encoder.dim
        )
        if text_encoder.head is not None and gcl_text_weight > 0:
            # as the graph head: a stream of its own, so the rest draws as in the no-GCL baseline
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(torch.initial_seed() + 1)
                self.gcl_text_head = gcl_head(text_gcl_dim)
        else:
            self.gcl_text_head = gcl_head(text_gcl_dim) if gcl_text_weight > 0 else None
        self.mlm_loss = MLMLoss(label_smoothing) if lm_weight > 0 else None
        self.ita_loss = ITALoss() if ita_weight > 0 else None
        self.gcl_image_loss = gcl_loss("image") if gcl_image_weight > 0 else None
        self.gcl_text_loss = gcl_loss("text") if gcl_text_weight > 0 else None
        self.text_feature_input = text_feature_input
        self.lr, self.head_lr_scale, self.weight_decay = lr, head_lr_scale, weight_decay
        self.warmup_steps, self.min_lr_ratio = warmup_steps, min_lr_ratio
        self.loss_history: dict[str, list[torch.Tensor]] = {name: [] for name in (*LOSS_NAMES, "loss")}

    @property
    def needs_images(self) -> bool:
        return self.ita_loss is not None or self.gcl_image_loss is not None

    @property
    def needs_text_features(self) -> bool:
        return self.ita_loss is not None or self.gcl_text_loss is not None

    def compute_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """Named losses of one batch; a term without usable data in this batch is absent."""
        losses: dict[str, torch.Tensor] = {}
        num_users = int(batch["num_users"])
        has_text = batch["input_ids"].shape[0] > 0
        has_images = len(batch["image_post"]) > 0
        text_emb = image_emb = None
        mlm = self.mlm_loss is not None and has_text
        if mlm and self.text_feature_input == "masked":  # one pass: [CLS] of the masked text, as BERT's NSP
            text_emb, logits, labels = self.text_encoder.encode_masked(
                batch["mlm_input_ids"], batch["attention_mask"], batch["mlm_labels"]
            )
        else:
            if self.needs_text_features and has_text:  # posts: cached lower states when the encoder has them
                text_emb = self.text_encoder(batch["input_ids"], batch["attention_mask"], batch["text_post"])
            if mlm:
                logits, labels = self.text_encoder.mlm_logits(
                    batch["mlm_input_ids"], batch["attention_mask"], batch["mlm_labels"]
                )
        if mlm and len(labels) > 0:
            losses.update(self.mlm_loss(logits, labels))
        if self.needs_images and has_images:
            # a frozen trunk: the projection over its output of each image, computed once per run folder
            if self.image_encoder.reads_cached_states:
                image_emb = self.image_encoder.cached_rows(batch["image_post"])
            else:
                image_emb = self.image_encoder(batch["pixel_values"])
        if (
            self.ita_loss is not None
            and text_emb is not None
            and image_emb is not None
            and len(batch["ita_text_row"]) >= 2
        ):
            features = self.ita_head(image_emb[batch["ita_image_row"]], text_emb[batch["ita_text_row"]])
            losses.update(self.ita_loss(*features))
        if self.gcl_image_loss is not None and self.image_encoder.graph_head is not None:
            losses.update(self._gcl_graph_head(batch, "image"))
        elif self.gcl_image_loss is not None and image_emb is not None:
            losses.update(self._gcl("image", image_emb, batch["image_post_user"], num_users, batch))
        if self.gcl_text_loss is not None and self.text_encoder.head is not None:
            losses.update(self._gcl_graph_head(batch, "text"))
        elif self.gcl_text_loss is not None and text_emb is not None:
            losses.update(self._gcl("text", text_emb, batch["text_post_user"], num_users, batch))
        return losses

    def _gcl_graph_head(self, batch: dict, modality: str) -> dict[str, torch.Tensor]:
        """One modality's GCL with its graph head: InfoNCE over the batch's own anchor users and sampled
        neighbours (``text_gcl_*``, one batch for both heads), on the head's output over their cached frozen
        embeddings (the text encoder's mean caption embeddings, or the image trunk's mean outputs); users without
        the modality and the pairs they are in drop out."""
        # the cached means stay in host memory (every user's, computed once); the batch is on the training device
        if modality == "text":
            (means, has), head = self.text_encoder.user_means(), self.text_encoder.head
        else:
            (means, has), head = self.image_encoder.user_trunk_means(), self.image_encoder.graph_head
        store = means.device
        anchor, positive = batch["text_gcl_anchor"], batch["text_gcl_positive"]
        keep = (has[anchor.to(store)] & has[positive.to(store)]).to(anchor.device)
        if int(keep.sum()) < 2:
            return {}
        common = batch.get("text_gcl_common")
        if common is not None:
            common = common[keep][:, keep]
        anchor, positive = anchor[keep], positive[keep]
        users, inverse = torch.unique(torch.cat([anchor, positive]), return_inverse=True)
        device = head[0].weight.device
        projection, loss = getattr(self, f"gcl_{modality}_head"), getattr(self, f"gcl_{modality}_loss")
        z, logit_scale = projection(head(means[users.to(store)].to(device)))
        a, p = inverse[: len(anchor)].to(device), inverse[len(anchor) :].to(device)
        return loss(z[a], z[p], logit_scale, a, p, common)

    def _gcl(
        self, modality: str, post_emb: torch.Tensor, post_user: torch.Tensor, num_users: int, batch: dict
    ) -> dict[str, torch.Tensor]:
        """GCL on one modality over the batch's pairs whose two users have it; {} when no pair does."""
        user_emb, user_mask = mean_by_user(post_emb, post_user, num_users)
        usable = usable_pairs(user_mask, batch["pair_u"], batch["pair_v"])
        if self.gcl_form == "infonce":
            return self._gcl_infonce(modality, user_emb, usable, batch)
        if not bool(usable.any()):
            return {}
        weight = batch["pair_weight"]
        logits = getattr(self, f"gcl_{modality}_head")(
            user_emb, batch["pair_u"][usable], batch["pair_v"][usable]
        )
        loss = getattr(self, f"gcl_{modality}_loss")
        return loss(logits, batch["pair_label"][usable], None if weight is None else weight[usable])

    def _gcl_infonce(
        self, modality: str, user_emb: torch.Tensor, usable: torch.Tensor, batch: dict
    ) -> dict[str, torch.Tensor]:
        """InfoNCE GCL over the batch's positive pairs (anchor, sampled neighbour) whose users have the modality;
        {} with fewer than 2 such pairs (no negative)."""
        keep = usable & (batch["pair_label"] > 0)
        if int(keep.sum()) < 2:
            return {}
        anchor, positive = batch["pair_u"][keep], batch["pair_v"][keep]
        z, logit_scale = getattr(self, f"gcl_{modality}_head")(user_emb)
        common = batch.get("pair_common")
        if common is not None:
            rows = keep[: common.shape[0]]
            common = common[rows][:, rows]
        loss = getattr(self, f"gcl_{modality}_loss")
        return loss(z[anchor], z[positive], logit_scale, anchor, positive, common)

    def total_loss(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.weights[name] * value for name, value in losses.items())

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        losses = self.compute_losses(batch)
        if not losses:
            return None
        total = self.total_loss(losses)
        batch_size = int(batch["pair_label"].shape[0])
        for name, value in {**losses, "loss": total}.items():
            self.log(
                f"train/{name}",
                value,
                on_step=True,
                on_epoch=False,
                prog_bar=name == "loss",
                batch_size=batch_size,
            )
            self.loss_history[name].append(value.detach())  # a tensor: no device sync per step
        if self.ita_head is not None:
            self.log(
                "train/logit_scale",
                self.ita_head.logit_scale.detach().exp(),
                on_step=True,
                batch_size=batch_size,
            )
        return total

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        for head in self.heads():
            if hasattr(head, "clamp_logit_scale"):
                head.clamp_logit_scale()

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        """Lightning's clipping (of the global norm), except that each graph head (text, image) and its GCL
        projection are clipped apart from everything else and from each other: their gradients then never rescale
        the encoders' step, which stays the no-GCL baseline's, nor each other's."""
        groups = [
            [m for m in (head, projection) if m is not None]
            for head, projection in (
                (self.text_encoder.head, self.gcl_text_head),
                (self.image_encoder.graph_head, self.gcl_image_head),
            )
            if head is not None
        ]
        if gradient_clip_val is None or not groups:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        separate = [[p for m in group for p in m.parameters() if p.grad is not None] for group in groups]
        apart = {id(p) for m in (m for group in groups for m in group) for p in m.parameters()}
        rest = [p for p in self.parameters() if id(p) not in apart and p.grad is not None]
        for params in (rest, *separate):
            if params:
                torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # A frozen pretrained encoder is its source's weights: stored once there, not in every checkpoint
        # (MiniLM-L6 is 90 MB, EfficientNet-Lite0 19 MB; a default bridge run writes 31 stage-1 checkpoints).
        for encoder, prefix, key in (
            (self.text_encoder, "text_encoder.", FROZEN_TEXT_KEY),
            (self.image_encoder, "image_encoder.", FROZEN_IMAGE_KEY),
        ):
            keys = encoder.reloadable_keys()
            if keys:
                for name in keys:
                    checkpoint["state_dict"].pop(prefix + name, None)
                checkpoint[key] = frozen_record(encoder)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Lightning loads the state dict strictly right after this hook (trainer.resume)
        state = upgrade_legacy_state_dict(checkpoint["state_dict"])
        state = restore_frozen_text(self.text_encoder, state, checkpoint, "the checkpoint")
        checkpoint["state_dict"] = restore_frozen_image(
            self.image_encoder, state, checkpoint, "the checkpoint"
        )

    def heads(self) -> list[torch.nn.Module]:
        """The heads built for the losses in use (ITA projections and logit scale, GCL pair classifiers)."""
        return [m for m in (self.ita_head, self.gcl_image_head, self.gcl_text_head) if m is not None]

    def build_optimizer(self, total_steps: int):
        """AdamW (decay on matrices only; the loss heads and the text encoder's fresh graph head at
        ``lr * head_lr_scale``) and transformers' per-step
        schedule: linear warm-up from 0 over ``warmup_steps``, then cosine to ``min_lr_ratio`` of the peak at
        ``total_steps``."""
        groups = []
        fresh = [*self.heads(), *self.text_encoder.fresh_modules(), *self.image_encoder.fresh_modules()]
        # new modules (the heads above) train at the heads' learning rate
        fresh_ids = {id(p) for m in fresh for p in m.parameters()}
        encoders = [p for m in (self.image_encoder, self.text_encoder) for p in m.parameters()]
        for params, lr in (
            ([p for p in encoders if id(p) not in fresh_ids], self.lr),
            ([p for m in fresh for p in m.parameters()], self.lr * self.head_lr_scale),
        ):
            params = [p for p in params if p.requires_grad]
            decay = [p for p in params if p.ndim >= 2]
            no_decay = [p for p in params if p.ndim < 2]
            groups += [
                {"params": decay, "weight_decay": self.weight_decay, "lr": lr},
                {"params": no_decay, "weight_decay": 0.0, "lr": lr},
            ]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=self.lr)
        scheduler = get_cosine_with_min_lr_schedule_with_warmup(
            optimizer,
            num_warmup_steps=self.warmup_steps,
            num_training_steps=max(int(total_steps), 1),
            min_lr_rate=self.min_lr_ratio,
        )
        return optimizer, scheduler

    def configure_optimizers(self):
        optimizer, scheduler = self.build_optimizer(self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
