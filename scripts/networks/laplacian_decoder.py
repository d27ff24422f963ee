"""The Laplacian warping decoder: a coarse-to-fine pyramid of residual displacement fields."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from scripts.monai_compat import GridCachingWarp, scaling_and_squaring

from .blocks import ConvNormAct, KernelSpec, LargeKernelBlock, UpsampleInPlane, per_level
from .fields import upsample_field_in_plane
from .flow_heads import MemoryFlowHead

__all__ = ["LaplacianWarpingDecoder"]


class LaplacianWarpingDecoder(nn.Module):
    """Decode Siamese features into a displacement field, coarse to fine.

    With ``pyramid=True`` (LapWarp, MemWarp) every level l predicts a residual ``r_l`` from its decoder
    features, after warping the moving features with what the coarser levels already explain:

    - the moving half of the encoder skip features is warped by the upsampled total field;
    - the moving half of the upsampled decoder features is warped by the upsampled previous step
      (they were already aligned up to the level before it);
    - at levels >= 1 the residual is integrated by scaling and squaring (MONAI's DVF2DDF, 7 steps), at
      level 0 it is not;
    - the fields accumulate additively: ``phi_l = step_l + up(phi_{l+1})``, so the final field is not
      guaranteed to be diffeomorphic (report folding).

    With ``pyramid=False`` (the LKU-Net baseline) the same blocks form a plain U-Net decoder with no
    feature warping and a single head at level 0.

    Args:
        channels: feature channels per level, finest first (as the encoder's).
        heads: one flow head per level, finest first (only ``heads[0]`` is used without the pyramid).
            A head is called as ``head(fixed_features, moving_features)`` and returns a residual, or
            (residual, anatomical logits) for a :class:`MemoryFlowHead`.
        kernel_size, large_kernel, small_kernel: kernels of the plain and LK blocks, for all levels or per level.
        integration_steps: scaling-and-squaring steps at levels >= 1.
        pyramid: predict and warp at every level (True), or only at the finest (False).
    """

    def __init__(
        self,
        channels: Sequence[int],
        heads: Sequence[nn.Module],
        kernel_size: KernelSpec = 3,
        large_kernel: KernelSpec = 5,
        small_kernel: KernelSpec = 3,
        integration_steps: int = 7,
        pyramid: bool = True,
    ) -> None:
        super().__init__()
        if len(heads) != len(channels):
            raise ValueError(f"need one head per level: {len(channels)} levels, {len(heads)} heads")
        self.channels = tuple(channels)
        self.pyramid = pyramid
        kernels = per_level(kernel_size, len(channels))
        large, small = per_level(large_kernel, len(channels)), per_level(small_kernel, len(channels))
        upsample, fuse = [], []
        for level, c in enumerate(channels[:-1]):
            upsample.append(UpsampleInPlane(channels[level + 1], c))
            fuse.append(
                nn.Sequential(ConvNormAct(2 * c, c, kernels[level]), LargeKernelBlock(c, large[level], small[level]))
            )
        self.upsample_features = nn.ModuleList(upsample)
        self.fuse = nn.ModuleList(fuse)
        self.heads = nn.ModuleList(heads if pyramid else heads[:1])
        self.integrate = scaling_and_squaring(integration_steps)
        self.warp = GridCachingWarp(mode="bilinear", padding_mode="zeros")

    @property
    def num_levels(self) -> int:
        """Number of pyramid levels (encoder resolutions)."""
        return len(self.channels)

    def _predict(self, level: int, decoded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the head of ``level`` on the (2B, C, ...) moving-then-fixed decoder features."""
        moving, fixed = decoded.chunk(2, dim=0)
        head = self.heads[level if self.pyramid else 0]
        prediction = head(fixed, moving)
        if isinstance(head, MemoryFlowHead):
            return prediction
        return prediction, None

    def forward(self, features: Sequence[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
        """Decode encoder features into displacement fields.

        Args:
            features: encoder features per level, finest first, each (2B, C_l, H/2^l, W/2^l, D) with
                the moving images in the first B entries.

        Returns:
            dict with lists ordered finest first: ``level_ddfs`` (B, 3, H/2^l, W/2^l, D) total fields,
            ``residuals`` the pre-integration residuals, ``anatomical_logits`` (B, N, ...) for memory
            heads (empty otherwise). All fields are in voxel units of their level.
        """
        coarsest = self.num_levels - 1
        decoded = features[coarsest]
        level_ddfs: list[torch.Tensor] = []
        residuals: list[torch.Tensor] = []
        logits: list[torch.Tensor] = []
        step = total = None
        if self.pyramid:
            residual, level_logits = self._predict(coarsest, decoded)
            step = total = self.integrate(residual)
            self._record(residual, total, level_logits, residuals, level_ddfs, logits)
        for level in range(coarsest - 1, -1, -1):
            upsampled = self.upsample_features[level](decoded)
            skip = features[level]
            if self.pyramid:
                up_total, up_step = upsample_field_in_plane(total), upsample_field_in_plane(step)
                skip_moving, skip_fixed = skip.chunk(2, dim=0)
                up_moving, up_fixed = upsampled.chunk(2, dim=0)
                skip = torch.cat([self.warp(skip_moving, up_total), skip_fixed], dim=0)
                upsampled = torch.cat([self.warp(up_moving, up_step), up_fixed], dim=0)
            decoded = self.fuse[level](torch.cat([skip, upsampled], dim=1))
            if not self.pyramid and level > 0:
                continue
            residual, level_logits = self._predict(level, decoded)
            step = self.integrate(residual) if (level > 0) else residual
            total = step if total is None else step + up_total
            self._record(residual, total, level_logits, residuals, level_ddfs, logits)
        # Recorded coarse to fine; the public order is finest first (level index = list index).
        return {
            "level_ddfs": level_ddfs[::-1],
            "residuals": residuals[::-1],
            "anatomical_logits": logits[::-1],
        }

    @staticmethod
    def _record(residual, total, level_logits, residuals, level_ddfs, logits) -> None:
        residuals.append(residual)
        level_ddfs.append(total)
        if level_logits is not None:
            logits.append(level_logits)
