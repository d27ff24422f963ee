"""Checkpoints of a training run: the best network weights with their card, the full training state for resuming,
loading weights before a run (fine-tuning, evaluation), and the guard that keeps the shipped weights intact.

MONAI 1.6.1's ``CheckpointSaver`` writes with ignite's ``DiskSaver(atomic=False)`` and deletes the previous final
checkpoint before writing the next one, so an interrupted save can leave no usable file. Everything here is written
to a temporary file in the target folder and moved into place with ``os.replace``, on the main process only.

A run writes into its own folder (``runs/<run_name>/models``, see configs/train.json). The savers refuse, when they
are built (before any data is read), to write over a file shipped with the bundle (``models/model.pt``,
``models/model.ts``, ``models/model.json`` and every file of ``large_files.yml``) unless
``overwrite_shipped_weights`` is true.
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
from scripts.checkpoint_card import bundle_version, card_path, write_card
from scripts.errors import InvalidInputError, MissingInputError, OutputCollisionError
from scripts.inference.checkpoint import load_network_weights

__all__ = [
    "BestModelSaver",
    "SHIPPED_WEIGHTS",
    "TrainingStateLoader",
    "TrainingStateSaver",
    "WeightsLoader",
    "as_flag",
    "atomic_torch_save",
    "refuse_shipped_files",
    "shipped_files",
    "unwrap_module",
]

SHIPPED_WEIGHTS = ("models/model.pt", "models/model.ts", "models/model.json")
"""Files the bundle ships in ``models/`` (relative to the bundle root), besides those listed in large_files.yml."""

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


def as_flag(value: bool | str | int, name: str) -> bool:
    """A yes/no option as given on the command line (``true``/``false``, ``1``/``0``, ``yes``/``no``) or in JSON."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise InvalidInputError(f"--{name} {value!r}: expected true or false")


def shipped_files(bundle_root: str | os.PathLike) -> frozenset[Path]:
    """Absolute paths of the files shipped with the bundle that training could write: :data:`SHIPPED_WEIGHTS` and
    every ``path`` of ``<bundle_root>/large_files.yml`` (whether or not they are on disk yet).

    Raises:
        InvalidInputError: large_files.yml exists but is not a YAML mapping with a ``large_files`` list.
    """
    import yaml  # PyYAML, pinned in requirements.txt (MONAI's download_large_files needs it too)

    root = Path(bundle_root).absolute()
    paths = {root / name for name in SHIPPED_WEIGHTS}
    listing = root / "large_files.yml"
    if listing.is_file():
        try:
            content = yaml.safe_load(listing.read_text(encoding="utf-8")) or {}
            paths.update(root / str(entry["path"]) for entry in content.get("large_files", []))
        except (yaml.YAMLError, AttributeError, KeyError, TypeError) as error:
            raise InvalidInputError(f"{listing}: not a list of large files with a 'path' each ({error})") from None
    return frozenset(Path(os.path.realpath(path)) for path in paths)


def refuse_shipped_files(
    paths: list[Path], bundle_root: str | os.PathLike | None, overwrite_shipped_weights: bool | str = False
) -> None:
    """Raise when one of ``paths`` is a file shipped with the bundle at ``bundle_root``, unless overwriting is allowed.

    Raises:
        OutputCollisionError: naming the file and the two ways out (another ``--ckpt_dir``/``--run_name``, or
            ``--overwrite_shipped_weights true``).
    """
    if bundle_root is None or as_flag(overwrite_shipped_weights, "overwrite_shipped_weights"):
        return
    shipped = shipped_files(bundle_root)
    for path in paths:
        if Path(os.path.realpath(path)) in shipped:
            raise OutputCollisionError(
                f"{path}: refusing to overwrite a file shipped with the bundle; train into another folder "
                "(--run_name NAME writes runs/NAME/, or --ckpt_dir DIR) or pass --overwrite_shipped_weights true"
            )


