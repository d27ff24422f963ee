"""ANTs SyN (antspyx, optional: only the accuracy benchmark uses it) as a registration "method" on the network grid.

Both images are the preprocessed network-grid tensors (1.8 x 1.8 x 10 mm, 128 x 128 x 16, intensities in [0, 1]),
handed to ANTs with identity direction and zero origin, so ANTs' physical coordinates are ``index * spacing``
along the array axes. The composed forward transform (fixed -> moving, the one that warps the moving image onto the
fixed one) is written by ANTs as one displacement field in mm along those axes; dividing by the spacing gives the
bundle's voxel convention ``warped(x) = moving(x + u(x))``, so every metric treats ANTs exactly like the networks.

Install: ``pip install antspyx==0.6.3`` (it declares numpy<2.4 and scipy<1.16; we ran it with the bundle's pins,
numpy 2.4.6 and scipy 1.17.1, after ``pip install numpy==2.4.6 scipy==1.17.1``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["ANTS_SYN_PARAMETERS", "ants_syn_ddf", "ants_version"]

# antspyx's "SyN": an affine stage (Mattes MI) then symmetric normalisation (Mattes MI), antspyx 0.6.3 defaults
# spelled out so the benchmark states them.
ANTS_SYN_PARAMETERS: Mapping[str, Any] = {
    "type_of_transform": "SyN",
    "aff_metric": "mattes",
    "syn_metric": "mattes",
    "syn_sampling": 32,
    "grad_step": 0.2,
    "flow_sigma": 3,
    "total_sigma": 0,
    "reg_iterations": (40, 20, 0),
    "random_seed": 0,
}


def _ants() -> Any:
    try:
        import ants
    except ImportError as error:
        raise ImportError(
            "the ANTs SyN row needs antspyx (optional): pip install antspyx==0.6.3 (see scripts/benchmark/ants_syn.py)"
        ) from error
    return ants


def ants_version() -> str:
    """antspyx's version string (raises ImportError with the install command when missing)."""
    return str(_ants().__version__)


def ants_syn_ddf(
    moving: np.ndarray,
    fixed: np.ndarray,
    spacing: Sequence[float],
    parameters: Mapping[str, Any] = ANTS_SYN_PARAMETERS,
    threads: int | None = None,
) -> np.ndarray:
    """Register ``moving`` to ``fixed`` with ANTs and return the field in the bundle's voxel convention.

    Args:
        moving, fixed: (H, W, D) float images on the same grid.
        spacing: voxel size in mm along (H, W, D).
        parameters: keyword arguments of ``ants.registration``.
        threads: ITK threads (``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS``); None leaves ITK's default.

    Returns:
        (3, H, W, D) float32 displacement in voxels: channel i along array axis i, fixed voxel x maps to x + u(x).
    """
    ants = _ants()
    if threads is not None:
        os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(int(threads))
    spacing = tuple(float(s) for s in spacing)
    fixed_image = ants.from_numpy(np.ascontiguousarray(fixed, dtype=np.float32), spacing=spacing)
    moving_image = ants.from_numpy(np.ascontiguousarray(moving, dtype=np.float32), spacing=spacing)
    with tempfile.TemporaryDirectory(prefix="ants_syn_") as folder:
        result = ants.registration(
            fixed=fixed_image, moving=moving_image, outprefix=os.path.join(folder, "pair_"), **dict(parameters)
        )
        composed = ants.apply_transforms(
            fixed=fixed_image,
            moving=moving_image,
            transformlist=result["fwdtransforms"],
            compose=os.path.join(folder, "composed_"),
        )
        field = ants.image_read(composed).numpy()  # (H, W, D, 3) mm along the array axes
    return np.ascontiguousarray(np.moveaxis(field, -1, 0) / np.asarray(spacing)[:, None, None, None], np.float32)
