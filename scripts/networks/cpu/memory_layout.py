"""Channels-last (NDHWC) execution on CPU: oneDNN's few-channel 3-D convolutions are several times faster in it.

The MemWarp family's convolutions have few channels (2 to 32 in ``compact``) on large, thin volumes. oneDNN
computes such 3-D convolutions several times faster on channels-last tensors than on the standard (NCDHW) layout,
and takes the layout of a convolution from its input and its kernel together: with the kernels stored
channels-last, every convolution returns channels-last features and the element-wise operations between them
keep that layout. Three places need help, each handled here:

- a concatenation of a channels-last and a standard tensor (the decoder's warped skip features) is standard:
  :class:`~scripts.networks.cpu.slice_convolution.SliceConv3d` hands such an input to a channels-last kernel
  in channels-last layout (one copy, instead of oneDNN's slower mixed-layout path);
- PyTorch's channels-last batch norm is slow with fewer channels than a vector register holds:
  :class:`FewChannelBatchNorm3d`;
- the network's outputs leave in the standard layout, as every consumer expects: :class:`StandardLayoutDecoder`.

The values never change, only where they sit in memory; state-dict keys and shapes are those of the plain modules.
"""

from __future__ import annotations

import torch
from torch import nn

from ..laplacian_decoder import LaplacianWarpingDecoder

__all__ = ["FewChannelBatchNorm3d", "StandardLayoutDecoder", "is_channels_last", "to_layout"]


def is_channels_last(tensor: torch.Tensor) -> bool:
    """Whether a 5-D ``tensor`` is stored channels-last (NDHWC) and not also in the standard layout.

    A one-channel tensor, or one whose spatial size is 1, is contiguous in both layouts; it counts as standard.
    """
    return tensor.is_contiguous(memory_format=torch.channels_last_3d) and not tensor.is_contiguous()


def to_layout(tensor: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Return a 5-D ``tensor`` in channels-last (NDHWC) or standard (NCDHW) memory layout; values are unchanged."""
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format
    return tensor.contiguous(memory_format=layout)


class FewChannelBatchNorm3d(nn.BatchNorm3d):
    """``nn.BatchNorm3d`` (same parameters, buffers and results) that avoids a slow CPU path.

    PyTorch's CPU kernel for channels-last batch norm is several times slower than the standard-layout one
    when there are fewer channels than a vector register holds (measured here: 33 ms vs 9 ms forward for
    4 x 4 x 128 x 128 x 16, including the two layout copies). Such inputs are normalised in the standard
    layout and handed back channels-last; everything else goes straight to ``nn.BatchNorm3d``.

    Example:
        >>> x = torch.randn(2, 4, 8, 8, 4).contiguous(memory_format=torch.channels_last_3d)
        >>> FewChannelBatchNorm3d(4)(x).is_contiguous(memory_format=torch.channels_last_3d)
        True
    """

    few_channels = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W, D) in either memory layout -> normalised x in the same layout."""
        if x.shape[1] < self.few_channels and is_channels_last(x):
            return to_layout(super().forward(x.contiguous()), channels_last=True)
        return super().forward(x)


class StandardLayoutDecoder(LaplacianWarpingDecoder):
    """:class:`LaplacianWarpingDecoder` whose output fields and logits are in the standard layout.

    Inside, the levels run channels-last; what leaves the decoder (and so the network) is standard, as the
    losses, metrics, writers and the final warp of the moving image expect.
    """

    def forward(self, features):  # type: ignore[override]
        """As :meth:`LaplacianWarpingDecoder.forward`; every returned tensor is standard-layout contiguous."""
        return {
            name: [tensor.contiguous() for tensor in tensors] for name, tensors in super().forward(features).items()
        }
