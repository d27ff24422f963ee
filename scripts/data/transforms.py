"""Dictionary transforms of the registration data pipeline that MONAI does not provide.

- :class:`LoadFramed`: load NIfTI files, picking one frame of a 4D cine when the record gives its index.
- :class:`ValidateRegistrationInputd`: refuse inputs the network cannot use, naming the file.
- :class:`ResampleMovingToFixedd`: put the moving image (and label) on the fixed image's grid when they differ.
- :class:`RandSwapMovingFixedd`: the random ED/ES swap augmentation.

All are deterministic (cacheable) except the swap, which is random and belongs after any cache.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.image_reader import ImageReader
from monai.transforms import (
    InvertibleTransform,
    LoadImage,
    MapTransform,
    RandomizableTransform,
    ResampleToMatch,
)
from monai.utils import ImageMetaKey, TraceKeys
from monai.utils.enums import MetaKeys

from scripts.data.errors import InvalidInputError, MissingInputError
from scripts.labels import FRAME_KEYS, IMAGE_KEYS, LABEL_KEYS, NUM_CLASSES

__all__ = [
    "LoadFramed",
    "RandSwapMovingFixedd",
    "ResampleMovingToFixedd",
    "ValidateRegistrationInputd",
]

FRAME_META_KEY = "frame_index"
"""Meta key of a loaded image holding its 0-based index in a 4D cine, or -1 for a 3D file (always present so
that batches of mixed records still collate)."""


def source_name(image: Any, fallback: Hashable) -> str:
    """The file an image was loaded from (for error messages), else ``fallback``."""
    meta = getattr(image, "meta", None) or {}
    name = meta.get(ImageMetaKey.FILENAME_OR_OBJ) if isinstance(meta, Mapping) else None
    return str(name) if name else str(fallback)


class LoadFramed(MapTransform):
    """Load 3D NIfTI volumes, or one frame of a 4D cine when the record gives a frame index.

    For each ``keys[i]`` the record holds a file path; ``frame_keys[i]`` (or None) names the record key holding
    the 0-based frame index into a 4D file. The output is a channel-less MetaTensor of spatial shape
    (X, Y, Z) with the file's affine, float32, and ``meta["frame_index"]`` (-1 for a 3D file): follow with
    ``EnsureChannelFirstd(keys, channel_dim="no_channel")``.

    Raises:
        MissingInputError: the file does not exist.
        InvalidInputError: unreadable file, 2D (or 5D+) data, a 4D file without a frame index, a frame index
            out of range or given for a 3D file. Messages name the file.

    Args:
        keys: record keys holding image paths, e.g. ``("moving", "fixed", "moving_label", "fixed_label")``.
        frame_keys: per key, the record key of its frame index or None (labels are 3D files).
        reader: MONAI image reader (name or instance); NibabelReader keeps NIfTI's time axis last.
        dtype: dtype of the loaded arrays (float32: labels stay exact integers up to 2**24).
        allow_missing_keys: skip absent keys instead of raising.
    """

    def __init__(
        self,
        keys: KeysCollection,
        frame_keys: Sequence[str | None] | None = None,
        reader: str | ImageReader = "NibabelReader",
        dtype: Any = np.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.frame_keys = tuple(frame_keys) if frame_keys is not None else (None,) * len(self.keys)
        if len(self.frame_keys) != len(self.keys):
            raise ValueError(f"frame_keys must have one entry per key, got {len(self.frame_keys)} for {self.keys}")
        self.loader = LoadImage(reader=reader, image_only=True, dtype=dtype, ensure_channel_first=False)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        missing = [key for key in self.keys if key not in d]
        if missing and not self.allow_missing_keys:
            # name a file of the record so the user can find it in the datalist
            where = next((str(d[k]) for k in self.keys if isinstance(d.get(k), (str, os.PathLike))), "the record")
            raise InvalidInputError(f"{where}: the record has no {', '.join(map(repr, missing))} (required here)")
        for key, frame_key in self.key_iterator(d, self.frame_keys):
            d[key] = self.load(d[key], key, d.get(frame_key) if frame_key is not None else None, frame_key)
        return d

    def load(self, path: Any, key: Hashable, frame: Any, frame_key: str | None) -> MetaTensor:
        """Read ``path`` and return the (X, Y, Z) volume, selecting ``frame`` of a 4D file."""
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidInputError(f"record key {key!r}: expected a file path, got {type(path).__name__}")
        if not os.path.isfile(path):
            raise MissingInputError(f"{path}: file not found (record key {key!r})")
        try:
            # the configured reader only: without it MONAI tries every installed reader in turn and reports all
            # their tracebacks under a misleading "install the reader libraries"
            image = self.loader(path, reader=self.loader.readers[-1])
        except Exception as error:  # the readers raise many types; say which file failed
            raise InvalidInputError(f"{path}: cannot be read as an image ({error})") from error
        if frame is not None and (isinstance(frame, bool) or not isinstance(frame, (int, np.integer))):
            raise InvalidInputError(f"{path}: frame index {frame_key!r} must be an integer, got {frame!r}")
        if image.ndim < 3:
            raise InvalidInputError(
                f"{path}: a {image.ndim}D image of shape {tuple(image.shape)}; a 3D volume or a 4D cine is required"
            )
        if image.ndim > 4:
            raise InvalidInputError(f"{path}: a {image.ndim}D image of shape {tuple(image.shape)} is not supported")
        if image.ndim == 3 and frame is not None:
            raise InvalidInputError(f"{path}: the record gives frame index {frame} ({frame_key!r}) but the file is 3D")
        if image.ndim == 4:
            n_frames = image.shape[-1]
            if frame is None and n_frames != 1:
                raise InvalidInputError(
                    f"{path}: a 4D cine of {n_frames} frames but the record gives no frame index"
                    + (f" ({frame_key!r})" if frame_key else " (this key takes 3D files only)")
                )
            frame = 0 if frame is None else int(frame)
            if not 0 <= frame < n_frames:
                raise InvalidInputError(f"{path}: frame index {frame} out of range for a cine of {n_frames} frames")
        meta = dict(image.meta)
        volume = image.as_tensor()
        if image.ndim == 4:
            volume = volume[..., frame].contiguous()
        meta[MetaKeys.SPATIAL_SHAPE] = np.asarray(volume.shape[:3])
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = float("nan")  # the reader marked 4D data as channel-last
        meta[FRAME_META_KEY] = -1 if frame is None else int(frame)
        return MetaTensor(volume, meta=meta)


class ValidateRegistrationInputd(MapTransform):
    """Check loaded images and label maps before anything is computed from them.

    Expects channel-first (1, X, Y, Z) tensors (after ``EnsureChannelFirstd``). Checks: one channel and three
    spatial dimensions; images finite and not constant; label maps integer-valued in ``[0, num_classes)``, of
    the same shape and affine (within ``affine_tolerance`` mm) as their image, and, when ``require_labels``,
    present and not all background. Passes the data through unchanged.

    Args:
        image_keys: image keys, e.g. ``("moving", "fixed")``.
        label_keys: label keys paired with ``image_keys`` (same length), or ``()`` for images only.
        num_classes: label values allowed are ``0 .. num_classes - 1``.
        require_labels: labels must be present and non-empty.
        affine_tolerance: largest allowed absolute difference between an image's and its label's affine entries
            (header round-off in some ACDC files is ~1e-5).
        allow_missing_keys: skip absent keys (used when inverting only one key).

    Raises:
        InvalidInputError: naming the file and the problem.
    """

    def __init__(
        self,
        image_keys: Sequence[str] = IMAGE_KEYS,
        label_keys: Sequence[str] = LABEL_KEYS,
        num_classes: int = NUM_CLASSES,
        require_labels: bool = True,
        affine_tolerance: float = 1e-3,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(tuple(image_keys) + tuple(label_keys), allow_missing_keys)
        if label_keys and len(label_keys) != len(image_keys):
            raise ValueError("label_keys must pair one label key with each image key, or be empty")
        self.image_keys, self.label_keys = tuple(image_keys), tuple(label_keys)
        self.num_classes = num_classes
        self.require_labels = require_labels
        self.affine_tolerance = affine_tolerance

    def __call__(self, data: Mapping[Hashable, Any]) -> Mapping[Hashable, Any]:
        for key in self.image_keys:
            if key in data:
                self.check_image(data[key], key)
            elif not self.allow_missing_keys:
                raise InvalidInputError(f"the record has no image {key!r}")
        for image_key, label_key in zip(self.image_keys, self.label_keys):
            if label_key not in data:
                if self.require_labels and not self.allow_missing_keys:
                    name = source_name(data.get(image_key), image_key)
                    raise InvalidInputError(f"{name}: labels are required but the record has no {label_key!r}")
                continue
            self.check_label(data[label_key], label_key, data.get(image_key))
        return data

    @staticmethod
    def _check_shape(image: torch.Tensor, name: str) -> None:
        if image.ndim != 4 or image.shape[0] != 1:
            raise InvalidInputError(f"{name}: expected one channel and 3 spatial dims, got shape {tuple(image.shape)}")

    def check_image(self, image: torch.Tensor, key: Hashable) -> None:
        """Raise unless ``image`` is a finite, non-constant (1, X, Y, Z) volume."""
        name = source_name(image, key)
        self._check_shape(image, name)
        finite = torch.isfinite(image)
        if not bool(finite.all()):
            raise InvalidInputError(f"{name}: {int((~finite).sum())} NaN or infinite voxel(s) in the image")
        if bool(image.max() == image.min()):
            raise InvalidInputError(f"{name}: the image is constant ({float(image.min())}), nothing to register")

    def check_label(self, label: torch.Tensor, key: Hashable, image: torch.Tensor | None) -> None:
        """Raise unless ``label`` is a valid label map on the same grid as ``image``."""
        name = source_name(label, key)
        self._check_shape(label, name)
        values = torch.unique(label.as_tensor() if isinstance(label, MetaTensor) else label)
        allowed = torch.arange(self.num_classes, dtype=values.dtype)
        bad = values[~torch.isin(values, allowed)]
        if bad.numel():
            shown = ", ".join(f"{float(v):g}" for v in bad[:8])
            raise InvalidInputError(
                f"{name}: label values must be integers 0..{self.num_classes - 1}, found {shown}"
                + (" ..." if bad.numel() > 8 else "")
            )
        if self.require_labels and bool((values == 0).all()):
            raise InvalidInputError(f"{name}: the label map is empty (background only) but labels are required")
        if image is None:
            return
        image_name = source_name(image, "the image")
        if tuple(label.shape) != tuple(image.shape):
            raise InvalidInputError(
                f"{name}: label shape {tuple(label.shape[1:])} differs from its image {image_name} "
                f"{tuple(image.shape[1:])}"
            )
        if isinstance(label, MetaTensor) and isinstance(image, MetaTensor):
            difference = float((label.affine.double() - image.affine.double()).abs().max())
            if difference > self.affine_tolerance:
                raise InvalidInputError(
                    f"{name}: label affine differs from its image {image_name} (largest difference "
                    f"{difference:.4g} > {self.affine_tolerance:g}); they are not on the same grid"
                )


def same_grid(first: torch.Tensor, second: torch.Tensor, tolerance: float = 1e-3) -> bool:
    """True when two channel-first MetaTensors have the same spatial shape and affine (within ``tolerance``)."""
    if tuple(first.shape[1:]) != tuple(second.shape[1:]):
        return False
    if not (isinstance(first, MetaTensor) and isinstance(second, MetaTensor)):
        return True
    return float((first.affine.double() - second.affine.double()).abs().max()) <= tolerance


class ResampleMovingToFixedd(MapTransform, InvertibleTransform):
    """Resample moving keys onto the fixed image's grid, in world coordinates, when the grids differ.

    ED and ES frames of one scan share a grid and pass through untouched (no interpolation). Otherwise (e.g. an
    explicit datalist pairing different acquisitions) each moving key is resampled with MONAI's
    ``ResampleToMatch`` so that later crops, which are index-based, cut the same world region from both.
    Invertible: ``Invertd`` on a moving-keyed result undoes the resampling as well.

    Args:
        keys: moving keys, e.g. ``("moving", "moving_label")``.
        fixed_key: the key whose grid is the target.
        mode: interpolation per key (``"bilinear"`` for images, ``"nearest"`` for labels).
        padding_mode: outside the moving field of view; zeros rather than MONAI's "border" so that edges are not
            smeared into the fixed field of view (and labels stay background there).
        tolerance: affine difference (mm) below which grids are considered equal.
        allow_missing_keys: skip absent keys.
    """

    def __init__(
        self,
        keys: KeysCollection = ("moving", "moving_label"),
        fixed_key: str = "fixed",
        mode: Sequence[str] | str = ("bilinear", "nearest"),
        padding_mode: str = "zeros",
        tolerance: float = 1e-3,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.fixed_key = fixed_key
        self.mode = (mode,) * len(self.keys) if isinstance(mode, str) else tuple(mode)
        self.padding_mode = padding_mode
        self.tolerance = tolerance
        self.resampler = ResampleToMatch(padding_mode=padding_mode, dtype=np.float64)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        fixed = d[self.fixed_key]
        for key, mode in self.key_iterator(d, self.mode):
            if not same_grid(d[key], fixed, self.tolerance):
                d[key] = self.resampler(d[key], img_dst=fixed, mode=mode)
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            operations = getattr(d[key], "applied_operations", [])
            # only keys that were actually resampled carry an operation to undo
            if operations and operations[-1].get(TraceKeys.CLASS_NAME) == ResampleToMatch.__name__:
                d[key] = self.resampler.inverse(d[key])
        return d


class RandSwapMovingFixedd(RandomizableTransform, MapTransform):
    """Random ED/ES swap: exchange moving and fixed (images, labels, frame indices) and flip the direction.

    With probability ``prob`` every present pair in ``key_pairs`` is exchanged (a key whose partner is absent
    moves across), and ``"X_to_Y"`` in ``direction_key`` becomes ``"Y_to_X"``. Random: place it after the
    cached deterministic preprocessing.

    Args:
        prob: probability of swapping.
        key_pairs: (moving key, fixed key) pairs exchanged together.
        direction_key: key of the direction string, or None.
    """

    def __init__(
        self,
        prob: float = 0.5,
        key_pairs: Sequence[tuple[str, str]] = (IMAGE_KEYS, LABEL_KEYS, FRAME_KEYS),
        direction_key: str | None = "direction",
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, [key for pair in key_pairs for key in pair], allow_missing_keys=True)
        self.key_pairs = tuple((a, b) for a, b in key_pairs)
        self.direction_key = direction_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        for first, second in self.key_pairs:
            first_value, second_value = d.pop(first, None), d.pop(second, None)
            if second_value is not None:
                d[first] = second_value
            if first_value is not None:
                d[second] = first_value
        if self.direction_key is not None and isinstance(d.get(self.direction_key), str):
            source, separator, target = d[self.direction_key].partition("_to_")
            if separator:
                d[self.direction_key] = f"{target}_to_{source}"
        return d
