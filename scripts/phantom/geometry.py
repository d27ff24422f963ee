"""Acquisition geometry: a short-axis cine stack placed in the world by a NIfTI affine.

Voxel (i, j, k) has its centre at world ``affine @ (i, j, k, 1)`` (NIfTI RAS mm). Columns i and j span
the slice plane (isotropic in-plane spacing), column k is the slice step (slice spacing, pointing
from base toward apex). The slice *thickness* may be smaller than the spacing (gaps, as in ACDC);
partial volume integrates the signal over the thickness with ``n_through`` samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Acquisition:
    """One subject's voxel grid.

    Attributes:
        affine: (4, 4) voxel -> world RAS mm.
        shape: (X, Y, Z) number of voxels along i, j, k.
        slice_thickness: mm, <= the slice spacing (norm of affine column k).
    """

    affine: np.ndarray
    shape: tuple[int, int, int]
    slice_thickness: float

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (mm) along i, j, k."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    def voxel_centres(self) -> np.ndarray:
        """(X*Y*Z, 3) world mm of all voxel centres, C order of the (X, Y, Z) array."""
        return self.through_slice_points(1)[:, 0, :]

    def through_slice_points(self, n_through: int) -> np.ndarray:
        """(X*Y*Z, n_through, 3) float32 world mm: points spread evenly through each voxel's slice thickness.

        The middle sample (index n_through // 2, for odd n_through) is the voxel centre.
        """
        nx, ny, nz = self.shape
        offsets = (np.arange(n_through) + 0.5) / n_through - 0.5
        offsets = offsets * self.slice_thickness / self.spacing[2]
        i = np.arange(nx, dtype=np.float64)[:, None, None, None]
        j = np.arange(ny, dtype=np.float64)[None, :, None, None]
        k = (np.arange(nz)[:, None] + offsets[None, :])[None, None]
        points = np.empty((nx, ny, nz, n_through, 3), np.float32)
        for row in range(3):
            a = self.affine[row]
            points[..., row] = (a[0] * i + a[3]) + (a[1] * j) + (a[2] * k)
        return points.reshape(nx * ny * nz, n_through, 3)

    def world_to_voxel(self, world: np.ndarray) -> np.ndarray:
        """(N, 3) world mm -> (N, 3) continuous voxel indices."""
        inverse = np.linalg.inv(self.affine)
        return world @ inverse[:3, :3].T + inverse[:3, 3]


def rotation_about(axis: np.ndarray, angle: float) -> np.ndarray:
    """(3, 3) rotation matrix by ``angle`` radians about unit vector ``axis`` (Rodrigues)."""
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1.0 - np.cos(angle)) * cross @ cross


def short_axis_acquisition(
    heart_origin: np.ndarray,
    long_axis: np.ndarray,
    *,
    in_plane_spacing: float,
    matrix: tuple[int, int],
    slice_spacing: float,
    slice_thickness: float,
    n_slices: int,
    first_slice_height: float,
    tilt: np.ndarray,
    in_plane_rotation: float,
    centre_offset: tuple[float, float],
) -> Acquisition:
    """A short-axis stack as planned on a scanner.

    Args:
        heart_origin: (3,) world mm, centre of the LV base plane.
        long_axis: (3,) unit vector from base to apex.
        in_plane_spacing: mm; matrix: (X, Y) voxels.
        slice_spacing, slice_thickness: mm.
        n_slices: Z.
        first_slice_height: mm along the long axis of the first slice centre (negative = above the base).
        tilt: (3,) rotation vector (radians) applied to the long axis to get the slice normal; planning
            is never perfectly perpendicular to the true long axis.
        in_plane_rotation: radians about the slice normal, away from the standard view (column i toward
            the patient's left, column j toward anterior, so that a plot with i to the right and j up
            shows the RV on the left and the anterior wall at the top).
        centre_offset: (2,) mm offset of the field of view centre along columns i and j.
    """
    angle = float(np.linalg.norm(tilt))
    normal = long_axis if angle == 0.0 else rotation_about(tilt, angle) @ long_axis
    normal = normal / np.linalg.norm(normal)
    left = np.array([-1.0, 0.0, 0.0])  # RAS: +x is the patient's right
    e_i = left - normal * (left @ normal)
    e_i /= np.linalg.norm(e_i)
    anterior = np.array([0.0, 1.0, 0.0])
    e_j = anterior - normal * (anterior @ normal) - e_i * (anterior @ e_i)
    e_j /= np.linalg.norm(e_j)
    turn = rotation_about(normal, in_plane_rotation)
    e_i, e_j = turn @ e_i, turn @ e_j
    first_centre = heart_origin + first_slice_height * long_axis + centre_offset[0] * e_i + centre_offset[1] * e_j
    nx, ny = matrix
    affine = np.eye(4)
    affine[:3, 0] = in_plane_spacing * e_i
    affine[:3, 1] = in_plane_spacing * e_j
    affine[:3, 2] = slice_spacing * normal
    affine[:3, 3] = first_centre - (nx - 1) / 2 * affine[:3, 0] - (ny - 1) / 2 * affine[:3, 1]
    return Acquisition(affine=affine, shape=(int(nx), int(ny), int(n_slices)), slice_thickness=float(slice_thickness))
