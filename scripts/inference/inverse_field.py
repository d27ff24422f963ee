"""Inverse of a displacement field by fixed-point iteration, and the inverse-consistency error.

The bundle's field ``u`` (B, 3, H, W, D), in voxel units of its grid, maps a fixed point ``x`` to ``x + u(x)`` in the
moving image (``warped(x) = moving(x + u(x))``). Its inverse ``v`` maps a moving point ``y`` back to ``y + v(y)``;
``v`` must undo ``u``: ``y + v(y) + u(y + v(y)) = y``, i.e.

``v(y) = -u(y + v(y))``,

solved by iterating ``v_{k+1}(y) = -u(y + v_k(y))`` from ``v_0 = -u`` (Chen et al., Med. Phys. 2008). Each step
samples ``u`` trilinearly (``align_corners=True``) at the displaced points; the iteration is a contraction, and
converges, wherever the field's voxel-unit gradient stays below 1 in norm, which holds for the folding-free fields
the bundle is meant to produce (it stops at ``max_iterations`` otherwise and says so in its record).

Outside the grid ``u`` is extended by its border values (``padding_mode="border"``), not by zeros: a point pushed
just out of the field of view keeps the displacement of its neighbour rather than snapping back to the identity.

The inverse-consistency error of the pair ``(u, v)`` is ``e(x) = |u(x) + v(x + u(x))|``, the distance between ``x``
and the point the two maps bring it back to, in millimetres (voxel vectors through the grid's spacing or affine).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from scripts.geometry import voxel_to_world_displacement
from scripts.monai_compat import GridCachingWarp

__all__ = [
    "DEFAULT_INVERSION_TOLERANCE",
    "DEFAULT_MAX_INVERSION_ITERATIONS",
    "INVERSE_DISPLACEMENT_CONVENTION",
    "InversionRecord",
    "compose_displacements",
    "invert_displacement",
    "inverse_consistency_error",
    "quantiles",
]

INVERSE_DISPLACEMENT_CONVENTION = (
    "v(q) in millimetres along world RAS axes on the MOVING image's original grid; a moving world point q maps to "
    "q + v(q) in the fixed image (moving -> fixed, the inverse of the forward field: resampling the warped image "
    "through it gives back the moving image); NIfTI (X, Y, Z, 1, 3) float32, intent 1006 (displacement vector); "
    "v = 0 outside the network's field of view"
)

DEFAULT_INVERSION_TOLERANCE = 1e-3
"""Stop when no voxel's inverse moves by more than this between two iterations (voxels)."""

DEFAULT_MAX_INVERSION_ITERATIONS = 50

_border_warper: GridCachingWarp | None = None


def _sample_field(field: torch.Tensor, ddf: torch.Tensor) -> torch.Tensor:
    """``field(x + ddf(x))`` sampled trilinearly (``align_corners=True``), border values outside the grid."""
    global _border_warper
    if _border_warper is None:
        with warnings.catch_warnings():
            # informational only: on CPU builds without MONAI's C++ extension Warp falls back to grid_sample
            warnings.filterwarnings("ignore", message=".*Using PyTorch native grid_sample.*")
            _border_warper = GridCachingWarp(mode="bilinear", padding_mode="border")
    return _border_warper(field, ddf)


def _check_field(ddf: torch.Tensor, name: str) -> None:
    if ddf.ndim != 5 or ddf.shape[1] != 3 or not ddf.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating (B, 3, H, W, D) displacement, got {ddf.dtype} {tuple(ddf.shape)}.")


