"""The data pipeline's errors: :class:`InvalidInputError` and :class:`MissingInputError`, defined in
:mod:`scripts.errors` (the one home of every user-caused error and of its one-line report) and re-exported here for
the data modules and their callers."""

from __future__ import annotations

from scripts.errors import InvalidInputError, MissingInputError

__all__ = ["InvalidInputError", "MissingInputError"]
