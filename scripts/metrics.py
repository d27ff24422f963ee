"""Registration metrics of the evaluation protocol (all on the network grid, ``scripts.labels.NETWORK_SPATIAL_SIZE``).

Pure functions on torch tensors (numpy arrays are accepted and converted); results are torch
tensors on the input's device with one value per batch element, computed without gradients.
Label maps are integer-valued, shape (B, 1, H, W, D) or (B, H, W, D) (a single (H, W, D) volume is
treated as a batch of one); labels 1 RV, 2 LV myocardium (LVM), 3 LV blood pool (LVBP).

Folding statistics of a displacement ``ddf`` (B, 3, H, W, D) in voxel units describe the map
x -> x + ddf(x) (the warp convention of ``scripts.warping``):

- ``sdlogj_plus3``: std(log(clip(J + 3, 1e-8, 1e8))), the Learn2Reg "+3" convention; the paper's
  SDlogJ figure.
- ``std_log_jacobian_positive``: std(log J) over the voxels with J > 0 only.
- ``folding_percent``: 100 x fraction of voxels with J <= 0.

All three use J from central differences (``jacobian_determinant``) with a 2-voxel border crop on
every axis (``JACOBIAN_BORDER``) in ``registration_metrics``; standard deviations are population
(ddof 0) ones, as numpy's default used by Learn2Reg.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch

from scripts.label_maps import label_map_from_scores
from scripts.labels import NETWORK_PIXDIM_MM, STRUCTURE_NAMES
from scripts.monai_compat import hausdorff_distance_without_deprecation_warning
from scripts.warping import warp_labels_nearest

__all__ = [
    "STRUCTURE_LABELS",
    "STRUCTURE_NAMES",
    "ACDC_SPACING_MM",
    "JACOBIAN_BORDER",
    "crop_border",
    "dice_per_structure",
    "hd95_per_structure",
    "jacobian_determinant",
    "sdlogj_plus3",
    "std_log_jacobian_positive",
    "folding_percent",
    "registration_metrics",
    "segmentation_dice",
]

# The spacing of the evaluation grid (the network grid), mm along (H, W, D).
ACDC_SPACING_MM: tuple[float, float, float] = NETWORK_PIXDIM_MM
# The scored structures (label values), all but the background.
STRUCTURE_LABELS: tuple[int, ...] = tuple(STRUCTURE_NAMES)
JACOBIAN_BORDER = 2


def _as_tensor(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    return x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def _label_batch(label: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(B, 1, H, W, D), (B, H, W, D) or (H, W, D) -> (B, H, W, D) integer tensor."""
    label = _as_tensor(label)
    if label.ndim == 5:
        if label.shape[1] != 1:
            raise ValueError(f"a 5-D label map must have one channel, got shape {tuple(label.shape)}.")
        label = label[:, 0]
    elif label.ndim == 3:
        label = label[None]
    elif label.ndim != 4:
        raise ValueError(f"expected a label map of 3, 4 or 5 dimensions, got shape {tuple(label.shape)}.")
    return torch.round(label).long() if label.dtype.is_floating_point else label.long()


def _name(label: int) -> str:
    return STRUCTURE_NAMES.get(int(label), f"label{int(label)}")


@torch.no_grad()
def dice_per_structure(
    pred_label: torch.Tensor | np.ndarray,
    target_label: torch.Tensor | np.ndarray,
    labels: Sequence[int] = STRUCTURE_LABELS,
) -> torch.Tensor:
    """Dice 2|P & T| / (|P| + |T|) per structure.

    Args:
        pred_label: (B, 1, H, W, D) integer label map (e.g. the warped moving labels).
        target_label: same shape (e.g. the fixed labels).
        labels: label values to score (background excluded by default).

    Returns:
        (B, len(labels)) float64 tensor in [0, 1]; NaN where the structure is empty in both maps.
    """
    pred = _label_batch(pred_label)
    target = _label_batch(target_label).to(pred.device)
    if pred.shape != target.shape:
        raise ValueError(f"label maps differ in shape: {tuple(pred.shape)} vs {tuple(target.shape)}.")
    scores = []
    for label in labels:
        pred_mask, target_mask = pred == label, target == label
        intersection = (pred_mask & target_mask).flatten(1).sum(1).double()
        total = pred_mask.flatten(1).sum(1).double() + target_mask.flatten(1).sum(1).double()
        scores.append(torch.where(total > 0, 2.0 * intersection / total.clamp_min(1), torch.nan))
    return torch.stack(scores, dim=1)


