"""End-point error of a predicted displacement field against the phantom's true motion, on the network's grid.

The phantom (``scripts.phantom``) writes the true field of every directed pair,
``patientNNN_true_ddf_<direction>.nii.gz``: on the fixed frame's original grid, millimetres along world RAS axes, a
fixed world point ``p`` maps to ``p + d(p)`` in the moving frame (see ``scripts.geometry.displacement_nifti``). The
network predicts ``u`` in voxels of its own grid (affine ``A``), and ``A (x + u(x)) = p + A[:3, :3] u(x)`` for
``p = A x``. So, per network voxel ``x``::

    EPE(x) = || A[:3, :3] u(x) - d_true(A x) ||   (mm)

with ``d_true`` sampled trilinearly at ``A x`` from its own grid. Voxels whose centre ``A x`` falls outside the true
field's grid (the padding of the 128 x 128 x 16 crop) are left out.

Regions (all from the fixed image's labels on the network grid):

- ``overall``: every network voxel inside the true field's grid;
- ``heart``: voxels labelled RV, LV myocardium or LV blood pool;
- ``boundary``: voxels whose centre is at most ``boundary_mm`` (3 mm) from the centre of a voxel carrying a different
  label (distances in mm with the network spacing: both sides of every organ boundary; with 1.8 x 1.8 x 10 mm voxels
  this is the in-plane neighbours and diagonal neighbours across a boundary, never the next slice). This is where a
  smooth field cannot follow sliding motion, so it measures discontinuity preservation directly.

In the heart, the error is also split along the network grid's axes (its array axes 0 and 1 span the slice plane,
axis 2 is through-plane; the columns of ``A[:3, :3]`` are orthogonal with norms = the spacing):
``epe_heart_inplane_mm`` is the mean in-plane length of the error, ``epe_heart_throughplane_mm`` the mean absolute
through-plane component, both in mm.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from scripts.geometry import (
    grid_world_points,
    inside_within_half_voxel,
    read_displacement_nifti,
    voxel_to_world_displacement,
    world_to_voxel_displacement,
    world_to_voxel_points,
)

__all__ = [
    "BOUNDARY_MM",
    "EPE_METRICS",
    "boundary_mask",
    "endpoint_error_metrics",
    "load_true_displacement",
    "true_displacement_on_grid",
    "true_field_path",
]

BOUNDARY_MM = 3.0
EPE_METRICS = (
    "epe_overall_mm",
    "epe_heart_mm",
    "epe_boundary_mm",
    "epe_heart_inplane_mm",
    "epe_heart_throughplane_mm",
)


def true_field_path(record: Mapping[str, object]) -> Path:
    """``<fixed image folder>/<patient>_true_ddf_<direction>.nii.gz``: where the phantom writes a pair's true field."""
    folder = Path(str(record["fixed"])).parent
    return folder / f"{record['patient']}_true_ddf_{record['direction']}.nii.gz"


def load_true_displacement(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a true-field file.

    Returns:
        (field, affine): field (3, X, Y, Z) float64 in world RAS mm on the file's grid, affine (4, 4) of that grid.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not a (X, Y, Z, 1, 3) vector image.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: true displacement field not found (only phantom data sets carry one)")
    field, affine = read_displacement_nifti(path)
    return np.moveaxis(field, -1, 0), affine


def true_displacement_on_grid(
    field: np.ndarray, field_affine: np.ndarray, grid_shape: tuple[int, int, int], grid_affine: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sample a world-mm field at the voxel centres of another grid (trilinear).

    Args:
        field: (3, X, Y, Z) world mm on the grid of ``field_affine``.
        field_affine: (4, 4) affine of the field's grid.
        grid_shape: (H, W, D) of the target grid.
        grid_affine: (4, 4) affine of the target grid (e.g. the network grid's ``fixed.affine``).

    Returns:
        (sampled, inside): sampled (3, H, W, D) world mm; inside (H, W, D) bool, True where the target voxel centre
        lies within the field's grid (at most half a voxel beyond its outer voxel centres).
    """
    source = world_to_voxel_points(grid_world_points(grid_shape, grid_affine).numpy(), field_affine).reshape(-1, 3)
    inside = inside_within_half_voxel(source, field.shape[1:]).reshape(grid_shape)
    sampled = np.stack(
        [ndimage.map_coordinates(component, source.T, order=1, mode="nearest") for component in field], axis=0
    )
    return sampled.reshape((3, *grid_shape)), inside


def boundary_mask(label: np.ndarray, spacing: tuple[float, ...], boundary_mm: float = BOUNDARY_MM) -> np.ndarray:
    """(H, W, D) bool: voxels within ``boundary_mm`` (centre to centre, mm) of a voxel with another label."""
    label = np.asarray(label).astype(np.int64)
    distance = np.full(label.shape, np.inf)
    for value in np.unique(label):
        region = label == value
        if region.all():
            continue
        distance[region] = ndimage.distance_transform_edt(region, sampling=spacing)[region]
    return distance <= boundary_mm


def _mean(values: np.ndarray, mask: np.ndarray) -> float:
    return float(values[mask].mean()) if mask.any() else float("nan")


def endpoint_error_metrics(
    ddf: torch.Tensor | np.ndarray,
    grid_affine: torch.Tensor | np.ndarray,
    true_on_grid: np.ndarray,
    inside: np.ndarray,
    fixed_label: torch.Tensor | np.ndarray,
    spacing: tuple[float, ...],
    boundary_mm: float = BOUNDARY_MM,
) -> dict[str, float]:
    """Mean end-point error (mm) of one pair over the regions of the module docstring.

    Args:
        ddf: (3, H, W, D) or (1, 3, H, W, D) predicted displacement in voxels of the network grid.
        grid_affine: (4, 4) affine of the network grid.
        true_on_grid: (3, H, W, D) true world-mm displacement sampled at the network voxel centres.
        inside: (H, W, D) bool, voxels where the true field is defined.
        fixed_label: (H, W, D), (1, H, W, D) or (1, 1, H, W, D) fixed labels on the network grid.
        spacing: network voxel size in mm.
        boundary_mm: width of the boundary band.

    Returns:
        dict of :data:`EPE_METRICS` (NaN for an empty region).
    """
    u = ddf.detach().cpu().double().numpy() if isinstance(ddf, torch.Tensor) else np.asarray(ddf, np.float64)
    u = u.reshape(3, *u.shape[-3:])
    matrix = grid_affine.detach().cpu().double().numpy() if isinstance(grid_affine, torch.Tensor) else grid_affine
    matrix = np.asarray(matrix, np.float64)
    error_world = voxel_to_world_displacement(u, matrix) - true_on_grid
    error = np.linalg.norm(error_world, axis=0)
    column_norms = np.linalg.norm(matrix[:3, :3], axis=0)
    error_axes = world_to_voxel_displacement(error_world, matrix) * column_norms[:, None, None, None]
    label = fixed_label.detach().cpu().numpy() if isinstance(fixed_label, torch.Tensor) else np.asarray(fixed_label)
    label = np.rint(label.reshape(u.shape[1:])).astype(np.int64)
    heart = inside & (label > 0)
    return {
        "epe_overall_mm": _mean(error, inside),
        "epe_heart_mm": _mean(error, heart),
        "epe_boundary_mm": _mean(error, inside & boundary_mask(label, spacing, boundary_mm)),
        "epe_heart_inplane_mm": _mean(np.hypot(error_axes[0], error_axes[1]), heart),
        "epe_heart_throughplane_mm": _mean(np.abs(error_axes[2]), heart),
    }
