"""The anatomical memory: slots of learned filters addressed by the fixed image's anatomy.

Notation of the MemWarp paper: ``M = g(I_N)`` is the memory (N slots), ``J`` the per-voxel
anatomical probabilities over the slots, ``w(x) = sum_k J_k(x) m_k`` the dynamic filter at voxel
``x``; applying ``w(x)`` to the flow features ``F(x)`` gives a flow that may change abruptly where
the anatomy changes, which is how MemWarp keeps motion discontinuous at organ boundaries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from scripts.labels import NUM_CLASSES

__all__ = ["AnatomicalMemory"]


class AnatomicalMemory(nn.Module):
    """A memory of ``num_slots`` filter banks, each mapping ``flow_feature_channels`` features to a 3-D flow.

    The memory matrix is produced by an MLP from the N x N identity, so each slot is a learned,
    L2-normalised vector of length ``3 * flow_feature_channels`` (a 3 x C filter bank). One instance
    is shared by the finest pyramid levels, so the same anatomy selects the same filters everywhere.

    Args:
        num_slots: N, one slot per anatomical class (background, RV, LV myocardium, LV blood pool).
        flow_feature_channels: C, the channels of the flow features the filters apply to.
        hidden_features: widths of the MLP's hidden layers (paper: 1024, 2048).
        temperature: softmax temperature of the slot addressing (paper: 0.1).

    Example:
        >>> memory = AnatomicalMemory(4, 8, (16, 32))
        >>> flow, logits, confidence = memory(torch.randn(1, 24, 8, 8, 4), torch.randn(1, 8, 8, 8, 4))
        >>> flow.shape, logits.shape, confidence.shape
        (torch.Size([1, 3, 8, 8, 4]), torch.Size([1, 4, 8, 8, 4]), torch.Size([1, 1, 8, 8, 4]))
    """

    def __init__(
        self,
        num_slots: int = NUM_CLASSES,
        flow_feature_channels: int = 64,
        hidden_features: Sequence[int] = (1024, 2048),
        temperature: float = 0.1,
    ) -> None:
        super().__init__()
        if num_slots < 2:
            raise ValueError(f"the memory needs at least 2 slots, got {num_slots}")
        self.num_slots = num_slots
        self.flow_feature_channels = flow_feature_channels
        self.temperature = temperature
        self.register_buffer("slot_identity", torch.eye(num_slots), persistent=False)
        layers: list[nn.Module] = []
        width = num_slots
        for hidden in hidden_features:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, 3 * flow_feature_channels))
        self.generator = nn.Sequential(*layers)

    @property
    def slot_length(self) -> int:
        """Length of one slot vector (3C): also the channels a query must have."""
        return 3 * self.flow_feature_channels

    @staticmethod
    def per_voxel_product(features: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        """``matrix`` applied to the feature vector of every voxel: (B, K, H, W, D), (M, K) -> (B, M, H, W, D).

        A 1x1x1 convolution: unlike einsum, it keeps the input's memory layout.
        """
        return F.conv3d(features, matrix[..., None, None, None])

    def slots(self) -> torch.Tensor:
        """The memory matrix, one L2-normalised row per slot: (N, 3C)."""
        memory = self.generator(self.slot_identity)
        return F.normalize(memory, dim=1)

    def anatomical_logits(self, query: torch.Tensor, slots: torch.Tensor | None = None) -> torch.Tensor:
        """Slot similarities divided by the temperature.

        Args:
            query: (B, 3C, H, W, D) from the fixed image's decoder features.
            slots: (N, 3C), computed when not given.

        Returns:
            (B, N, H, W, D); ``softmax(dim=1)`` of it is the anatomical probability map J.
        """
        slots = self.slots() if slots is None else slots
        return self.per_voxel_product(query, slots) / self.temperature

    def dynamic_filters(self, probabilities: torch.Tensor, slots: torch.Tensor | None = None) -> torch.Tensor:
        """Per-voxel filters w(x) = sum_k J_k(x) m_k, a convex combination of the slots.

        Args:
            probabilities: (B, N, H, W, D), summing to 1 over N.
            slots: (N, 3C), computed when not given.

        Returns:
            (B, 3, C, H, W, D): at every voxel, a 3 x C matrix mapping flow features to a flow.
        """
        slots = self.slots() if slots is None else slots
        filters = torch.einsum("bn...,nk->bk...", probabilities, slots)
        return filters.reshape(filters.shape[0], 3, self.flow_feature_channels, *filters.shape[2:])

    def forward(
        self, query: torch.Tensor, flow_features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Address the memory with ``query`` and filter ``flow_features`` with the addressed slots.

        Args:
            query: (B, 3C, H, W, D), from the FIXED image's features only.
            flow_features: (B, C, H, W, D), F.

        Returns:
            flow: (B, 3, H, W, D), sum_c w_c(x) F_c(x).
            logits: (B, N, H, W, D), anatomical logits already divided by the temperature.
            confidence: (B, 1, H, W, D), 1 - H(J) / log N, in [0, 1].
        """
        slots = self.slots()
        logits = self.anatomical_logits(query, slots)
        probabilities = torch.softmax(logits, dim=1)
        # By linearity, sum_k J_k (m_k F) equals (sum_k J_k m_k) F but never materialises the
        # (B, 3, C, H, W, D) filter tensor: N per-slot flows cost far less memory at full resolution.
        slot_filters = slots.reshape(3 * self.num_slots, self.flow_feature_channels)
        slot_flows = self.per_voxel_product(flow_features, slot_filters).unflatten(1, (self.num_slots, 3))
        flow = (probabilities.unsqueeze(2) * slot_flows).sum(dim=1)
        entropy = -(probabilities * torch.log_softmax(logits, dim=1)).sum(dim=1, keepdim=True)
        confidence = 1.0 - entropy / math.log(self.num_slots)
        return flow, logits, confidence
