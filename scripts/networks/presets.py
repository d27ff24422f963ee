"""Named configurations of the MemWarp family: the paper's network and the CPU-trainable compact one."""

from __future__ import annotations

from typing import Any

from torch import nn

from .ddf_network import DisplacementFieldNetwork
from .memwarp import MemWarp
from .voxelmorph_comparator import VoxelMorphComparator

__all__ = ["PRESETS", "memwarp_network", "registration_network", "bundle_network"]

PRESETS: dict[str, dict[str, Any]] = {
    # The paper's configuration (start_channel 32, 5x5x5 large kernels, memory MLP 4-1024-2048-3C, C = 64).
    # Head widths are not given in the paper; 16 everywhere gives 48.50 M parameters (paper: 47.78 M; the
    # (3, 3, 1) upsampling convolutions have 0.54 M more weights than the paper's (2, 2, 1) transposed ones).
    "paper": {
        "channels": (32, 64, 128, 256, 256),
        "head_channels": (16, 16, 16, 16, 16),
        "kernel_size": 3,
        "large_kernel": 5,
        "small_kernel": 3,
        "flow_feature_channels": 64,
        "memory_hidden": (1024, 2048),
    },
    # What we train and ship on CPU (since 0.5.0): same levels, blocks and mechanisms (Siamese LK encoder,
    # Laplacian warping decoder, memory at the three finest levels), chosen for accuracy on unseen images
    # within the inference budget (at most 0.6x MONAI VoxelMorph's time per pair on a CPU):
    # - channels 2, 8, 16, 32, 32, heads 4, 8, 8, 8, 8 and 4 flow-feature channels (12-element memory slots):
    #   0.4.0's thinner preset (half these widths below full resolution) learned less per epoch and segmented
    #   the fixed image worse (phantom memory Dice 66.0 against 75.2 %);
    # - in-plane kernels (3,3,1)/(5,5,1) at levels 0-3, where voxels are 1.8-14.4 mm in-plane but 10 mm
    #   through-plane; (5,5,3) large kernels at levels 3-4 and 3x3x3 plain kernels at level 4 mix slices.
    "compact": {
        "channels": (2, 8, 16, 32, 32),
        "head_channels": (4, 8, 8, 8, 8),
        "kernel_size": ((3, 3, 1), (3, 3, 1), (3, 3, 1), (3, 3, 1), 3),
        "large_kernel": ((3, 3, 1), (5, 5, 1), (5, 5, 1), (5, 5, 3), (5, 5, 3)),
        "small_kernel": ((1, 1, 1), (3, 3, 1), 3, 3, 3),
        "flow_feature_channels": 4,
        "memory_hidden": (64, 128),
    },
    # For unit tests and doc examples only: runs in milliseconds on 32 x 32 x 4 inputs.
    "tiny": {
        "channels": (4, 4, 8, 8, 8),
        "head_channels": (4, 4, 4, 4, 4),
        "kernel_size": 3,
        "large_kernel": 3,
        "small_kernel": 1,
        "flow_feature_channels": 4,
        "memory_hidden": (8,),
    },
}


def memwarp_network(preset: str = "compact", variant: str = "memwarp", **overrides: Any) -> MemWarp:
    """Build a :class:`MemWarp` of the given ``preset`` and ablation ``variant`` (``scripts.networks.VARIANTS``).

    Keyword ``overrides`` replace single preset entries, e.g. ``large_kernel=(5, 5, 5)``.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    return MemWarp(variant=variant, **{**PRESETS[preset], **overrides})


def registration_network(architecture: str = "memwarp", preset: str = "compact", **overrides: Any) -> nn.Module:
    """Build any of the bundle's registration networks: a MemWarp variant (``VARIANTS``) or "voxelmorph"."""
    if architecture == "voxelmorph":
        return VoxelMorphComparator(**overrides)
    return memwarp_network(preset, architecture, **overrides)


def bundle_network(
    architecture: str = "memwarp", preset: str = "compact", **overrides: Any
) -> DisplacementFieldNetwork:
    """The bundle's ``network_def``: :func:`registration_network` inside :class:`DisplacementFieldNetwork`."""
    return DisplacementFieldNetwork(registration_network(architecture, preset, **overrides))
