"""MONAI's Warp and DVF2DDF with a reference grid that is built once per shape instead of on every call."""

from __future__ import annotations

import torch
from monai.networks.blocks import DVF2DDF, Warp

__all__ = ["GridCachingWarp", "scaling_and_squaring"]


class GridCachingWarp(Warp):
    """``monai.networks.blocks.Warp`` whose identity grid is cached per (shape, device, dtype).

    MONAI 1.6.1 means to cache the grid but compares the cached (B, 3, H, W, D) shape from index 1
    with the field's (H, W, D), so the test never passes and every call builds the grid anew (an
    arange, a meshgrid and two stacks). One Warp serves every pyramid level here, so the cache holds
    one grid per level. Grids made under ``torch.inference_mode`` are inference tensors and are kept
    apart from the others. The warping itself is MONAI's, unchanged.

    Example:
        >>> warp = GridCachingWarp(mode="bilinear", padding_mode="zeros")
        >>> image = torch.arange(8.0).view(1, 1, 8, 1, 1).expand(1, 1, 8, 4, 2).contiguous()
        >>> shift = torch.zeros(1, 3, 8, 4, 2)
        >>> shift[:, 0] = 1.0
        >>> [round(v, 4) for v in warp(image, shift)[0, 0, :, 0, 0].tolist()]  # warped(x) = image(x + 1), zeros outside
        [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 0.0]
    """

    max_cached_grids = 16

    def __init__(self, mode: str = "bilinear", padding_mode: str = "zeros") -> None:
        super().__init__(mode=mode, padding_mode=padding_mode)
        self._grids: dict[tuple, torch.Tensor] = {}

    def get_reference_grid(self, ddf: torch.Tensor, jitter: bool = False, seed: int = 0) -> torch.Tensor:
        """The identity grid (B, 3, H, W, D) of voxel indices for a ``ddf`` of shape (B, 3, H, W, D)."""
        if jitter:
            return super().get_reference_grid(ddf, jitter=jitter, seed=seed)
        key = (tuple(ddf.shape), ddf.device, ddf.dtype, torch.is_inference_mode_enabled())
        grid = self._grids.get(key)
        if grid is None:
            self.ref_grid = None  # MONAI's own single-entry cache: force a fresh grid
            grid = super().get_reference_grid(ddf)
            if len(self._grids) >= self.max_cached_grids:
                self._grids.clear()
            self._grids[key] = grid
        return grid


def scaling_and_squaring(num_steps: int = 7) -> DVF2DDF:
    """MONAI's DVF2DDF (bilinear, zeros padding) integrating through a :class:`GridCachingWarp`."""
    integrate = DVF2DDF(num_steps=num_steps, mode="bilinear", padding_mode="zeros")
    integrate.warp_layer = GridCachingWarp(mode="bilinear", padding_mode="zeros")
    return integrate
