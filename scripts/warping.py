"""Warping, one-hot and in-plane pyramid helpers shared by the losses and the metrics.

One warp convention everywhere in the bundle: a dense displacement field ``ddf`` of shape
(B, 3, H, W, D), in voxel units of the grid it lives on, channel i along spatial axis i, maps the
moving image to ``warped(x) = moving(x + ddf(x))``, sampled by ``monai.networks.blocks.Warp``
(``F.grid_sample`` with ``align_corners=True``) and zero padding outside the field of view.

The pyramid helpers follow the authors' training code: a coarser level is made from the next finer
one (not from the full resolution) by a per-slice 2D Gaussian blur (images only) and a trilinear
resampling to the coarser shape with ``align_corners=True``, the same corner convention the
network uses to upsample its flows between levels.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F

from scripts.monai_compat import GridCachingWarp

__all__ = [
    "warp_image",
    "warp_labels_nearest",
    "one_hot_labels",
    "blur_in_plane",
    "downsample_in_plane",
    "in_plane_pyramid",
]

# One warper per interpolation mode; each caches its identity grids per shape, device and dtype.
_WARPERS: dict[str, GridCachingWarp] = {}


def _warper(mode: str) -> GridCachingWarp:
    warper = _WARPERS.get(mode)
    if warper is None:
        with warnings.catch_warnings():
            # informational only: on CPU builds without MONAI's C++ extension Warp falls back to grid_sample
            warnings.filterwarnings("ignore", message=".*Using PyTorch native grid_sample.*")
            warper = GridCachingWarp(mode=mode, padding_mode="zeros")
        _WARPERS[mode] = warper
    return warper


def warp_image(image: torch.Tensor, ddf: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Warp ``image`` by ``ddf``: ``warped(x) = image(x + ddf(x))``, zero padding outside.

    Args:
        image: (B, C, H, W, D) floating tensor (moving image, or a one-hot label map).
        ddf: (B, 3, H, W, D) displacement in voxel units of this grid, channel i along axis i.
        mode: ``"bilinear"`` (trilinear in 3D, differentiable) or ``"nearest"``.

    Returns:
        (B, C, H, W, D) warped tensor, same dtype as ``image``.
    """
    if image.shape[0] != ddf.shape[0] or image.shape[2:] != ddf.shape[2:]:
        raise ValueError(f"image {tuple(image.shape)} and ddf {tuple(ddf.shape)} must share batch and spatial shape.")
    return _warper(mode)(image, ddf)


def warp_labels_nearest(label: torch.Tensor, ddf: torch.Tensor) -> torch.Tensor:
    """Warp an integer label map with nearest-neighbour sampling (evaluation convention).

    Voxels that sample outside the field of view become 0 (background).

    Args:
        label: (B, 1, H, W, D) integer-valued labels, float or integer dtype.
        ddf: (B, 3, H, W, D) displacement in voxel units.

    Returns:
        (B, 1, H, W, D) warped labels in the dtype of ``label``.
    """
    warped = warp_image(label.to(ddf.dtype), ddf, mode="nearest")
    if not label.dtype.is_floating_point:
        # nearest sampling returns stored values exactly; rounding only guards the float cast back
        return torch.round(warped).to(label.dtype)
    return warped.to(label.dtype)


def one_hot_labels(label: torch.Tensor, num_classes: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """One-hot encode an integer-valued label map.

    Args:
        label: (B, 1, H, W, D) labels in 0..num_classes-1, float or integer dtype.
        num_classes: number of channels of the output (background included).
        dtype: floating dtype of the result; default the label's dtype if floating, else float32.

    Returns:
        (B, num_classes, H, W, D) tensor of 0/1 values.
    """
    if label.ndim < 3 or label.shape[1] != 1:
        raise ValueError(f"label must have shape (B, 1, *spatial), got {tuple(label.shape)}.")
    if dtype is None:
        dtype = label.dtype if label.dtype.is_floating_point else torch.float32
    indices = torch.round(label[:, 0]).long() if label.dtype.is_floating_point else label[:, 0].long()
    return F.one_hot(indices, num_classes).movedim(-1, 1).to(dtype)


@lru_cache(maxsize=16)
def _gaussian_kernel_1d(sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    # 4 sigma radius keeps the truncated tail below 1e-3 of the peak, like scipy's default
    radius = max(1, int(math.ceil(4.0 * sigma)))
    offsets = torch.arange(-radius, radius + 1, device=device, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return (kernel / kernel.sum()).to(dtype)


def blur_in_plane(x: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Per-slice 2D Gaussian blur: smooth along the two in-plane axes, each z-slice independently.

    The separable kernel is built on the input's device and dtype (cached); borders are padded by
    replication so a constant image stays constant.

    Args:
        x: (B, C, H, W, D) tensor.
        sigma: standard deviation in voxels; ``sigma <= 0`` returns ``x`` unchanged.

    Returns:
        (B, C, H, W, D) blurred tensor.
    """
    if sigma <= 0:
        return x
    kernel = _gaussian_kernel_1d(float(sigma), x.device, x.dtype)
    radius = (kernel.numel() - 1) // 2
    channels = x.shape[1]
    kernel_h = kernel.view(1, 1, -1, 1, 1).expand(channels, 1, -1, 1, 1)
    kernel_w = kernel.view(1, 1, 1, -1, 1).expand(channels, 1, 1, -1, 1)
    # F.pad takes pairs from the last axis backwards: (D, D, W, W, H, H)
    x = F.conv3d(F.pad(x, (0, 0, 0, 0, radius, radius), mode="replicate"), kernel_h, groups=channels)
    return F.conv3d(F.pad(x, (0, 0, radius, radius, 0, 0), mode="replicate"), kernel_w, groups=channels)


def downsample_in_plane(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Trilinear resampling to ``shape`` with ``align_corners=True`` (the network's level convention).

    Args:
        x: (B, C, H, W, D) tensor.
        shape: target spatial shape, e.g. (H // 2, W // 2, D).

    Returns:
        (B, C, *shape) tensor.
    """
    shape = tuple(int(s) for s in shape)
    if tuple(x.shape[2:]) == shape:
        return x
    return F.interpolate(x, size=shape, mode="trilinear", align_corners=True)


def in_plane_pyramid(x: torch.Tensor, shapes: Sequence[Sequence[int]], sigma: float = 0.0) -> list[torch.Tensor]:
    """Pyramid, finest first: level 0 is ``x`` itself, level l = resample(blur(level l-1), shapes[l]).

    Args:
        x: (B, C, H, W, D) full-resolution tensor; ``shapes[0]`` must equal its spatial shape.
        shapes: spatial shape of each level, finest first.
        sigma: in-plane Gaussian blur applied before each downsampling (0 for one-hot labels).

    Returns:
        list of (B, C, *shapes[l]) tensors.
    """
    if len(shapes) == 0:
        return []
    if tuple(x.shape[2:]) != tuple(int(s) for s in shapes[0]):
        raise ValueError(f"level 0 shape {tuple(shapes[0])} differs from the input's {tuple(x.shape[2:])}.")
    levels = [x]
    for shape in shapes[1:]:
        levels.append(downsample_in_plane(blur_in_plane(levels[-1], sigma), shape))
    return levels
