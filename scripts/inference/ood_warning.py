"""An honest warning: signs that a pair lies outside what the network learned, as pure functions.

Label-free per-pair statistics, all on the network grid (:data:`CANDIDATE_STATISTICS`), some of which are rules:

- **memory confidence in the body**: the anatomical memory's level-0 class probabilities ``p`` (N classes) give
  each voxel a confidence ``1 - H(p) / log N`` (1: one class certain, 0: all classes equally likely); their mean
  over the body is low when the memory does not recognise the anatomy. The **body** is the part of the fixed image
  that is tissue, not air nor the zero padding of preprocessing: the voxels of its field of view (value > 0) whose
  intensity lies above the Otsu threshold of those voxels (:func:`body_mask`). Also: the share of the body whose
  confidence is below :data:`LOW_CONFIDENCE`.
- **plausibility of the memory's segmentation** of the fixed image (:func:`segmentation_plausibility`): the heart's
  volume in ml (a wrong voxel size in the header or an image the memory misreads changes it), whether the LV blood
  pool is enclosed by myocardium, whether each structure is in one piece.
- **similarity improvement**: how much the network's warp improves the image dissimilarity over no warp,
  relatively: ``(S(moving, fixed) - S(moving o phi, fixed)) / |S(moving, fixed)|`` with ``S`` the refinement's
  dissimilarity (:func:`scripts.inference.refinement.image_dissimilarity`, in-plane LNCC by default), and the same
  with MSE.
- **folding**: % of voxels with ``det(I + grad u) <= 0`` (2-voxel border crop, as in the summary's metrics).
- with the network also run with the images swapped (the calibration benchmark does; inference does not): the
  **agreement** of the two images' memory segmentations through the field and its gain over no warp
  (:func:`segmentation_agreement`), and the **inverse consistency** of the two fields inside the heart.

:func:`warning_statistics` computes the statistics per pair; :func:`ood_warnings` turns one pair's numbers into
warning sentences under :class:`WarningThresholds` (:data:`RULES`: which field judges which statistic);
:func:`thresholds_from_statistics` sets thresholds from the statistics of in-distribution pairs for a chosen
false-alarm rate. The dataclass's defaults are generic; inference uses :data:`WARNING_THRESHOLDS`, chosen with
``python -m scripts.benchmark warning`` (:mod:`scripts.benchmark.warning_calibration`) on the phantom test split and
the perturbation suite.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from scripts.inference.inverse_field import compose_displacements
from scripts.inference.refinement import DEFAULT_SIMILARITY, image_dissimilarity
from scripts.label_maps import label_map_from_scores
from scripts.labels import NETWORK_PIXDIM_MM, STRUCTURE_NAMES
from scripts.metrics import JACOBIAN_BORDER, crop_border, dice_per_structure, folding_percent, jacobian_determinant
from scripts.warping import warp_labels_nearest

__all__ = [
    "MEMORY_CONFIDENCE",
    "SIMILARITY_IMPROVEMENT",
    "FOLDING_PERCENT",
    "SUGGESTED_REFINE_STEPS",
    "WARNING_SIMILARITY",
    "WARNING_THRESHOLDS",
    "WarningThresholds",
    "body_mask",
    "memory_confidence",
    "ood_warnings",
    "otsu_threshold",
    "thresholds_from_statistics",
    "warning_statistics",
    "warning_thresholds",
]

# keys of the per-pair statistics
MEMORY_CONFIDENCE = "memory_confidence_body"
SIMILARITY_IMPROVEMENT = "similarity_improvement"
FOLDING_PERCENT = "folding_percent"
LOW_CONFIDENCE_FRACTION = "low_confidence_fraction_body"
SIMILARITY_IMPROVEMENT_MSE = "similarity_improvement_mse"
HEART_VOLUME_ML = "heart_volume_ml"
LV_ENCLOSURE = "lv_blood_pool_enclosure"
LARGEST_COMPONENT_FRACTION = "largest_component_fraction"
SEGMENTATION_AGREEMENT = "segmentation_agreement"
SEGMENTATION_AGREEMENT_GAIN = "segmentation_agreement_gain"
RELATIVE_AGREEMENT_GAIN = "relative_segmentation_agreement_gain"
INVERSE_CONSISTENCY_MM = "inverse_consistency_heart_mm"
CANDIDATE_STATISTICS: dict[str, str] = {
    MEMORY_CONFIDENCE: "below",
    LOW_CONFIDENCE_FRACTION: "above",
    SIMILARITY_IMPROVEMENT: "below",
    SIMILARITY_IMPROVEMENT_MSE: "below",
    FOLDING_PERCENT: "above",
    HEART_VOLUME_ML: "outside",
    LV_ENCLOSURE: "below",
    LARGEST_COMPONENT_FRACTION: "below",
    SEGMENTATION_AGREEMENT: "below",
    SEGMENTATION_AGREEMENT_GAIN: "below",
    RELATIVE_AGREEMENT_GAIN: "below",
    INVERSE_CONSISTENCY_MM: "above",
}
"""Every label-free statistic :func:`warning_statistics` can give, and on which side trouble lies: "below" (a low
value is suspicious), "above", or "outside" (either way, e.g. a heart too small or too large)."""
LOW_CONFIDENCE = 0.5
"""A voxel counts as low-confidence below this memory confidence (:data:`LOW_CONFIDENCE_FRACTION`)."""

SUGGESTED_REFINE_STEPS = 20
"""The ``--refine_steps`` value a warning suggests: on the phantom's perturbed sets 20 in-plane LNCC steps gave within
half a Dice point of 50 (docs/README.md, "Adaptive inference")."""

WARNING_SIMILARITY = DEFAULT_SIMILARITY
"""The dissimilarity whose improvement inference judges (see :func:`warning_statistics`)."""


@dataclass(frozen=True)
class WarningThresholds:
    """When a statistic warns (generic defaults; inference uses :data:`WARNING_THRESHOLDS`). None: not judged.

    Attributes:
        min_memory_confidence: warn below this mean confidence of the memory inside the body, in [0, 1].
        min_similarity_improvement: warn below this relative improvement of the dissimilarity by the network's warp.
        max_folding_percent: warn above this % of folding voxels.
        heart_volume_range_ml: warn when the memory's heart (RV, LV myocardium and blood pool of the fixed image) is
            smaller or larger than this (low, high) in ml.
        min_segmentation_agreement: warn below this Dice between the fixed image's memory segmentation and the
            moving image's, warped by the field (needs the swapped pass).
        min_segmentation_agreement_gain: warn when the warp raises that Dice by less than this (needs the swapped
            pass).
        min_lv_enclosure: warn when less than this fraction of the LV blood pool's border is myocardium.
        min_largest_component_fraction: warn when a structure of the memory's segmentation has less than this share
            of its voxels in its largest connected piece.
        max_low_confidence_fraction: warn when more than this share of the body has a memory confidence below
            :data:`LOW_CONFIDENCE`.
    """

    min_memory_confidence: float | None = 0.6
    min_similarity_improvement: float | None = 0.05
    max_folding_percent: float | None = 0.5
    heart_volume_range_ml: tuple[float, float] | None = None
    min_segmentation_agreement: float | None = None
    min_segmentation_agreement_gain: float | None = None
    min_lv_enclosure: float | None = None
    min_largest_component_fraction: float | None = None
    max_low_confidence_fraction: float | None = None

    @property
    def needs_swapped_pass(self) -> bool:
        """Whether a rule needs the network run with the images swapped (the moving image's memory segmentation)."""
        return self.min_segmentation_agreement is not None or self.min_segmentation_agreement_gain is not None


RULES: dict[str, tuple[str, str]] = {
    "min_memory_confidence": (MEMORY_CONFIDENCE, "below"),
    "min_similarity_improvement": (SIMILARITY_IMPROVEMENT, "below"),
    "max_folding_percent": (FOLDING_PERCENT, "above"),
    "heart_volume_range_ml": (HEART_VOLUME_ML, "outside"),
    "min_segmentation_agreement": (SEGMENTATION_AGREEMENT, "below"),
    "min_segmentation_agreement_gain": (SEGMENTATION_AGREEMENT_GAIN, "below"),
    "min_lv_enclosure": (LV_ENCLOSURE, "below"),
    "min_largest_component_fraction": (LARGEST_COMPONENT_FRACTION, "below"),
    "max_low_confidence_fraction": (LOW_CONFIDENCE_FRACTION, "above"),
}
"""Each :class:`WarningThresholds` field: the statistic it judges and on which side it warns (as in
:data:`CANDIDATE_STATISTICS`)."""

WARNING_THRESHOLDS = WarningThresholds(
    min_memory_confidence=0.94,
    min_similarity_improvement=None,
    max_folding_percent=0.6,
    heart_volume_range_ml=(170.0, 610.0),
    min_largest_component_fraction=0.59,
    max_low_confidence_fraction=0.02,
)
"""The rule inference uses, chosen by measurement with the shipped 0.7.0 weights (docs/README.md, "Calibrating the
warning"): ``python -m scripts.benchmark warning --dataset_dir phantom_data --max_patients 8 --reference_patients 30``
(phantom test patients 101-130 unperturbed, 101-108 under the 12 perturbations) and the same with ``--section training
--perturbations unperturbed --reference_patients 100 --max_patients 0`` (the 170 unperturbed training pairs). On those
230 unperturbed pairs the memory's heart measured 178-599 ml, the smallest share of a structure in one piece was
0.595, the memory's confidence in the body >= 0.943, the share of the body below 0.5 confidence <= 0.0182 and folding
<= 0.57 %: each limit lies outside that range. 0.6.0's limits (285-565 ml, 0.80, 0.89) warned on 12 of the 60 test
pairs with 0.7.0's weights; limits set on the 60 test pairs alone (200-550 ml, 0.945, 1.5 %, folding 0.5 %) warned on
11 of the 170 training pairs. Segmentation agreement through the field, the strongest single statistic with 0.7.0
(59 % of the low-gain pairs at 5 % false alarms), is not judged: it needs a second network pass per pair and added no
detection at 0 false alarms. The LNCC improvement is not judged: it caught 4 % of the low-gain pairs at 5 % false
alarms."""


def warning_thresholds(heart_volume_range_ml: Sequence[float] | str | None = "calibrated") -> WarningThresholds:
    """The inference rule (:data:`WARNING_THRESHOLDS`) with the heart-volume limits chosen by the user.

    The limits in :data:`WARNING_THRESHOLDS` are the phantom's hearts; real hearts (a dilated ventricle, a small
    heart at end-systole) may lie outside them. Recalibrate them on your own data with ``python -m scripts.benchmark
    warning`` and pass the result here (``inference.json``: ``--warning_heart_volume_range_ml "[low, high]"``).

    Args:
        heart_volume_range_ml: ``"calibrated"`` keeps :data:`WARNING_THRESHOLDS`' limits; a (low, high) pair in ml
            replaces them; ``None`` or ``"off"`` stops judging the heart volume.

    Returns:
        the :class:`WarningThresholds` to give ``registration_postprocessing``.
    """
    if isinstance(heart_volume_range_ml, str):
        choice = heart_volume_range_ml.strip().lower()
        if choice == "calibrated":
            return WARNING_THRESHOLDS
        if choice in ("off", "none"):
            return replace(WARNING_THRESHOLDS, heart_volume_range_ml=None)
        raise ValueError(
            "warning_heart_volume_range_ml must be 'calibrated', 'off' or [low, high] in ml, "
            f"got {heart_volume_range_ml!r}."
        )
    if heart_volume_range_ml is None:
        return replace(WARNING_THRESHOLDS, heart_volume_range_ml=None)
    limits = tuple(float(value) for value in heart_volume_range_ml)
    if len(limits) != 2 or not 0.0 <= limits[0] < limits[1]:
        raise ValueError(
            f"warning_heart_volume_range_ml must be [low, high] in ml with 0 <= low < high, got {list(limits)}."
        )
    return replace(WARNING_THRESHOLDS, heart_volume_range_ml=limits)


def memory_confidence(anatomical_logits: torch.Tensor) -> torch.Tensor:
    """Per-voxel confidence ``1 - H(p) / log N`` of the memory's class probabilities ``p = softmax(logits)``.

    Args:
        anatomical_logits: (B, N, H, W, D) logits of N >= 2 classes (the network's ``anatomical_logits[0]``, already
            divided by the temperature).

    Returns:
        (B, 1, H, W, D) float tensor in [0, 1].
    """
    if anatomical_logits.ndim != 5 or anatomical_logits.shape[1] < 2:
        raise ValueError(f"anatomical_logits must be (B, N >= 2, H, W, D), got {tuple(anatomical_logits.shape)}.")
    log_probabilities = torch.log_softmax(anatomical_logits.float(), dim=1)
    entropy = -(log_probabilities.exp() * log_probabilities).sum(dim=1, keepdim=True)
    return (1.0 - entropy / math.log(anatomical_logits.shape[1])).clamp(0.0, 1.0)


def otsu_threshold(values: torch.Tensor, bins: int = 256) -> float:
    """Otsu's threshold of a set of intensities: the histogram split that maximises the between-class variance.

    Args:
        values: 1-D tensor of intensities (any range).
        bins: histogram bins over [min, max].

    Returns:
        the threshold (a bin edge); the common value if all values are equal.
    """
    values = values.detach().flatten().double()
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return low
    counts = torch.histc(values, bins=bins, min=low, max=high)
    centres = low + (torch.arange(bins, dtype=torch.float64, device=values.device) + 0.5) * (high - low) / bins
    weight_below = torch.cumsum(counts, 0)
    sum_below = torch.cumsum(counts * centres, 0)
    total, total_sum = weight_below[-1], sum_below[-1]
    weight_above = total - weight_below
    mean_below = sum_below / weight_below.clamp_min(1)
    mean_above = (total_sum - sum_below) / weight_above.clamp_min(1)
    between = weight_below * weight_above * (mean_below - mean_above) ** 2
    split = int(torch.argmax(between[:-1]))  # the last split leaves nothing above
    return low + (split + 1) * (high - low) / bins


def body_mask(fixed: torch.Tensor) -> torch.Tensor:
    """The body of each fixed image: field-of-view voxels (value > 0) above their Otsu threshold (module docstring).

    Args:
        fixed: (B, 1, H, W, D) fixed images on the network grid, in [0, 1] with the preprocessing's zero padding.

    Returns:
        (B, 1, H, W, D) bool tensor.
    """
    masks = []
    for image in fixed:
        field_of_view = image > 0
        if not bool(field_of_view.any()):
            masks.append(field_of_view)
            continue
        masks.append(field_of_view & (image > otsu_threshold(image[field_of_view])))
    return torch.stack(masks)


@torch.no_grad()
def warning_statistics(
    moving: torch.Tensor,
    fixed: torch.Tensor,
    ddf: torch.Tensor,
    anatomical_logits: torch.Tensor | None = None,
    similarity: str | None = DEFAULT_SIMILARITY,
    moving_logits: torch.Tensor | None = None,
    reverse_ddf: torch.Tensor | None = None,
    pixdim: Sequence[float] = NETWORK_PIXDIM_MM,
    jacobian: torch.Tensor | None = None,
) -> list[dict[str, float | None]]:
    """The statistics of the warning rules, per pair (module docstring).

    Args:
        moving, fixed: (B, 1, H, W, D) network inputs in [0, 1].
        ddf: (B, 3, H, W, D) the network's displacement in voxel units (``warped(x) = moving(x + ddf(x))``).
        anatomical_logits: (B, N, H, W, D) the memory's level-0 logits, or None for networks without a memory.
        similarity: the dissimilarity of the improvement (see :data:`scripts.inference.refinement.SIMILARITIES`);
            None: that improvement is not computed (inference, when no rule judges it: the in-plane LNCC before and
            after the warp costs more than every other statistic together).
        moving_logits: (B, N, H, W, D) the memory's level-0 logits of the MOVING image (the network run with the
            images swapped), for the segmentation agreement; None: not computed.
        reverse_ddf: (B, 3, H, W, D) the network's displacement with the images swapped (fixed -> moving), for the
            inverse consistency; None: not computed.
        pixdim: voxel size in mm (volumes, inverse consistency).
        jacobian: (B, H, W, D) ``jacobian_determinant(ddf)`` (no border crop) when the caller has it already (inference
            reuses it for its metrics); None: computed here.

    Returns:
        one dict per pair: :data:`SIMILARITY_IMPROVEMENT_MSE`, :data:`FOLDING_PERCENT`, and unless ``similarity`` is
        None :data:`SIMILARITY_IMPROVEMENT` and the raw ``similarity_identity`` and ``similarity_network`` (lower is
        better); with ``anatomical_logits`` also :data:`MEMORY_CONFIDENCE` and :data:`LOW_CONFIDENCE_FRACTION` (None
        without body voxels) and the plausibility of the memory's segmentation (:func:`segmentation_plausibility`),
        with ``moving_logits`` :data:`SEGMENTATION_AGREEMENT`, :data:`SEGMENTATION_AGREEMENT_GAIN` and
        :data:`RELATIVE_AGREEMENT_GAIN`, with ``reverse_ddf`` :data:`INVERSE_CONSISTENCY_MM` (median over the
        memory's heart). A statistic the inputs do not allow is None (:data:`MEMORY_CONFIDENCE`) or absent.
    """
    jacobian = jacobian_determinant(ddf) if jacobian is None else jacobian
    folding = folding_percent(crop_border(jacobian, JACOBIAN_BORDER))
    results: list[dict[str, float | None]] = [{MEMORY_CONFIDENCE: None} for _ in range(ddf.shape[0])]
    if similarity is not None:
        before = image_dissimilarity(moving, fixed, None, similarity)
        after = image_dissimilarity(moving, fixed, ddf, similarity)
        improvement = (before - after) / before.abs().clamp_min(1e-12)
    for index, result in enumerate(results):
        if similarity is not None:
            result[SIMILARITY_IMPROVEMENT] = float(improvement[index])
        result[FOLDING_PERCENT] = float(folding[index])
        if similarity is not None:
            result["similarity_identity"], result["similarity_network"] = float(before[index]), float(after[index])
    before_mse = image_dissimilarity(moving, fixed, None, "mse")
    after_mse = image_dissimilarity(moving, fixed, ddf, "mse")
    for result, value in zip(results, (before_mse - after_mse) / before_mse.abs().clamp_min(1e-12)):
        result[SIMILARITY_IMPROVEMENT_MSE] = float(value)
    if anatomical_logits is None:
        return results
    confidence = memory_confidence(anatomical_logits)
    for result, voxels, inside in zip(results, confidence, body_mask(fixed).to(confidence.device)):
        result[MEMORY_CONFIDENCE] = float(voxels[inside].mean()) if bool(inside.any()) else None
        result[LOW_CONFIDENCE_FRACTION] = (
            float((voxels[inside] < LOW_CONFIDENCE).float().mean()) if bool(inside.any()) else None
        )
    fixed_segmentation = label_map_from_scores(anatomical_logits, dim=1, keepdim=True)
    for result, plausibility in zip(results, segmentation_plausibility(fixed_segmentation, pixdim)):
        result.update(plausibility)
    if moving_logits is not None:
        moving_segmentation = label_map_from_scores(moving_logits, dim=1, keepdim=True)
        agreement, agreement_before = segmentation_agreement(moving_segmentation, fixed_segmentation, ddf)
        for result, value, start in zip(results, agreement.tolist(), agreement_before.tolist()):
            present = math.isfinite(value) and math.isfinite(start)
            result[SEGMENTATION_AGREEMENT] = value if math.isfinite(value) else None
            result[SEGMENTATION_AGREEMENT_GAIN] = value - start if present else None
            result[RELATIVE_AGREEMENT_GAIN] = (value - start) / max(1.0 - start, 1e-6) if present else None
    if reverse_ddf is not None:
        residual = compose_displacements(ddf.float(), reverse_ddf.float())
        residual_mm = residual * residual.new_tensor([float(p) for p in pixdim]).view(1, 3, 1, 1, 1)
        errors = torch.linalg.vector_norm(residual_mm, dim=1)
        for result, error, heart in zip(results, errors, fixed_segmentation[:, 0] > 0):
            result[INVERSE_CONSISTENCY_MM] = float(error[heart].median()) if bool(heart.any()) else None
    return results


LV_BLOOD_POOL, LV_MYOCARDIUM = 3, 2
IN_PLANE_NEIGHBOURS = ((1, 0), (-1, 0), (0, 1), (0, -1))


def _in_plane_neighbour(label: torch.Tensor, step: tuple[int, int]) -> torch.Tensor:
    """``label`` (H, W, D) read one voxel away in-plane (``out[x] = label[x + step]``), -1 beyond the border."""
    padded = torch.nn.functional.pad(label, (0, 0, 1, 1, 1, 1), value=-1)
    height, width = label.shape[:2]
    return padded[1 + step[0] : 1 + step[0] + height, 1 + step[1] : 1 + step[1] + width]


def segmentation_plausibility(
    segmentation: torch.Tensor, pixdim: Sequence[float] = NETWORK_PIXDIM_MM
) -> list[dict[str, float | None]]:
    """How much a memory segmentation looks like a heart, per image (no ground truth needed).

    Args:
        segmentation: (B, 1, H, W, D) labels 0..3 (background, RV, LV myocardium, LV blood pool).
        pixdim: voxel size in mm.

    Returns:
        one dict per image: :data:`HEART_VOLUME_ML` (labels 1-3, ml); :data:`LV_ENCLOSURE`, the fraction of the LV
        blood pool's in-plane outer border (4-neighbours outside it) that is myocardium (1: fully enclosed; None
        without blood pool); :data:`LARGEST_COMPONENT_FRACTION`, over the structures present the smallest share of a
        structure's voxels in its largest 6-connected component (1: every structure in one piece; None without any).
    """
    voxel_ml = float(np.prod([float(p) for p in pixdim])) / 1000.0
    results = []
    for image in segmentation.detach().cpu().long()[:, 0]:
        blood_pool = image == LV_BLOOD_POOL
        border = myocardium = 0
        for step in IN_PLANE_NEIGHBOURS:
            neighbour = _in_plane_neighbour(image, step)
            outside = blood_pool & (neighbour != LV_BLOOD_POOL)
            border += int(outside.sum())
            myocardium += int((outside & (neighbour == LV_MYOCARDIUM)).sum())
        shares = []
        for label in STRUCTURE_NAMES:
            mask = (image == label).numpy()
            if mask.any():
                components, count = ndimage.label(mask)
                shares.append(float(np.bincount(components.ravel())[1:].max()) / float(mask.sum()))
        results.append(
            {
                HEART_VOLUME_ML: float((image > 0).sum()) * voxel_ml,
                LV_ENCLOSURE: myocardium / border if border else None,
                LARGEST_COMPONENT_FRACTION: min(shares) if shares else None,
            }
        )
    return results


def segmentation_agreement(
    moving_segmentation: torch.Tensor, fixed_segmentation: torch.Tensor, ddf: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean Dice (RV, LV myocardium, LV blood pool) of the fixed image's memory segmentation with the moving image's,
    warped by ``ddf`` (nearest neighbour) and not warped: a label-free stand-in for the registration's Dice.

    Args:
        moving_segmentation, fixed_segmentation: (B, 1, H, W, D) labels 0..3 (the memory's, one pass per direction).
        ddf: (B, 3, H, W, D) displacement in voxels (``warped(x) = moving(x + ddf(x))``).

    Returns:
        ``(after, before)``: (B,) float64 tensors, NaN where no structure is in either map.
    """
    labels = tuple(STRUCTURE_NAMES)
    warped = warp_labels_nearest(moving_segmentation.to(ddf.device, ddf.dtype), ddf)
    after = torch.nanmean(dice_per_structure(warped, fixed_segmentation, labels), dim=1)
    before = torch.nanmean(dice_per_structure(moving_segmentation, fixed_segmentation, labels), dim=1)
    return after.cpu(), before.cpu()


def _sentence(field: str, value: float, limit: float | tuple[float, float]) -> str:
    """The reason one rule gives, in words a user understands (without the advice)."""
    if field == "min_memory_confidence":
        return (
            f"the anatomical memory is unsure of the anatomy (mean confidence {value:.2f} inside the body, below "
            f"{limit:.2f}): the images may differ from the training data"
        )
    if field == "min_similarity_improvement":
        return (
            f"the registration barely improved the image similarity, or worsened it ({100 * value:+.1f} % against no "
            f"registration, warning below {100 * limit:+.1f} %)"
        )
    if field == "max_folding_percent":
        return f"the displacement folds in {value:.2f} % of the voxels (above {limit:.2f} %)"
    if field == "heart_volume_range_ml":
        return (
            f"the heart the anatomical memory finds in the fixed image measures {value:.0f} ml, outside the "
            f"{limit[0]:.0f}-{limit[1]:.0f} ml of the images the warning was calibrated on: a wrong voxel size in the "
            f"header, an unusual heart, or images unlike the training data (the memory then misreads the anatomy)"
        )
    if field == "min_segmentation_agreement":
        return (
            f"the registration does not carry the moving image's anatomy onto the fixed image's: the memory's "
            f"segmentations of the two images overlap by Dice {value:.2f} after warping (warning below {limit:.2f})"
        )
    if field == "min_segmentation_agreement_gain":
        return (
            f"the registration barely brought the two images' anatomy together: the overlap of the memory's "
            f"segmentations of the two images rose by {value:+.3f} Dice (warning below {limit:+.3f})"
        )
    if field == "min_lv_enclosure":
        return (
            f"the anatomical memory's left-ventricle blood pool is not enclosed by myocardium ({100 * value:.0f} % of "
            f"its border, warning below {100 * limit:.0f} %): the memory misreads the anatomy"
        )
    if field == "min_largest_component_fraction":
        return (
            f"the anatomical memory's segmentation falls apart (a structure keeps only {100 * value:.0f} % of its "
            f"voxels in one piece, warning below {100 * limit:.0f} %): the memory misreads the anatomy"
        )
    if field == "max_low_confidence_fraction":
        return (
            f"the anatomical memory is unsure in {100 * value:.1f} % of the body (confidence below {LOW_CONFIDENCE:g}; "
            f"warning above {100 * limit:.1f} %): the images may differ from the training data"
        )
    raise ValueError(f"no warning rule {field!r}")


def _beyond(value: float, limit: float | tuple[float, float], side: str) -> bool:
    if side == "below":
        return value < limit
    if side == "above":
        return value > limit
    return value < limit[0] or value > limit[1]


def ood_warnings(
    statistics: Mapping[str, float | None],
    thresholds: WarningThresholds = WarningThresholds(),
    suggested_refine_steps: int = SUGGESTED_REFINE_STEPS,
    advice: str | None = None,
) -> list[str]:
    """The warnings one pair deserves, as sentences naming the reason and suggesting ``--refine_steps``.

    Args:
        statistics: one pair's entry of :func:`warning_statistics` (a missing or None statistic is not judged).
        thresholds: the limits (a None limit is not judged).
        suggested_refine_steps: the step count the sentences suggest.
        advice: what each sentence ends with instead of the suggestion (e.g. when the field was refined already).

    Returns:
        list of strings, empty when nothing looks wrong.
    """
    if advice is None:
        advice = f"check the result, or register again with --refine_steps {suggested_refine_steps}"
    warnings = []
    for field, (name, side) in RULES.items():
        limit, value = getattr(thresholds, field), statistics.get(name)
        if limit is None or value is None or not math.isfinite(float(value)):
            continue
        if _beyond(float(value), limit, side):
            warnings.append(f"{_sentence(field, float(value), limit)}; {advice}")
    return warnings


def _quantile(values: Sequence[float | None], q: float, interpolation: str) -> float | None:
    present = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not present:
        return None
    return float(torch.quantile(torch.tensor(present, dtype=torch.float64), q, interpolation=interpolation))


def thresholds_from_statistics(
    reference: Sequence[Mapping[str, float | None]],
    false_alarm_rate: float = 0.05,
    fallback: WarningThresholds = WarningThresholds(),
) -> WarningThresholds:
    """Thresholds under which at most ``false_alarm_rate`` of the ``reference`` pairs would be warned about.

    The rules set are those ``fallback`` judges (its limits that are not None); each of the ``k`` of them gets
    ``false_alarm_rate / k``: its threshold is that quantile of the reference values (the upper one for "above"
    rules, half of it on each side for "outside" ones), so the union of the rules fires on at most
    ``false_alarm_rate`` of the reference pairs. Give in-distribution pairs (the phantom test split), then check the
    detection rate on perturbed ones with :func:`ood_warnings` (``python -m scripts.benchmark warning`` does both).

    Args:
        reference: per-pair statistics (:func:`warning_statistics`) of pairs that must not be warned about.
        false_alarm_rate: the largest fraction of reference pairs allowed a warning, in (0, 1).
        fallback: which rules to set, and the limits kept for a statistic the reference does not have.

    Returns:
        :class:`WarningThresholds`.
    """
    if not reference:
        raise ValueError("reference statistics are empty: give the statistics of at least one pair.")
    if not 0.0 < false_alarm_rate < 1.0:
        raise ValueError(f"false_alarm_rate must lie in (0, 1), got {false_alarm_rate}.")
    judged = [field for field in RULES if getattr(fallback, field) is not None]
    per_rule = false_alarm_rate / max(len(judged), 1)
    limits: dict[str, Any] = {}
    for field in judged:
        name, side = RULES[field]
        values = [s.get(name) for s in reference]
        # "lower"/"higher": a reference value, so at most per_rule of the reference lies strictly beyond it
        if side == "below":
            limit = _quantile(values, per_rule, "lower")
        elif side == "above":
            limit = _quantile(values, 1.0 - per_rule, "higher")
        else:
            low, high = _quantile(values, per_rule / 2, "lower"), _quantile(values, 1.0 - per_rule / 2, "higher")
            limit = None if low is None or high is None else (low, high)
        limits[field] = getattr(fallback, field) if limit is None else limit
    return replace(fallback, **limits)
