"""Orchestration of a bridge run: its config (``config``), the stage templates built once per run and how a
stage is planned, run and recorded (``stages``), the chains over seeds and variants (``schedule``), the run's
corpus (``corpus``), the evaluation of every row (``evaluate``), the console, and ``run_bridge`` (``runner``).

Imports every other room and the stages' configs and entry points; nothing but the command line
(``bridge/alternate.py``) imports it.
"""