def compose_displacements(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """The displacement of ``x -> x + first(x)`` then ``y -> y + second(y)``: ``first(x) + second(x + first(x))``.

    Args:
        first: (B, 3, H, W, D) displacement in voxel units, applied first.
        second: (B, 3, H, W, D) displacement on the same grid, applied to the points ``first`` reaches.

    Returns:
        (B, 3, H, W, D) displacement; zero wherever ``second`` undoes ``first``.
    """
    _check_field(first, "first")
    _check_field(second, "second")
    return first + _sample_field(second, first)


@dataclass(frozen=True)
class InversionRecord:
    """How the fixed-point inversion ended.

    Attributes:
        iterations: fixed-point steps taken.
        last_change: the largest change of any voxel's inverse in the last step (voxels).
        converged: ``last_change <= tolerance``.
    """

    iterations: int
    last_change: float
    converged: bool


@torch.no_grad()
def invert_displacement(
    ddf: torch.Tensor,
    tolerance: float = DEFAULT_INVERSION_TOLERANCE,
    max_iterations: int = DEFAULT_MAX_INVERSION_ITERATIONS,
) -> tuple[torch.Tensor, InversionRecord]:
    """The inverse ``v`` of a displacement ``u`` on the same grid: ``v(y) = -u(y + v(y))`` (module docstring).

    Args:
        ddf: (B, 3, H, W, D) displacement ``u`` in voxel units, channel i along array axis i; the map is
            ``x -> x + u(x)``.
        tolerance: stop once no voxel changes by more than this (voxels) between two iterations.
        max_iterations: stop after this many iterations regardless.

    Returns:
        ``(inverse, record)``: the (B, 3, H, W, D) inverse in voxel units, on ``ddf``'s device and dtype, and an
        :class:`InversionRecord` (worst case over the batch).

    Example:
        >>> shift = torch.zeros(1, 3, 8, 8, 4)
        >>> shift[:, 0] = 1.5
        >>> inverse, record = invert_displacement(shift)
        >>> float(inverse[:, 0].mean()), record.converged
        (-1.5, True)
    """
    _check_field(ddf, "ddf")
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be >= 1, got {max_iterations}.")
    inverse = -ddf
    change = float("inf")
    iterations = 0
    while iterations < max_iterations and change > tolerance:
        updated = -_sample_field(ddf, inverse)
        change = float((updated - inverse).abs().amax())
        inverse = updated
        iterations += 1
    return inverse, InversionRecord(iterations=iterations, last_change=change, converged=change <= tolerance)


def _voxel_vectors_to_mm(
    vectors: torch.Tensor, spacing: Sequence[float] | None, affine: torch.Tensor | np.ndarray | None
) -> torch.Tensor:
    if (spacing is None) == (affine is None):
        raise ValueError("give exactly one of spacing (mm per voxel along each array axis) or affine (4 x 4).")
    if affine is not None:
        return voxel_to_world_displacement(vectors, affine)
    if len(spacing) != 3:
        raise ValueError(f"spacing must have 3 entries, got {tuple(spacing)}.")
    return vectors * vectors.new_tensor([float(s) for s in spacing]).view(1, 3, 1, 1, 1)


def quantiles(values: torch.Tensor, levels: Sequence[float]) -> torch.Tensor:
    """``torch.quantile(values, q)`` (its default linear interpolation) for each ``q`` of ``levels``, bit for bit, by
    selection instead of a full sort: several times faster on the ~10^5 errors of a pair.

    As torch: the rank ``q (n - 1)`` in ``values``' dtype, the order statistics at its floor and ceiling, and
    ``torch.lerp`` between them with the rank's fraction; NaN when a value is NaN.

    Args:
        values: 1-D floating tensor, not empty.
        levels: quantile levels in [0, 1].

    Returns:
        (len(levels),) tensor of ``values``' dtype and device.
    """
    if values.ndim != 1 or values.numel() == 0 or not values.dtype.is_floating_point:
        raise ValueError(f"values must be a non-empty 1-D floating tensor, got {values.dtype} {tuple(values.shape)}.")
    ranks = torch.tensor([float(q) for q in levels], dtype=values.dtype) * (values.numel() - 1)
    below, above = ranks.long(), ranks.ceil().long()
    if bool(torch.isnan(values).any()):
        return torch.full_like(ranks, float("nan")).to(values.device)
    # np.partition puts the order statistic k at position k for every k asked (all of them in one pass)
    selected = np.partition(values.detach().cpu().numpy(), np.union1d(below.numpy(), above.numpy()))
    order_statistics = torch.from_numpy(selected)
    return torch.lerp(order_statistics[below], order_statistics[above], ranks - below).to(values.device)


def _statistics(errors: torch.Tensor, selection: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Median and 95th percentile of ``errors`` (B, N) over the ``selection`` (B, N) of each row; NaN if empty."""
    medians, percentiles = [], []
    for row, chosen in zip(errors, selection):
        values = row[chosen]
        if values.numel() == 0:
            medians.append(row.new_tensor(float("nan")))
            percentiles.append(row.new_tensor(float("nan")))
            continue
        median, percentile = quantiles(values, (0.5, 0.95))
        medians.append(median)
        percentiles.append(percentile)
    return torch.stack(medians), torch.stack(percentiles)


@torch.no_grad()
def inverse_consistency_error(
    ddf: torch.Tensor,
    inverse: torch.Tensor,
    spacing: Sequence[float] | None = None,
    affine: torch.Tensor | np.ndarray | None = None,
    mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Inverse-consistency error ``|u(x) + v(x + u(x))|`` in mm: its median and 95th percentile per pair.

    "Overall" statistics cover the voxels ``x`` whose image ``x + u(x)`` lies inside the grid (where ``v`` is
    defined rather than extended from the border); "mask" statistics cover, in addition, the voxels of ``mask``.

    Args:
        ddf: (B, 3, H, W, D) forward displacement ``u`` in voxel units.
        inverse: (B, 3, H, W, D) its inverse ``v`` on the same grid (e.g. from :func:`invert_displacement`).
        spacing: voxel size in mm along the three array axes (e.g. (1.8, 1.8, 10.0)); or
        affine: the grid's (4, 4) affine (RAS mm <- voxel index), for an oblique grid. Give exactly one.
        mask: optional (B, 1, H, W, D) region (e.g. the fixed label map > 0 for the heart); nonzero = inside.

    Returns:
        dict of (B,) float64 tensors: "median_mm", "p95_mm", and with ``mask`` also "mask_median_mm",
        "mask_p95_mm" (NaN when no voxel qualifies).
    """
    _check_field(ddf, "ddf")
    _check_field(inverse, "inverse")
    if ddf.shape != inverse.shape:
        raise ValueError(f"ddf {tuple(ddf.shape)} and inverse {tuple(inverse.shape)} must have the same shape.")
    residual_mm = _voxel_vectors_to_mm(compose_displacements(ddf, inverse).double(), spacing, affine)
    errors = residual_mm.norm(dim=1).flatten(1)
    shape = ddf.shape[2:]
    grid = torch.meshgrid(*[torch.arange(n, device=ddf.device, dtype=ddf.dtype) for n in shape], indexing="ij")
    inside = torch.ones_like(ddf[:, 0], dtype=torch.bool)
    for axis, coordinate in enumerate(grid):
        target = coordinate + ddf[:, axis]
        inside &= (target >= 0) & (target <= shape[axis] - 1)
    inside = inside.flatten(1)
    median, p95 = _statistics(errors, inside)
    result = {"median_mm": median, "p95_mm": p95}
    if mask is not None:
        if mask.shape[0] != ddf.shape[0] or tuple(mask.shape[-3:]) != tuple(shape):
            raise ValueError(f"mask {tuple(mask.shape)} does not match the field {tuple(ddf.shape)}.")
        in_mask = inside & (mask.reshape(mask.shape[0], -1) != 0).to(ddf.device)
        result["mask_median_mm"], result["mask_p95_mm"] = _statistics(errors, in_mask)
    return result
