"""Load network weights (inference, evaluation, fine-tuning), with messages that name the file, and fingerprint them.

Accepted files: a plain ``state_dict`` of the bundle's ``network_def`` (keys prefixed ``registration.``, what
``ckpt_export``/training save as ``model.pt``), or a dict holding it under ``"model"`` (MONAI ``CheckpointSaver``
with several objects, or training's ``last.pt``). Loaded with ``torch.load(weights_only=True)``: plain tensors only.
When the file has a checkpoint card (``model.json``, :mod:`scripts.checkpoint_card`) and the caller says which
network it configured, the card must name the same architecture and preset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from scripts.checkpoint_card import check_card, file_sha256

# a bad checkpoint's error types, with every other user-caused error in scripts.errors
from scripts.errors import CheckpointError, MissingCheckpointError

__all__ = ["CheckpointRecord", "file_sha256", "load_network_weights"]

_PREFIX = "registration."


@dataclass(frozen=True)
class CheckpointRecord:
    """Which weights produced the outputs: the absolute ``path`` and the file's ``sha256`` (hex)."""

    path: str
    sha256: str


def _state_dict_of(content: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(content, dict) and isinstance(content.get("model"), dict):
        content = content["model"]
    if not isinstance(content, dict) or not all(isinstance(v, torch.Tensor) for v in content.values()):
        raise CheckpointError(f"{path}: not a network state_dict (expected a dict of tensors, or one under 'model')")
    return content


def _describe_mismatch(network: nn.Module, state: dict[str, torch.Tensor]) -> str:
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if items:
            parts.append(f"{len(items)} {label} (e.g. {', '.join(items[:3])})")
    return "; ".join(parts)


def load_network_weights(
    network: nn.Module,
    path: str | os.PathLike,
    map_location=None,
    architecture: str | None = None,
    network_preset: str | None = None,
) -> CheckpointRecord:
    """Load ``path`` into ``network`` (strictly) and return its :class:`CheckpointRecord`.

    A state dict saved from the inner registration network (keys without the ``registration.`` prefix) is
    accepted too.

    Args:
        network: the configured network (``network_def``); a (Distributed)DataParallel wrapper is looked through.
        path: the weights file.
        map_location: where to put the tensors.
        architecture, network_preset: what the configuration built ``network`` with; when given and the file has a
            checkpoint card, the card must say the same (checked before the file is read).

    Raises:
        MissingCheckpointError: no file at ``path``.
        CheckpointError: unreadable or corrupt file, not a state dict, a card naming another architecture or
            preset, or weights that do not fit the network (e.g. another ``network_preset``/``architecture``); the
            message names the file.
    """
    path = Path(path).expanduser().absolute()
    if not path.exists():
        raise MissingCheckpointError(
            f"{path}: checkpoint not found; train the network first (configs/train.json) or pass --ckpt_path <file>"
        )
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint path is not a file")
    check_card(path, {"architecture": architecture, "network_preset": network_preset})
    if isinstance(network, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        network = network.module
    try:
        content = torch.load(path, map_location=map_location or "cpu", weights_only=True)
    except Exception as error:  # pickle, zip and torch errors alike mean the same thing to the user
        raise CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint ({type(error).__name__}: {error})")
    state = _state_dict_of(content, path)
    expected = network.state_dict()
    if not set(state) & set(expected) and all(f"{_PREFIX}{k}" in expected for k in state):
        state = {f"{_PREFIX}{k}": v for k, v in state.items()}
    mismatch = _describe_mismatch(network, state)
    if mismatch:
        raise CheckpointError(
            f"{path}: weights do not fit the configured network ({mismatch}); pass the --architecture and "
            "--network_preset the checkpoint was trained with"
        )
    network.load_state_dict(state, strict=True)
    return CheckpointRecord(path=str(path), sha256=file_sha256(path))