class BestModelSaver:
    """Save the network's state dict (only) and its card whenever the validation key metric improves.

    Attach to the validator; runs at its EPOCH_COMPLETED, after the metric is computed. The value is compared on
    every process (the metric is all-reduced) but only the main process writes. ``state_dict``/``load_state_dict``
    hold the best value and epoch, so a resumed run keeps the best model of the interrupted one. Beside the weights
    it writes their card (``model.json``, :mod:`scripts.checkpoint_card`) with the epoch and metric.

    Args:
        save_dir: folder of the checkpoint (``runs/<run_name>/models``).
        network: the trained network (DistributedDataParallel is unwrapped).
        metric_name: key of ``engine.state.metrics`` to maximise (e.g. "val_mean_dice").
        filename: checkpoint file name; ``model.pt`` is what inference and evaluation load (``--ckpt_path``).
        card: ``architecture``, ``network_preset``, ``spatial_size`` and ``pixdim`` of the run, for the card; no card
            is written when None.
        bundle_root: the bundle whose shipped files must not be overwritten (and whose version the card records).
        overwrite_shipped_weights: allow writing over a shipped file (see :func:`refuse_shipped_files`).

    Raises:
        OutputCollisionError: at construction, the weights or the card would overwrite a shipped file.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        network: nn.Module,
        metric_name: str,
        filename: str = "model.pt",
        card: Mapping[str, Any] | None = None,
        bundle_root: str | os.PathLike | None = None,
        overwrite_shipped_weights: bool | str = False,
    ) -> None:
        self.path = Path(save_dir) / filename
        refuse_shipped_files([self.path, card_path(self.path)], bundle_root, overwrite_shipped_weights)
        self.network = network
        self.metric_name = metric_name
        self.card = None if card is None else dict(card)
        self.version = None if bundle_root is None else bundle_version(bundle_root)
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
            if self.card is not None:
                write_card(
                    self.path,
                    self.card["architecture"],
                    self.card["network_preset"],
                    self.card["spatial_size"],
                    self.card["pixdim"],
                    version=self.version,
                    epoch=self.best_epoch,
                    metric_name=self.metric_name,
                    metric=value,
                )
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
        bundle_root: the bundle whose shipped files must not be overwritten.
        overwrite_shipped_weights: allow writing over a shipped file (see :func:`refuse_shipped_files`).

    Raises:
        OutputCollisionError: at construction, the file would overwrite a shipped file.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        filename: str = "last.pt",
        bundle_root: str | os.PathLike | None = None,
        overwrite_shipped_weights: bool | str = False,
    ) -> None:
        if "trainer" in save_dict:
            raise ValueError("'trainer' is added automatically from the engine this handler is attached to")
        self.path = Path(save_dir) / filename
        refuse_shipped_files([self.path], bundle_root, overwrite_shipped_weights)
        self.save_dict = dict(save_dict)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if idist.get_rank() != 0:
            return
        checkpoint = {name: unwrap_module(obj).state_dict() for name, obj in self.save_dict.items()}
        checkpoint["trainer"] = engine.state_dict()
        atomic_torch_save(checkpoint, self.path)


class WeightsLoader:
    """At the engine's STARTED event, load network weights with
    :func:`scripts.inference.checkpoint.load_network_weights` (strict, one-line errors naming the file, the
    checkpoint card compared with the configured architecture and preset).

    Used by evaluation (``ckpt_path``) and by training's ``init_weights`` (fine-tuning: the weights are loaded, the
    optimizer and the learning-rate schedule start afresh; attach it before :class:`TrainingStateLoader`, so that a
    resumed run continues from its own training state).

    Args:
        load_path: the weights file (``model.pt``, or ``last.pt``: its "model" entry).
        network: the configured network (a DistributedDataParallel wrapper is looked through).
        architecture, network_preset: what the configuration built, compared with the checkpoint card.
        map_location: where to put the tensors.
    """

    def __init__(
        self,
        load_path: str | os.PathLike,
        network: nn.Module,
        architecture: str | None = None,
        network_preset: str | None = None,
        map_location: Any = None,
    ) -> None:
        self.load_path = load_path
        self.network = network
        self.architecture = architecture
        self.network_preset = network_preset
        self.map_location = map_location
        self.record: Any = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        self.record = load_network_weights(
            unwrap_module(self.network), self.load_path, self.map_location, self.architecture, self.network_preset
        )
        engine.logger.info(f"loaded weights {self.record.path} (sha256 {self.record.sha256[:12]}...)")


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
            raise MissingInputError(
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
