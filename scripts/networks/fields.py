"""Operations on displacement fields in voxel units (channel i = displacement along spatial axis i)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["upsample_field_in_plane", "check_pyramid_size", "is_channels_last", "to_layout", "weights_to_layout"]


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
            f"got spatial size {tuple(moving.shape[2:])}. Crop or pad the images, e.g. to 128 x 128 x 16."
        )


def is_channels_last(tensor: torch.Tensor) -> bool:
    """Whether a 5-D ``tensor`` is stored channels-last (NDHWC) and not also in the standard layout.

    A one-channel tensor, or one whose spatial size is 1, is contiguous in both layouts; it counts as standard.
    """
    return tensor.is_contiguous(memory_format=torch.channels_last_3d) and not tensor.is_contiguous()


def to_layout(tensor: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Return a 5-D ``tensor`` in channels-last (NDHWC) or standard (NCDHW) memory layout; values are unchanged.

    oneDNN's 3-D convolutions with few channels run several times faster channels-last, while wider
    ones at coarse levels are not helped; the network therefore chooses the layout per level. Mixed
    layouts inside one level would send convolutions down the slow conversion path.
    """
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format
    return tensor.contiguous(memory_format=layout)


def weights_to_layout(module: nn.Module, channels_last: bool) -> nn.Module:
    """Store ``module``'s convolution kernels channels-last when its level computes channels-last; returns it.

    oneDNN takes the layout of a convolution from its input and its kernel together: with standard-layout
    kernels, a one-channel input (the images, whose two layouts coincide) and PyTorch's own batch-1
    fallback convolutions give standard-layout outputs, and every later operation of the level pays a
    layout conversion. The values are unchanged; checkpoints load either way.
    """
    if channels_last:
        module.to(memory_format=torch.channels_last_3d)
    return module
