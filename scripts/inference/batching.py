"""Several pairs per iteration: how inference's dataloader groups pairs and how every stage finds them again.

``batch_size`` (``configs/inference.json``) pairs go through the network, and through the instance optimisation,
together; everything that depends on a pair's own files (input checks, reading, resampling to the pair's original
grids, the inverse field, metrics, writing) stays per pair. Every pair's network inputs lie on the same network
grid (128 x 128 x 16 at 1.8 x 1.8 x 10 mm), so any pairs can share a batch, whatever their original sizes.

The iteration's batch is one pair's sample itself when ``batch_size`` is 1 (the dict of
:mod:`scripts.inference.preprocessing`), and ``{"pairs": [sample, ...]}`` otherwise; the postprocessing
(:class:`~scripts.inference.postprocessing.RegistrationPostprocessing`) returns the postprocessed dicts of a
batch under ``"results"``, in the same order. Samples are never collated into batched tensors: their original
images differ in size, and their records hold strings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from scripts.errors import InvalidInputError

__all__ = [
    "PAIRS_KEY",
    "RESULTS_KEY",
    "batch_pairs",
    "checked_batch_size",
    "pair_batch_collate",
    "pairs_with_results",
]

PAIRS_KEY = "pairs"
"""Key of a batch of several pairs: the list of their samples."""
RESULTS_KEY = "results"
"""Key of the postprocessed dicts of a batch of several pairs (same order as :data:`PAIRS_KEY`)."""


def checked_batch_size(value: Any) -> int:
    """``batch_size`` of ``configs/inference.json`` as the dataloader's int; InvalidInputError naming the key unless
    it is a whole number >= 1. A larger batch needs memory for that many pairs at once; it changes no result beyond
    floating-point rounding."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"configs/inference.json: batch_size must be a whole number >= 1, got {value!r}")
    return int(value)


def pair_batch_collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The dataloader's ``collate_fn``: one sample as it is, several as ``{"pairs": [sample, ...]}``."""
    if not items:
        raise ValueError("a batch needs at least one pair")
    return dict(items[0]) if len(items) == 1 else {PAIRS_KEY: list(items)}


def batch_pairs(batch: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The samples of an iteration's batch, in order (one for a single sample)."""
    if isinstance(batch, Mapping):
        return list(batch[PAIRS_KEY]) if PAIRS_KEY in batch else [batch]
    return list(batch)


def pairs_with_results(batch: Any, output: Any) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """``(sample, postprocessed dict)`` of every pair of an iteration, from the engine's batch and output."""
    if isinstance(batch, Mapping) and PAIRS_KEY in batch:
        return list(zip(batch[PAIRS_KEY], output[RESULTS_KEY], strict=True))
    if isinstance(batch, list):
        return list(zip(batch, output, strict=True))
    return [(batch, output)]
