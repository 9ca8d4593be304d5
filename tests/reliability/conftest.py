"""Fixtures of the reliability matrix (helpers live in reliability_helpers.py)."""

from reliability_helpers import corpus_copy

__all__ = ["corpus_copy"]
