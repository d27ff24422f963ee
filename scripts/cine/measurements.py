"""From the ED labels and the tracked fields to what the cine workflow reports: labels of every frame, volumes,
strain and the ventricular function.

The same function scores any source of fields: the network's (the workflow), or the phantom's true ones (the
benchmark's reference row, which shows how much of the error the measurement itself makes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from scripts.cine.function import function_summary
from scripts.cine.propagation import propagate_label_probabilities
from scripts.cine.region import heart_box
from scripts.cine.tracked_strain import tracked_global_strain
from scripts.cine.volumes import frame_volumes_from_probabilities
from scripts.geometry import world_to_voxel_displacement
from scripts.label_maps import label_map_from_scores

__all__ = ["CineMeasurements", "largest_displacement_mm", "measure_cine"]


def largest_displacement_mm(fields_mm: torch.Tensor) -> float:
    """An upper bound of the displacement length of (T, 3, X, Y, Z) fields: the norm of the per-component maxima."""
    if fields_mm.numel() == 0:
        return 0.0
    low, high = fields_mm.reshape(fields_mm.shape[0], 3, -1).aminmax(dim=-1)  # last-axis reductions are the fast ones
    largest = torch.maximum(low.abs(), high.abs()).amax(dim=0)
    return float(torch.linalg.vector_norm(largest.double()))


@dataclass
class CineMeasurements:
    """What one cine gives.

    Attributes:
        labels: (X, Y, Z, T) uint8 propagated label maps on the cine's grid.
        volumes: per-frame curves (:data:`scripts.cine.volumes.VOLUME_COLUMNS`), each (T,).
        radial_strain, circumferential_strain: (T,) global strain, fractions.
        function: the ``function.json`` content (:func:`scripts.cine.function.function_summary`).
    """

    labels: np.ndarray
    volumes: dict[str, np.ndarray]
    radial_strain: np.ndarray
    circumferential_strain: np.ndarray
    function: dict


def measure_cine(
    ed_labels: np.ndarray,
    fields_mm: torch.Tensor,
    affine: np.ndarray,
    ed_index: int,
    es_frame_info: int | None = None,
) -> CineMeasurements:
    """Propagate the ED labels, measure volumes and strain in every frame, and summarise the function.

    Args:
        ed_labels: (X, Y, Z) integer ED label map on the cine's grid.
        fields_mm: (T, 3, X, Y, Z) ED -> frame fields in world RAS mm on the cine's grid (the ED frame's is zero).
        affine: (4, 4) the cine's affine.
        ed_index: 0-based ED frame.
        es_frame_info: 1-based ES frame of Info.cfg, if any (reported beside the detected one).
    """
    fields = fields_mm.detach().cpu().float()
    labels = np.asarray(ed_labels)
    box = heart_box(labels, affine, largest_displacement_mm(fields))
    box_affine = box.affine(affine)
    box_fields = world_to_voxel_displacement(fields[(slice(None), slice(None)) + box.slices].contiguous(), box_affine)
    box_labels = labels[box.slices]
    probabilities = propagate_label_probabilities(box_labels, box_fields)
    volumes = frame_volumes_from_probabilities(probabilities.numpy(), box_affine)
    propagated = np.zeros(labels.shape + (fields.shape[0],), np.uint8)
    propagated[box.slices] = label_map_from_scores(probabilities, dim=1).permute(1, 2, 3, 0).to(torch.uint8).numpy()
    radial, circumferential = tracked_global_strain(box_fields, box_labels, box_affine)
    function = function_summary(volumes, ed_index, radial, circumferential, es_frame_info)
    return CineMeasurements(propagated, volumes, radial, circumferential, function)
