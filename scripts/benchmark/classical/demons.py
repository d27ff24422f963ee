"""SimpleITK diffeomorphic demons (the paper's traditional row) on the network grid.

Both images are the preprocessed network-grid arrays (128 x 128 x 16 at 1.8 x 1.8 x 10 mm, intensities in [0, 1]),
handed to SimpleITK with identity direction and zero origin, array axis i as ITK axis i. The moving image's
histogram is first matched to the fixed one's (demons compares intensities directly: ``sitk.HistogramMatching``,
1024 levels, 7 match points, threshold at the mean intensity, the settings of SimpleITK's demons examples); then
``sitk.DiffeomorphicDemonsRegistrationFilter`` runs :data:`DEMONS_PARAMETERS` at full resolution. Its output is
ITK's displacement field on the fixed grid: fixed point ``p`` maps to ``p + d(p)`` in the moving image, in mm
along the array axes; dividing by the spacing gives the bundle's voxel convention ``warped(x) = moving(x + u(x))``.

SimpleITK is in requirements-dev.txt (the tests use it); the benchmark needs nothing else for this row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["DEMONS_PARAMETERS", "demons_ddf", "demons_version"]

# Smoothing of the displacement field (Thirion's demons regulariser) in voxels of the network grid, on every axis;
# 100 iterations after which the field barely changes on the phantom's pairs.
DEMONS_PARAMETERS: Mapping[str, Any] = {
    "histogram_matching": {"levels": 1024, "match_points": 7, "threshold_at_mean_intensity": True},
    "iterations": 100,
    "displacement_field_smoothing_voxels": 1.5,
    "update_field_smoothing": False,
    "use_image_spacing": True,
}


def _sitk() -> Any:
    try:
        import SimpleITK
    except ImportError as error:
        raise ImportError(
            "the demons row needs SimpleITK: pip install -r requirements-dev.txt (see scripts/benchmark/classical)"
        ) from error
    return SimpleITK


def demons_version() -> str:
    """SimpleITK's version string (raises ImportError with the install command when missing)."""
    return str(_sitk().Version_VersionString())


def _image(array: np.ndarray, spacing: Sequence[float], sitk: Any) -> Any:
    # GetImageFromArray reads numpy's last axis as ITK's x: hand it the reversed axes so ITK axis i is ours.
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array.astype(np.float32))))
    image.SetSpacing([float(s) for s in spacing])
    return image


def demons_ddf(
    moving: np.ndarray,
    fixed: np.ndarray,
    spacing: Sequence[float],
    parameters: Mapping[str, Any] = DEMONS_PARAMETERS,
    threads: int | None = None,
) -> np.ndarray:
    """Register ``moving`` to ``fixed`` with diffeomorphic demons and return the field in the bundle's convention.

    Args:
        moving, fixed: (H, W, D) float images on the same grid.
        spacing: voxel size in mm along (H, W, D).
        parameters: :data:`DEMONS_PARAMETERS`-like settings.
        threads: ITK threads of both filters; None leaves SimpleITK's default.

    Returns:
        (3, H, W, D) float32 displacement in voxels: channel i along array axis i, fixed voxel x maps to x + u(x).
    """
    sitk = _sitk()
    fixed_image, moving_image = _image(fixed, spacing, sitk), _image(moving, spacing, sitk)
    matching = parameters["histogram_matching"]
    matcher = sitk.HistogramMatchingImageFilter()
    matcher.SetNumberOfHistogramLevels(int(matching["levels"]))
    matcher.SetNumberOfMatchPoints(int(matching["match_points"]))
    matcher.SetThresholdAtMeanIntensity(bool(matching["threshold_at_mean_intensity"]))
    demons = sitk.DiffeomorphicDemonsRegistrationFilter()
    demons.SetNumberOfIterations(int(parameters["iterations"]))
    demons.SetSmoothDisplacementField(True)
    demons.SetStandardDeviations(float(parameters["displacement_field_smoothing_voxels"]))
    demons.SetSmoothUpdateField(bool(parameters["update_field_smoothing"]))
    demons.SetUseImageSpacing(bool(parameters["use_image_spacing"]))
    if threads is not None:
        matcher.SetNumberOfThreads(int(threads))
        demons.SetNumberOfThreads(int(threads))
    matched = matcher.Execute(moving_image, fixed_image)
    field = sitk.GetArrayFromImage(demons.Execute(fixed_image, matched))  # (D, W, H, 3) mm, components x, y, z
    field = np.transpose(field.astype(np.float64), (2, 1, 0, 3))
    return np.ascontiguousarray(np.moveaxis(field, -1, 0) / np.asarray(spacing)[:, None, None, None], np.float32)
