"""Global radial and circumferential Green-Lagrange strain in the short-axis plane: the one definition.

The cine workflow, the phantom's truth and the cine benchmark all compute strain with these functions, so a
measured and a true strain differ only by the deformation they are given.

Definition (Lagrangian: material points and directions are those of end-diastole, ED):

- short-axis plane: the image plane, spanned by the first two columns of the cine's affine ``A``; its orthonormal
  world basis ``Q`` (3, 2) comes from ``A[:3, :2] = Q R`` (QR decomposition, ``R`` (2, 2) upper triangular with a
  positive diagonal, so the basis follows the voxel axes i and j);
- material points ``X``: the voxel centres of the ED LV myocardium (label 2);
- deformation gradient in the plane: ``F = dQ^T phi / dQ^T X`` (2, 2), ``phi`` the ED -> frame map of the points;
- Green-Lagrange strain ``E = (F^T F - I) / 2``;
- radial direction ``r(X)``: the in-plane unit vector from the ED LV blood-pool centroid of X's slice to X (the
  centroid of the LV myocardium in a slice without blood pool); circumferential ``c(X)``: ``r`` turned by 90
  degrees in the plane;
- ``E_rr = r^T E r``, ``E_cc = c^T E c``; global strain = their mean over the ED myocardium voxels (each voxel is
  the same ED volume, so this is the volume average over the ED myocardium).

Strains are fractions here (0.3 = 30 %); the workflow reports percent, and "strain points" are percentage points.
A contracting ventricle has positive radial (wall thickening) and negative circumferential (shortening) strain.
Rigid motions, rotations included, give exactly zero (Green-Lagrange, not the small-strain approximation).

Example:
    >>> import numpy as np
    >>> F = np.array([[[0.8, 0.0], [0.0, 0.8]]])  # uniform in-plane contraction by 20 %
    >>> float(green_lagrange(F)[0, 0, 0])  # (0.8 ** 2 - 1) / 2
    -0.18
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "LV_BLOOD_POOL",
    "LV_MYOCARDIUM",
    "directional_strain",
    "global_strain",
    "green_lagrange",
    "in_plane_basis",
    "in_plane_gradient",
    "myocardium_voxels",
    "radial_circumferential_directions",
    "slice_centroids",
]

LV_MYOCARDIUM = 2
LV_BLOOD_POOL = 3


def in_plane_basis(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The short-axis plane of a grid.

    Args:
        affine: (4, 4) voxel -> world RAS mm.

    Returns:
        ``Q`` (3, 2) orthonormal world directions of the plane (first along voxel axis i) and ``R`` (2, 2) upper
        triangular with positive diagonal such that ``affine[:3, :2] = Q @ R`` (R maps in-plane voxel steps to mm
        along Q).
    """
    q, r = np.linalg.qr(np.asarray(affine, np.float64)[:3, :2])
    signs = np.sign(np.diag(r))
    signs[signs == 0] = 1.0
    return q * signs[None, :], r * signs[:, None]


def myocardium_voxels(ed_labels: np.ndarray) -> np.ndarray:
    """(N, 3) integer voxel indices (i, j, k) of the ED LV myocardium (label 2), C order of the array."""
    return np.argwhere(np.asarray(ed_labels) == LV_MYOCARDIUM)


