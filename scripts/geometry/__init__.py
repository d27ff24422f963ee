"""Geometry, written once: voxel <-> world millimetres, the half-voxel inside rule, displacement NIfTI files.

- :mod:`.coordinates`: points (``voxel_to_world_points``, ``world_to_voxel_points``, ``grid_world_points``,
  ``grid_voxel_positions``),
  displacement vectors (``voxel_to_world_displacement``, ``world_to_voxel_displacement``) and
  ``inside_within_half_voxel``;
- :mod:`.nifti_geometry`: a reference file's qform/sform carried onto new images (``NiftiGeometry``);
- :mod:`.displacement_nifti`: the displacement-field convention (``DISPLACEMENT_CONVENTION``, intent
  ``DISPLACEMENT_INTENT`` = 1006) and ``write_displacement_nifti``/``read_displacement_nifti``.
"""

from scripts.geometry.coordinates import (
    grid_voxel_positions,
    grid_world_points,
    inside_within_half_voxel,
    voxel_to_world_displacement,
    voxel_to_world_points,
    world_to_voxel_displacement,
    world_to_voxel_points,
)
from scripts.geometry.displacement_nifti import (
    DISPLACEMENT_CONVENTION,
    DISPLACEMENT_INTENT,
    displacement_nifti_image,
    read_displacement_nifti,
    to_nifti_vector_layout,
    write_displacement_nifti,
)
from scripts.geometry.nifti_geometry import NiftiGeometry

__all__ = [
    "DISPLACEMENT_CONVENTION",
    "DISPLACEMENT_INTENT",
    "NiftiGeometry",
    "displacement_nifti_image",
    "grid_voxel_positions",
    "grid_world_points",
    "inside_within_half_voxel",
    "read_displacement_nifti",
    "to_nifti_vector_layout",
    "voxel_to_world_displacement",
    "voxel_to_world_points",
    "world_to_voxel_displacement",
    "world_to_voxel_points",
    "write_displacement_nifti",
]
