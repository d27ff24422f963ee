"""Flow heads: from the decoder features of both images to a residual displacement field."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .anatomical_memory import AnatomicalMemory
from .blocks import ConvNormAct, as_triple, same_padding

__all__ = ["DirectFlowHead", "MemoryFlowHead", "pair_features", "halve_in_plane"]


def pair_features(fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
    """The head's input cat(f + m, f - m): symmetric agreement and signed difference. (B, 2C, ...)."""
    return torch.cat([fixed + moving, fixed - moving], dim=1)


def halve_in_plane(flow: torch.Tensor) -> torch.Tensor:
    """Multiply the in-plane components (channels 0 and 1) of a (B, 3, H, W, D) flow by 1/2, as the paper's heads do."""
    scale = flow.new_tensor([0.5, 0.5, 1.0]).view(1, 3, *([1] * (flow.dim() - 2)))
    return flow * scale


def zero_init_conv(in_channels: int, out_channels: int, kernel_size: int | Sequence[int], std: float) -> nn.Conv3d:
    """A convolution whose weights start at N(0, std) and bias at zero, so the first fields are near identity."""
    kernel = as_triple(kernel_size)
    conv = nn.Conv3d(in_channels, out_channels, kernel, padding=same_padding(kernel))
    nn.init.normal_(conv.weight, mean=0.0, std=std)
    nn.init.zeros_(conv.bias)
    return conv


class DirectFlowHead(nn.Module):
    """Plain head: cat(f + m, f - m) -> conv-BN-PReLU -> Conv3d to 3 channels (in-plane x 1/2).

    Args:
        feature_channels: channels of each image's decoder features (the head reads twice as many).
        hidden_channels: width of the conv-BN-PReLU layer.
        kernel_size: kernel of both convolutions.

    Example:
        >>> DirectFlowHead(8, 8)(torch.zeros(1, 8, 8, 8, 4), torch.zeros(1, 8, 8, 8, 4)).shape
        torch.Size([1, 3, 8, 8, 4])
    """

    def __init__(self, feature_channels: int, hidden_channels: int, kernel_size: int | Sequence[int] = 3) -> None:
        super().__init__()
        self.hidden = ConvNormAct(2 * feature_channels, hidden_channels, kernel_size)
        self.to_flow = zero_init_conv(hidden_channels, 3, kernel_size, std=1e-5)

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        """fixed, moving: (B, C, H, W, D) -> residual flow (B, 3, H, W, D) in voxel units."""
        return halve_in_plane(self.to_flow(self.hidden(pair_features(fixed, moving))))


class MemoryFlowHead(nn.Module):
    """Memory head: flow features filtered by anatomy-addressed slots of a shared :class:`AnatomicalMemory`.

    The flow features F come from cat(f + m, f - m); the query comes from the FIXED image's features
    only, so the anatomical probabilities are a segmentation of the fixed image. Where the addressing
    is uncertain (high entropy), a plain convolution of F takes over:
    ``residual = conf * memory_flow + (1 - conf) * conv(F)``.

    Args:
        feature_channels: channels of each image's decoder features at this level.
        hidden_channels: width of the conv-BN-PReLU layers of the flow-feature and query branches.
        memory: the memory shared between levels (not owned by one head).
        kernel_size: kernel of the flow-feature and fallback convolutions.

    Example:
        >>> memory = AnatomicalMemory(4, 8, (16, 32))
        >>> head = MemoryFlowHead(8, 8, memory)
        >>> flow, logits = head(torch.zeros(1, 8, 8, 8, 4), torch.zeros(1, 8, 8, 8, 4))
        >>> flow.shape, logits.shape
        (torch.Size([1, 3, 8, 8, 4]), torch.Size([1, 4, 8, 8, 4]))
    """

    def __init__(
        self,
        feature_channels: int,
        hidden_channels: int,
        memory: AnatomicalMemory,
        kernel_size: int | Sequence[int] = 3,
    ) -> None:
        super().__init__()
        kernel = as_triple(kernel_size)
        flow_channels = memory.flow_feature_channels
        self.flow_features = nn.Sequential(
            ConvNormAct(2 * feature_channels, hidden_channels, kernel),
            # Small initial flow features make the first fields near identity whatever the addressing.
            zero_init_conv(hidden_channels, flow_channels, kernel, std=1e-5),
        )
        self.query = nn.Sequential(
            ConvNormAct(feature_channels, hidden_channels, kernel),
            nn.Conv3d(hidden_channels, memory.slot_length, kernel_size=1),
        )
        self.fallback = zero_init_conv(flow_channels, 3, kernel, std=1e-5)
        # Registered through a list so the shared memory's parameters belong to the parent model once.
        self._memory = [memory]

    @property
    def memory(self) -> AnatomicalMemory:
        """The shared anatomical memory."""
        return self._memory[0]

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """fixed, moving: (B, C, H, W, D) -> (residual flow (B, 3, H, W, D) voxel units, logits (B, N, H, W, D))."""
        flow_features = self.flow_features(pair_features(fixed, moving))
        memory_flow, logits, confidence = self.memory(self.query(fixed), flow_features)
        residual = confidence * memory_flow + (1.0 - confidence) * self.fallback(flow_features)
        return halve_in_plane(residual), logits
