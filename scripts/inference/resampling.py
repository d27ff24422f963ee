"""Resample an image on its own grid at the world points ``p + d(p)`` of another grid (the fixed image's).

This is how the bundle makes its outputs in the fixed image's ORIGINAL space: the original moving image (not the
network's 128 x 128 x 16 resampled copy) is sampled through the world-space displacement, exactly as ITK's
``ResampleImageFilter`` with a ``DisplacementFieldTransform`` does. Boundary rule, as ITK: a point within half a
voxel outside the outermost voxel centres takes the edge value (clamped), a point further out gets 0.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from scripts.geometry import (
    grid_voxel_positions,
    inside_within_half_voxel,
    voxel_to_world_points,
    world_to_voxel_points,
)

__all__ = ["WorldPointSampler", "resample_at_world_points", "resample_slice", "resample_through_displacement"]


class WorldPointSampler:
    """Samples volumes of one grid at fixed world points; the points' voxel positions are computed once.

    The images of a grid (e.g. the original moving image and its label map) share the positions, so warping both
    costs one coordinate transform and two interpolations.

    Args:
        points: (..., 3) world positions in mm, float64.
        affine: (4, 4) affine of the grid the images are on (RAS mm <- voxel index).
        shape: (X, Y, Z) of that grid.
    """

    def __init__(self, points: torch.Tensor, affine: torch.Tensor | np.ndarray, shape: tuple[int, ...]) -> None:
        self._place(world_to_voxel_points(points, affine), shape)

    @classmethod
    def on_grid(
        cls,
        grid_shape: tuple[int, ...],
        grid_affine: torch.Tensor | np.ndarray,
        affine: torch.Tensor | np.ndarray,
        shape: tuple[int, ...],
        displacement_mm: torch.Tensor | None = None,
        device=None,
    ) -> WorldPointSampler:
        """The sampler at every voxel centre ``p`` of a grid, or at ``p + d(p)`` (:func:`grid_voxel_positions`).

        Args:
            grid_shape, grid_affine: the grid whose centres are the points (e.g. the fixed image's).
            affine, shape: the grid the sampled images are on (e.g. the moving image's).
            displacement_mm: optional (3, *grid_shape) world mm displacement added to the centres.
            device: device of the positions (default: the displacement's, else CPU).
        """
        sampler = cls.__new__(cls)
        sampler._place(grid_voxel_positions(grid_shape, grid_affine, affine, displacement_mm, device), shape)
        return sampler

    def _place(self, voxel: torch.Tensor, shape: tuple[int, ...]) -> None:
        """Keep the (..., 3) float64 voxel positions as grid_sample's normalised grid, and which lie inside."""
        self.shape, self.output_shape, self.device = tuple(int(n) for n in shape), voxel.shape[:-1], voxel.device
        extent = torch.tensor(self.shape, device=voxel.device, dtype=torch.float64)
        self.inside = inside_within_half_voxel(voxel, self.shape)
        # clamp onto the outermost centres: ITK's edge rule within the half-voxel margin; align_corners=True maps
        # index 0 -> -1 and index n-1 -> +1 (a single-voxel axis maps to 0)
        clamped = torch.minimum(voxel.clamp_min(0.0), extent - 1)
        scale = torch.where(extent > 1, 2.0 / (extent - 1).clamp_min(1.0), torch.zeros_like(extent))
        normalised = clamped * scale - (extent > 1).to(torch.float64)
        # grid_sample reads the last grid component as the LAST input axis: (x, y, z) indices -> (z, y, x) order
        self.grid = normalised.flip(-1).reshape(1, -1, 1, 1, 3).to(torch.float32)

    def __call__(self, image: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
        """float32 values of ``image`` at the points, 0 beyond half a voxel outside it.

        ``image``: (X, Y, Z) -> (...) values, or (C, X, Y, Z) -> (C, ...) (the C channels in one interpolation, e.g.
        the three components of a displacement field). ``mode``: ``"bilinear"`` (trilinear interpolation, float
        images) or ``"nearest"`` (any numeric dtype).
        """
        channels = image.ndim == 4
        if tuple(image.shape[1:] if channels else image.shape) != self.shape:
            raise ValueError(f"expected an image of shape {self.shape} or (C, *{self.shape}), got {tuple(image.shape)}")
        volume = image.to(device=self.device, dtype=torch.float32)
        volume = volume[None] if channels else volume[None, None]
        sampled = F.grid_sample(volume, self.grid, mode=mode, padding_mode="border", align_corners=True)
        sampled = sampled.reshape((-1, *self.output_shape) if channels else self.output_shape)
        return torch.where(self.inside, sampled, torch.zeros_like(sampled))


def resample_at_world_points(
    image: torch.Tensor, affine: torch.Tensor | np.ndarray, points: torch.Tensor, mode: str = "bilinear"
) -> torch.Tensor:
    """Sample ``image`` (on the grid of ``affine``) at world ``points``.

    Args:
        image: (X, Y, Z) volume; float for ``"bilinear"`` (trilinear), any numeric dtype for ``"nearest"``.
        affine: (4, 4) affine of ``image`` (RAS mm <- voxel index).
        points: (..., 3) world positions in mm, float64.
        mode: ``"bilinear"`` (trilinear interpolation) or ``"nearest"``.

    Returns:
        (...) float32 tensor of sampled values, 0 beyond half a voxel outside the image.
    """
    if image.ndim != 3:
        raise ValueError(f"expected an (X, Y, Z) volume, got shape {tuple(image.shape)}")
    return WorldPointSampler(points, affine, tuple(image.shape))(image, mode)


def resample_through_displacement(
    image: torch.Tensor,
    image_affine: torch.Tensor | np.ndarray,
    displacement_mm: torch.Tensor,
    grid_affine: torch.Tensor | np.ndarray,
    mode: str = "bilinear",
) -> torch.Tensor:
    """Warp ``image`` onto the grid of ``displacement_mm``: ``out(p) = image(p + d(p))`` in world coordinates.

    Args:
        image: (X_m, Y_m, Z_m) volume on its own grid (e.g. the original moving image).
        image_affine: (4, 4) affine of ``image``.
        displacement_mm: (3, X, Y, Z) world RAS displacement in mm on the target grid (fixed -> moving). Pass
            zeros to resample ``image`` onto the target grid without deformation.
        grid_affine: (4, 4) affine of the target grid (the fixed image's).
        mode: ``"bilinear"`` for images, ``"nearest"`` for label maps.

    Returns:
        (X, Y, Z) float32 tensor on the target grid.
    """
    if image.ndim != 3:
        raise ValueError(f"expected an (X, Y, Z) volume, got shape {tuple(image.shape)}")
    grid_shape = tuple(displacement_mm.shape[1:])
    sampler = WorldPointSampler.on_grid(grid_shape, grid_affine, image_affine, tuple(image.shape), displacement_mm)
    return sampler(image, mode)


def resample_slice(
    image: torch.Tensor,
    image_affine: torch.Tensor | np.ndarray,
    grid_shape: tuple[int, int, int],
    grid_affine: torch.Tensor | np.ndarray,
    axis: int,
    index: int,
) -> torch.Tensor:
    """``image`` resampled without deformation (trilinear) onto ONE slice of another grid, e.g. the moving image
    on a slice of the fixed grid for a picture.

    Args:
        image: (X_m, Y_m, Z_m) volume on its own grid.
        image_affine: (4, 4) affine of ``image``.
        grid_shape: (X, Y, Z) of the target grid.
        grid_affine: (4, 4) affine of the target grid.
        axis, index: the slice: ``index`` along array axis ``axis`` of the target grid.

    Returns:
        the slice's values, shaped as the target grid without ``axis`` (float32).
    """
    axes = [torch.arange(int(n), dtype=torch.float64) for n in grid_shape]
    axes[axis] = torch.tensor([float(index)], dtype=torch.float64)
    voxels = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).squeeze(axis)
    points = voxel_to_world_points(voxels, grid_affine)
    return WorldPointSampler(points, image_affine, tuple(image.shape))(image)
