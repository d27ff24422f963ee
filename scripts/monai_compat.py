"""Every workaround of a MONAI 1.6.1 trap, in one place.

Each entry below names the trap, what the bundle does about it, and the canary in ``tests/test_monai_compat.py``
that asserts the trap is still there: when a MONAI upgrade fixes one, its canary fails, and the workaround (and
its canary) can go.

1. ``monai.networks.blocks.Warp`` means to cache its identity grid but compares the cached (B, 3, H, W, D)
   shape from index 1 with the field's (H, W, D), so every call builds the grid anew:
   :class:`GridCachingWarp` and :func:`scaling_and_squaring` (DVF2DDF through it).
2. ``Spacingd`` on a NIfTI-loaded key ``k`` calls ``d[x].update(meta)`` for EVERY record key ``x`` starting with
   ``k + "_"`` (legacy metadata dicts), which fails on pair records ("moving_label" next to "moving"):
   :class:`RecordSafeSpacingd`.
3. ``PersistentDataset`` reads its cache with ``torch.load(weights_only=True)``, but MetaTensor metadata holds
   numpy arrays and traced operations are keyed by ``TraceKeys`` members, neither of which that load accepts:
   the cache is reported corrupt and recomputed on every access. :class:`WeightsOnlyMetad` and the ``TraceKeys``
   allowlisting below.
4. ``Compose`` wraps any exception raised inside it in ``RuntimeError("applying transform ...")``, hiding the
   file name of an input error; and a ``Compose`` is itself a random transform to ``CacheDataset``, so a nested
   one caches nothing: :class:`RegistrationCompose` (input errors unwrapped, ``flatten`` keeps the class).
5. ``compute_hausdorff_distance`` calls ``get_mask_edges`` with its own deprecated ``always_return_as_numpy``
   argument and so warns on every call: :func:`hausdorff_distance_without_deprecation_warning`.

Traps avoided by design elsewhere (canaries only): ``CheckpointLoader`` loads with ``weights_only=True`` (every
checkpoint the bundle writes holds plain tensors and numbers); ``CheckpointSaver`` writes non-atomically
(``DiskSaver(atomic=False)``), so the bundle saves through :mod:`scripts.engine.checkpoints`.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping
from enum import Enum
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.metrics import compute_hausdorff_distance
from monai.networks.blocks import DVF2DDF, Warp
from monai.transforms import Compose, MapTransform, Spacingd
from monai.utils import TraceKeys

from scripts.errors import input_error_in

__all__ = [
    "GridCachingWarp",
    "RecordSafeSpacingd",
    "RegistrationCompose",
    "WeightsOnlyMetad",
    "hausdorff_distance_without_deprecation_warning",
    "scaling_and_squaring",
]


# 1. Warp's grid cache ------------------------------------------------------------------------------------------------


class GridCachingWarp(Warp):
    """``monai.networks.blocks.Warp`` whose identity grid is cached per (shape, device, dtype).

    One Warp serves every pyramid level here, so the cache holds one grid per level. Grids made under
    ``torch.inference_mode`` are inference tensors and are kept apart from the others. The warping itself is
    MONAI's, unchanged.

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


# 2. Spacingd and pair records ----------------------------------------------------------------------------------------


class RecordSafeSpacingd(Spacingd):
    """``monai.transforms.Spacingd`` (same arguments, same inverse) that leaves other record keys alone.

    Pair records have ``"moving_label"`` and ``"moving_frame"`` next to ``"moving"``, so the stock transform
    fails (MetaTensor/int has no ``update``). This override does the resampling only; metadata travels on the
    MetaTensors.
    """

    def __call__(self, data: Mapping[Hashable, torch.Tensor], lazy: bool | None = None) -> dict[Hashable, Any]:
        d: dict[Hashable, Any] = dict(data)
        initial_shape, initial_pixdim, should_match, output_shape = None, None, False, None
        lazy_ = self.lazy if lazy is None else lazy
        for key, mode, padding_mode, align_corners, dtype, scale_extent in self.key_iterator(
            d, self.mode, self.padding_mode, self.align_corners, self.dtype, self.scale_extent
        ):
            # as in Spacingd: keys on one grid get one output shape despite floating-point round-off
            if self.ensure_same_shape and isinstance(d[key], MetaTensor):
                if initial_shape is None:
                    initial_shape, initial_pixdim = d[key].peek_pending_shape(), d[key].pixdim
                else:
                    should_match = np.allclose(initial_shape, d[key].peek_pending_shape()) and np.allclose(
                        initial_pixdim, d[key].pixdim, atol=1e-3
                    )
            d[key] = self.spacing_transform(
                data_array=d[key],
                mode=mode,
                padding_mode=padding_mode,
                align_corners=align_corners,
                dtype=dtype,
                scale_extent=scale_extent,
                output_spatial_shape=output_shape if should_match else None,
                lazy=lazy_,
            )
            if output_shape is None:
                output_shape = d[key].peek_pending_shape() if isinstance(d[key], MetaTensor) else d[key].shape[1:]
        return d


