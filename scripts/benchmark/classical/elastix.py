"""elastix affine + B-spline (itk-elastix, optional: only the robustness benchmark uses it) on the network grid.

Both images are the preprocessed network-grid arrays (128 x 128 x 16 at 1.8 x 1.8 x 10 mm, intensities in [0, 1]),
handed to ITK with identity direction and zero origin, array axis i as ITK axis i, so ITK's physical coordinates
are ``index * spacing``. elastix runs its default "affine" parameter map, then its default "bspline" map (as a user
with default settings would: Mattes mutual information, adaptive stochastic gradient descent, 4 resolutions of 256
iterations each; the B-spline stage adds a bending-energy penalty and a 10 mm final grid). transformix then writes
the composed transform as a deformation field on the fixed grid: fixed point ``p`` maps to ``p + d(p)`` in the
moving image, in mm along the array axes. Dividing by the spacing gives the bundle's voxel convention
``warped(x) = moving(x + u(x))``.

Install: ``pip install --no-deps -r requirements-benchmark.txt`` (see that file).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["ELASTIX_PARAMETERS", "elastix_ddf", "elastix_version"]

# What is set on top of elastix's default maps: only the random seed (reproducible samples) and quiet logs.
ELASTIX_PARAMETERS: Mapping[str, Any] = {
    "parameter_maps": ("affine", "bspline"),
    "overrides": {"RandomSeed": "0", "WriteResultImage": "false"},
}


def _itk() -> Any:
    try:
        import itk

        itk.ParameterObject  # the elastix wrapping is loaded lazily: touch it so a missing itk-elastix fails here
    except (ImportError, AttributeError) as error:
        raise ImportError(
            "the elastix row needs itk-elastix (optional): pip install --no-deps -r requirements-benchmark.txt"
        ) from error
    return itk


def elastix_version() -> str:
    """itk-elastix's version string (raises ImportError with the install command when missing)."""
    _itk()
    from importlib.metadata import version

    return version("itk-elastix")


def _image(array: np.ndarray, spacing: Sequence[float], itk: Any) -> Any:
    # itk.image_view_from_array reads numpy's last axis as ITK's x: hand it the reversed axes so ITK axis i is ours.
    image = itk.image_from_array(np.ascontiguousarray(np.transpose(array.astype(np.float32))))
    image.SetSpacing([float(s) for s in spacing])
    return image


def elastix_ddf(
    moving: np.ndarray,
    fixed: np.ndarray,
    spacing: Sequence[float],
    parameters: Mapping[str, Any] = ELASTIX_PARAMETERS,
    threads: int | None = None,
) -> np.ndarray:
    """Register ``moving`` to ``fixed`` with elastix and return the field in the bundle's voxel convention.

    Args:
        moving, fixed: (H, W, D) float images on the same grid.
        spacing: voxel size in mm along (H, W, D).
        parameters: :data:`ELASTIX_PARAMETERS`-like: the default maps to run in order and the entries set on each.
        threads: elastix's threads; None leaves ITK's default.

    Returns:
        (3, H, W, D) float32 displacement in voxels: channel i along array axis i, fixed voxel x maps to x + u(x).
    """
    itk = _itk()
    fixed_image, moving_image = _image(fixed, spacing, itk), _image(moving, spacing, itk)
    parameter_object = itk.ParameterObject.New()
    for name in parameters["parameter_maps"]:
        parameter_map = parameter_object.GetDefaultParameterMap(name)
        for key, value in parameters["overrides"].items():
            parameter_map[key] = [str(value)]
        parameter_object.AddParameterMap(parameter_map)
    options: dict[str, Any] = {"log_to_console": False}
    if threads is not None:
        options["number_of_threads"] = int(threads)
    # transformix writes deformationField.nii into its output directory (the working directory by default)
    with tempfile.TemporaryDirectory(prefix="elastix_") as folder:
        _, transform = itk.elastix_registration_method(
            fixed_image, moving_image, parameter_object=parameter_object, output_directory=folder, **options
        )
        field = itk.transformix_deformation_field(
            moving_image, transform, output_directory=folder, log_to_console=False
        )
        field = np.transpose(np.asarray(field, dtype=np.float64), (2, 1, 0, 3))  # (D, W, H, 3) -> (H, W, D, 3) mm
    return np.ascontiguousarray(np.moveaxis(field, -1, 0) / np.asarray(spacing)[:, None, None, None], np.float32)
