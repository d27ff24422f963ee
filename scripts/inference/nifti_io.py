"""NIfTI writing of the volume outputs: the fixed file's geometry (:class:`~scripts.geometry.NiftiGeometry`) on
every fixed-space output, with a fresh data type and no intensity scaling.

Displacement fields are written by :func:`scripts.geometry.write_displacement_nifti`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from scripts.compressed_nifti import write_nifti
from scripts.geometry import NiftiGeometry

__all__ = ["save_volume"]


def _numpy(data: torch.Tensor | np.ndarray) -> np.ndarray:
    return data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else np.asarray(data)


def save_volume(
    data: torch.Tensor | np.ndarray, geometry: NiftiGeometry, path: str | os.PathLike, dtype=np.float32, description=""
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
    return write_nifti(image, path, atomic=False)  # inside the pair's folder, moved into place when complete
