"""Downstream evaluation: which representation each report row is (``rows``), one evaluation skeleton
(``loop``: targets prepared once, candidates chosen on val, test scored once per head seed) shared by the heads on
frozen embeddings (``heads``) and the peers trained end to end (``peers``), the metrics, the tasks, typed results
(``results``: ``Stat``, ``TaskScores``, ``Evaluation``) and the seed-aware verdict.

Imports ``runfolder`` (to read a row's cache), ``cache``, ``corpus`` and ``bridge.variants``; never a stage,
``rounds`` or ``inference``. Its torch-bound modules (heads, peers, rows) are imported on first use.
"""

from bridge.evaluation.config import EvalConfig, HeadType
from bridge.evaluation.results import METRICS, SPLITS, TASKS, Choice, Evaluation, Stat, TaskScores

__all__ = [
    "METRICS",
    "SPLITS",
    "TASKS",
    "Choice",
    "EvalConfig",
    "Evaluation",
    "HeadType",
    "Stat",
    "TaskScores",
]
