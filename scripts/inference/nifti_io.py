"""NIfTI writing of the outputs: the fixed file's geometry on every fixed-space output, fresh dtype and scaling.

Outputs copy only the fixed file's geometry (qform and sform with their codes, spatial units), never its data
type or intensity scaling, so a float warped image is not squeezed into the int16 of an ACDC frame.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from scripts.inference.displacement import DISPLACEMENT_INTENT, to_nifti_vector_layout

__all__ = ["Geometry", "save_displacement", "save_volume"]


class Geometry:
    """The qform/sform (and codes) of a reference NIfTI file, or of a bare affine.

    Args:
        reference: a NIfTI path whose header geometry to copy, or a (4, 4) affine (qform and sform, code 1).
    """

    def __init__(self, reference: str | os.PathLike | np.ndarray | torch.Tensor) -> None:
        if isinstance(reference, (str, os.PathLike)):
            header = nib.load(str(reference)).header
            self.qform, qcode = header.get_qform(coded=True)
            self.sform, scode = header.get_sform(coded=True)
            self.qform_code, self.sform_code = int(qcode or 0), int(scode or 0)
            self.affine = header.get_best_affine()
        else:
            affine = reference.detach().cpu().numpy() if isinstance(reference, torch.Tensor) else reference
            self.affine = np.asarray(affine, dtype=np.float64)
            self.qform, self.sform, self.qform_code, self.sform_code = self.affine, self.affine, 1, 1
        if self.qform_code == 0 and self.sform_code == 0:
            # no coded orientation: state the affine that nibabel (and MONAI) used, so viewers agree with us
            self.sform, self.sform_code = self.affine, 1

    def image(self, data: np.ndarray) -> nib.Nifti1Image:
        """A NIfTI image of ``data`` (spatial axes first) carrying this geometry."""
        image = nib.Nifti1Image(data, self.affine)
        image.set_qform(self.qform if self.qform_code else None, code=self.qform_code)
        image.set_sform(self.sform if self.sform_code else None, code=self.sform_code)
        image.header.set_xyzt_units("mm", "sec")
        return image


def _numpy(data: torch.Tensor | np.ndarray) -> np.ndarray:
    return data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else np.asarray(data)


def save_volume(
    data: torch.Tensor | np.ndarray, geometry: Geometry, path: str | os.PathLike, dtype=np.float32, description=""
) -> Path:
    """Save an (X, Y, Z) or (1, X, Y, Z) volume as ``dtype`` with ``geometry``; returns the path."""
    array = _numpy(data)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if dtype == np.uint8:
        array = np.rint(array)
    image = geometry.image(np.ascontiguousarray(array.astype(dtype)))
    image.header.set_data_dtype(dtype)
    if description:
        image.header["descrip"] = description[:79].encode()
    nib.save(image, str(path))
    return Path(path)


def save_displacement(
    displacement_mm: torch.Tensor | np.ndarray, geometry: Geometry, path: str | os.PathLike, name: str = "ddf_mm_RAS"
) -> Path:
    """Save a (3, X, Y, Z) world-RAS mm field as a NIfTI displacement vector image (X, Y, Z, 1, 3), intent 1006."""
    image = geometry.image(to_nifti_vector_layout(_numpy(displacement_mm)))
    image.header.set_data_dtype(np.float32)
    image.header.set_intent(DISPLACEMENT_INTENT, name=name)
    nib.save(image, str(path))
    return Path(path)
