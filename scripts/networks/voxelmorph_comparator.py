"""MONAI's VoxelMorph, adapted to the MemWarp output dict so that it trains and evaluates alike."""

from __future__ import annotations

import torch
from monai.networks.nets import VoxelMorph
from torch import nn

__all__ = ["VoxelMorphComparator"]


class VoxelMorphComparator(nn.Module):
    """MONAI ``VoxelMorph`` (default U-Net backbone, 7 scaling-and-squaring steps) as a comparator.

    The field is returned with its pre-integration velocity as the single "residual", so the MemWarp
    loss regularises it the same way as the pyramid's residuals. No anatomical memory.

    Args:
        integration_steps: scaling-and-squaring steps (0 disables integration).

    Example:
        >>> out = VoxelMorphComparator()(torch.rand(1, 1, 32, 32, 16), torch.rand(1, 1, 32, 32, 16))
        >>> out["ddf"].shape
        torch.Size([1, 3, 32, 32, 16])
    """

    def __init__(self, integration_steps: int = 7) -> None:
        super().__init__()
        self.voxelmorph = VoxelMorph(integration_steps=integration_steps)

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """moving, fixed: (B, 1, H, W, D) -> dict with ddf, warped, level_ddfs, residuals, anatomical_logits."""
        if moving.shape != fixed.shape:
            raise ValueError(f"moving {tuple(moving.shape)} and fixed {tuple(fixed.shape)} must have the same shape")
        net = self.voxelmorph
        velocity = net.backbone(torch.cat([moving, fixed], dim=1))
        ddf = net.dvf2ddf(velocity) if net.diffeomorphic else velocity
        return {
            "ddf": ddf,
            "warped": net.warp(moving, ddf),
            "level_ddfs": [ddf],
            "residuals": [velocity],
            "anatomical_logits": [],
        }
