"""The run's report: ``report.md``, ``metrics.json`` (the same numbers) and PNG plots, over typed results.

``compute_report`` (``build.py``) turns the rows' evaluations into a typed :class:`RunReport` (summaries over
training seeds in ``summary.py``, the edge-weight diagnostics in ``diagnostics.py``); ``markdown.py`` renders
it; ``plots.py`` draws it; ``compare.py`` compares finished runs; ``tracking.py`` logs the evaluation with the
stages' trackers (``trainer.loggers``). Imports ``evaluation``, ``runfolder``, ``cache``, ``corpus``,
``bridge.variants`` and ``mmga_common``; never a stage, ``rounds`` or ``inference``.
"""

from __future__ import annotations

from bridge.report.build import ReportInputs, RunFacts, RunReport, compute_report
from bridge.report.write import write_report

__all__ = ["ReportInputs", "RunFacts", "RunReport", "compute_report", "write_report"]
