"""Every error a user can cause, and the one-line report that ends a command-line run with it.

A user-caused error is an :class:`InvalidInputError` (an input exists but cannot be used) or a
:class:`MissingInputError` (a file or directory is absent), or one of their subclasses. Each message starts with the
offending file or directory and then says what is wrong with it. Both subclass the built-in exceptions callers
already catch (``ValueError`` and ``FileNotFoundError``).

MONAI's config parser, ignite's engines, MONAI's ``Compose`` and torch's ``DataLoader`` workers wrap such an error in
``RuntimeError`` chains (or re-raise it with a worker traceback in its message), which bury the message under 50-100
lines of traceback. :func:`install_error_report`, run by the ``initialize`` step of every bundle config, makes
``python -m monai.bundle run ...`` end such a run with ``ERROR: <message>`` on one line and exit status 1; any other
exception keeps Python's full report.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import traceback
from types import TracebackType

__all__ = [
    "CheckpointError",
    "InvalidInputError",
    "MissingCheckpointError",
    "MissingInputError",
    "OutputCollisionError",
    "TRACEBACK_VARIABLE",
    "input_error_in",
    "install_error_report",
    "one_line",
]

TRACEBACK_VARIABLE = "MEMWARP_TRACEBACK"
"""Set this environment variable to 1 to also print the full traceback of a user-caused error."""


class InvalidInputError(ValueError):
    """An input exists but cannot be used: wrong dimensionality, bad label values, NaNs, mismatched geometry, ..."""


class MissingInputError(FileNotFoundError):
    """A file or directory the run needs is absent."""


class CheckpointError(InvalidInputError):
    """The checkpoint file cannot be loaded into the configured network."""


class MissingCheckpointError(MissingInputError):
    """The checkpoint file does not exist."""


class OutputCollisionError(InvalidInputError):
    """Writing the outputs would overwrite input files or files shipped with the bundle."""


_USER_ERRORS = (InvalidInputError, MissingInputError)


def input_error_in(error: BaseException) -> BaseException | None:
    """The first user-caused error in ``error``'s ``__cause__``/``__context__`` chain (``error`` included), or None."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, _USER_ERRORS):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def one_line(error: BaseException) -> str:
    """The message of a user-caused error as one line.

    torch's ``DataLoader`` re-raises an error of a worker process as the same type with the message
    ``"Caught <Type> in DataLoader worker process N.\\nOriginal Traceback ...\\n<module>.<Type>: <message>"``: the
    original message is the text after the last ``<Type>: `` of that traceback.
    """
    text = str(error)
    marker = f"{type(error).__name__}: "
    if text.startswith("Caught ") and "Original Traceback" in text and marker in text:
        text = text[text.rindex(marker) + len(marker) :]
    return " ".join(text.split())


class _NoUserErrorLog(logging.Filter):
    """Drops the ERROR records engines log while a user-caused error passes through them: ignite's "run is
    terminating due to exception: <message>" and MONAI ``StatsHandler``'s ``logger.exception`` traceback. The error
    report prints the one line when the exception reaches the top.

    The error is the record's ``exc_info`` or, for a plain ``logger.error`` inside an ``except`` block, the exception
    being handled (``sys.exc_info()``: filters run inside the logging call).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or os.environ.get(TRACEBACK_VARIABLE, "") not in ("", "0"):
            return True
        error = record.exc_info[1] if record.exc_info and record.exc_info[1] is not None else sys.exc_info()[1]
        return error is None or input_error_in(error) is None


def _install_log_filter() -> None:
    # MONAI's StatsHandler logs through its own logger (by default "monai.handlers.StatsHandler", with its own stdout
    # handler, not propagating to the root), so the filter goes on that logger too; ignite's engine loggers propagate
    # to the root's handlers. The logger is made with MONAI's own get_logger: a bare logging.getLogger would register
    # the name, and MONAI would then skip adding its stdout handler, silencing the epoch metrics.
    from monai.apps.utils import get_logger
    from monai.handlers import StatsHandler

    stats_logger = inspect.signature(StatsHandler).parameters["name"].default
    targets: list[logging.Filterer] = [*logging.getLogger().handlers, get_logger(stats_logger)]
    for target in targets:
        if not any(isinstance(existing, _NoUserErrorLog) for existing in target.filters):
            target.addFilter(_NoUserErrorLog())


def install_error_report() -> None:
    """End the run with ``ERROR: <message>`` (one line on stderr, exit status 1) on an uncaught user-caused error.

    Installs a ``sys.excepthook``, and a logging filter that drops the error records (with tracebacks) engines log
    while the error passes through them. Other exceptions keep Python's default report. ``MEMWARP_TRACEBACK=1``
    shows the tracebacks too. Idempotent.
    """
    _install_log_filter()
    if getattr(sys.excepthook, "_reports_user_errors", False):
        return
    previous = sys.excepthook

    def report(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
        cause = input_error_in(error)
        if cause is None:
            previous(kind, error, trace)
            return
        if os.environ.get(TRACEBACK_VARIABLE, "") not in ("", "0"):
            traceback.print_exception(kind, error, trace)
        print(f"ERROR: {one_line(cause)}", file=sys.stderr, flush=True)

    report._reports_user_errors = True  # type: ignore[attr-defined]
    sys.excepthook = report
