"""Checks run on every pair and on the output directory before anything is computed or written.

Each file is read once, by the preprocessing, which validates its content there (a 3D volume or a cine frame, finite
and not constant, label maps 0..3 on their image's grid; see :mod:`scripts.inference.preprocessing`). Before the
first pair, these checks read only the files' headers, so a missing, empty or non-NIfTI file, or a pair whose images
do not overlap, anywhere in the run stops it before the first output exists, at the cost of a header read each.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from scripts.data.datalist import PATH_KEYS
from scripts.errors import InvalidInputError, MissingInputError, OutputCollisionError
from scripts.geometry import grid_world_points, inside_within_half_voxel, world_to_voxel_points

__all__ = ["check_output_dir", "check_pair_files", "read_nifti_header", "world_overlap"]


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


def read_nifti_header(path: str | os.PathLike, key: str) -> nib.Nifti1Image:
    """Open a NIfTI file's header (the voxel data stay on disk).

    Args:
        path: the file.
        key: its record key, for the message.

    Raises:
        MissingInputError: no such file.
        InvalidInputError: an empty file, or one nibabel cannot open as NIfTI (one line naming the file).
    """
    if not os.path.isfile(path):
        raise MissingInputError(f"{path}: file not found (record key {key!r})")
    if os.path.getsize(path) == 0:
        raise InvalidInputError(f"{path}: empty file (0 bytes), not a NIfTI image (record key {key!r})")
    try:
        image = nib.load(str(path))
    except Exception as error:  # nibabel, gzip and OS errors alike: the file is not a readable NIfTI image
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InvalidInputError(f"{path}: cannot be read as a NIfTI image ({reason})") from error
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InvalidInputError(f"{path}: a {type(image).__name__} file, not NIfTI (.nii or .nii.gz)")
    return image


def check_pair_files(record: dict, min_overlap: float = 0.05) -> None:
    """Check one pair record from its files' headers; return quietly if the pair can go to the preprocessing.

    Checks: every file exists, is not empty and opens as NIfTI; the moving image covers at least ``min_overlap``
    of the fixed image's field of view in world space (when both have three spatial dimensions; other shapes are
    refused by the preprocessing, naming the file).

    Raises:
        MissingInputError, InvalidInputError: naming the file.
    """
    headers = {key: read_nifti_header(record[key], key) for key in PATH_KEYS if record.get(key)}
    moving, fixed = headers["moving"], headers["fixed"]
    if len(moving.shape) < 3 or len(fixed.shape) < 3:
        return
    overlap = world_overlap(moving.shape[:3], moving.affine, fixed.shape[:3], fixed.affine)
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
