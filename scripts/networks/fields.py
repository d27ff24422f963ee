"""Operations on displacement fields in voxel units (channel i = displacement along spatial axis i)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from scripts.labels import NETWORK_SPATIAL_SIZE

__all__ = ["upsample_field_in_plane", "check_pyramid_size"]


def upsample_field_in_plane(field: torch.Tensor) -> torch.Tensor:
    """Trilinear x2 in-plane upsampling of a (B, 3, H, W, D) field to (B, 3, 2H, 2W, D).

    Displacements are in voxel units of their own level, so the in-plane components double and the
    through-plane component (whose voxel size is unchanged) stays. ``align_corners=True`` as in the
    authors' code.
    """
    upsampled = F.interpolate(field, scale_factor=(2.0, 2.0, 1.0), mode="trilinear", align_corners=True)
    return upsampled * upsampled.new_tensor([2.0, 2.0, 1.0]).view(1, 3, 1, 1, 1)


def check_pyramid_size(moving: torch.Tensor, fixed: torch.Tensor, num_levels: int) -> None:
    """Raise a ValueError unless moving and fixed are (B, 1, H, W, D) alike with H, W divisible by 2^(levels-1)."""
    if moving.dim() != 5 or fixed.dim() != 5:
        raise ValueError(
            f"expected 5-D inputs (batch, 1, H, W, D); got moving {tuple(moving.shape)}, fixed {tuple(fixed.shape)}"
        )
    if moving.shape != fixed.shape:
        raise ValueError(f"moving {tuple(moving.shape)} and fixed {tuple(fixed.shape)} must have the same shape")
    if moving.shape[1] != 1:
        raise ValueError(f"expected single-channel images, got {moving.shape[1]} channels")
    factor = 2 ** (num_levels - 1)
    height, width = moving.shape[2], moving.shape[3]
    if height % factor or width % factor:
        raise ValueError(
            f"the in-plane size must be divisible by {factor} ({num_levels - 1} in-plane halvings); "
            f"got spatial size {tuple(moving.shape[2:])}. Crop or pad the images, e.g. to "
            + " x ".join(str(size) for size in NETWORK_SPATIAL_SIZE)
            + "."
        )