@torch.no_grad()
def hd95_per_structure(
    pred_label: torch.Tensor | np.ndarray,
    target_label: torch.Tensor | np.ndarray,
    spacing: Sequence[float] = ACDC_SPACING_MM,
    labels: Sequence[int] = STRUCTURE_LABELS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """95th-percentile symmetric Hausdorff distance in millimetres per structure.

    MONAI's ``compute_hausdorff_distance(percentile=95, spacing=spacing)``: surface (edge) voxels
    of each mask, Euclidean distances scaled by the voxel spacing, the larger of the two directed
    95th percentiles.

    Args:
        pred_label: (B, 1, H, W, D) integer label map.
        target_label: same shape.
        spacing: voxel size in mm along (H, W, D).
        labels: label values to score.

    Returns:
        (per_structure, mean): (B, len(labels)) float64 tensor, NaN where the structure is missing
        from either map; (B,) mean over the structures present in both (NaN if none).
    """
    pred = _label_batch(pred_label)
    target = _label_batch(target_label).to(pred.device)
    if pred.shape != target.shape:
        raise ValueError(f"label maps differ in shape: {tuple(pred.shape)} vs {tuple(target.shape)}.")
    distances = torch.full((pred.shape[0], len(labels)), torch.nan, dtype=torch.float64, device=pred.device)
    for index, label in enumerate(labels):
        pred_mask, target_mask = (pred == label), (target == label)
        for batch in range(pred.shape[0]):
            # a structure missing from either mask has no finite distance: leave NaN, skip MONAI's warning
            if not (pred_mask[batch].any() and target_mask[batch].any()):
                continue
            distances[batch, index] = hausdorff_distance_without_deprecation_warning(
                pred_mask[batch][None, None].float(),
                target_mask[batch][None, None].float(),
                include_background=True,
                percentile=95,
                spacing=[float(s) for s in spacing],
            )[0, 0].double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = torch.nanmean(distances, dim=1)
    return distances, mean


@torch.no_grad()
def jacobian_determinant(ddf: torch.Tensor | np.ndarray, border: int = 0) -> torch.Tensor:
    """Jacobian determinant J = det(I + grad ddf) of the map x -> x + ddf(x).

    Derivatives by central differences in voxel units (``torch.gradient``: one-sided at the volume
    faces, which ``border`` crops away); an axis of size 1 has zero derivative.

    Args:
        ddf: (B, 3, H, W, D) displacement in voxel units, channel i along spatial axis i.
        border: voxels cropped from both ends of every spatial axis (2 for the summary statistics).

    Returns:
        (B, H - 2 border, W - 2 border, D - 2 border) tensor, in ddf's floating dtype (float32 for
        integer input).
    """
    ddf = _as_tensor(ddf)
    if ddf.ndim != 5 or ddf.shape[1] != 3:
        raise ValueError(f"ddf must have shape (B, 3, H, W, D), got {tuple(ddf.shape)}.")
    if not ddf.dtype.is_floating_point:
        ddf = ddf.float()
    # gradient[i][j] = d ddf_i / d x_j
    gradient = [[torch.zeros_like(ddf[:, 0]) for _ in range(3)] for _ in range(3)]
    axes = [axis for axis in range(3) if ddf.shape[2 + axis] > 1]
    if axes:
        derivatives = torch.gradient(ddf, dim=[2 + axis for axis in axes])
        for axis, derivative in zip(axes, derivatives):
            for component in range(3):
                gradient[component][axis] = derivative[:, component]
    a = [[gradient[i][j] + (1.0 if i == j else 0.0) for j in range(3)] for i in range(3)]
    jac = (
        a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
        - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
        + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0])
    )
    return crop_border(jac, border)


def crop_border(jac: torch.Tensor, border: int) -> torch.Tensor:
    """``jac`` (B, H, W, D) without ``border`` voxels at both ends of every spatial axis.

    ``crop_border(jacobian_determinant(ddf), b)`` equals ``jacobian_determinant(ddf, border=b)`` exactly: one
    uncropped map can serve every crop a pipeline needs.

    Returns:
        (B, H - 2 border, W - 2 border, D - 2 border) view of ``jac``.
    """
    if border <= 0:
        return jac
    if min(jac.shape[1:]) <= 2 * border:
        raise ValueError(f"border {border} leaves nothing of a {tuple(jac.shape[1:])} grid.")
    return jac[:, border:-border, border:-border, border:-border]


def _jac_batch(jac: torch.Tensor | np.ndarray) -> torch.Tensor:
    jac = _as_tensor(jac)
    if jac.ndim == 3:
        jac = jac[None]
    # float64 so that a constant J reports a spread of ~1e-16, not float32's ~1e-7
    return jac.flatten(1).double()


@torch.no_grad()
def sdlogj_plus3(jac: torch.Tensor | np.ndarray) -> torch.Tensor:
    """The paper's SDlogJ: std(log(clip(J + 3, 1e-8, 1e8))) (Learn2Reg "+3" convention).

    Reduces over every voxel given: pass ``jacobian_determinant(ddf, border=2)``.

    Args:
        jac: (B, H, W, D) or (H, W, D) Jacobian determinants.

    Returns:
        (B,) float64 tensor; 0 for the identity map.
    """
    values = torch.log(torch.clamp(_jac_batch(jac) + 3.0, 1e-8, 1e8))
    return values.std(dim=1, correction=0)


