"""The ED label map carried to every frame through the tracked fields, on the cine's own grid.

Frame t at its voxel centre p takes the ED labels at ``p + d_t(p)`` (``d_t`` the ED -> frame field, the bundle's
convention, here in voxels of the grid: channel i along array axis i). The one-hot ED labels are interpolated
linearly there, which gives each frame voxel the fraction of each structure around its source point (partial
volume): volumes are the sums of these probabilities
(:func:`scripts.cine.volumes.frame_volumes_from_probabilities`) and the label maps their argmax. On the phantom with
its true motion this halves the volume error of counting nearest-neighbour labels (``docs/README.md``, "Cine
function"), because the base's through-plane motion falls between the 10 mm slices. Beyond the grid the labels are
background.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from scripts.labels import NUM_CLASSES

__all__ = ["propagate_label_probabilities"]


def propagate_label_probabilities(ed_labels: np.ndarray, fields_voxels: torch.Tensor) -> torch.Tensor:
    """Probabilities of each label in every frame.

    Args:
        ed_labels: (X, Y, Z) integer ED label map (0-3).
        fields_voxels: (T, 3, X, Y, Z) ED -> frame fields on the same grid (fixed = frame), in voxels (see
            :func:`scripts.geometry.world_to_voxel_displacement`).

    Returns:
        (T, 4, X, Y, Z) float32; channel c is label c (channel 0 background), summing to 1 inside the grid's reach;
        frame t equals the one-hot ED labels wherever ``d_t = 0``.
    """
    frames = fields_voxels.shape[0]
    labels = torch.as_tensor(np.asarray(ed_labels, np.int64))
    one_hot = F.one_hot(labels, NUM_CLASSES).permute(3, 0, 1, 2).float()[None]
    shape = labels.shape
    voxels = fields_voxels.detach().cpu().float()
    axes = [torch.arange(n, dtype=torch.float32) for n in shape]
    index = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)[None]
    size = torch.tensor([float(n) for n in shape]).reshape(1, 3, 1, 1, 1)
    normalised = torch.where(size > 1, 2.0 * (index + voxels) / (size - 1).clamp_min(1.0) - 1.0, 0.0 * voxels)
    grid = normalised.permute(0, 2, 3, 4, 1).flip(-1)  # grid_sample reads (z, y, x)
    probabilities = F.grid_sample(
        one_hot.expand(frames, -1, -1, -1, -1), grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )
    # outside the grid nothing is known: background
    probabilities[:, 0] += (1.0 - probabilities.sum(dim=1)).clamp_min(0.0)
    return probabilities
