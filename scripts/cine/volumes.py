"""Volumes of the cardiac structures in every frame of a cine, counted from label maps, and the LV mass.

A structure's volume in a frame is its number of labelled voxels times the voxel volume (the product of the
affine's column norms), in millilitres, as ACDC's reference volumes are counted; for propagated labels, the sum of
the structure's probabilities (partial volume, :mod:`scripts.cine.propagation`) times the voxel volume. The LV mass
is the LV myocardium volume times the myocardial density 1.05 g/ml.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "MYOCARDIAL_DENSITY_G_PER_ML",
    "STRUCTURE_LABELS",
    "VOLUME_COLUMNS",
    "frame_volumes",
    "frame_volumes_from_probabilities",
    "voxel_volume_ml",
]

MYOCARDIAL_DENSITY_G_PER_ML = 1.05

STRUCTURE_LABELS: dict[str, int] = {"lv_blood_pool_ml": 3, "lv_myocardium_ml": 2, "rv_ml": 1}
"""Column name of each structure's volume curve -> its label value (0 bg, 1 RV, 2 LV myocardium, 3 LV blood pool)."""

VOLUME_COLUMNS = (*STRUCTURE_LABELS, "lv_mass_g")
"""The per-frame columns of ``volumes.csv`` after ``frame``, in order."""


def voxel_volume_ml(affine: np.ndarray) -> float:
    """Volume of one voxel in ml: the product of the affine's column norms (mm^3) / 1000."""
    return float(np.prod(np.linalg.norm(np.asarray(affine, np.float64)[:3, :3], axis=0))) / 1000.0


def frame_volumes(labels: np.ndarray, affine: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame volumes of LV blood pool, LV myocardium and RV, and the LV mass.

    Args:
        labels: (X, Y, Z, T) integer label maps of every frame (or (X, Y, Z) for one frame).
        affine: (4, 4) voxel -> world mm of the label maps.

    Returns:
        dict with the :data:`VOLUME_COLUMNS` keys, each a (T,) float64 array (ml, and g for ``lv_mass_g``).

    Example:
        >>> labels = np.zeros((4, 4, 2, 1), np.uint8); labels[:2, :2, :, 0] = 3
        >>> float(frame_volumes(labels, np.diag([10.0, 10.0, 10.0, 1.0]))["lv_blood_pool_ml"][0])
        8.0
    """
    array = np.asarray(labels)
    if array.ndim == 3:
        array = array[..., None]
    voxel_ml = voxel_volume_ml(affine)
    volumes = {
        name: (array == value).sum(axis=(0, 1, 2)).astype(np.float64) * voxel_ml
        for name, value in STRUCTURE_LABELS.items()
    }
    volumes["lv_mass_g"] = volumes["lv_myocardium_ml"] * MYOCARDIAL_DENSITY_G_PER_ML
    return volumes


def frame_volumes_from_probabilities(probabilities: np.ndarray, affine: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame volumes and LV mass from label probabilities (partial volume).

    Args:
        probabilities: (T, C, X, Y, Z) probabilities of the labels 0..C-1 (C >= 4) in every frame.
        affine: (4, 4) voxel -> world mm.

    Returns:
        as :func:`frame_volumes`.
    """
    array = np.asarray(probabilities, np.float64)
    voxel_ml = voxel_volume_ml(affine)
    volumes = {name: array[:, value].sum(axis=(1, 2, 3)) * voxel_ml for name, value in STRUCTURE_LABELS.items()}
    volumes["lv_mass_g"] = volumes["lv_myocardium_ml"] * MYOCARDIAL_DENSITY_G_PER_ML
    return volumes
