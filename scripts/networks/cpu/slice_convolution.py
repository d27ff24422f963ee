"""3-D convolutions with in-plane kernels (kh, kw, 1) computed as 2-D convolutions of the slices.

A kernel one voxel deep never mixes slices: the 3-D convolution is a 2-D convolution of every slice
with the same kernel, and the slices can form the batch of one ``conv2d``. The numbers are the same
on every device. The reason to do it is PyTorch's CPU dispatch: a batch-1 ``conv3d`` whose
N x C x H x W is at most 20,480 and whose kernel is not larger than 3 in both of its last two axes
goes to PyTorch's reference kernel (``slow_conv3d``), several times slower than oneDNN, and returns
the standard memory layout. At batch 1 that is most of the coarse flow-head convolutions; as a
slice batch (16 slices for cine MRI) ``conv2d`` goes to oneDNN.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..anatomical_memory import AnatomicalMemory
from .memory_layout import is_channels_last, to_layout

__all__ = ["SMALL_INPUT_ELEMENTS", "SliceConv3d", "SliceConvolutionMemory", "conv3d", "runs_as_slice_convolution"]

# PyTorch's CPU dispatch sends batch-1 convolutions with N*C*H*W up to this many elements to slow_conv3d.
SMALL_INPUT_ELEMENTS = 20480


def _depth(value: int | Sequence[int]) -> int:
    return value if isinstance(value, int) else int(value[-1])


def _in_plane(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def runs_as_slice_convolution(
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> bool:
    """Whether :func:`conv3d` computes this convolution slice by slice.

    Only batch-1 inputs of at most ``SMALL_INPUT_ELEMENTS`` C x H x W elements with a kernel one voxel
    deep (and depth stride 1, no depth padding or dilation, no groups) do; larger inputs and batches
    already get oneDNN's 3-D kernels, and there the slice batch would only add two layout copies.
    """
    if x.dim() != 5 or isinstance(padding, str) or groups != 1 or weight.shape[-1] != 1:
        return False
    if (_depth(stride), _depth(padding), _depth(dilation)) != (1, 0, 1):
        return False
    return x.shape[0] == 1 and x.shape[1] * x.shape[2] * x.shape[3] <= SMALL_INPUT_ELEMENTS


def conv3d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> torch.Tensor:
    """``F.conv3d`` with the same arguments and result; small batch-1 in-plane convolutions run per slice.

    Args:
        x: (B, C_in, H, W, D) in either memory layout.
        weight: (C_out, C_in, kh, kw, kd).

    Returns:
        (B, C_out, H', W', D'); a slice-wise result keeps the input's layout (channels-last or standard).
    """
    if not runs_as_slice_convolution(x, weight, stride, padding, dilation, groups):
        return F.conv3d(x, weight, bias, stride, padding, dilation, groups)
    batch, _, _, _, depth = x.shape
    slices = x.permute(0, 4, 1, 2, 3).reshape(batch * depth, *x.shape[1:4])  # (B*D, C, H, W)
    out = F.conv2d(slices, weight[..., 0], bias, _in_plane(stride), _in_plane(padding), _in_plane(dilation))
    out = out.unflatten(0, (batch, depth)).permute(0, 2, 3, 4, 1)  # (B, C_out, H', W', D)
    return to_layout(out, is_channels_last(x))


class SliceConv3d(nn.Conv3d):
    """``nn.Conv3d`` (same parameters and state-dict keys) computed by :func:`conv3d`.

    A kernel stored channels-last gets its input channels-last too (a concatenation of features in mixed
    layouts is standard); other inputs are used as they are.

    Example:
        >>> conv = SliceConv3d(4, 3, (3, 3, 1), padding=(1, 1, 0))
        >>> conv(torch.zeros(1, 4, 16, 16, 8)).shape
        torch.Size([1, 3, 16, 16, 8])
    """

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.padding_mode != "zeros":
            return super()._conv_forward(input, weight, bias)
        if is_channels_last(weight):
            input = to_layout(input, channels_last=True)
        return conv3d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class SliceConvolutionMemory(AnatomicalMemory):
    """:class:`AnatomicalMemory` whose per-voxel products (1x1x1 convolutions) go through :func:`conv3d`."""

    @staticmethod
    def per_voxel_product(features: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        """As :meth:`AnatomicalMemory.per_voxel_product`: (B, K, H, W, D), (M, K) -> (B, M, H, W, D)."""
        return conv3d(features, matrix[..., None, None, None])
