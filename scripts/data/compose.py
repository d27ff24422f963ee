"""A ``Compose`` that lets the pipeline's own input errors through unwrapped.

MONAI 1.6.1 wraps any exception raised inside a Compose in ``RuntimeError("applying transform <object ...>")``,
which hides the file name and breaks ``except ValueError``/``except FileNotFoundError``. This subclass
re-raises :class:`~scripts.data.errors.InvalidInputError` and :class:`~scripts.data.errors.MissingInputError`
as themselves; other errors keep MONAI's wrapping.
"""

from __future__ import annotations

from typing import Any

from monai.transforms import Compose

from scripts.data.errors import InvalidInputError, MissingInputError

__all__ = ["RegistrationCompose"]

_INPUT_ERRORS = (InvalidInputError, MissingInputError)


def _input_error_in(error: BaseException) -> BaseException | None:
    """The first input error in ``error``'s cause chain (MONAI nests one RuntimeError per Compose level)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, _INPUT_ERRORS):
            return current
        seen.add(id(current))
        current = current.__cause__
    return None


class RegistrationCompose(Compose):
    """``monai.transforms.Compose`` raising input errors as themselves (same arguments and behaviour otherwise)."""

    def __call__(self, input_: Any, start: int = 0, end: int | None = None, threading: bool = False, lazy=None):
        try:
            return super().__call__(input_, start=start, end=end, threading=threading, lazy=lazy)
        except RuntimeError as error:
            cause = _input_error_in(error)
            if cause is None:
                raise
            raise cause.with_traceback(cause.__traceback__) from cause.__cause__

    def flatten(self) -> RegistrationCompose:
        """Inline nested Compose objects (of any Compose subclass with the same ``map_items``), keep this class."""
        transforms: list = []
        for transform in self.transforms:
            if isinstance(transform, Compose) and type(transform) in (Compose, RegistrationCompose):
                if transform.map_items == self.map_items:
                    transforms += list(transform.flatten().transforms)
                    continue
            transforms.append(transform)
        return RegistrationCompose(
            transforms,
            map_items=self.map_items,
            unpack_items=self.unpack_items,
            log_stats=self.log_stats,
            lazy=self._lazy,
            overrides=self.overrides,
        )
