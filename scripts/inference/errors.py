"""Errors of the inference run, and a one-line report of them on the command line.

Input problems (missing or unusable files, a bad checkpoint, an output directory that would overwrite inputs) are
:class:`~scripts.data.InvalidInputError`/:class:`~scripts.data.MissingInputError` subclasses whose messages start
with the offending path. MONAI's config parser and ignite wrap them in ``RuntimeError`` chains, which bury the
message under a long traceback; :func:`install_error_report` makes ``python -m monai.bundle run`` end such runs with
the message alone (and exit status 1).
"""

from __future__ import annotations

import os
import sys
import traceback
from types import TracebackType

from scripts.data import InvalidInputError, MissingInputError

__all__ = [
    "CheckpointError",
    "MissingCheckpointError",
    "OutputCollisionError",
    "input_error_in",
    "install_error_report",
]

TRACEBACK_VARIABLE = "MEMWARP_TRACEBACK"
"""Set this environment variable to 1 to also print the full traceback of an input error."""


class CheckpointError(InvalidInputError):
    """The checkpoint file cannot be loaded into the configured network."""


class MissingCheckpointError(MissingInputError):
    """The checkpoint file does not exist."""


class OutputCollisionError(InvalidInputError):
    """Writing the outputs would overwrite or mix with input files."""


def input_error_in(error: BaseException) -> BaseException | None:
    """The first input error in ``error``'s ``__cause__``/``__context__`` chain, or None."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, (InvalidInputError, MissingInputError)):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def install_error_report() -> None:
    """Make uncaught input errors print ``ERROR: <message>`` on stderr instead of a traceback (exit status 1).

    Other exceptions keep Python's default report. Set ``MEMWARP_TRACEBACK=1`` to see the traceback of input errors.
    """
    previous = sys.excepthook

    def report(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
        cause = input_error_in(error)
        if cause is None:
            previous(kind, error, trace)
            return
        if os.environ.get(TRACEBACK_VARIABLE, "") not in ("", "0"):
            traceback.print_exception(kind, error, trace)
        print(f"ERROR: {cause}", file=sys.stderr, flush=True)

    sys.excepthook = report
