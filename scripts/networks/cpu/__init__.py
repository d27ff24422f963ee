"""CPU execution of the MemWarp family: one pass, :func:`optimise_for_cpu`, applied to a built network.

The architecture modules (``scripts/networks``) compute the paper's functions with plain PyTorch modules. On
a CPU, three execution tricks compute the same functions faster; they live here and nowhere else:

- small batch-1 in-plane convolutions run as 2-D convolutions of the slices (:mod:`.slice_convolution`);
- channels-last kernels and features, with a few-channel batch norm that avoids PyTorch's slow channels-last
  kernel (:mod:`.memory_layout`);
- in evaluation mode, every batch norm is folded into the convolution before it and every large-kernel block
  is merged into one convolution (:mod:`.batch_norm_folding`).

The pass changes the class of modules in place (as ``torch.nn.utils.parametrize`` does) to subclasses that
only override how ``forward`` computes, and stores convolution kernels channels-last. Parameters, buffers,
state-dict keys and shapes stay those of the plain modules, so checkpoints load before or after the pass and
an optimiser built before it keeps its parameters. Training mode keeps the slice convolutions (batch 1 only),
the channels-last layout and the few-channel batch norm; the folding applies in evaluation mode only.
"""

from __future__ import annotations

import torch
from torch import nn

from ..anatomical_memory import AnatomicalMemory
from ..blocks import ConvNormAct, LargeKernelBlock
from ..laplacian_decoder import LaplacianWarpingDecoder
from ..memwarp import MemWarp
from .batch_norm_folding import FoldedConvNormAct, MergedLargeKernelBlock, fold_batch_norm, merged_large_kernel
from .memory_layout import FewChannelBatchNorm3d, StandardLayoutDecoder, is_channels_last, to_layout
from .slice_convolution import SliceConv3d, SliceConvolutionMemory, conv3d, runs_as_slice_convolution

__all__ = [
    "CHANNELS_LAST_MAX_WIDTH",
    "CPU_CLASSES",
    "FewChannelBatchNorm3d",
    "FoldedConvNormAct",
    "MergedLargeKernelBlock",
    "SliceConv3d",
    "SliceConvolutionMemory",
    "StandardLayoutDecoder",
    "conv3d",
    "fold_batch_norm",
    "is_channels_last",
    "merged_large_kernel",
    "optimise_for_cpu",
    "optimise_for_device",
    "optimise_modules",
    "runs_as_slice_convolution",
    "to_layout",
]

# oneDNN's 3-D convolutions with few channels run several times faster channels-last; wide ones (the paper
# preset's 64-256 channels) are not helped, and one network runs in one layout (mixed layouts cost conversions).
CHANNELS_LAST_MAX_WIDTH = 32

# The class each plain module of a MemWarp network takes on CPU (exact types: the pass is idempotent).
CPU_CLASSES: dict[type[nn.Module], type[nn.Module]] = {
    nn.Conv3d: SliceConv3d,
    nn.BatchNorm3d: FewChannelBatchNorm3d,
    ConvNormAct: FoldedConvNormAct,
    LargeKernelBlock: MergedLargeKernelBlock,
    AnatomicalMemory: SliceConvolutionMemory,
    LaplacianWarpingDecoder: StandardLayoutDecoder,
}


def optimise_for_cpu(network: nn.Module) -> nn.Module:
    """Apply the CPU execution tricks to every :class:`MemWarp` inside ``network`` (in place); returns ``network``.

    A network whose levels have at most :data:`CHANNELS_LAST_MAX_WIDTH` channels (``compact``, ``tiny``) runs
    channels-last; a wider one (``paper``) keeps the standard layout. Other modules (e.g. MONAI's VoxelMorph) are
    left as they are. The outputs are the same up to float rounding in training and evaluation mode (the folded
    convolutions round differently, about 1e-6 relative), and they leave in the standard layout.

    Example:
        >>> from scripts.networks import bundle_network
        >>> network = optimise_for_cpu(bundle_network("memwarp", "tiny"))
        >>> type(network.registration.encoder.levels[0][0]).__name__
        'FoldedConvNormAct'
    """
    for memwarp in [module for module in network.modules() if isinstance(module, MemWarp)]:
        optimise_modules(memwarp, channels_last=max(memwarp.encoder.channels) <= CHANNELS_LAST_MAX_WIDTH)
    return network


def optimise_modules(root: nn.Module, channels_last: bool = True) -> nn.Module:
    """Give every module under ``root`` (``root`` included) its :data:`CPU_CLASSES` class and, with
    ``channels_last``, store the convolution kernels channels-last; returns ``root``. :func:`optimise_for_cpu`
    applies it to each MemWarp network."""
    for module in root.modules():
        cpu_class = CPU_CLASSES.get(type(module))
        if cpu_class is not None:
            module.__class__ = cpu_class
    return root.to(memory_format=torch.channels_last_3d) if channels_last else root


def optimise_for_device(network: nn.Module, device: torch.device | str) -> nn.Module:
    """``network`` moved to ``device``, with :func:`optimise_for_cpu` applied when that is a CPU (nothing on CUDA).

    The configs build their ``network`` with it: ``"$scripts.networks.cpu.optimise_for_device(@network_def, @device)"``.
    """
    network = network.to(device)
    return optimise_for_cpu(network) if torch.device(device).type == "cpu" else network