def slice_centroids(ed_labels: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World centroid of the LV blood pool in each slice (LV myocardium where the slice has no blood pool).

    Args:
        ed_labels: (X, Y, Z) ED label map (0 bg, 1 RV, 2 LV myocardium, 3 LV blood pool).
        affine: (4, 4) its voxel -> world affine.

    Returns:
        (Z, 3) world mm; NaN for slices with neither structure.
    """
    labels = np.asarray(ed_labels)
    centroids = np.full((labels.shape[2], 3), np.nan)
    for k in range(labels.shape[2]):
        for structure in (LV_BLOOD_POOL, LV_MYOCARDIUM):
            ij = np.argwhere(labels[:, :, k] == structure)
            if len(ij):
                index = np.array([*ij.mean(axis=0), k, 1.0])
                centroids[k] = (np.asarray(affine, np.float64) @ index)[:3]
                break
    return centroids


def radial_circumferential_directions(
    points: np.ndarray, centroids: np.ndarray, basis: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """In-plane radial and circumferential unit vectors at material points.

    Args:
        points: (N, 3) world positions X of the points at ED.
        centroids: (N, 3) the centroid of each point's slice (see :func:`slice_centroids`).
        basis: ``Q`` (3, 2) of :func:`in_plane_basis`.

    Returns:
        ``r`` and ``c`` (N, 2), in the coordinates of ``Q``; rows of NaN where a point sits on its centroid.
    """
    offset = (np.asarray(points, np.float64) - centroids) @ basis
    length = np.linalg.norm(offset, axis=1, keepdims=True)
    radial = np.where(length > 1e-9, offset / np.where(length > 1e-9, length, 1.0), np.nan)
    circumferential = np.stack([-radial[:, 1], radial[:, 0]], axis=1)
    return radial, circumferential


def green_lagrange(deformation_gradient: np.ndarray) -> np.ndarray:
    """``E = (F^T F - I) / 2`` for (..., 2, 2) (or (..., 3, 3)) deformation gradients ``F``."""
    F = np.asarray(deformation_gradient, np.float64)
    identity = np.eye(F.shape[-1])
    return 0.5 * (np.swapaxes(F, -1, -2) @ F - identity)


def directional_strain(strain_tensor: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Normal strain ``d^T E d`` along unit vectors ``direction`` (N, 2) of tensors ``strain_tensor`` (N, 2, 2)."""
    return np.einsum("ni,nij,nj->n", direction, strain_tensor, direction)


def in_plane_gradient(
    mapped_plus: np.ndarray, mapped_minus: np.ndarray, step: np.ndarray, basis: np.ndarray
) -> np.ndarray:
    """In-plane deformation gradient from the mapped positions of neighbours of each point.

    Args:
        mapped_plus, mapped_minus: (N, 2, 3) world positions phi(X + s_a) and phi(X - s_a) for the two in-plane
            steps a = 0, 1 (either may be phi(X) itself for a one-sided difference).
        step: (N, 2, 2) the in-plane coordinates (along ``basis``) of the step between the plus and the minus
            point of each axis a, as columns: ``step[n, :, a] = Q^T (X_plus - X_minus)``.
        basis: ``Q`` (3, 2).

    Returns:
        ``F`` (N, 2, 2) with ``F[n] = Q^T [dphi_0, dphi_1] step[n]^-1``.
    """
    difference = np.einsum("nad,dp->npa", mapped_plus - mapped_minus, basis)  # (N, plane component, axis)
    return difference @ np.linalg.inv(step)


def global_strain(
    deformation_gradients: np.ndarray, points: np.ndarray, centroids: np.ndarray, basis: np.ndarray
) -> tuple[float, float]:
    """Global radial and circumferential Green-Lagrange strain (fractions) over a set of ED material points.

    Args:
        deformation_gradients: (N, 2, 2) in-plane ``F`` at the points (coordinates of ``basis``).
        points: (N, 3) their ED world positions.
        centroids: (N, 3) the ED centroid of each point's slice.
        basis: ``Q`` (3, 2).

    Returns:
        (radial, circumferential) means over the points with a defined direction and a finite ``F``; NaN if none.
    """
    radial, circumferential = radial_circumferential_directions(points, centroids, basis)
    strain = green_lagrange(deformation_gradients)
    e_rr = directional_strain(strain, radial)
    e_cc = directional_strain(strain, circumferential)
    valid = np.isfinite(e_rr) & np.isfinite(e_cc)
    if not valid.any():
        return float("nan"), float("nan")
    return float(e_rr[valid].mean()), float(e_cc[valid].mean())
