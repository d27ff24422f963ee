"""Checks run on every pair and on the output directory before anything is computed or written.

The preprocessing validates what it loads too, but only pair by pair while the run goes; checking everything up
front means a bad file in the 40th pair stops the run before the first output exists.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.transforms import EnsureChannelFirstd

from scripts.data import InvalidInputError, LoadFramed, RegistrationCompose, ValidateRegistrationInputd
from scripts.data.datalist import PATH_KEYS
from scripts.geometry import grid_world_points, inside_within_half_voxel, world_to_voxel_points
from scripts.inference.errors import OutputCollisionError

__all__ = ["check_output_dir", "check_pair_inputs", "world_overlap"]

_FRAME_KEYS = {"moving": "moving_frame", "fixed": "fixed_frame"}
_LABEL_OF = {"moving": "moving_label", "fixed": "fixed_label"}


def world_overlap(
    moving_shape: Sequence[int],
    moving_affine: np.ndarray | torch.Tensor,
    fixed_shape: Sequence[int],
    fixed_affine: np.ndarray | torch.Tensor,
    max_points: int = 32768,
) -> float:
    """Fraction of the fixed grid's voxel centres that fall inside the moving grid (within half a voxel).

    Estimated on a regular subsample of at most about ``max_points`` fixed voxels.
    """
    stride = max(1, int(np.ceil((float(np.prod(fixed_shape)) / max_points) ** (1 / 3))))
    points = grid_world_points(fixed_shape, fixed_affine)[::stride, ::stride, ::stride]
    inside = inside_within_half_voxel(world_to_voxel_points(points, moving_affine), moving_shape)
    return float(inside.double().mean())


def _loader(record: dict) -> RegistrationCompose:
    keys = [key for key in ("moving", "fixed", "moving_label", "fixed_label") if key in record]
    frames = [_FRAME_KEYS.get(key) for key in keys]
    both_labels = "moving_label" in record and "fixed_label" in record
    checks: list = [ValidateRegistrationInputd(("moving", "fixed"), (), require_labels=False)]
    for image_key, label_key in _LABEL_OF.items():
        if label_key in record:
            # both labels -> Dice/HD95 are computed, so they must be usable as in evaluation (not empty)
            checks.append(ValidateRegistrationInputd((image_key,), (label_key,), require_labels=both_labels))
    return RegistrationCompose(
        [LoadFramed(keys, frame_keys=frames), EnsureChannelFirstd(keys, channel_dim="no_channel"), *checks]
    )


def check_pair_inputs(record: dict, min_overlap: float = 0.05) -> None:
    """Load and validate the files of one pair record; return quietly if the pair can be registered.

    Checks: files exist and are readable NIfTI; 3D volumes, or a 4D cine with the record's frame index; finite,
    non-constant images; label maps integer 0..3 on their image's grid (non-empty when both are given, as Dice
    needs); the moving image covers at least ``min_overlap`` of the fixed image's field of view in world space.

    Raises:
        MissingInputError, InvalidInputError: naming the file.
    """
    loaded = _loader(record)(dict(record))
    moving, fixed = loaded["moving"], loaded["fixed"]
    overlap = world_overlap(moving.shape[1:], moving.affine, fixed.shape[1:], fixed.affine)
    if overlap < min_overlap:
        raise InvalidInputError(
            f"{record['moving']}: covers {100 * overlap:.1f}% of the fixed image {record['fixed']} in world space "
            f"(at least {100 * min_overlap:.0f}% needed); the two images do not overlap enough to be registered"
        )


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_output_dir(
    output_dir: str | os.PathLike, records: Iterable[dict], protected: Iterable[str | os.PathLike] = ()
) -> Path:
    """Refuse an output directory that is a file, or that is or contains an input file.

    Outputs go to ``<output_dir>/<pair_name>/``, replacing earlier results of the same pair; an input inside
    ``output_dir`` could be overwritten or mistaken for an output, so that is refused outright.

    Args:
        output_dir: the run's output directory (need not exist).
        records: pair records; their image and label paths are inputs.
        protected: other input files (the checkpoint, the datalist JSON).

    Returns:
        ``output_dir`` as an absolute path.

    Raises:
        OutputCollisionError: naming the directory and the input it would overwrite.
    """
    folder = Path(output_dir).expanduser().absolute()
    if folder.exists() and not folder.is_dir():
        raise OutputCollisionError(f"{folder}: output_dir exists and is not a directory")
    real_folder = os.path.realpath(folder)
    inputs = [record[key] for record in records for key in PATH_KEYS if record.get(key)]
    inputs += [str(path) for path in protected if path]
    for path in inputs:
        if _inside(os.path.realpath(path), real_folder):
            raise OutputCollisionError(
                f"{folder}: refusing to write outputs there, it holds the input file {path}; choose another "
                "--output_dir"
            )
    return folder
