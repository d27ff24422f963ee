"""The Siamese encoder: one set of weights for the moving and the fixed image."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .blocks import ConvNormAct, KernelSpec, LargeKernelBlock, per_level

__all__ = ["SiameseEncoder", "IN_PLANE_STRIDE"]

# Cardiac cine MRI has few, thick slices (about 16 of 10 mm): the pyramid halves only the in-plane
# axes, so every level keeps all slices.
IN_PLANE_STRIDE = (2, 2, 1)


class SiameseEncoder(nn.Module):
    """Feature pyramid shared by both images, stacked along the batch dimension.

    Level 0 is two plain blocks at full resolution; each coarser level is a strided plain block
    (stride ``(2, 2, 1)``) followed by a large-kernel block.

    Args:
        channels: feature channels per level, finest first, e.g. ``(32, 64, 128, 256, 256)``.
        kernel_size: kernel of the plain blocks, for all levels or per level (see ``per_level``).
        large_kernel: large kernel of the LK blocks, for all levels or per level.
        small_kernel: small kernel of the LK blocks, for all levels or per level.

    Example:
        >>> encoder = SiameseEncoder((4, 8, 8, 8, 8))
        >>> [f.shape[1:] for f in encoder(torch.zeros(2, 1, 64, 64, 8))][-1]
        torch.Size([8, 4, 4, 8])
    """

    def __init__(
        self,
        channels: Sequence[int],
        kernel_size: KernelSpec = 3,
        large_kernel: KernelSpec = 5,
        small_kernel: KernelSpec = 3,
    ) -> None:
        super().__init__()
        self.channels = tuple(channels)
        kernels = per_level(kernel_size, len(channels))
        large, small = per_level(large_kernel, len(channels)), per_level(small_kernel, len(channels))
        levels = [
            nn.Sequential(ConvNormAct(1, channels[0], kernels[0]), ConvNormAct(channels[0], channels[0], kernels[0]))
        ]
        for level in range(1, len(channels)):
            levels.append(
                nn.Sequential(
                    ConvNormAct(channels[level - 1], channels[level], kernels[level], stride=IN_PLANE_STRIDE),
                    LargeKernelBlock(channels[level], large[level], small[level]),
                )
            )
        self.levels = nn.ModuleList(levels)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images (2B, 1, H, W, D), moving then fixed -> features (2B, C_l, H/2^l, W/2^l, D) per level, finest first."""
        features = []
        x = images
        for level in self.levels:
            x = level(x)
            features.append(x)
        return features
