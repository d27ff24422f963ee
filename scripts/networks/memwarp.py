"""The assembled MemWarp network family: LKU-Net baseline, LapWarp and MemWarp behind one switch."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from scripts.labels import NUM_CLASSES
from scripts.monai_compat import GridCachingWarp

from .anatomical_memory import AnatomicalMemory
from .blocks import KernelSpec, per_level
from .encoder import SiameseEncoder
from .fields import check_pyramid_size
from .flow_heads import DirectFlowHead, MemoryFlowHead
from .laplacian_decoder import LaplacianWarpingDecoder

__all__ = ["MemWarp", "VARIANTS", "MEMORY_LEVELS", "MEMORY_VARIANTS"]

VARIANTS = ("memwarp", "lapwarp", "lkunet", "memwarp_no_pyramid")
# the variants whose flow heads filter their features with the anatomical memory
MEMORY_VARIANTS = ("memwarp", "memwarp_no_pyramid")
# The memory serves the three finest levels; coarser levels have too few voxels per structure.
MEMORY_LEVELS = 3


class MemWarp(nn.Module):
    """Discontinuity-preserving cardiac registration (Zhang et al., MICCAI 2024) and its ablations.

    ``variant`` selects what is built (paper Table 2):

    - ``"lkunet"``: Siamese large-kernel U-Net, one flow head at full resolution, no pyramid.
    - ``"lapwarp"``: the Laplacian warping pyramid with plain flow heads at every level.
    - ``"memwarp"``: the pyramid whose three finest heads filter flow features with a shared
      anatomical memory addressed by the fixed image's features.
    - ``"memwarp_no_pyramid"``: the memory without the pyramid (Table 2 #5): LKU-Net's single full-resolution
      flow head, filtered by the memory.

    Args:
        variant: one of ``VARIANTS``.
        channels: encoder/decoder channels per level, finest first (5 levels in the paper).
        head_channels: hidden width of each level's flow head, finest first.
        kernel_size: kernel of the plain conv blocks and heads, for all levels or one per level (finest first).
        large_kernel, small_kernel: kernels of the large-kernel blocks, for all levels or one per level.
        flow_feature_channels: C, the flow features filtered by the memory.
        memory_hidden: hidden widths of the MLP that generates the memory.
        num_classes: N, memory slots = anatomical classes (background, RV, LVM, LVBP).
        temperature: softmax temperature of the memory addressing.
        integration_steps: scaling-and-squaring steps at levels >= 1.

    Returns (forward):
        dict with ``ddf`` (B, 3, H, W, D) the final displacement in voxel units (channel i along
        spatial axis i; ``warped(x) = moving(x + ddf(x))``), ``warped`` (B, 1, H, W, D), and the lists
        ``level_ddfs``, ``residuals``, ``anatomical_logits`` of :class:`LaplacianWarpingDecoder`.

    ``forward`` is :meth:`decode` of the encoder's features of ``cat(moving, fixed)``. To register one image
    against many without encoding it every time (evaluation mode), call :meth:`encode` once per image,
    :meth:`pair_features` per batch of pairs, then :meth:`decode`.

    Example:
        >>> net = MemWarp("memwarp", channels=(4, 8, 8, 8, 8), head_channels=(4, 4, 4, 4, 4),
        ...               flow_feature_channels=4, memory_hidden=(8,))
        >>> out = net(torch.rand(1, 1, 32, 32, 4), torch.rand(1, 1, 32, 32, 4))
        >>> out["ddf"].shape, len(out["anatomical_logits"])
        (torch.Size([1, 3, 32, 32, 4]), 3)
    """

    def __init__(
        self,
        variant: str = "memwarp",
        channels: Sequence[int] = (32, 64, 128, 256, 256),
        head_channels: Sequence[int] = (32, 32, 32, 32, 32),
        kernel_size: KernelSpec = 3,
        large_kernel: KernelSpec = 5,
        small_kernel: KernelSpec = 3,
        flow_feature_channels: int = 64,
        memory_hidden: Sequence[int] = (1024, 2048),
        num_classes: int = NUM_CLASSES,
        temperature: float = 0.1,
        integration_steps: int = 7,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
        if len(head_channels) != len(channels):
            raise ValueError(f"need one head width per level: {len(channels)} levels, {len(head_channels)} widths")
        self.variant = variant
        self.num_levels = len(channels)
        self.encoder = SiameseEncoder(channels, kernel_size, large_kernel, small_kernel)
        self.memory = None
        if variant in MEMORY_VARIANTS:
            self.memory = AnatomicalMemory(num_classes, flow_feature_channels, memory_hidden, temperature)
        heads = []
        kernels = per_level(kernel_size, len(channels))
        for level, (feature_channels, hidden) in enumerate(zip(channels, head_channels)):
            if self.memory is not None and level < MEMORY_LEVELS:
                heads.append(MemoryFlowHead(feature_channels, hidden, self.memory, kernels[level]))
            else:
                heads.append(DirectFlowHead(feature_channels, hidden, kernels[level]))
        self.decoder = LaplacianWarpingDecoder(
            channels,
            heads,
            kernel_size,
            large_kernel,
            small_kernel,
            integration_steps=integration_steps,
            pyramid=variant not in ("lkunet", "memwarp_no_pyramid"),
        )
        self.warp = GridCachingWarp(mode="bilinear", padding_mode="zeros")

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """moving, fixed: (B, 1, H, W, D), H and W divisible by 2^(levels-1) -> the output dict (see class doc)."""
        check_pyramid_size(moving, fixed, self.num_levels)
        # One encoder call for both images: in training mode batch norm normalises moving and fixed together.
        return self.decode(self.encoder(torch.cat([moving, fixed], dim=0)), moving)

    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The Siamese encoder's features of each image on its own, for pairs formed later (:meth:`pair_features`).

        In evaluation mode an image's features do not depend on the rest of its batch, so an image registered
        many times (the ED frame of a cine against every other frame) is encoded once and its features reused;
        the fields equal :meth:`forward`'s up to float rounding. In training mode batch norm pools the batch:
        use :meth:`forward`.

        Args:
            images: (N, 1, H, W, D), H and W divisible by 2^(levels-1).

        Returns:
            features per level, finest first: (N, C_l, H/2^l, W/2^l, D).
        """
        check_pyramid_size(images, images, self.num_levels)
        return self.encoder(images)

    @staticmethod
    def pair_features(
        moving_features: Sequence[torch.Tensor], fixed_features: Sequence[torch.Tensor]
    ) -> list[torch.Tensor]:
        """The decoder's input from :meth:`encode` features of B moving and B fixed images, per level.

        Args:
            moving_features, fixed_features: per level, (B, C_l, ...) each; a batch of 1 on either side is expanded
                to the other's B (one image against many).

        Returns:
            per level (2B, C_l, ...): the moving images' features, then the fixed images', as :meth:`forward` stacks
            them.
        """
        paired = []
        for moving, fixed in zip(moving_features, fixed_features):
            batch = max(moving.shape[0], fixed.shape[0])
            paired.append(torch.cat([moving.expand(batch, *moving.shape[1:]), fixed.expand(batch, *fixed.shape[1:])]))
        return paired

    def decode(
        self, paired_features: Sequence[torch.Tensor], moving: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """The output dict (see the class doc) from paired features (:meth:`pair_features`, or the encoder's
        output for ``cat(moving, fixed)``).

        Args:
            paired_features: per level (2B, C_l, H/2^l, W/2^l, D), the B moving images' features first.
            moving: (B, 1, H, W, D) (or (1, ...), expanded) the moving images warped into ``warped``; None leaves
                ``warped`` out (for callers that need only the fields).
        """
        output: dict[str, torch.Tensor | list[torch.Tensor]] = dict(self.decoder(paired_features))
        ddf = output["level_ddfs"][0]
        output["ddf"] = ddf
        if moving is not None:
            output["warped"] = self.warp(moving.expand(ddf.shape[0], *moving.shape[1:]), ddf)
        return output
