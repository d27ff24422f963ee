"""Ignite handlers of the inference evaluator, other than the writer: checks, weights, timing, progress.

Attach order in ``configs/inference.json`` matters only at ``Events.STARTED``: the input/output checks and the
checkpoint loading both run there, before the first pair is loaded, so nothing is computed or written unless every
pair, the output directory and the weights are usable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents
from tqdm import tqdm

from scripts.data import InvalidInputError
from scripts.inference.batching import batch_pairs
from scripts.inference.input_checks import check_output_dir, check_pair_files
from scripts.inference.pairs import pair_name

__all__ = ["InputChecks", "PairProgressBar", "PairTimer"]

logger = logging.getLogger(__name__)


class InputChecks:
    """At ``Events.STARTED``: refuse the run if any pair's files (from their headers, see
    :func:`~scripts.inference.input_checks.check_pair_files`) or the output directory are unusable.

    Args:
        pairs: the pair records of the run (the dataset's data).
        output_dir: the output directory.
        protected: further input files that must not be inside ``output_dir`` (checkpoint, datalist).
        min_overlap: smallest fraction of the fixed field of view the moving image must cover.
    """

    def __init__(
        self, pairs: Sequence[dict], output_dir: str, protected: Sequence[str] = (), min_overlap: float = 0.05
    ) -> None:
        self.pairs, self.output_dir, self.protected, self.min_overlap = pairs, output_dir, protected, min_overlap

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        check_output_dir(self.output_dir, self.pairs, self.protected)
        names = [pair_name(record) for record in self.pairs]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise InvalidInputError(
                f"{self.output_dir}: pair names must be unique within a run, repeated: {duplicates}"
            )
        for record in self.pairs:
            check_pair_files(record, self.min_overlap)
        logger.info(f"checked the inputs of {len(self.pairs)} pair(s)")


class PairTimer:
    """Seconds spent per stage of the current iteration (one pair, or the pairs of a batch): ``self.current`` =
    {"load_and_preprocess", "network", "postprocess"}, reset when the next batch is fetched. ``load_and_preprocess``
    is the time the run WAITED for the batch: the inference loader reads a batch while the previous one is being
    registered (:class:`scripts.data.PrefetchingDataLoader`), so after the first it is mostly near 0."""

    def __init__(self) -> None:
        self.current: dict[str, float] = {}
        self._mark = 0.0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.GET_BATCH_STARTED, self._start)
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, self._lap, "load_and_preprocess")
        engine.add_event_handler(Events.ITERATION_STARTED, self._restart)
        engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, self._lap, "network")
        # attached after the engine's own MODEL_COMPLETED postprocessing handler, so this lap includes it
        engine.add_event_handler(IterationEvents.MODEL_COMPLETED, self._lap, "postprocess")

    def _start(self, engine: Engine) -> None:
        self.current = {}
        self._mark = time.perf_counter()

    def _restart(self, engine: Engine) -> None:
        self._mark = time.perf_counter()

    def _lap(self, engine: Engine, stage: str) -> None:
        now = time.perf_counter()
        self.current[stage] = now - self._mark
        self._mark = now


class PairProgressBar:
    """A tqdm progress bar over the pairs of the run (stderr), showing the pair being written."""

    def __init__(self, description: str = "registering") -> None:
        self.description = description
        self.bar: tqdm | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._open)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._step)
        engine.add_event_handler(Events.COMPLETED, self._close)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._close_on_error)

    def _open(self, engine: Engine) -> None:
        self.bar = tqdm(total=engine.state.epoch_length, desc=self.description, unit="pair", dynamic_ncols=True)

    def _step(self, engine: Engine) -> None:
        if self.bar is not None:
            items = batch_pairs(engine.state.batch)
            names = [str(item["pair"]["pair_name"]) for item in items if isinstance(item, Mapping) and "pair" in item]
            self.bar.set_postfix_str(", ".join(names), refresh=False)
            self.bar.update(len(items))

    def _close(self, engine: Engine) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _close_on_error(self, engine: Engine, error: Exception) -> None:
        self._close(engine)
        raise error  # an EXCEPTION_RAISED handler swallows the error unless it re-raises it
