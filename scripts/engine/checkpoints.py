"""Atomic checkpoints: the best network weights (``models/model.pt``) and the full training state for resuming.

MONAI 1.6.1's ``CheckpointSaver`` writes with ignite's ``DiskSaver(atomic=False)`` and deletes the previous final
checkpoint before writing the next one, so an interrupted save can leave no usable file. Everything here is written
to a temporary file in the target folder and moved into place with ``os.replace``, on the main process only.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, PolynomialLR

from scripts.atomic_files import write_atomically

__all__ = ["BestModelSaver", "TrainingStateLoader", "TrainingStateSaver", "atomic_torch_save", "unwrap_module"]

logger = logging.getLogger(__name__)


def unwrap_module(obj: Any) -> Any:
    """The wrapped module of a (Distributed)DataParallel, so state-dict keys carry no ``module.`` prefix."""
    if isinstance(obj, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        return obj.module
    return obj


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file next to ``path``, fsync, then ``os.replace``: readers never see half a file.

    The file gets the permissions a plain ``open`` would give (``mkstemp`` alone makes it owner-only).
    """
    return write_atomically(path, lambda stream: torch.save(obj, stream), binary=True)


class BestModelSaver:
    """Save the network's state dict (only) whenever the validation key metric improves.

    Attach to the validator; runs at its EPOCH_COMPLETED, after the metric is computed. The value is compared on
    every process (the metric is all-reduced) but only the main process writes. ``state_dict``/``load_state_dict``
    hold the best value and epoch, so a resumed run keeps the best model of the interrupted one.

    Args:
        save_dir: folder of the checkpoint (the bundle's ``models/``).
        network: the trained network (DistributedDataParallel is unwrapped).
        metric_name: key of ``engine.state.metrics`` to maximise (e.g. "val_mean_dice").
        filename: checkpoint file name; ``models/model.pt`` is what inference and evaluation load.
    """

    def __init__(
        self, save_dir: str | os.PathLike, network: nn.Module, metric_name: str, filename: str = "model.pt"
    ) -> None:
        self.path = Path(save_dir) / filename
        self.network = network
        self.metric_name = metric_name
        self.best_metric = -math.inf
        self.best_epoch = -1

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        value = float(engine.state.metrics[self.metric_name])
        if not math.isfinite(value) or value <= self.best_metric:
            return
        self.best_metric, self.best_epoch = value, int(engine.state.epoch)
        if idist.get_rank() == 0:
            atomic_torch_save(unwrap_module(self.network).state_dict(), self.path)
            logger.info(f"new best {self.metric_name} {value:.4f} at epoch {self.best_epoch}: saved {self.path}")

    def state_dict(self) -> dict[str, float | int]:
        return {"best_metric": self.best_metric, "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: Mapping[str, float | int]) -> None:
        self.best_metric = float(state_dict["best_metric"])
        self.best_epoch = int(state_dict["best_epoch"])


class TrainingStateSaver:
    """Save everything needed to resume, at the end of every epoch, to one fixed file (``last.pt``).

    The file is a dict of plain state dicts (loadable with ``torch.load(weights_only=True)``): one per entry of
    ``save_dict`` plus "trainer" (the engine's epoch, iteration and epoch length). Attach it to the trainer AFTER
    the learning-rate and validation handlers so the saved scheduler and best-model state belong to the next epoch.

    Args:
        save_dir: checkpoint folder.
        save_dict: name -> object with ``state_dict()`` (network, optimizer, lr scheduler, best-model saver, ...).
        filename: checkpoint file name.
    """

    def __init__(self, save_dir: str | os.PathLike, save_dict: Mapping[str, Any], filename: str = "last.pt") -> None:
        if "trainer" in save_dict:
            raise ValueError("'trainer' is added automatically from the engine this handler is attached to")
        self.path = Path(save_dir) / filename
        self.save_dict = dict(save_dict)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if idist.get_rank() != 0:
            return
        checkpoint = {name: unwrap_module(obj).state_dict() for name, obj in self.save_dict.items()}
        checkpoint["trainer"] = engine.state_dict()
        atomic_torch_save(checkpoint, self.path)


class TrainingStateLoader(CheckpointLoader):
    """Resume from a :class:`TrainingStateSaver` file: MONAI's ``CheckpointLoader`` plus the engine's own state.

    The engine this handler is attached to is added to ``load_dict`` as "trainer", so the epoch and iteration
    counters continue; ``max_epochs`` keeps the value of the current run (so ``--epochs`` can extend a run), and so
    does the length of an epoch-level learning-rate schedule (``total_iters`` of ``PolynomialLR``, ``T_max`` of
    ``CosineAnnealingLR``): the restored schedule continues from the saved learning rate and decays over the
    current run's length. Loads at the engine's STARTED event, on every process.

    Args:
        load_path: the ``last.pt`` file.
        load_dict: name -> object with ``load_state_dict`` (same names as when saving, without "trainer").
        map_location: device to map the stored tensors to.
    """

    def __init__(
        self, load_path: str | os.PathLike, load_dict: Mapping[str, Any], map_location: Any = None, **kwargs: Any
    ) -> None:
        super().__init__(load_path=str(load_path), load_dict=dict(load_dict), map_location=map_location, **kwargs)

    def attach(self, engine: Engine) -> None:
        self.load_dict = {**self.load_dict, "trainer": engine}
        super().attach(engine)

    def __call__(self, engine: Engine) -> None:
        if not os.path.isfile(self.load_path):
            raise FileNotFoundError(
                f"{self.load_path}: no training state to resume from (written at the end of each epoch by a "
                "previous run with the same ckpt_dir); run without --resume to start from scratch"
            )
        lengths = {name: _schedule_length(obj) for name, obj in self.load_dict.items()}
        super().__call__(engine)
        for name, length in lengths.items():
            obj = self.load_dict[name]
            if length is not None and _schedule_length(obj) != length:
                engine.logger.info(f"{name}: schedule length {_schedule_length(obj)} of the checkpoint -> {length}")
                setattr(obj, _SCHEDULE_LENGTH_ATTRIBUTES[type(obj)], length)
        engine.logger.info(f"resumed at epoch {engine.state.epoch}, iteration {engine.state.iteration}")


_SCHEDULE_LENGTH_ATTRIBUTES = {PolynomialLR: "total_iters", CosineAnnealingLR: "T_max"}


def _schedule_length(obj: Any) -> int | None:
    """The length of an epoch-level schedule of :func:`scripts.engine.lr_scheduler`, None for anything else."""
    attribute = _SCHEDULE_LENGTH_ATTRIBUTES.get(type(obj))
    return None if attribute is None else int(getattr(obj, attribute))
