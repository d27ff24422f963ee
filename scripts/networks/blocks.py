"""Convolutional building blocks shared by the MemWarp network family.

Every block works on 5-D tensors (batch, channels, H, W, D). Kernel sizes may be anisotropic,
e.g. ``(5, 5, 3)`` for 1.8 x 1.8 x 10 mm cardiac voxels, where a through-plane extent as large as
the in-plane one would mix slices 10 mm apart as if they were neighbours 1.8 mm apart.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ConvNormAct", "KernelSpec", "LargeKernelBlock", "UpsampleInPlane", "as_triple", "per_level", "same_padding"]

# A kernel for every level (an int or 3 ints), or one entry per level, finest first.
KernelSpec = int | Sequence[int] | Sequence[int | Sequence[int]]


def as_triple(value: int | Sequence[int]) -> tuple[int, int, int]:
    """Return ``value`` as a 3-tuple of ints (an int is repeated along the three axes)."""
    if isinstance(value, int):
        return (value, value, value)
    triple = tuple(int(v) for v in value)
    if len(triple) != 3:
        raise ValueError(f"expected an int or 3 ints, got {value!r}")
    return triple  # type: ignore[return-value]


def per_level(kernel: KernelSpec, num_levels: int) -> list[tuple[int, int, int]]:
    """Expand a kernel specification to one 3-tuple per level.

    ``3`` and ``(5, 5, 3)`` apply to every level; ``[(3, 3, 1), (3, 3, 1), 3, 3, 3]`` gives each level
    its own kernel (finest first) and must have ``num_levels`` entries.
    """
    if isinstance(kernel, int) or all(isinstance(k, int) for k in kernel):
        return [as_triple(kernel)] * num_levels  # type: ignore[arg-type]
    kernels = [as_triple(k) for k in kernel]  # type: ignore[arg-type]
    if len(kernels) != num_levels:
        raise ValueError(f"expected one kernel per level ({num_levels}), got {len(kernels)}: {kernel!r}")
    return kernels


def same_padding(kernel_size: Sequence[int]) -> tuple[int, int, int]:
    """Padding that keeps the spatial size of a stride-1 convolution with odd ``kernel_size``."""
    if any(k % 2 == 0 for k in kernel_size):
        raise ValueError(f"kernel sizes must be odd to keep the grid centred, got {tuple(kernel_size)}")
    return tuple(k // 2 for k in kernel_size)  # type: ignore[return-value]


class ConvNormAct(nn.Sequential):
    """The plain block: Conv3d, BatchNorm3d, PReLU.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd kernel size, int or 3 ints.
        stride: stride, int or 3 ints; MemWarp downsamples in-plane only with ``(2, 2, 1)``.

    Example:
        >>> ConvNormAct(1, 8, stride=(2, 2, 1))(torch.zeros(2, 1, 32, 32, 8)).shape
        torch.Size([2, 8, 16, 16, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 3,
        stride: int | Sequence[int] = 1,
    ) -> None:
        kernel = as_triple(kernel_size)
        super().__init__(
            nn.Conv3d(in_channels, out_channels, kernel, stride=as_triple(stride), padding=same_padding(kernel)),
            nn.BatchNorm3d(out_channels),
            nn.PReLU(),
        )


class LargeKernelBlock(nn.Module):
    """Large-kernel (LK) block of LKU-Net: BN(conv_large) + BN(conv_small) + BN(conv_1x1) + identity, then PReLU.

    The three parallel branches see the same input; their batch-normalised outputs are summed with
    the input (a residual connection), so the block starts close to the identity map.

    Args:
        channels: input and output channels (the identity term needs them equal).
        large_kernel: the large kernel, e.g. ``(5, 5, 5)`` (paper) or ``(5, 5, 3)`` (compact).
        small_kernel: the small kernel, e.g. ``(3, 3, 3)``.

    Example:
        >>> LargeKernelBlock(8, (5, 5, 3))(torch.zeros(1, 8, 16, 16, 4)).shape
        torch.Size([1, 8, 16, 16, 4])
    """

    def __init__(
        self,
        channels: int,
        large_kernel: int | Sequence[int] = 5,
        small_kernel: int | Sequence[int] = 3,
    ) -> None:
        super().__init__()
        branches = []
        for kernel in (as_triple(large_kernel), as_triple(small_kernel), (1, 1, 1)):
            convolution = nn.Conv3d(channels, channels, kernel, padding=same_padding(kernel))
            branches.append(nn.Sequential(convolution, nn.BatchNorm3d(channels)))
        self.branches = nn.ModuleList(branches)
        self.activation = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W, D) -> (B, C, H, W, D)."""
        out = x
        for branch in self.branches:
            out = out + branch(x)
        return self.activation(out)


class UpsampleInPlane(nn.Module):
    """Learned in-plane x2 upsampling of features: a (3, 3, 1) conv-BN-PReLU, then bilinear x2 in-plane.

    The paper's decoder upsamples with a transposed convolution of kernel and stride (2, 2, 1). Such a
    convolution computes the even and the odd rows of its output with different kernel entries, and a
    network trained with it learned features that alternate row by row; the memory's softmax (temperature
    0.1) turned that into a segmentation with every other row labelled background (version 0.4.0). A
    convolution at the coarse level followed by interpolation has no such parity: a constant input gives a
    constant output. Convolving before interpolating costs a quarter of the other order.

    Example:
        >>> UpsampleInPlane(16, 8)(torch.zeros(1, 16, 8, 8, 4)).shape
        torch.Size([1, 8, 16, 16, 4])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int] = (3, 3, 1)) -> None:
        super().__init__()
        self.conv = ConvNormAct(in_channels, out_channels, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, H, W, D) -> (B, C_out, 2H, 2W, D)."""
        return F.interpolate(self.conv(x), scale_factor=(2.0, 2.0, 1.0), mode="trilinear", align_corners=False)
