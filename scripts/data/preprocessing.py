"""The Compose builders used from the bundle configs: preprocessing, augmentation, and their chaining.

Preprocessing (deterministic, identical for training, evaluation and inference), per pair record:

1. load the files, a 4D cine's frame chosen by ``moving_frame``/``fixed_frame`` (:class:`LoadFramed`);
2. add the channel axis; validate the inputs (:class:`ValidateRegistrationInputd`);
3. when the moving grid differs from the fixed one, resample moving onto it in world space
   (:class:`ResampleMovingToFixedd`; bilinear image, nearest label);
4. reorient to RAS (axis permutation/flips only, the scanner's rotation stays in the affine);
5. resample to ``pixdim`` mm (bilinear images, nearest labels), keeping the orientation: the output affine's
   column norms are ``pixdim``;
6. centre pad/crop to ``spatial_size`` about the image centre (no label needed: works at inference);
7. min-max scale each image to [0, 1] (after the crop, so the range is that of the network's input);
8. float32 MetaTensors whose metadata ``torch.load(weights_only=True)`` accepts (for ``PersistentDataset``).

Output sample: ``"moving"``, ``"fixed"``: float32 MetaTensor (1, *spatial_size) in [0, 1];
``"moving_label"``, ``"fixed_label"`` (``with_labels``): float32 MetaTensor (1, *spatial_size) with integer
values 0 (background), 1 (RV), 2 (LV myocardium), 3 (LV blood pool); every other record key unchanged. The
affine and ``applied_operations`` stay on the tensors, so ``monai.transforms.Invertd(keys=..., transform=<this
Compose>, orig_keys="fixed", nearest_interp=...)`` maps a network-grid result back to the original fixed file's
grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    Orientationd,
    RandFlipd,
    ResizeWithPadOrCropd,
    ScaleIntensityd,
)

from scripts.data.domain_randomisation import DomainRandomisationSwitch
from scripts.data.domain_randomisation import domain_randomisation as domain_randomisation_chain
from scripts.data.transforms import LoadFramed, RandSwapMovingFixedd, ResampleMovingToFixedd, ValidateRegistrationInputd
from scripts.labels import FRAME_KEYS, IMAGE_KEYS, LABEL_KEYS, NETWORK_PIXDIM_MM, NETWORK_SPATIAL_SIZE, NUM_CLASSES
from scripts.monai_compat import RecordSafeSpacingd, RegistrationCompose, WeightsOnlyMetad

__all__ = [
    "FRAME_KEYS",
    "IMAGE_KEYS",
    "LABEL_KEYS",
    "chain_transforms",
    "registration_augmentation",
    "registration_preprocessing",
]


def registration_preprocessing(
    spatial_size: Sequence[int] = NETWORK_SPATIAL_SIZE,
    pixdim: Sequence[float] = NETWORK_PIXDIM_MM,
    with_labels: bool = True,
) -> RegistrationCompose:
    """Deterministic preprocessing of a pair record into network-ready tensors (see the module docstring).

    Entirely deterministic, so ``CacheDataset``/``PersistentDataset`` cache all of it; put random transforms
    after it (see :func:`chain_transforms`). For ``PersistentDataset`` pass ``track_meta=True``: its default
    (False) caches plain tensors, dropping the affine and the operations ``Invertd`` needs (Invertd then
    silently returns the network-grid tensor). The default ``weights_only=True`` loads these MetaTensors
    (see :class:`WeightsOnlyMetad`).

    Args:
        spatial_size: output grid (X, Y, Z) in voxels, e.g. (128, 128, 16).
        pixdim: output voxel size in mm, e.g. (1.8, 1.8, 10.0).
        with_labels: also load, validate and resample ``moving_label``/``fixed_label`` (required then, and must
            not be empty); when False, label keys of the record are ignored (inference).

    Returns:
        a flat :class:`RegistrationCompose` (a ``Compose`` that raises input errors unwrapped) of dictionary
        transforms, sample dict -> sample dict.
    """
    keys = IMAGE_KEYS + (LABEL_KEYS if with_labels else ())
    modes = ("bilinear",) * len(IMAGE_KEYS) + ("nearest",) * (len(keys) - len(IMAGE_KEYS))
    return RegistrationCompose(
        [
            LoadFramed(keys, frame_keys=FRAME_KEYS + (None,) * (len(keys) - len(IMAGE_KEYS))),
            EnsureChannelFirstd(keys, channel_dim="no_channel"),
            ValidateRegistrationInputd(
                IMAGE_KEYS, LABEL_KEYS if with_labels else (), num_classes=NUM_CLASSES, require_labels=with_labels
            ),
            ResampleMovingToFixedd(
                ("moving", "moving_label") if with_labels else ("moving",),
                fixed_key="fixed",
                mode=("bilinear", "nearest") if with_labels else ("bilinear",),
            ),
            Orientationd(keys, axcodes="RAS", labels=None),  # labels from the MetaTensor space (RAS for NIfTI)
            # "border" at the < 1 voxel margin the new grid may overhang: zeros would darken edge voxels
            RecordSafeSpacingd(keys, pixdim=tuple(pixdim), mode=modes, padding_mode="border"),
            ResizeWithPadOrCropd(keys, spatial_size=tuple(spatial_size), method="symmetric", mode="constant"),
            ScaleIntensityd(IMAGE_KEYS, minv=0.0, maxv=1.0),
            EnsureTyped(keys, dtype=torch.float32, track_meta=True),
            WeightsOnlyMetad(keys),
        ]
    )


def registration_augmentation(
    swap_prob: float = 0.5, flip_prob: float = 0.5, domain_randomisation: bool = False
) -> RegistrationCompose:
    """Random training augmentation, applied to preprocessed samples (after any cache).

    - ED/ES swap with probability ``swap_prob`` (:class:`RandSwapMovingFixedd`: images, labels and frame
      indices change places, ``direction`` is reversed);
    - flip of spatial axis 0, then independently of spatial axis 1 (in-plane), each with probability
      ``flip_prob``, ONE draw for all four keys so labels follow their images and the pair stays aligned;
    - ``domain_randomisation``: a new geometry and a new scanner for every pair
      (:mod:`scripts.data.domain_randomisation`: random rotation, heart scale and shift, label-driven random
      tissue intensities, bias field, gamma, blur, lower resolution, noise), images back in [0, 1], behind a
      :class:`~scripts.data.domain_randomisation.DomainRandomisationSwitch` (on until switched off).

    Keys as produced by :func:`registration_preprocessing`; label keys may be absent.
    """
    all_keys = IMAGE_KEYS + LABEL_KEYS
    transforms: list = [
        RandSwapMovingFixedd(prob=swap_prob),
        RandFlipd(all_keys, prob=flip_prob, spatial_axis=0, allow_missing_keys=True),
        RandFlipd(all_keys, prob=flip_prob, spatial_axis=1, allow_missing_keys=True),
    ]
    if domain_randomisation:
        transforms.append(DomainRandomisationSwitch(domain_randomisation_chain(IMAGE_KEYS, LABEL_KEYS)))
    return RegistrationCompose(transforms)


def chain_transforms(*stages: Compose) -> RegistrationCompose:
    """One flat ``Compose`` of several stages, e.g. ``chain_transforms(preprocessing, augmentation)``.

    Use this (not ``Compose([preprocessing, augmentation])``) as a CacheDataset transform: ``Compose`` itself
    counts as a random transform in MONAI 1.6.1, so a nested one stops the cache at index 0 and nothing would
    be cached. Flattened, the cache holds everything up to the first random transform.
    """
    return RegistrationCompose(list(stages)).flatten()
