"""Displacement fields on disk: the convention of the bundle's ``*_mm.nii.gz`` fields, and the conversion to it.

Convention (the one ITK's ``DisplacementFieldTransform``, SimpleITK, ANTs and 3D Slicer use, and the phantom's
``true_ddf_*`` files):

- the field lives on the FIXED image's original voxel grid (same shape, same affine/qform/sform as the fixed file);
- it is stored as a NIfTI vector image of shape (X, Y, Z, 1, 3), float32, NIfTI intent 1006 ("displacement
  vector"), components in millimetres along NIfTI's world RAS+ axes (+x Right, +y Anterior, +z Superior);
- the world point ``p`` of the fixed image maps to ``p + d(p)`` in the moving image (fixed -> moving, the
  "pull-back" direction): resampling the moving image at ``p + d(p)`` for every fixed voxel centre ``p`` gives the
  warped moving image aligned with the fixed one;
- ``d = 0`` wherever the network's field of view (the 128 x 128 x 16 grid at 1.8 x 1.8 x 10 mm, centred on the
  fixed image) does not reach.

ITK reads intent 1006 as RAS millimetres and converts the vectors to its LPS convention itself (x and y negated), so
``sitk.DisplacementFieldTransform(sitk.ReadImage(path, sitk.sitkVectorFloat64))`` applied by ``sitk.Resample`` to the
moving image reproduces the bundle's warped image.

Relation to the network: the network predicts ``u`` (3, H, W, D) in voxel units of its grid (channel i along array
axis i), ``warped(x) = moving(x + u(x))``. With ``A`` the network grid's affine (RAS mm <- voxel index),
``d(A x) = A[:3, :3] @ u(x)``: a voxel-unit vector becomes a world vector through the linear part of the affine.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "DISPLACEMENT_INTENT",
    "DISPLACEMENT_CONVENTION",
    "voxel_to_world_displacement",
    "world_to_voxel_displacement",
    "to_nifti_vector_layout",
]

DISPLACEMENT_INTENT = 1006
"""NIfTI intent code "displacement vector": ITK reads the components as RAS millimetres."""

DISPLACEMENT_CONVENTION = (
    "d(p) in millimetres along world RAS axes on the fixed image's original grid; a fixed world point p maps to "
    "p + d(p) in the moving image (ITK DisplacementFieldTransform convention, fixed -> moving); NIfTI (X, Y, Z, 1, 3) "
    "float32, intent 1006 (displacement vector); d = 0 outside the network's field of view"
)


def _linear_part(affine: torch.Tensor | np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """The (3, 3) voxel -> mm matrix of a (4, 4) affine, float64 on ``like``'s device."""
    matrix = affine.detach() if isinstance(affine, torch.Tensor) else torch.from_numpy(np.asarray(affine))
    return matrix[:3, :3].to(device=like.device, dtype=torch.float64)


def voxel_to_world_displacement(ddf: torch.Tensor, affine: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Turn displacement components in voxel units of a grid into world millimetres.

    Args:
        ddf: (3, *spatial) or (B, 3, *spatial) displacement, channel i in voxels along array axis i of the grid
            whose affine is ``affine`` (the values may sit on any grid, e.g. after resampling to another one).
        affine: (4, 4) affine of the grid the components are expressed in (RAS mm <- voxel index).

    Returns:
        tensor of ``ddf``'s shape and dtype: channel c in mm along world axis c (R, A, S).
    """
    matrix = _linear_part(affine, ddf)
    channel_axis = 0 if ddf.ndim == 4 else 1
    moved = torch.movedim(ddf.to(torch.float64), channel_axis, -1)
    return torch.movedim(moved @ matrix.T, -1, channel_axis).to(ddf.dtype)


def world_to_voxel_displacement(displacement_mm: torch.Tensor, affine: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Inverse of :func:`voxel_to_world_displacement`: world mm components to voxel units of ``affine``'s grid."""
    matrix = torch.linalg.inv(_linear_part(affine, displacement_mm))
    channel_axis = 0 if displacement_mm.ndim == 4 else 1
    moved = torch.movedim(displacement_mm.to(torch.float64), channel_axis, -1)
    return torch.movedim(moved @ matrix.T, -1, channel_axis).to(displacement_mm.dtype)


def to_nifti_vector_layout(displacement_mm: torch.Tensor | np.ndarray) -> np.ndarray:
    """(3, X, Y, Z) channel-first field -> (X, Y, Z, 1, 3) float32 array, the NIfTI vector-image layout."""
    array = displacement_mm.detach().cpu().numpy() if isinstance(displacement_mm, torch.Tensor) else displacement_mm
    if array.ndim != 4 or array.shape[0] != 3:
        raise ValueError(f"expected a (3, X, Y, Z) displacement field, got shape {array.shape}")
    return np.ascontiguousarray(np.moveaxis(array, 0, -1)[:, :, :, None, :], dtype=np.float32)
