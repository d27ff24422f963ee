"""How a benchmark mode ends when the user's input is missing or unusable: one line naming it, exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

__all__ = ["INPUT_ERRORS", "run_mode"]

INPUT_ERRORS: tuple[type[BaseException], ...] = (OSError, ImportError, ValueError)
"""What a missing or unreadable input raises (the bundle's own input errors derive from these; ImportError: an
optional package the mode needs, e.g. antspyx)."""


def run_mode(mode: str, run: Callable[[], Any]) -> int:
    """Run ``python -m scripts.benchmark <mode>``'s work; returns the exit code.

    Args:
        mode: the mode's name, as typed after ``python -m scripts.benchmark``.
        run: the work (its return value is not used).

    Returns:
        0 when ``run`` completes; 2 after printing ``python -m scripts.benchmark <mode>: <error>`` as one line on
        stderr when it raises one of :data:`INPUT_ERRORS`. Other exceptions propagate (a bug, not an input).
    """
    try:
        run()
    except INPUT_ERRORS as error:
        print(f"python -m scripts.benchmark {mode}: {error}", file=sys.stderr)
        return 2
    return 0