@torch.no_grad()
def std_log_jacobian_positive(jac: torch.Tensor | np.ndarray) -> torch.Tensor:
    """std(log J) over the voxels with J > 0 only (no "+3" shift); NaN if no voxel has J > 0.

    Args:
        jac: (B, H, W, D) or (H, W, D) Jacobian determinants (border-cropped, see ``sdlogj_plus3``).

    Returns:
        (B,) float64 tensor.
    """
    values = _jac_batch(jac)
    positive = values > 0
    logs = torch.where(positive, torch.log(values.clamp_min(torch.finfo(values.dtype).tiny)), 0.0)
    count = positive.sum(dim=1).to(values.dtype)
    mean = logs.sum(dim=1) / count
    variance = torch.where(positive, (logs - mean[:, None]) ** 2, 0.0).sum(dim=1) / count
    return torch.where(count > 0, variance.sqrt(), torch.nan)


@torch.no_grad()
def folding_percent(jac: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Percentage of voxels where the map folds: 100 x fraction of voxels with J <= 0.

    Args:
        jac: (B, H, W, D) or (H, W, D) Jacobian determinants (border-cropped, see ``sdlogj_plus3``).

    Returns:
        (B,) float64 tensor in [0, 100].
    """
    values = _jac_batch(jac)
    return 100.0 * (values <= 0).to(values.dtype).mean(dim=1)


@torch.no_grad()
def registration_metrics(
    ddf: torch.Tensor | np.ndarray,
    moving_label: torch.Tensor | np.ndarray,
    fixed_label: torch.Tensor | np.ndarray,
    spacing: Sequence[float] = ACDC_SPACING_MM,
    labels: Sequence[int] = STRUCTURE_LABELS,
    border: int = JACOBIAN_BORDER,
    jacobian: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """All per-pair registration metrics of the evaluation protocol.

    The moving labels are warped by ``ddf`` with NEAREST-neighbour sampling through the same Warp
    convention as training (``warped(x) = moving(x + ddf(x))``, background outside the volume) and
    compared with the fixed labels.

    Args:
        ddf: (B, 3, H, W, D) displacement in voxel units (the network's "ddf").
        moving_label: (B, 1, H, W, D) integer labels of the moving image.
        fixed_label: (B, 1, H, W, D) integer labels of the fixed image.
        spacing: voxel size in mm along (H, W, D) for HD95.
        labels: structures scored; names from ``STRUCTURE_NAMES`` (rv, lvm, lvbp), else "label<k>".
        border: Jacobian border crop for the folding statistics.
        jacobian: (B, H, W, D) ``jacobian_determinant(ddf)`` (no crop) when the caller has it already; None: computed
            here.

    Returns:
        dict of (B,) tensors: "dice_rv", "dice_lvm", "dice_lvbp", "dice_mean" (NaN-mean over
        structures), "hd95_rv", "hd95_lvm", "hd95_lvbp", "hd95_mean" (mm, mean over structures present
        in both masks), "sdlogj_plus3", "std_log_j_positive", "folding_percent".
    """
    ddf = _as_tensor(ddf)
    if not ddf.dtype.is_floating_point:
        ddf = ddf.float()
    moving = _label_batch(moving_label)[:, None].to(ddf.device)
    warped = warp_labels_nearest(moving, ddf)
    results = _per_structure("dice", dice_per_structure(warped, fixed_label, labels), labels)
    hd95, hd95_mean = hd95_per_structure(warped, fixed_label, spacing, labels)
    results.update({f"hd95_{_name(label)}": hd95[:, index] for index, label in enumerate(labels)})
    results["hd95_mean"] = hd95_mean
    jac = jacobian_determinant(ddf, border=border) if jacobian is None else crop_border(jacobian, border)
    results["sdlogj_plus3"] = sdlogj_plus3(jac)
    results["std_log_j_positive"] = std_log_jacobian_positive(jac)
    results["folding_percent"] = folding_percent(jac)
    return results


@torch.no_grad()
def segmentation_dice(
    anatomical_logits: torch.Tensor | np.ndarray,
    fixed_label: torch.Tensor | np.ndarray,
    labels: Sequence[int] = STRUCTURE_LABELS,
) -> dict[str, torch.Tensor]:
    """Dice of the memory's segmentation of the fixed image (argmax over classes) per structure.

    Args:
        anatomical_logits: (B, num_classes, H, W, D) level-0 logits (argmax of the logits equals the
            argmax of the anatomical probabilities).
        fixed_label: (B, 1, H, W, D) integer labels of the fixed image.
        labels: structures scored.

    Returns:
        dict of (B,) tensors: "seg_dice_rv", "seg_dice_lvm", "seg_dice_lvbp", "seg_dice_mean".
    """
    segmentation = label_map_from_scores(_as_tensor(anatomical_logits), dim=1)
    return _per_structure("seg_dice", dice_per_structure(segmentation, fixed_label, labels), labels)


def _per_structure(prefix: str, scores: torch.Tensor, labels: Sequence[int]) -> dict[str, torch.Tensor]:
    results = {f"{prefix}_{_name(label)}": scores[:, index] for index, label in enumerate(labels)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        results[f"{prefix}_mean"] = torch.nanmean(scores, dim=1)
    return results
