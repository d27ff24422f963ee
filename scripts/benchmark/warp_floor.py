"""The warping floor of a pyramid network: the time its warps and integrations take, whatever its convolutions cost.

A MemWarp or LapWarp forward at batch 1 makes the same field operations for every preset: at each of
the levels 3..0 two coarser fields are upsampled and the moving skip and upsampled features are warped
(their channel counts are the preset's), levels 4..1 integrate their residual by scaling and squaring
(MONAI's DVF2DDF, 7 warps each), and the moving image is warped at the end: 37 grid samples.
:func:`measure_warp_floor` times exactly those calls, through the same MONAI Warp/DVF2DDF layers and
field upsampling the network uses, on random fields of up to half a voxel. No preset of the same design
runs faster than its floor, so ``paper time / floor`` bounds the speed-up a thinner preset can reach.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch

from scripts.benchmark.speed import timed_runs
from scripts.labels import NETWORK_SPATIAL_SIZE
from scripts.monai_compat import GridCachingWarp, scaling_and_squaring
from scripts.networks import PRESETS
from scripts.networks.cpu import to_layout
from scripts.networks.fields import upsample_field_in_plane

__all__ = ["measure_warp_floor", "warp_calls"]


def warp_calls(channels: tuple[int, ...], spatial_size: tuple[int, int, int]) -> list[tuple[str, int, tuple[int, ...]]]:
    """The field work of one batch-1 forward, coarsest level first: (kind, level, shape of the input) triples.

    kinds: "integrate" (a (1, 3, ...) residual through DVF2DDF), "upsample" (a coarser (1, 3, ...) field
    to this level), "warp" (features or the image, warped by a field of this level).
    """
    height, width, depth = spatial_size
    calls: list[tuple[str, int, tuple[int, ...]]] = []
    for level in range(len(channels) - 1, -1, -1):
        grid = (height // 2**level, width // 2**level, depth)
        if level < len(channels) - 1:
            coarser = (1, 3, height // 2 ** (level + 1), width // 2 ** (level + 1), depth)
            calls += [("upsample", level, coarser)] * 2  # the total field and the last step
            calls += [("warp", level, (1, channels[level], *grid))] * 2  # skip and upsampled moving features
        if level > 0:
            calls.append(("integrate", level, (1, 3, *grid)))
    calls.append(("warp", 0, (1, 1, height, width, depth)))  # the moving image by the final field
    return calls


def measure_warp_floor(
    preset: str = "compact",
    spatial_size: tuple[int, int, int] = NETWORK_SPATIAL_SIZE,
    repeats: int = 3,
    warmup: int = 3,
    device: str = "cpu",
    threads: int | None = None,
) -> dict[str, Any]:
    """Median wall-clock seconds of the field work of one batch-1 forward of ``preset`` (see the module doc)."""
    if threads:
        torch.set_num_threads(threads)
    target = torch.device(device)
    config = PRESETS[preset]
    channels = tuple(config["channels"])
    # On a CPU the network runs channels-last (scripts.networks.cpu), elsewhere in the standard layout.
    channels_last = target.type == "cpu"
    warp, integrate = GridCachingWarp(), scaling_and_squaring(7)
    generator = torch.Generator().manual_seed(0)
    calls = warp_calls(channels, spatial_size)
    inputs = []
    for kind, level, shape in calls:
        # Each tensor in the layout the network computes in; fields of up to 0.5 voxel.
        tensor = to_layout((torch.rand(shape, generator=generator) - 0.5).to(target), channels_last)
        field = to_layout((torch.rand((1, 3, *shape[2:]), generator=generator) - 0.5).to(target), channels_last)
        inputs.append((kind, tensor, field))

    def step() -> None:
        with torch.inference_mode():
            for kind, tensor, field in inputs:
                if kind == "integrate":
                    integrate(tensor)
                elif kind == "upsample":
                    upsample_field_in_plane(tensor)
                else:
                    warp(tensor, field)

    times = timed_runs(step, repeats, warmup, target)
    return {
        "preset": preset,
        "seconds": statistics.median(times),
        "grid_samples": sum(7 if kind == "integrate" else 1 for kind, _, _ in calls if kind != "upsample"),
        "repeats": repeats,
    }
