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

from .fields import is_channels_last, to_layout
from .slice_convolution import Conv3d, conv3d

__all__ = [
    "BatchNorm3d",
    "ConvNormAct",
    "LargeKernelBlock",
    "UpsampleInPlane",
    "as_triple",
    "fold_batch_norm",
    "per_level",
    "KernelSpec",
]

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


class BatchNorm3d(nn.BatchNorm3d):
    """``nn.BatchNorm3d`` (same parameters, buffers and results) that avoids a slow CPU path.

    PyTorch's CPU kernel for channels-last (NDHWC) batch norm is several times slower than the
    standard-layout one when there are fewer channels than a vector register holds (measured here:
    33 ms vs 9 ms forward for 4 x 4 x 128 x 128 x 16, including the two layout copies). Such inputs
    are normalised in the standard layout and handed back channels-last; everything else goes
    straight to ``nn.BatchNorm3d``.

    Example:
        >>> x = torch.randn(2, 4, 8, 8, 4).contiguous(memory_format=torch.channels_last_3d)
        >>> BatchNorm3d(4)(x).is_contiguous(memory_format=torch.channels_last_3d)
        True
    """

    few_channels = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W, D) in either memory layout -> normalised x in the same layout."""
        if x.shape[1] < self.few_channels and is_channels_last(x):
            return to_layout(super().forward(x.contiguous()), channels_last=True)
        return super().forward(x)


def fold_batch_norm(conv: nn.Conv3d | nn.ConvTranspose3d, norm: nn.BatchNorm3d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of the single convolution that equals ``norm(conv(x))`` when ``norm`` uses running statistics.

    Returns:
        weight shaped like ``conv.weight`` (C_out, C_in, k...) or, transposed, (C_in, C_out, k...), and bias
        (C_out,): ``conv.weight * s`` and ``(b - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)``.
    """
    scale = torch.rsqrt(norm.running_var + norm.eps)  # type: ignore[operator]
    shift = -norm.running_mean * scale  # type: ignore[operator]
    if norm.affine:
        scale, shift = scale * norm.weight, shift * norm.weight + norm.bias
    bias = shift if conv.bias is None else shift + conv.bias * scale
    output_axis = 1 if isinstance(conv, nn.ConvTranspose3d) else 0
    return conv.weight * scale.view([-1 if axis == output_axis else 1 for axis in range(5)]), bias


def _folds(norm: nn.BatchNorm3d, training: bool) -> bool:
    """Whether ``norm`` is applied with running statistics, so it can be folded into the preceding convolution."""
    return not training and norm.running_var is not None


class ConvNormAct(nn.Sequential):
    """The plain block: Conv3d, BatchNorm3d, PReLU.

    In evaluation mode the batch norm is folded into the convolution (one convolution instead of a
    convolution and a normalisation: the same function, up to float rounding).

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
            Conv3d(in_channels, out_channels, kernel, stride=as_triple(stride), padding=same_padding(kernel)),
            BatchNorm3d(out_channels),
            nn.PReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, H, W, D) -> (B, C_out, H / stride, W / stride, D / stride)."""
        conv, norm, activation = self[0], self[1], self[2]
        if not _folds(norm, self.training):
            return activation(norm(conv(x)))
        weight, bias = fold_batch_norm(conv, norm)
        return activation(conv3d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups))


class LargeKernelBlock(nn.Module):
    """Large-kernel (LK) block of LKU-Net: BN(conv_large) + BN(conv_small) + BN(conv_1x1) + identity, then PReLU.

    The three parallel branches see the same input; their batch-normalised outputs are summed with
    the input (a residual connection), so the block starts close to the identity map.

    In evaluation mode the block is re-parameterised into ONE convolution (as in RepVGG): each
    branch's batch norm is folded into its kernel, the smaller kernels are zero-padded to the
    largest and the identity becomes a centred delta kernel. The function is the same up to float
    rounding; three convolutions, three normalisations and three additions become one convolution.

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
        kernels = (as_triple(large_kernel), as_triple(small_kernel), (1, 1, 1))
        for kernel in kernels:
            branches.append(
                nn.Sequential(Conv3d(channels, channels, kernel, padding=same_padding(kernel)), BatchNorm3d(channels))
            )
        self.branches = nn.ModuleList(branches)
        self.activation = nn.PReLU()
        # The re-parameterised kernel covers every branch's kernel.
        self.merged_kernel = tuple(max(sizes) for sizes in zip(*kernels))

    def merged_weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The one convolution equal to the block before its activation, in evaluation mode: (C, C, k...), (C,)."""
        reference = self.branches[0][0].weight
        channels = reference.shape[0]
        identity = torch.eye(channels, dtype=reference.dtype, device=reference.device).view(channels, channels, 1, 1, 1)
        folded = [fold_batch_norm(branch[0], branch[1]) for branch in self.branches]
        weights = [weight for weight, _ in folded] + [identity]
        merged = sum(F.pad(weight, self._padding_to_merged(weight)) for weight in weights)
        return merged, sum(bias for _, bias in folded)  # type: ignore[return-value]

    def _padding_to_merged(self, weight: torch.Tensor) -> list[int]:
        """F.pad amounts (last axis first) that centre a (C, C, k...) kernel in ``merged_kernel``."""
        padding: list[int] = []
        for size, target in zip(reversed(weight.shape[2:]), reversed(self.merged_kernel)):
            padding += [(target - size) // 2] * 2
        return padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W, D) -> (B, C, H, W, D)."""
        if not all(_folds(branch[1], self.training) for branch in self.branches):
            out = x
            for branch in self.branches:
                out = out + branch(x)
            return self.activation(out)
        weight, bias = self.merged_weight_and_bias()
        return self.activation(conv3d(x, weight, bias, padding=same_padding(self.merged_kernel)))


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
        """x: (B, C_in, H, W, D) -> (B, C_out, 2H, 2W, D), in x's memory layout."""
        features = self.conv(x)
        upsampled = F.interpolate(features, scale_factor=(2.0, 2.0, 1.0), mode="trilinear", align_corners=False)
        return to_layout(upsampled, is_channels_last(features))
