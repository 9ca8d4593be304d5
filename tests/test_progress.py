"""mmga_common: the step progress display (terminal vs not) and the third-party noise filters."""

from __future__ import annotations

import io
import logging
import warnings

import lightning as L
import torch

from mmga_common import quiet_third_party
from mmga_common.progress import StepProgress


class _Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def training_step(self, batch, batch_idx):
        return {"loss": (self.w * batch[0]).pow(2).mean()}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(4, 1)), batch_size=1)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _fit(stream) -> None:
    trainer = L.Trainer(
        max_steps=6,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[StepProgress("stage 9", stream=stream)],
        accelerator="cpu",
    )
    trainer.fit(_Tiny())


def test_summary_line_when_not_a_terminal():
    out = io.StringIO()
    _fit(out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stage 9: 6 steps in ") and "loss " in lines[0]
    assert "->" in lines[0]  # first and last loss


def test_one_redrawn_bar_on_a_terminal():
    out = _Tty()
    _fit(out)
    text = out.getvalue()
    assert "stage 9" in text and "6/6" in text and "\r" in text and "Epoch" not in text


def test_quiet_third_party_drops_only_the_listed_noise(caplog):
    quiet_third_party()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        quiet_third_party()  # re-installs the filters on top of "default"
        warnings.warn("`torch.jit.script` is deprecated. Please switch", FutureWarning, stacklevel=1)
        warnings.warn(
            "Using 'NeighborSampler' without a 'pyg-lib' installation is deprecated and will be removed soon.",
            UserWarning,
            stacklevel=1,
        )
        warnings.warn("something the user should see", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["something the user should see"]
    with caplog.at_level(logging.INFO):
        logging.getLogger("lightning.pytorch.utilities.rank_zero").info(
            "💡 Tip: For seamless cloud logging ..."
        )
        logging.warning("No pretrained weights loaded for model 'x'. Model initialized randomly.")
        logging.getLogger("lightning.pytorch.utilities.rank_zero").info(
            "`Trainer.fit` stopped: `max_epochs=5` reached."
        )
        logging.warning("a real problem")
    assert [r.getMessage() for r in caplog.records] == ["a real problem"]
