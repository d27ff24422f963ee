"""Evaluation-mode re-parameterisation: batch norms folded into convolutions, large-kernel blocks merged into one.

A batch norm that uses its running statistics is an affine map per channel, so ``norm(conv(x))`` is one
convolution with scaled weights and a shifted bias; a large-kernel block's three branches and its identity
are then one convolution whose kernel is the sum of the branch kernels zero-padded to the largest (as in
RepVGG). The function is the same up to float rounding, and three convolutions, three normalisations and
three additions become one convolution. The folded weights are computed from the current parameters at
every evaluation-mode call, so nothing is stored and training mode is untouched.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..blocks import ConvNormAct, LargeKernelBlock, same_padding
from .slice_convolution import conv3d

__all__ = ["FoldedConvNormAct", "MergedLargeKernelBlock", "fold_batch_norm", "merged_large_kernel"]


def fold_batch_norm(conv: nn.Conv3d, norm: nn.BatchNorm3d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of the single convolution that equals ``norm(conv(x))`` when ``norm`` uses running statistics.

    Returns:
        weight (C_out, C_in, k...) and bias (C_out,): ``conv.weight * s`` and ``(b - mean) * s + beta`` with
        ``s = gamma / sqrt(var + eps)``.
    """
    scale = torch.rsqrt(norm.running_var + norm.eps)  # type: ignore[operator]
    shift = -norm.running_mean * scale  # type: ignore[operator]
    if norm.affine:
        scale, shift = scale * norm.weight, shift * norm.weight + norm.bias
    bias = shift if conv.bias is None else shift + conv.bias * scale
    return conv.weight * scale.view(-1, 1, 1, 1, 1), bias


def _uses_running_statistics(norm: nn.BatchNorm3d) -> bool:
    return not norm.training and norm.running_var is not None


def merged_large_kernel(block: LargeKernelBlock) -> tuple[torch.Tensor, torch.Tensor]:
    """The one convolution equal to ``block`` before its activation, in evaluation mode: (C, C, k...), (C,).

    Its kernel size is the largest branch kernel along each axis, e.g. (5, 5, 3) for a (5, 5, 1) large and a
    (3, 3, 3) small kernel; the identity is a centred delta kernel.
    """
    folded = [fold_batch_norm(branch[0], branch[1]) for branch in block.branches]
    reference = folded[0][0]
    channels = reference.shape[0]
    identity = torch.eye(channels, dtype=reference.dtype, device=reference.device).view(channels, channels, 1, 1, 1)
    weights = [weight for weight, _ in folded] + [identity]
    merged_kernel = [max(sizes) for sizes in zip(*(weight.shape[2:] for weight in weights))]
    merged = sum(F.pad(weight, _centring_padding(weight.shape[2:], merged_kernel)) for weight in weights)
    return merged, sum(bias for _, bias in folded)  # type: ignore[return-value]


def _centring_padding(kernel: torch.Size, target: list[int]) -> list[int]:
    """F.pad amounts (last axis first) that centre a kernel of size ``kernel`` in ``target``."""
    padding: list[int] = []
    for size, goal in zip(reversed(kernel), reversed(target)):
        padding += [(goal - size) // 2] * 2
    return padding


class FoldedConvNormAct(ConvNormAct):
    """:class:`ConvNormAct` computed as one convolution (batch norm folded in) in evaluation mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, H, W, D) -> (B, C_out, H / stride, W / stride, D / stride)."""
        conv, norm, activation = self[0], self[1], self[2]
        if not _uses_running_statistics(norm):
            return super().forward(x)
        weight, bias = fold_batch_norm(conv, norm)
        return activation(conv._conv_forward(x, weight, bias))


class MergedLargeKernelBlock(LargeKernelBlock):
    """:class:`LargeKernelBlock` computed as one convolution (:func:`merged_large_kernel`) in evaluation mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W, D) -> (B, C, H, W, D)."""
        if not all(_uses_running_statistics(branch[1]) for branch in self.branches):
            return super().forward(x)
        weight, bias = merged_large_kernel(self)
        return self.activation(conv3d(x, weight, bias, padding=same_padding(weight.shape[2:])))
