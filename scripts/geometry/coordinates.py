"""Voxel index <-> world millimetre conversion of points and of displacement vectors, and the half-voxel inside rule.

A grid's affine ``A`` (4, 4) maps a voxel index ``x`` (array axes 0, 1, 2) to the world point ``p = A[:3, :3] x +
A[:3, 3]`` in millimetres along NIfTI's RAS+ axes. Points use the whole affine; displacement VECTORS use only its
linear part: a displacement of ``u`` voxels is ``A[:3, :3] u`` millimetres, wherever it sits.

Every function takes NumPy arrays or torch tensors and answers in the same kind (tensors stay on their device);
the arithmetic is float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch

__all__ = [
    "grid_voxel_positions",
    "grid_world_points",
    "inside_within_half_voxel",
    "voxel_to_world_displacement",
    "voxel_to_world_points",
    "world_to_voxel_displacement",
    "world_to_voxel_points",
]

ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, torch.Tensor)


def _affine64(affine: torch.Tensor | np.ndarray, device: torch.device) -> torch.Tensor:
    """The (4, 4) affine as a float64 tensor on ``device``."""
    matrix = affine.detach() if isinstance(affine, torch.Tensor) else torch.from_numpy(np.asarray(affine))
    return matrix.to(device=device, dtype=torch.float64)


def _tensor(values: np.ndarray | torch.Tensor) -> torch.Tensor:
    return values if isinstance(values, torch.Tensor) else torch.from_numpy(np.asarray(values))


def _like(result: torch.Tensor, original: np.ndarray | torch.Tensor, dtype=None) -> np.ndarray | torch.Tensor:
    """``result`` in the kind of ``original`` (NumPy or torch), cast to ``dtype`` if given."""
    if isinstance(original, torch.Tensor):
        return result if dtype is None else result.to(dtype)
    array = result.cpu().numpy()
    return array if dtype is None else array.astype(dtype, copy=False)


def voxel_to_world_points(index: ArrayOrTensor, affine: torch.Tensor | np.ndarray) -> ArrayOrTensor:
    """World positions (mm, RAS) of voxel indices: ``A[:3, :3] x + A[:3, 3]``.

    Args:
        index: (..., 3) voxel indices (may be fractional).
        affine: (4, 4) affine of the grid (RAS mm <- voxel index).

    Returns:
        (..., 3) float64 world points, NumPy or torch like ``index``.
    """
    points = _tensor(index).to(torch.float64)
    matrix = _affine64(affine, points.device)
    return _like(points @ matrix[:3, :3].T + matrix[:3, 3], index)


def world_to_voxel_points(points: ArrayOrTensor, affine: torch.Tensor | np.ndarray) -> ArrayOrTensor:
    """Voxel indices (fractional) of world points on the grid of ``affine``: inverse of :func:`voxel_to_world_points`.

    Args:
        points: (..., 3) world positions in mm.
        affine: (4, 4) affine of the grid.

    Returns:
        (..., 3) float64 voxel indices, NumPy or torch like ``points``.
    """
    world = _tensor(points).to(torch.float64)
    inverse = torch.linalg.inv(_affine64(affine, world.device))
    return _like(world @ inverse[:3, :3].T + inverse[:3, 3], points)


def grid_world_points(shape: Sequence[int], affine: torch.Tensor | np.ndarray, device=None) -> torch.Tensor:
    """World (RAS mm) position of every voxel centre of a grid.

    Args:
        shape: (X, Y, Z) voxels.
        affine: (4, 4) RAS mm <- voxel index.
        device: torch device of the result.

    Returns:
        (X, Y, Z, 3) float64 tensor.
    """
    device = torch.device("cpu") if device is None else torch.device(device)
    axes = [torch.arange(int(n), device=device, dtype=torch.float64) for n in shape]
    index = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    return voxel_to_world_points(index, affine)


def grid_voxel_positions(
    shape: Sequence[int],
    grid_affine: torch.Tensor | np.ndarray,
    target_affine: torch.Tensor | np.ndarray,
    displacement_mm: torch.Tensor | None = None,
    device=None,
) -> torch.Tensor:
    """Where every voxel centre ``p`` of one grid (or ``p + d(p)``) falls on another grid, in its voxel indices.

    The numbers of ``world_to_voxel_points(grid_world_points(shape, grid_affine) + d, target_affine)``, computed
    without the (X, Y, Z, 3) world-point array: ``p`` enters through the composite affine ``T^-1 G`` applied axis by
    axis (broadcast sums), ``d`` through ``T[:3, :3]^-1``. This is the resampling cost of inference's outputs on
    the images' original grids.

    Args:
        shape: (X, Y, Z) voxels of the grid whose centres are mapped.
        grid_affine: (4, 4) affine of that grid (RAS mm <- voxel index).
        target_affine: (4, 4) affine of the grid whose indices are wanted.
        displacement_mm: optional (3, X, Y, Z) world RAS displacement in mm added to each centre.
        device: torch device of the result (default: the displacement's, else CPU).

    Returns:
        (X, Y, Z, 3) float64 tensor of fractional voxel indices on the target grid.
    """
    if device is None:
        device = displacement_mm.device if isinstance(displacement_mm, torch.Tensor) else torch.device("cpu")
    shape = tuple(int(n) for n in shape)
    inverse = torch.linalg.inv(_affine64(target_affine, device))
    composite = inverse @ _affine64(grid_affine, device)
    positions = composite[:3, 3].expand(*shape, 3).clone()
    for axis, size in enumerate(shape):
        view = [1, 1, 1, 3]
        view[axis] = size
        steps = torch.arange(size, device=device, dtype=torch.float64).view(*view[:3], 1)
        positions += steps * composite[:3, axis]
    if displacement_mm is not None:
        if tuple(displacement_mm.shape) != (3, *shape):
            raise ValueError(f"displacement_mm must be (3, {shape}), got {tuple(displacement_mm.shape)}")
        vectors = torch.movedim(_tensor(displacement_mm).to(device=device, dtype=torch.float64), 0, -1)
        positions += vectors @ inverse[:3, :3].T
    return positions


def inside_within_half_voxel(voxel: ArrayOrTensor, shape: Sequence[int]) -> ArrayOrTensor:
    """Whether points lie inside a grid of ``shape`` voxels: within half a voxel of its outermost voxel centres.

    This is the image's extent as a viewer draws it (and ITK's inside test): index ``-0.5 <= x_i <= n_i - 0.5`` on
    every axis ``i``.

    Args:
        voxel: (..., 3) voxel indices on the grid (e.g. from :func:`world_to_voxel_points`).
        shape: (X, Y, Z) voxels of the grid.

    Returns:
        (...) bool, NumPy or torch like ``voxel``.
    """
    if isinstance(voxel, torch.Tensor):
        upper = torch.tensor([float(n) for n in shape], device=voxel.device, dtype=torch.float64) - 0.5
        return ((voxel >= -0.5) & (voxel <= upper)).all(dim=-1)
    upper = np.asarray(shape, dtype=np.float64) - 0.5
    return np.all((voxel >= -0.5) & (voxel <= upper), axis=-1)


def _apply_linear(vectors: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """``matrix @ v`` for every vector of a (3, *spatial) or (B, 3, *spatial) field, in float64."""
    channel_axis = 0 if vectors.ndim == 4 else 1
    moved = torch.movedim(vectors.to(torch.float64), channel_axis, -1)
    return torch.movedim(moved @ matrix.T, -1, channel_axis)


def voxel_to_world_displacement(ddf: ArrayOrTensor, affine: torch.Tensor | np.ndarray) -> ArrayOrTensor:
    """Turn displacement components in voxel units of a grid into world millimetres.

    Args:
        ddf: (3, *spatial) or (B, 3, *spatial) displacement, channel i in voxels along array axis i of the grid
            whose affine is ``affine`` (the values may sit on any grid, e.g. after resampling to another one).
        affine: (4, 4) affine of the grid the components are expressed in (RAS mm <- voxel index).

    Returns:
        ``ddf``'s shape, dtype and kind (NumPy or torch): channel c in mm along world axis c (R, A, S).
    """
    vectors = _tensor(ddf)
    matrix = _affine64(affine, vectors.device)[:3, :3]
    return _like(_apply_linear(vectors, matrix), ddf, ddf.dtype)


def world_to_voxel_displacement(displacement_mm: ArrayOrTensor, affine: torch.Tensor | np.ndarray) -> ArrayOrTensor:
    """Inverse of :func:`voxel_to_world_displacement`: world mm components to voxel units of ``affine``'s grid.

    Args:
        displacement_mm: (3, *spatial) or (B, 3, *spatial) world RAS mm components.
        affine: (4, 4) affine of the grid whose voxel units are wanted.

    Returns:
        ``displacement_mm``'s shape, dtype and kind: channel i in voxels along array axis i.
    """
    vectors = _tensor(displacement_mm)
    matrix = torch.linalg.inv(_affine64(affine, vectors.device)[:3, :3])
    return _like(_apply_linear(vectors, matrix), displacement_mm, displacement_mm.dtype)
