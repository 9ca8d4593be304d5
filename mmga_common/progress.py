"""One progress display over a stage's training steps, for both stages' Lightning trainers.

On a terminal: one tqdm line ``stage 1: 42/150 steps, loss 3.21, 0:04 left``, redrawn in place. Elsewhere (a log
file, CI, a worker process): nothing while training, then one summary line ``stage 1: 150 steps in 6.2 s, loss
10.52 -> 3.21``. Lightning's per-epoch bars do not fit here: stage 2 trains full-batch (one step per epoch, so
the bar would restart every step) and stage 1 is limited by steps, not epochs ("Epoch 0/-2").
"""

from __future__ import annotations

import sys
import time
from typing import Any

from lightning.pytorch.callbacks import ProgressBar
from tqdm import tqdm


def _loss(outputs: Any) -> float | None:
    value = outputs.get("loss") if isinstance(outputs, dict) else outputs
    try:
        return float(value.detach()) if hasattr(value, "detach") else float(value)
    except (TypeError, ValueError):
        return None


class StepProgress(ProgressBar):
    """Lightning progress bar over ``trainer.max_steps`` (see the module docstring).

    Args:
        name: shown before the counts, e.g. ``"stage 1"``.
        stream: where to write (default ``sys.stderr``); a stream that is not a terminal gets the summary only.
        refresh_every: redraw at most every this many steps on a terminal.
    """

    def __init__(self, name: str, stream: Any = None, refresh_every: int = 1):
        super().__init__()
        self.name = name
        self.stream = stream
        self.refresh_every = max(1, refresh_every)
        self._enabled = True
        self._bar: tqdm | None = None
        self._start = 0.0
        self._first_loss: float | None = None
        self._last_loss: float | None = None
        self._steps_at_start = 0

    @property
    def _out(self) -> Any:
        return self.stream if self.stream is not None else sys.stderr

    @property
    def interactive(self) -> bool:
        isatty = getattr(self._out, "isatty", None)
        return bool(isatty and isatty())

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self.trainer.is_global_zero

    def on_train_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()
        self._steps_at_start = trainer.global_step
        self._first_loss = self._last_loss = None
        if self.is_enabled and self.interactive:
            self._bar = tqdm(
                total=trainer.max_steps,
                initial=trainer.global_step,
                desc=self.name,
                unit="step",
                file=self._out,
                dynamic_ncols=True,
                leave=True,
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = _loss(outputs)
        if loss is not None:
            if self._first_loss is None:
                self._first_loss = loss
            self._last_loss = loss
        if self._bar is not None and trainer.global_step % self.refresh_every == 0:
            self._bar.n = trainer.global_step
            if loss is not None:
                self._bar.set_postfix_str(f"loss {loss:.4g}", refresh=False)
            self._bar.refresh()

    def on_train_end(self, trainer, pl_module) -> None:
        if self._bar is not None:
            self._bar.n = trainer.global_step
            self._bar.refresh()
            self._bar.close()
            self._bar = None
            return
        if not self.is_enabled:
            return
        steps = trainer.global_step - self._steps_at_start
        loss = ""
        if self._first_loss is not None and self._last_loss is not None:
            loss = f", loss {self._first_loss:.4g} -> {self._last_loss:.4g}"
        print(
            f"{self.name}: {steps} steps in {time.perf_counter() - self._start:.1f} s{loss}",
            file=self._out,
            flush=True,
        )
