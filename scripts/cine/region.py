"""The box of the cine's grid that the heart can reach: where labels are propagated and strain is measured.

A frame's label at p is the ED label at ``p + d(p)``; it can be a heart label only if ``p`` lies within ``max |d|``
of the ED heart. Working in that box (the ED heart's bounding box grown by the largest displacement, plus one voxel)
gives the same labels as the whole grid at a fraction of the cost; outside it every frame is background.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["GridBox", "heart_box"]


@dataclass(frozen=True)
class GridBox:
    """An axis-aligned box of voxels: ``start`` (inclusive) and ``stop`` (exclusive) indices per axis."""

    start: tuple[int, int, int]
    stop: tuple[int, int, int]

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.start, self.stop))

    def affine(self, affine: np.ndarray) -> np.ndarray:
        """The (4, 4) affine of the box's own grid (its voxel 0 is the box's first voxel)."""
        moved = np.array(affine, np.float64)
        moved[:3, 3] = moved[:3, :3] @ np.asarray(self.start, np.float64) + moved[:3, 3]
        return moved


def heart_box(ed_labels: np.ndarray, affine: np.ndarray, reach_mm: float) -> GridBox:
    """The ED heart's (labels > 0) bounding box grown by ``reach_mm`` (and one voxel), clipped to the grid.

    Args:
        ed_labels: (X, Y, Z) ED label map.
        affine: (4, 4) its affine (a world step of ``reach_mm`` changes voxel index a by at most
            ``reach_mm * |row a of inv(affine[:3, :3])|``).
        reach_mm: the largest displacement length of the fields that will sample the labels.
    """
    labels = np.asarray(ed_labels)
    heart = np.argwhere(labels > 0)
    shape = np.array(labels.shape)
    if len(heart) == 0:
        return GridBox((0, 0, 0), tuple(int(n) for n in shape))
    rows = np.linalg.norm(np.linalg.inv(np.asarray(affine, np.float64)[:3, :3]), axis=1)
    margin = np.ceil(float(reach_mm) * rows).astype(int) + 1
    start = np.maximum(heart.min(axis=0) - margin, 0)
    stop = np.minimum(heart.max(axis=0) + 1 + margin, shape)
    return GridBox(tuple(int(v) for v in start), tuple(int(v) for v in stop))
