"""The Lightning system: which losses, their weights, optimisation and logging. The computation lives in the
encoders (``stage1_encoders.encoders``) and the loss modules (``stage1_encoders.losses``)."""

from __future__ import annotations

import math

import lightning as L
import torch

from stage1_encoders.config import TextFeatureInput
from stage1_encoders.encoders import ImageEncoder, TextEncoder
from stage1_encoders.losses import GraphContrastiveLoss, ITALoss, MLMLoss
from stage1_encoders.pooling import mean_by_user

LOSS_NAMES = ("mlm_loss", "ita_loss", "gcl_image_loss", "gcl_text_loss")


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
        self.mlm_loss = MLMLoss(label_smoothing) if lm_weight > 0 else None
        self.ita_loss = (
            ITALoss(image_encoder.dim, text_encoder.dim, ita_dim, init_temperature, max_logit_scale)
            if ita_weight > 0
            else None
        )
        self.gcl_image_loss = (
            GraphContrastiveLoss(image_encoder.dim, gcl_hidden_dim, "image", gcl_form)
            if gcl_image_weight > 0
            else None
        )
        self.gcl_text_loss = (
            GraphContrastiveLoss(text_encoder.dim, gcl_hidden_dim, "text", gcl_form)
            if gcl_text_weight > 0
            else None
        )
        self.text_feature_input = text_feature_input
        self.lr, self.head_lr_scale, self.weight_decay = lr, head_lr_scale, weight_decay
        self.warmup_steps, self.min_lr_ratio = warmup_steps, min_lr_ratio
        self.loss_history: dict[str, list[float]] = {name: [] for name in (*LOSS_NAMES, "loss")}

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
        has_images = batch["pixel_values"].shape[0] > 0
        text_emb = image_emb = None
        mlm = self.mlm_loss is not None and has_text
        if mlm and self.text_feature_input == "masked":  # one pass: [CLS] of the masked text, as BERT's NSP
            text_emb, logits, labels = self.text_encoder.encode_masked(
                batch["mlm_input_ids"], batch["attention_mask"], batch["mlm_labels"]
            )
        else:
            if self.needs_text_features and has_text:
                text_emb = self.text_encoder(batch["input_ids"], batch["attention_mask"])
            if mlm:
                logits, labels = self.text_encoder.mlm_logits(
                    batch["mlm_input_ids"], batch["attention_mask"], batch["mlm_labels"]
                )
        if mlm and len(labels) > 0:
            losses.update(self.mlm_loss(logits, labels))
        if self.needs_images and has_images:
            image_emb = self.image_encoder(batch["pixel_values"])
        if (
            self.ita_loss is not None
            and text_emb is not None
            and image_emb is not None
            and len(batch["ita_text_row"]) >= 2
        ):
            losses.update(self.ita_loss(image_emb[batch["ita_image_row"]], text_emb[batch["ita_text_row"]]))
        pairs = (batch["pair_u"], batch["pair_v"], batch["pair_label"], batch["pair_weight"])
        if self.gcl_image_loss is not None and image_emb is not None:
            user_emb, user_mask = mean_by_user(image_emb, batch["image_post_user"], num_users)
            losses.update(self.gcl_image_loss(user_emb, user_mask, *pairs))
        if self.gcl_text_loss is not None and text_emb is not None:
            user_emb, user_mask = mean_by_user(text_emb, batch["text_post_user"], num_users)
            losses.update(self.gcl_text_loss(user_emb, user_mask, *pairs))
        return losses

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
            self.loss_history[name].append(float(value.detach()))
        if self.ita_loss is not None:
            self.log(
                "train/logit_scale",
                self.ita_loss.logit_scale.detach().exp(),
                on_step=True,
                batch_size=batch_size,
            )
        return total

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.ita_loss is not None:
            self.ita_loss.clamp_logit_scale()

    def heads(self) -> list[torch.nn.Module]:
        """The loss modules that own parameters (ITA projections and logit scale, GCL pair classifiers)."""
        return [m for m in (self.ita_loss, self.gcl_image_loss, self.gcl_text_loss) if m is not None]

    def build_optimizer(self, total_steps: int):
        """AdamW (decay on matrices only; the loss heads at ``lr * head_lr_scale``) and a per-step schedule:
        linear warm-up, then cosine to ``min_lr_ratio`` of the peak at ``total_steps``."""
        groups = []
        for modules, lr in (
            ((self.image_encoder, self.text_encoder), self.lr),
            (self.heads(), self.lr * self.head_lr_scale),
        ):
            params = [p for m in modules for p in m.parameters() if p.requires_grad]
            decay = [p for p in params if p.ndim >= 2]
            no_decay = [p for p in params if p.ndim < 2]
            groups += [
                {"params": decay, "weight_decay": self.weight_decay, "lr": lr},
                {"params": no_decay, "weight_decay": 0.0, "lr": lr},
            ]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=self.lr)
        total = max(int(total_steps), 1)
        warmup, floor = self.warmup_steps, self.min_lr_ratio

        def lr_factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min((step - warmup) / max(total - warmup, 1), 1.0)
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)

    def configure_optimizers(self):
        optimizer, scheduler = self.build_optimizer(self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
