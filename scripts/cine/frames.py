"""Every frame of a cine on the network grid at once, and results mapped back to the cine's own grid.

All frames of a cine share one voxel grid, so the spatial steps of the bundle's preprocessing
(:func:`scripts.data.registration_preprocessing`, steps 4-7: orient to RAS, resample to ``pixdim`` mm with bilinear
interpolation and border padding, centre pad/crop to ``spatial_size``, min-max scale each image to [0, 1]) are
applied once to the whole cine, the frames stacked as channels; each frame is scaled on its own (``channel_wise``),
as each image of a pair is. A frame comes out exactly as the pair preprocessing makes it from the same file
(``tests/test_cine_workflow.py`` checks it).

The transforms are invertible: :func:`to_cine_grid` maps network-grid results (fields, segmentations) back to the
cine's grid with ``monai.transforms.Invertd``, as inference maps its results back to the fixed image's grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.data import MetaTensor
from monai.transforms import EnsureTyped, Invertd, Orientationd, ResizeWithPadOrCropd, ScaleIntensityd

from scripts.data import RecordSafeSpacingd, RegistrationCompose
from scripts.geometry import voxel_to_world_displacement
from scripts.labels import NETWORK_PIXDIM_MM, NETWORK_SPATIAL_SIZE

__all__ = ["CINE_KEY", "cine_preprocessing", "network_fields_to_world", "to_cine_grid"]

CINE_KEY = "cine"
"""Key of the (T, X, Y, Z) cine MetaTensor (frames as channels) in the preprocessing's dict."""


def cine_preprocessing(
    spatial_size: Sequence[int] = NETWORK_SPATIAL_SIZE, pixdim: Sequence[float] = NETWORK_PIXDIM_MM
) -> RegistrationCompose:
    """The bundle's preprocessing of an image, for all frames of a cine at once.

    Input: ``{"cine": MetaTensor (T, X, Y, Z)}`` with the cine's affine. Output: the same key as a float32
    MetaTensor (T, *spatial_size), each frame in [0, 1], with the affine and the applied operations that
    :func:`to_cine_grid` inverts.
    """
    return RegistrationCompose(
        [
            Orientationd(CINE_KEY, axcodes="RAS", labels=None),
            RecordSafeSpacingd(CINE_KEY, pixdim=tuple(pixdim), mode="bilinear", padding_mode="border"),
            ResizeWithPadOrCropd(CINE_KEY, spatial_size=tuple(spatial_size), method="symmetric", mode="constant"),
            ScaleIntensityd(CINE_KEY, minv=0.0, maxv=1.0, channel_wise=True),
            EnsureTyped(CINE_KEY, dtype=torch.float32, track_meta=True),
        ]
    )


def to_cine_grid(
    values: torch.Tensor, network_cine: MetaTensor, preprocessing: RegistrationCompose, nearest: bool = False
) -> torch.Tensor:
    """Map a network-grid result back onto the cine's original grid.

    Args:
        values: (C, H, W, D) on the network grid (e.g. T fields of 3 channels stacked, or one segmentation).
        network_cine: the preprocessed cine (its applied operations say how to go back).
        preprocessing: the Compose that made ``network_cine`` (the same object: Invertd matches by id).
        nearest: nearest-neighbour resampling (label maps) instead of linear.

    Returns:
        (C, X, Y, Z) plain float tensor on the cine's grid; 0 where the network grid does not reach.
    """
    inverter = Invertd("values", transform=preprocessing, orig_keys=CINE_KEY, nearest_interp=nearest)
    inverted = inverter({"values": MetaTensor(values.detach().float().cpu()), CINE_KEY: network_cine})["values"]
    return inverted.as_tensor() if isinstance(inverted, MetaTensor) else torch.as_tensor(inverted)


def network_fields_to_world(
    fields: torch.Tensor, network_cine: MetaTensor, preprocessing: RegistrationCompose
) -> torch.Tensor:
    """Network-grid fields (T, 3, H, W, D) in voxels -> (T, 3, X, Y, Z) world RAS mm on the cine's grid.

    The inverse resampling leaves the components in network voxels; the network grid's affine turns them into
    millimetres along world axes (the bundle's displacement convention, :mod:`scripts.geometry`).
    """
    frames = fields.shape[0]
    stacked = to_cine_grid(fields.reshape(frames * 3, *fields.shape[2:]), network_cine, preprocessing)
    stacked = stacked.reshape(frames, 3, *stacked.shape[1:])
    return voxel_to_world_displacement(stacked, network_cine.affine)
