"""The checkpoint card: ``model.json`` beside ``model.pt``, saying which network and grid the weights belong to.

A state dict alone does not say which ``architecture``/``network_preset`` built it, nor on which grid it was
trained. Training writes a card next to every best checkpoint (``runs/<name>/models/model.json``), and the loader
(:func:`scripts.inference.checkpoint.load_network_weights`) compares it with the configured network, so a checkpoint
of another preset fails with one line naming both instead of a list of mismatched tensor shapes. Example::

    {
        "weights": "model.pt",
        "weights_sha256": "cf93...",
        "architecture": "memwarp",
        "network_preset": "compact",
        "spatial_size": [128, 128, 16],
        "pixdim": [1.8, 1.8, 10.0],
        "bundle_version": "0.5.0",
        "epoch": 28,
        "metric_name": "val_mean_dice",
        "metric": 0.874
    }

The card records the weights' sha256: a card whose hash differs from its weights file (the weights were replaced
without it) describes other weights and is not used.

Command line, for weights trained before cards existed (e.g. the shipped ``models/model.pt``)::

    python -m scripts.checkpoint_card models/model.pt --architecture memwarp --network_preset compact
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scripts.atomic_files import write_text_atomically
from scripts.errors import CheckpointError, InvalidInputError, MissingInputError
from scripts.labels import NETWORK_PIXDIM_MM, NETWORK_SPATIAL_SIZE

__all__ = [
    "CARD_SUFFIX",
    "IDENTITY_KEYS",
    "bundle_version",
    "card_path",
    "check_card",
    "file_sha256",
    "main",
    "read_card",
    "write_card",
]

CARD_SUFFIX = ".json"
IDENTITY_KEYS = ("architecture", "network_preset")


def file_sha256(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def card_path(weights: str | os.PathLike) -> Path:
    """The card of a weights file: the same name with ``.json`` (``models/model.pt`` -> ``models/model.json``)."""
    return Path(weights).with_suffix(CARD_SUFFIX)


def bundle_version(bundle_root: str | os.PathLike) -> str | None:
    """The ``version`` of ``<bundle_root>/configs/metadata.json``, or None when it cannot be read."""
    try:
        return str(json.loads((Path(bundle_root) / "configs" / "metadata.json").read_text(encoding="utf-8"))["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_card(
    weights: str | os.PathLike,
    architecture: str,
    network_preset: str,
    spatial_size: Sequence[int],
    pixdim: Sequence[float],
    version: str | None = None,
    epoch: int | None = None,
    metric_name: str | None = None,
    metric: float | None = None,
) -> Path:
    """Write the card of ``weights`` (which must exist: its sha256 is recorded), atomically. Returns the card's path.

    Args:
        weights: the state-dict file the card describes.
        architecture, network_preset: the ``bundle_network`` arguments that build the network of these weights.
        spatial_size: the network grid (H, W, D) the weights were trained on.
        pixdim: voxel size of that grid in mm.
        version: the bundle version that wrote the weights.
        epoch, metric_name, metric: the training epoch of these weights and its validation metric, when known.
    """
    weights = Path(weights)
    card: dict[str, Any] = {
        "weights": weights.name,
        "weights_sha256": file_sha256(weights),
        "architecture": str(architecture),
        "network_preset": str(network_preset),
        "spatial_size": [int(size) for size in spatial_size],
        "pixdim": [float(size) for size in pixdim],
        "bundle_version": version,
        "epoch": None if epoch is None else int(epoch),
        "metric_name": metric_name,
        "metric": None if metric is None else float(metric),
    }
    return write_text_atomically(card_path(weights), json.dumps(card, indent=4) + "\n")


def read_card(weights: str | os.PathLike) -> dict[str, Any] | None:
    """The card of ``weights`` when there is one that describes these weights, else None.

    A card whose ``weights_sha256`` differs from the weights file's describes other weights: None.

    Raises:
        CheckpointError: the card exists but is not a JSON object with ``architecture`` and ``network_preset``.
    """
    path = card_path(weights)
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: checkpoint card is not JSON ({error}); delete it or rewrite it") from None
    if not isinstance(card, dict) or not all(isinstance(card.get(key), str) for key in IDENTITY_KEYS):
        raise CheckpointError(f"{path}: checkpoint card without 'architecture' and 'network_preset' strings")
    recorded = card.get("weights_sha256")
    if recorded and Path(weights).is_file() and recorded != file_sha256(weights):
        return None
    return card


def check_card(weights: str | os.PathLike, expected: Mapping[str, str]) -> dict[str, Any] | None:
    """Compare the card of ``weights`` (when there is one) with the configured ``architecture``/``network_preset``.

    Args:
        weights: the weights file.
        expected: the configured values; keys of :data:`IDENTITY_KEYS` that are missing or None are not compared.

    Returns:
        the card, or None when there is none.

    Raises:
        CheckpointError: the card names another architecture or preset (the message names the card and both).
    """
    card = read_card(weights)
    if card is None:
        return None
    differing = [key for key in IDENTITY_KEYS if expected.get(key) is not None and card[key] != str(expected[key])]
    if differing:
        trained = "/".join(card[key] for key in IDENTITY_KEYS)
        configured = "/".join(str(expected.get(key, card[key])) for key in IDENTITY_KEYS)
        raise CheckpointError(
            f"{card_path(weights)}: the weights {Path(weights).name} are {trained} (architecture/network_preset) but "
            f"the configuration builds {configured}; pass --architecture {card['architecture']} --network_preset "
            f"{card['network_preset']}, or another checkpoint"
        )
    return card


def main(argv: Sequence[str] | None = None) -> int:
    """Write the card of an existing weights file after checking that the weights load into the named network.

    Returns the process exit status (0 on success, 2 on a user error, reported on one line).
    """
    parser = argparse.ArgumentParser(
        prog="python -m scripts.checkpoint_card", description="Write model.json beside an existing model.pt."
    )
    parser.add_argument("weights", help="the state-dict file, e.g. models/model.pt")
    parser.add_argument("--architecture", default="memwarp")
    parser.add_argument("--network_preset", default="compact")
    parser.add_argument(
        "--spatial_size", type=int, nargs=3, default=list(NETWORK_SPATIAL_SIZE), metavar=("H", "W", "D")
    )
    parser.add_argument("--pixdim", type=float, nargs=3, default=list(NETWORK_PIXDIM_MM), metavar=("X", "Y", "Z"))
    parser.add_argument("--bundle_root", default=".", help="for the version in configs/metadata.json")
    parser.add_argument("--epoch", type=int, default=None)
    parser.add_argument("--metric_name", default=None)
    parser.add_argument("--metric", type=float, default=None)
    args = parser.parse_args(argv)

    from scripts.inference.checkpoint import load_network_weights
    from scripts.networks import bundle_network

    try:
        try:
            network = bundle_network(args.architecture, args.network_preset)
        except ValueError as error:
            raise InvalidInputError(f"{args.weights}: cannot build the network to check the weights ({error})")
        load_network_weights(network, args.weights, map_location="cpu")  # strict: the card must tell the truth
        written = write_card(
            args.weights,
            args.architecture,
            args.network_preset,
            args.spatial_size,
            args.pixdim,
            version=bundle_version(args.bundle_root),
            epoch=args.epoch,
            metric_name=args.metric_name,
            metric=args.metric,
        )
    except (InvalidInputError, MissingInputError) as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 2
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
