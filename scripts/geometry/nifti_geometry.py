"""The orientation part of a NIfTI header (qform and sform with their codes), copied onto new images.

Outputs in a reference image's space copy only its geometry, never its data type or intensity scaling (a float
warped image must not be squeezed into the int16 of an ACDC frame).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import nibabel as nib
import numpy as np
import torch

__all__ = ["NiftiGeometry"]

# the header fields that define a NIfTI-1 file's voxel -> world mapping (qform, sform and their codes)
GEOMETRY_FIELDS = (
    "dim",
    "pixdim",
    "qform_code",
    "sform_code",
    "quatern_b",
    "quatern_c",
    "quatern_d",
    "qoffset_x",
    "qoffset_y",
    "qoffset_z",
    "srow_x",
    "srow_y",
    "srow_z",
)


class NiftiGeometry:
    """The qform/sform (and codes) of a reference NIfTI file, or of a bare affine.

    Args:
        reference: a NIfTI path or a loaded NIfTI image whose header geometry to copy, or a (4, 4) affine (RAS mm
            <- voxel index; stored as qform and sform, code 1).

    Attributes:
        affine: (4, 4) float64, the affine nibabel (and MONAI) read from the reference.
    """

    def __init__(self, reference: str | os.PathLike | nib.Nifti1Image | np.ndarray | torch.Tensor) -> None:
        if isinstance(reference, (str, os.PathLike, nib.Nifti1Image)):
            header = (nib.load(str(reference)) if isinstance(reference, (str, os.PathLike)) else reference).header
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

    @classmethod
    def from_header_fields(cls, fields: Mapping[str, Any]) -> NiftiGeometry:
        """The geometry of a file from its header fields by name (e.g. the metadata MONAI's ``NibabelReader`` puts
        on a loaded image), without opening the file again."""
        header = nib.Nifti1Header()
        for name in GEOMETRY_FIELDS:
            header[name] = np.asarray(fields[name])
        return cls(nib.Nifti1Image(np.zeros((1, 1, 1), np.uint8), None, header))

    def image(self, data: np.ndarray) -> nib.Nifti1Image:
        """A NIfTI image of ``data`` (spatial axes first) carrying this geometry, units mm and seconds."""
        image = nib.Nifti1Image(data, self.affine)
        image.set_qform(self.qform if self.qform_code else None, code=self.qform_code)
        image.set_sform(self.sform if self.sform_code else None, code=self.sform_code)
        image.header.set_xyzt_units("mm", "sec")
        return image
