"""The MemWarp network family, one idea per module.

- blocks: plain conv-BN-PReLU block, large-kernel block, in-plane upsampling.
- slice_convolution: small batch-1 in-plane 3-D convolutions computed as 2-D convolutions of the slices.
- encoder: the Siamese encoder with in-plane-only downsampling.
- anatomical_memory: memory slots, anatomical addressing, dynamic filters, confidence.
- flow_heads: plain and memory flow heads reading cat(f + m, f - m).
- fields: field upsampling, input-size checks and memory layouts.
- warp_layers: MONAI's Warp and DVF2DDF with a working reference-grid cache.
- laplacian_decoder: the coarse-to-fine warping decoder.
- memwarp: the assembled model and its ablation switch.
- voxelmorph_comparator: MONAI VoxelMorph with the same output dict.
- ddf_network: the bundle's network_def wrapper.
- presets: "paper", "compact" (shipped)
  and "tiny" (tests).
"""

from .anatomical_memory import AnatomicalMemory
from .blocks import ConvNormAct, LargeKernelBlock, UpsampleInPlane
from .ddf_network import DisplacementFieldNetwork
from .encoder import SiameseEncoder
from .fields import check_pyramid_size, upsample_field_in_plane
from .flow_heads import DirectFlowHead, MemoryFlowHead
from .laplacian_decoder import LaplacianWarpingDecoder
from .memwarp import MEMORY_LEVELS, VARIANTS, MemWarp
from .presets import PRESETS, bundle_network, memwarp_network, registration_network
from .voxelmorph_comparator import VoxelMorphComparator
from .warp_layers import GridCachingWarp, scaling_and_squaring

__all__ = [
    "AnatomicalMemory",
    "ConvNormAct",
    "DirectFlowHead",
    "DisplacementFieldNetwork",
    "GridCachingWarp",
    "LaplacianWarpingDecoder",
    "LargeKernelBlock",
    "MEMORY_LEVELS",
    "MemWarp",
    "MemoryFlowHead",
    "PRESETS",
    "SiameseEncoder",
    "UpsampleInPlane",
    "VARIANTS",
    "VoxelMorphComparator",
    "bundle_network",
    "check_pyramid_size",
    "memwarp_network",
    "registration_network",
    "scaling_and_squaring",
    "upsample_field_in_plane",
]
