"""Strain of the tracked motion: the ED myocardium's voxels followed into every frame, then the one definition.

The tracked fields pull back: the point p of frame t is the point ``p + d_t(p)`` of ED. Strain is Lagrangian
(:mod:`scripts.cine.strain`): it needs the forward map ``phi_t`` of the ED material points, the inverse of the
pull-back. For each ED point X it is found by the fixed-point iteration ``y <- X - d_t(y)`` (starting at y = X,
trilinear samples of ``d_t``), which converges where the field is not folded (|grad d| < 1); it stops when all but
0.1 % of the points move by less than 1e-4 voxel (on the phantom's true fields after about 12 iterations).

The points followed are the ED myocardium voxel centres and their in-plane neighbours; the in-plane deformation
gradient of a voxel uses central differences between its two neighbours along each in-plane axis, or a one-sided
difference with the voxel itself when only one neighbour is myocardium (the motion is discontinuous where the heart
slides against its surroundings, so a difference must not reach across the wall's boundary when it can be avoided).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from scripts.cine.strain import (
    LV_MYOCARDIUM,
    global_strain,
    in_plane_basis,
    in_plane_gradient,
    myocardium_voxels,
    slice_centroids,
)
from scripts.geometry import voxel_to_world_points

__all__ = ["follow_points", "tracked_global_strain"]

INVERSION_ITERATIONS = 40
INVERSION_TOLERANCE_VOXELS = 1e-4
UNCONVERGED_FRACTION = 1e-3


def _sample(fields: torch.Tensor, voxels: torch.Tensor) -> torch.Tensor:
    """Trilinear samples of (T, 3, X, Y, Z) fields at (T, N, 3) voxel positions -> (T, N, 3) (edge values outside)."""
    shape = torch.tensor(fields.shape[2:], dtype=voxels.dtype, device=voxels.device)
    normalised = torch.where(shape > 1, 2.0 * voxels / (shape - 1).clamp_min(1.0) - 1.0, torch.zeros_like(voxels))
    grid = normalised.flip(-1)[:, :, None, None, :]  # grid_sample reads (z, y, x)
    sampled = F.grid_sample(fields, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return sampled[:, :, :, 0, 0].permute(0, 2, 1)


def follow_points(fields_voxels: torch.Tensor, points: np.ndarray) -> np.ndarray:
    """Where ED points are in every frame: the inverse of the pull-back fields at those points.

    Everything in voxel units of the grid, float32 (1e-5 voxel: far below what a difference over 1-2 voxels needs).

    Args:
        fields_voxels: (T, 3, X, Y, Z) ED -> frame fields in voxels (frame voxel p <-> ED voxel p + d(p)).
        points: (N, 3) ED voxel positions.

    Returns:
        (T, N, 3) float64 voxel positions ``phi_t(X)`` with ``phi_t(X) + d_t(phi_t(X)) = X``.
    """
    fields = fields_voxels.detach().cpu().float()
    target = torch.as_tensor(np.asarray(points), dtype=torch.float32)[None].expand(fields.shape[0], -1, -1)
    position = target.clone()
    for _ in range(INVERSION_ITERATIONS):
        updated = target - _sample(fields, position)
        moving = (updated - position).abs().amax(dim=-1) > INVERSION_TOLERANCE_VOXELS
        position = updated
        # a few points beside a sliding boundary of a true (discontinuous) field converge slowly or not at all
        if not moving.numel() or float(moving.float().mean()) < UNCONVERGED_FRACTION:
            break
    return position.double().numpy()


def tracked_global_strain(
    fields_voxels: torch.Tensor, ed_labels: np.ndarray, affine: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Global radial and circumferential strain (fractions) of every frame of the tracked motion.

    Args:
        fields_voxels: (T, 3, X, Y, Z) ED -> frame fields on the cine's grid in voxels (channel i along axis i).
        ed_labels: (X, Y, Z) ED label map (its LV myocardium, label 2, holds the material points).
        affine: (4, 4) the grid's affine.

    Returns:
        (T,) radial and (T,) circumferential strain; NaN when the ED labels hold no myocardium.
    """
    frames = fields_voxels.shape[0]
    labels = np.asarray(ed_labels)
    voxels = myocardium_voxels(labels)
    if len(voxels) == 0:
        return np.full(frames, np.nan), np.full(frames, np.nan)
    affine = np.asarray(affine, np.float64)
    basis, plane = in_plane_basis(affine)
    shape = np.array(labels.shape)

    def is_myocardium(index: np.ndarray) -> np.ndarray:
        inside = np.all((index >= 0) & (index < shape), axis=1)
        clipped = np.clip(index, 0, shape - 1)
        return inside & (labels[tuple(clipped.T)] == LV_MYOCARDIUM)

    # per in-plane axis: the plus and minus neighbours used (the voxel itself for a one-sided difference)
    plus, minus, span = [], [], np.zeros((len(voxels), 2))
    for axis in (0, 1):
        step = np.zeros(3, int)
        step[axis] = 1
        forward, backward = voxels + step, voxels - step
        has_forward, has_backward = is_myocardium(forward), is_myocardium(backward)
        lonely = ~has_forward & ~has_backward  # a one-voxel-thin wall along this axis: use both neighbours anyway
        use_forward, use_backward = has_forward | lonely, has_backward | lonely
        plus.append(np.where(use_forward[:, None], forward, voxels))
        minus.append(np.where(use_backward[:, None], backward, voxels))
        span[:, axis] = use_forward.astype(float) + use_backward.astype(float)
    neighbours = np.stack(plus + minus, axis=1)  # (N, 4, 3): plus_i, plus_j, minus_i, minus_j
    unique, inverse = np.unique(neighbours.reshape(-1, 3), axis=0, return_inverse=True)
    followed = voxel_to_world_points(follow_points(fields_voxels, unique.astype(np.float64)), affine)
    neighbour_index = inverse.reshape(len(voxels), 4)
    # the step between plus and minus along axis a, in the plane's coordinates: R[:, a] * (number of voxels spanned)
    steps = plane[None, :, :] * span[:, None, :]
    points = voxel_to_world_points(voxels.astype(np.float64), affine)
    centroids = slice_centroids(labels, affine)[voxels[:, 2]]
    radial, circumferential = np.empty(frames), np.empty(frames)
    for frame in range(frames):
        mapped = followed[frame][neighbour_index]  # (N, 4, 3)
        gradient = in_plane_gradient(mapped[:, :2], mapped[:, 2:], steps, basis)
        radial[frame], circumferential[frame] = global_strain(gradient, points, centroids, basis)
    return radial, circumferential
