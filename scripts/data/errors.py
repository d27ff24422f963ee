"""Exceptions raised by the data pipeline.

Both subclass the built-in exceptions that callers already catch (``ValueError`` and
``FileNotFoundError``), so generic handlers keep working; every message starts with the offending
file or directory and then says what is wrong with it.
"""

from __future__ import annotations

__all__ = ["InvalidInputError", "MissingInputError"]


class InvalidInputError(ValueError):
    """An input exists but cannot be used: wrong dimensionality, bad label values, NaNs, mismatched geometry."""


class MissingInputError(FileNotFoundError):
    """A file or directory the pipeline needs is absent."""
