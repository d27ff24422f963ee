"""The MemWarp network family, one idea per module.

- blocks: plain conv-BN-PReLU block, large-kernel block, in-plane upsampling.
- encoder: the Siamese encoder with in-plane-only downsampling.
- anatomical_memory: memory slots, anatomical addressing, dynamic filters, confidence.
- flow_heads: plain and memory flow heads reading cat(f + m, f - m).
- fields: field upsampling and input-size checks.
- laplacian_decoder: the coarse-to-fine warping decoder.
- memwarp: the assembled model and its ablation switch.
- voxelmorph_comparator: MONAI VoxelMorph with the same output dict.
- ddf_network: the bundle's network_def wrapper.
- presets: "paper", "compact" (shipped) and "tiny" (tests).
- cpu: the CPU execution tricks (slice convolutions, channels-last layout, batch-norm folding) as one pass,
  ``cpu.optimise_for_cpu(network)``, applied by whoever runs the network on a CPU.

The networks warp through MONAI's Warp with a working grid cache (``scripts.monai_compat.GridCachingWarp``).
"""

from . import cpu
from .anatomical_memory import AnatomicalMemory
from .blocks import ConvNormAct, LargeKernelBlock, UpsampleInPlane
from .ddf_network import DisplacementFieldNetwork
from .encoder import SiameseEncoder
from .fields import check_pyramid_size, upsample_field_in_plane
from .flow_heads import DirectFlowHead, MemoryFlowHead
from .laplacian_decoder import LaplacianWarpingDecoder
from .memwarp import MEMORY_LEVELS, MEMORY_VARIANTS, VARIANTS, MemWarp
from .presets import PRESETS, bundle_network, memwarp_network, registration_network
from .voxelmorph_comparator import VoxelMorphComparator

__all__ = [
    "AnatomicalMemory",
    "ConvNormAct",
    "DirectFlowHead",
    "DisplacementFieldNetwork",
    "LaplacianWarpingDecoder",
    "LargeKernelBlock",
    "MEMORY_LEVELS",
    "MemWarp",
    "MemoryFlowHead",
    "PRESETS",
    "SiameseEncoder",
    "UpsampleInPlane",
    "MEMORY_VARIANTS",
    "VARIANTS",
    "VoxelMorphComparator",
    "bundle_network",
    "cpu",
    "check_pyramid_size",
    "memwarp_network",
    "registration_network",
    "upsample_field_in_plane",
]
