"""Small pieces shared by every package and entry point:

- ``mmga_common.config``: the one config layer (``ConfigError``, JSON/YAML loading, deep merge, typed
  dataclass <-> dict with bounds in field metadata, dotted ``KEY=VALUE`` overrides, dataclass -> argparse);
- ``mmga_common.trainer``: the ``trainer`` section both stages' configs share (``TrainerConfig``), the Lightning
  Trainer builder and ``fit_and_save`` (final, resumable ``last.ckpt``); its callbacks in ``mmga_common.callbacks``;
- ``mmga_common.runtime``: what ``accelerator``/``precision: auto`` mean on this machine, and the early one-line
  refusal of impossible device requests and missing tracker packages (``check_runtime``, also in ``trainer``);
- ``mmga_common.threads``: ``torch_threads``, torch's thread count for one block, restored afterwards;
- ``mmga_common.layout``: the one layout of a stage's output folder (``checkpoints/last.ckpt``,
  ``checkpoints/config.json``, ``logs/``, default ``runs/<stage>/round_<R>``) and ``StageResult``, what both
  stages return;
- ``mmga_common.noise``: quieting third-party noise at the entry points;
- ``mmga_common.progress``: the one step-based progress display both stages' Lightning trainers use;
- ``mmga_common.cli``: the ``mmga`` console command, which dispatches by module name to each package's CLI.

May import nothing from the project (corpus, cache, the stages and the bridge may all import it); only the
standard library, PyYAML (config), torch (threads, imported when used) and Lightning and tqdm (progress, and the trainer
when one is built).
"""

from mmga_common.noise import quiet_third_party

__all__ = ["quiet_third_party"]
