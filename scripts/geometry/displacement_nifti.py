"""Displacement fields on disk: the convention of the bundle's displacement NIfTI files, and their reading/writing.

Convention (the one ITK's ``DisplacementFieldTransform``, SimpleITK, ANTs and 3D Slicer use), shared by inference's
``displacement_fixed_to_moving_mm.nii.gz`` and the phantom's ``true_ddf_*`` files:

- the field lives on the FIXED image's original voxel grid (same shape, same affine/qform/sform as the fixed file);
- it is stored as a NIfTI vector image of shape (X, Y, Z, 1, 3), float32, NIfTI intent 1006 ("displacement
  vector"), components in millimetres along NIfTI's world RAS+ axes (+x Right, +y Anterior, +z Superior);
- the world point ``p`` of the fixed image maps to ``p + d(p)`` in the moving image (fixed -> moving, the
  "pull-back" direction): resampling the moving image at ``p + d(p)`` for every fixed voxel centre ``p`` gives the
  warped moving image aligned with the fixed one;
- inference writes ``d = 0`` wherever the network's field of view (the 128 x 128 x 16 grid at 1.8 x 1.8 x 10 mm,
  centred on the fixed image) does not reach.

ITK reads intent 1006 as RAS millimetres and converts the vectors to its LPS convention itself (x and y negated), so
``sitk.DisplacementFieldTransform(sitk.ReadImage(path, sitk.sitkVectorFloat64))`` applied by ``sitk.Resample`` to the
moving image reproduces the bundle's warped image.

Relation to the network: the network predicts ``u`` (3, H, W, D) in voxel units of its grid (channel i along array
axis i), ``warped(x) = moving(x + u(x))``. With ``A`` the network grid's affine (RAS mm <- voxel index),
``d(A x) = A[:3, :3] @ u(x)`` (:func:`scripts.geometry.voxel_to_world_displacement`).

Files are written atomically (a temporary file moved into place) and, for ``.nii.gz``, compressed reproducibly
(:mod:`scripts.compressed_nifti`), so the same field always gives the same bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from scripts.compressed_nifti import write_nifti
from scripts.geometry.nifti_geometry import NiftiGeometry

__all__ = [
    "DISPLACEMENT_CONVENTION",
    "DISPLACEMENT_INTENT",
    "displacement_nifti_image",
    "read_displacement_nifti",
    "to_nifti_vector_layout",
    "write_displacement_nifti",
]

DISPLACEMENT_INTENT = 1006
"""NIfTI intent code "displacement vector": ITK reads the components as RAS millimetres."""

DISPLACEMENT_CONVENTION = (
    "d(p) in millimetres along world RAS axes on the fixed image's original grid; a fixed world point p maps to "
    "p + d(p) in the moving image (ITK DisplacementFieldTransform convention, fixed -> moving); NIfTI (X, Y, Z, 1, 3) "
    "float32, intent 1006 (displacement vector); d = 0 outside the network's field of view"
)


def to_nifti_vector_layout(displacement_mm: torch.Tensor | np.ndarray, channel_axis: int | None = None) -> np.ndarray:
    """A (3, X, Y, Z) or (X, Y, Z, 3) field as the (X, Y, Z, 1, 3) float32 array of a NIfTI vector image.

    Args:
        displacement_mm: the field, components first or last.
        channel_axis: 0 or -1 (3); None to tell from the shape (refused when both the first and last axes have 3).

    Raises:
        ValueError: not a 4-D field with 3 components first or last, or ambiguous without ``channel_axis``.
    """
    array = displacement_mm.detach().cpu().numpy() if isinstance(displacement_mm, torch.Tensor) else displacement_mm
    array = np.asarray(array)
    if array.ndim != 4 or 3 not in (array.shape[0], array.shape[-1]):
        raise ValueError(f"expected a (3, X, Y, Z) or (X, Y, Z, 3) displacement field, got shape {array.shape}")
    if channel_axis is None:
        if array.shape[0] == 3 and array.shape[-1] == 3:
            raise ValueError(f"displacement shape {array.shape} is ambiguous: pass channel_axis=0 or -1")
        channel_axis = 0 if array.shape[0] == 3 else -1
    if channel_axis == 0:
        array = np.moveaxis(array, 0, -1)
    elif channel_axis not in (-1, 3):
        raise ValueError(f"channel_axis must be 0 or -1, got {channel_axis}")
    return np.ascontiguousarray(array[:, :, :, None, :], dtype=np.float32)


def displacement_nifti_image(
    displacement_mm: torch.Tensor | np.ndarray,
    affine: np.ndarray | torch.Tensor | NiftiGeometry,
    intent_name: str = "ddf_mm_RAS",
    channel_axis: int | None = None,
) -> nib.Nifti1Image:
    """The NIfTI image of a world-RAS mm field: (X, Y, Z, 1, 3) float32, intent 1006, units mm.

    Args:
        displacement_mm: (3, X, Y, Z) or (X, Y, Z, 3) millimetres along world RAS axes.
        affine: (4, 4) affine of the field's grid, or the :class:`NiftiGeometry` of a reference file (its qform and
            sform codes are kept).
        intent_name: the header's intent name (up to 15 characters).
        channel_axis: see :func:`to_nifti_vector_layout`.
    """
    geometry = affine if isinstance(affine, NiftiGeometry) else NiftiGeometry(affine)
    image = geometry.image(to_nifti_vector_layout(displacement_mm, channel_axis))
    image.header.set_data_dtype(np.float32)
    image.header.set_intent(DISPLACEMENT_INTENT, name=intent_name)
    return image


def write_displacement_nifti(
    path: str | os.PathLike,
    displacement_mm: torch.Tensor | np.ndarray,
    affine: np.ndarray | torch.Tensor | NiftiGeometry,
    intent_name: str = "ddf_mm_RAS",
    channel_axis: int | None = None,
) -> Path:
    """Write a world-RAS mm displacement field as a NIfTI displacement vector image, atomically.

    Args:
        path: ``.nii.gz`` (reproducible gzip) or ``.nii`` file.
        displacement_mm: (3, X, Y, Z) or (X, Y, Z, 3) millimetres along world RAS axes (fixed -> moving).
        affine: (4, 4) affine of the field's grid (the fixed image's), or a :class:`NiftiGeometry`.
        intent_name: the header's intent name.
        channel_axis: see :func:`to_nifti_vector_layout`.

    Returns:
        ``path``; the file holds (X, Y, Z, 1, 3) float32 with intent 1006.
    """
    return write_nifti(displacement_nifti_image(displacement_mm, affine, intent_name, channel_axis), path)


def read_displacement_nifti(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a displacement NIfTI file written in the bundle's convention.

    Returns:
        (field, affine): field (X, Y, Z, 3) float64 millimetres along world RAS axes on the file's grid; affine
        (4, 4) float64 of that grid.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: unreadable, not a (X, Y, Z, 1, 3) vector image, or an intent other than 1006 (the message names
            the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: displacement field not found")
    try:
        image = nib.load(str(path))
        array = np.asarray(image.dataobj, dtype=np.float64)
    except Exception as error:  # nibabel, gzip and OS errors alike mean "not a readable NIfTI file"
        raise ValueError(f"{path}: cannot be read as NIfTI ({type(error).__name__}: {error})") from error
    if array.ndim != 5 or array.shape[3] != 1 or array.shape[4] != 3:
        raise ValueError(f"{path}: expected a (X, Y, Z, 1, 3) displacement image, got shape {array.shape}")
    intent = int(image.header["intent_code"])
    if intent != DISPLACEMENT_INTENT:
        raise ValueError(f"{path}: NIfTI intent {intent}, expected {DISPLACEMENT_INTENT} (displacement vector)")
    return array[:, :, :, 0, :], np.asarray(image.affine, dtype=np.float64)