# 3. PersistentDataset and weights_only loading ------------------------------------------------------------------------

# PersistentDataset (reset_ops_id=True) writes TraceKeys.NONE into every traced operation AFTER the transforms ran,
# so without this its cache of any invertible pipeline never loads. Allowlisting a MONAI string enum is safe.
torch.serialization.add_safe_globals([TraceKeys])


def _weights_only_safe(value: Any) -> Any:
    """``value`` with numpy arrays/scalars turned into tensors/Python scalars and enum members (e.g. the
    ``TraceKeys`` keying every traced operation) into their plain values, recursively through dicts/lists."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {_weights_only_safe(k): _weights_only_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_weights_only_safe(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_weights_only_safe(v) for v in value)
    return value


class WeightsOnlyMetad(MapTransform):
    """Replace numpy arrays and enum members in MetaTensor metadata and traced operations by tensors and strings.

    ``torch.load(weights_only=True)`` refuses numpy arrays (the NIfTI header fields, ``original_affine``,
    Orientation's traced affine) and the ``TraceKeys`` enum members keying the traced operations (string-valued:
    plain strings look them up alike). Tensors load fine, and MONAI's own consumers (``Invertd``, writers,
    collation) accept them (collation converts numpy arrays in metadata to tensors anyway).
    """

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if isinstance(d[key], MetaTensor):
                d[key].meta = _weights_only_safe(dict(d[key].meta))
                d[key].applied_operations = _weights_only_safe(list(d[key].applied_operations))
        return d


# 4. Compose: wrapped input errors, nested Compose counted as random ----------------------------------------------


class RegistrationCompose(Compose):
    """``monai.transforms.Compose`` raising user-caused input errors as themselves (same arguments and behaviour
    otherwise); :meth:`flatten` inlines nested Compose objects and keeps this class."""

    def __call__(self, input_: Any, start: int = 0, end: int | None = None, threading: bool = False, lazy=None):
        try:
            return super().__call__(input_, start=start, end=end, threading=threading, lazy=lazy)
        except RuntimeError as error:
            cause = input_error_in(error)
            if cause is None:
                raise
            raise cause.with_traceback(cause.__traceback__) from cause.__cause__

    def flatten(self) -> RegistrationCompose:
        """Inline nested Compose objects (of any Compose subclass with the same ``map_items``), keep this class."""
        transforms: list = []
        for transform in self.transforms:
            if isinstance(transform, Compose) and type(transform) in (Compose, RegistrationCompose):
                if transform.map_items == self.map_items:
                    transforms += list(transform.flatten().transforms)
                    continue
            transforms.append(transform)
        return RegistrationCompose(
            transforms,
            map_items=self.map_items,
            unpack_items=self.unpack_items,
            log_stats=self.log_stats,
            lazy=self._lazy,
            overrides=self.overrides,
        )


# 5. compute_hausdorff_distance's own deprecation warning -------------------------------------------------------------


def hausdorff_distance_without_deprecation_warning(*args: Any, **kwargs: Any) -> torch.Tensor:
    """``monai.metrics.compute_hausdorff_distance(*args, **kwargs)`` without the FutureWarning MONAI raises about
    an argument it passes itself (``get_mask_edges(always_return_as_numpy=...)``); other warnings stay."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        return compute_hausdorff_distance(*args, **kwargs)
