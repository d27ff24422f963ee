"""Training records: per-epoch loss terms and learning rate, a JSON-lines history, and each process's data shard."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from torch.utils.data.distributed import DistributedSampler

__all__ = ["HistoryWriter", "LossTermsRecorder", "ShardRecorder"]


class LossTermsRecorder:
    """Epoch means of the loss terms (``loss_function.last_terms``) and the epoch's learning rate, as metrics.

    Writes ``engine.state.metrics["train_<term>"]`` (similarity, mask_dice, region_dice, regularisation, total;
    weighted contributions, averaged over the epoch's iterations and all processes) and ``"lr"``, so
    ``TensorBoardStatsHandler`` and ``StatsHandler`` log them at epoch level. Attach on every process (the
    average is all-reduced).

    Args:
        loss_function: a loss exposing ``last_terms`` (a dict of floats) after each call, e.g. ``MemWarpLoss``.
        prefix: prefix of the metric names.
    """

    def __init__(self, loss_function: Any, prefix: str = "train_") -> None:
        self.loss_function = loss_function
        self.prefix = prefix
        self._sums: dict[str, float] = {}
        self._count = 0
        self._lr = math.nan

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def epoch_started(self, engine: Engine) -> None:
        self._sums, self._count = {}, 0
        optimizer = getattr(engine, "optimizer", None)
        # read at the start: epoch-level schedulers step at EPOCH_COMPLETED, before this epoch's record is written
        self._lr = float(optimizer.param_groups[0]["lr"]) if optimizer is not None else math.nan

    def iteration_completed(self, engine: Engine) -> None:
        for name, value in getattr(self.loss_function, "last_terms", {}).items():
            self._sums[name] = self._sums.get(name, 0.0) + float(value)
        self._count += 1

    def epoch_completed(self, engine: Engine) -> None:
        names = sorted(self._sums)
        totals = torch.tensor([self._sums[name] for name in names] + [float(self._count)], dtype=torch.float64)
        if idist.get_world_size() > 1:
            totals = idist.all_reduce(totals.to(idist.device())).cpu()
        count = max(float(totals[-1]), 1.0)
        for name, total in zip(names, totals[:-1].tolist()):
            engine.state.metrics[f"{self.prefix}{name}"] = total / count
        engine.state.metrics["lr"] = self._lr


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    scalars = {}
    for name, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, (int, float)):
            scalars[name] = float(value) if math.isfinite(value) else None
    return scalars


class HistoryWriter:
    """Append one JSON line per epoch to ``output_file``: epoch, iteration, the trainer's scalar metrics (loss
    terms, lr) and, after a validation epoch, the validator's metrics. A resumed run keeps appending.

    Attach to the trainer after the validation handler; the main process writes (disable it on the others).

    Args:
        output_file: the JSON-lines file (e.g. ``<output_dir>/history.jsonl``).
        validator: the validation engine, whose metrics join the record of the epoch it validated.
    """

    def __init__(self, output_file: str | os.PathLike, validator: Engine | None = None) -> None:
        self.output_file = Path(output_file)
        self.validator = validator

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        record: dict[str, Any] = {"epoch": engine.state.epoch, "iteration": engine.state.iteration}
        record.update(_scalars(engine.state.metrics))
        if self.validator is not None and self.validator.state.epoch == engine.state.epoch:
            record.update(_scalars(self.validator.state.metrics))
        self.output_file.parent.mkdir(parents=True, exist_ok=True)
        with self.output_file.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")


class ShardRecorder:
    """Record which pairs this process trains on each epoch, to check data sharding across processes.

    At each EPOCH_STARTED appends ``{"epoch", "rank", "world_size", "indices", "pairs"}`` to
    ``<output_dir>/data_shard_rank<r>.jsonl``, where ``indices`` are the dataset indices of this process's
    ``DistributedSampler`` for the epoch (all indices in a single process) and ``pairs`` their
    ``"<patient>:<direction>"`` before augmentation. Reading a DistributedSampler's order uses its own seeded
    generator, so recording does not change the training.

    Args:
        output_dir: folder of the per-rank files.
    """

    def __init__(self, output_dir: str | os.PathLike) -> None:
        self.output_dir = Path(output_dir)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        loader = engine.data_loader
        dataset = loader.dataset
        sampler = getattr(loader, "sampler", None)
        # iterating a RandomSampler would draw from the global RNG and change the run: only sharded orders are read
        indices = list(iter(sampler)) if isinstance(sampler, DistributedSampler) else list(range(len(dataset)))
        data = getattr(dataset, "data", None)
        pairs = [f"{data[i].get('patient', '')}:{data[i].get('direction', '')}" for i in indices] if data else []
        rank = idist.get_rank()
        record = {
            "epoch": engine.state.epoch,
            "rank": rank,
            "world_size": idist.get_world_size(),
            "indices": [int(i) for i in indices],
            "pairs": pairs,
        }
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with (self.output_dir / f"data_shard_rank{rank}.jsonl").open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")
