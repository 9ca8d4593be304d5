"""The run's evaluation metrics in the experiment trackers its stages log to (their ``trainer.loggers``).

``log_evaluations`` writes every report row's scores with the same Lightning loggers the stages use
(``mmga_common.trainer.build_loggers``) into ``RunPaths.tracking_dir``, as one logged run named after the run
folder: ``logs/version_0/metrics.csv`` (csv), ``tensorboard/version_0/`` (tensorboard), ``mlruns/mlflow.db``
(mlflow, experiment ``mmga``) and ``wandb/`` (wandb, offline). The folder is derived from the manifest's
evaluations, like ``report.md``: each invocation removes it (only when it holds nothing but those four entries)
and logs again, so it always holds exactly one run, the current report's numbers, however often the bridge reruns.

Metric keys (:func:`evaluation_metrics`), each logged once at step 0; a metric that is NaN (a skipped task) is left
out, as trackers differ in what they make of NaN:

- ``<row>/seed_<s>/<task>/<metric>``: training seed s's score, the mean over the downstream heads' seeds;
- ``<row>/<task>/<metric>``: the mean of those over the training seeds (for a row without a training seed, X:
  its one score), ``<row>/<task>/<metric>_sd`` their sample sd (seeded rows only).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bridge.evaluation.results import TASKS, Evaluation, Stat
from bridge.runfolder import RunPaths
from bridge.runfolder.ownership import clear_tracking_dir

STEP = 0  # every metric is logged once, at this step


def evaluation_metrics(evaluated: Mapping[str, Mapping[int | None, Evaluation]]) -> dict[str, float]:
    """The flat ``{key: value}`` the trackers get from ``{row: {training seed or None: Evaluation}}`` (see the
    module docstring for the keys); NaN values are left out."""
    out: dict[str, float] = {}
    for row, by_seed in evaluated.items():
        seeded = any(seed is not None for seed in by_seed)
        for task in TASKS:
            metrics = dict.fromkeys(m for ev in by_seed.values() for m in ev.task(task).scores)
            for metric in metrics:
                per_seed = {seed: ev.task(task).scores[metric].mean for seed, ev in by_seed.items()}
                if seeded:
                    for seed, value in sorted(per_seed.items()):
                        out[f"{row}/seed_{seed}/{task}/{metric}"] = value
                over_seeds = Stat.of(per_seed.values())
                out[f"{row}/{task}/{metric}"] = over_seeds.mean
                if seeded:
                    out[f"{row}/{task}/{metric}_sd"] = over_seeds.std
    return {key: float(value) for key, value in out.items() if not math.isnan(value)}


def log_evaluations(
    loggers: Iterable[str],
    paths: RunPaths,
    evaluated: Mapping[str, Mapping[int | None, Evaluation]],
    config: Mapping[str, Any] | None = None,
) -> Path | None:
    """Log :func:`evaluation_metrics` of ``evaluated`` (and ``config``, the run's config, as the hyperparameter
    ``bridge_config``) with the Lightning loggers named in ``loggers`` (the stages' ``trainer.loggers``) into
    ``paths.tracking_dir``, replacing what an earlier invocation logged there. Returns that folder, or ``None``
    when ``loggers`` names none (then nothing is written or removed)."""
    from mmga_common.trainer import TrainerConfig, build_loggers

    kinds = list(dict.fromkeys(loggers))
    if not kinds:
        return None
    out = paths.tracking_dir
    clear_tracking_dir(out)  # refuses, removing nothing, if something no logger writes is there
    out.mkdir(parents=True)
    metrics = evaluation_metrics(evaluated)
    for logger in build_loggers(TrainerConfig(loggers=kinds), out, paths.run_dir.name):
        if config is not None:
            logger.log_hyperparams({"bridge_config": dict(config)})
        logger.log_metrics(metrics, step=STEP)
        logger.finalize("success")
    return out
