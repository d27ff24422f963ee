"""An honest warning: signs that a pair lies outside what the network learned, as pure functions.

Three per-pair statistics, all on the network grid, each with a rule:

- **memory confidence in the body**: the anatomical memory's level-0 class probabilities ``p`` (N classes) give
  each voxel a confidence ``1 - H(p) / log N`` (1: one class certain, 0: all classes equally likely); their mean
  over the body is low when the memory does not recognise the anatomy. The **body** is the part of the fixed image
  that is tissue, not air nor the zero padding of preprocessing: the voxels of its field of view (value > 0) whose
  intensity lies above the Otsu threshold of those voxels (:func:`body_mask`). Under inverted contrast air becomes
  the bright class and the mask covers it instead; the memory is then unsure there too, which is the point.
- **similarity improvement**: how much the network's warp improves the image dissimilarity over no warp,
  relatively: ``(S(moving, fixed) - S(moving o phi, fixed)) / |S(moving, fixed)|`` with ``S`` the refinement's
  dissimilarity (:func:`scripts.inference.refinement.image_dissimilarity`, in-plane LNCC by default: it ignores
  contrast changes, so a poor value means a poor alignment, not a different scanner). Near 0 or negative: the
  network barely moved the image towards the fixed one.
- **folding**: % of voxels with ``det(I + grad u) <= 0`` (2-voxel border crop, as in the summary's metrics).

:func:`warning_statistics` computes the three numbers per pair; :func:`ood_warnings` turns one pair's numbers into
warning strings under :class:`WarningThresholds`; :func:`thresholds_from_statistics` sets the thresholds from the
statistics of in-distribution pairs (e.g. the phantom test split) for a chosen false-alarm rate. The dataclass's
defaults are generic; inference uses :data:`WARNING_THRESHOLDS`, measured on the phantom test split and the
perturbation suite.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from scripts.inference.inverse_field import compose_displacements
from scripts.inference.refinement import DEFAULT_SIMILARITY, image_dissimilarity
from scripts.labels import NETWORK_PIXDIM_MM, STRUCTURE_NAMES
from scripts.metrics import JACOBIAN_BORDER, dice_per_structure, folding_percent, jacobian_determinant
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
    """When a statistic warns (generic defaults; inference uses :data:`WARNING_THRESHOLDS`).

    Attributes:
        min_memory_confidence: warn below this mean confidence of the memory inside the body, in [0, 1].
        min_similarity_improvement: warn below this relative improvement of the dissimilarity by the network's warp.
        max_folding_percent: warn above this % of folding voxels.
    """

    min_memory_confidence: float = 0.6
    min_similarity_improvement: float = 0.05
    max_folding_percent: float = 0.5


# Calibrated on phantom test patients 101-105 (both directions) and their perturbed copies, see docs/README.md,
# "Adaptive inference": with 0.6.0's weights no unperturbed pair is below -5.8 % LNCC change (the sample pair -6.6 %),
# and the inverted-contrast sample pair, whose Dice the network lowers, is at -9.8 %.
WARNING_THRESHOLDS = WarningThresholds(
    min_memory_confidence=0.80, min_similarity_improvement=-0.08, max_folding_percent=0.5
)
"""The thresholds inference uses, measured with the shipped weights (docs/README.md, "Adaptive inference"): on 26
unperturbed phantom test pairs the memory's confidence stayed >= 0.87, the relative in-plane LNCC change >= -6.7 %
(the sample pair: -7.8 %) and folding <= 0.28 %, while the network's warp worsened the LNCC by 9-20 % on the
inverted-contrast pairs; folding keeps the issue's 0.5 % limit."""


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
    similarity: str = DEFAULT_SIMILARITY,
    moving_logits: torch.Tensor | None = None,
    reverse_ddf: torch.Tensor | None = None,
    pixdim: Sequence[float] = NETWORK_PIXDIM_MM,
    candidates: bool = False,
) -> list[dict[str, float | None]]:
    """The statistics of the warning rules, per pair (module docstring).

    Args:
        moving, fixed: (B, 1, H, W, D) network inputs in [0, 1].
        ddf: (B, 3, H, W, D) the network's displacement in voxel units (``warped(x) = moving(x + ddf(x))``).
        anatomical_logits: (B, N, H, W, D) the memory's level-0 logits, or None for networks without a memory.
        similarity: the dissimilarity of the improvement (see :data:`scripts.inference.refinement.SIMILARITIES`).
        moving_logits: (B, N, H, W, D) the memory's level-0 logits of the MOVING image (the network run with the
            images swapped), for the segmentation agreement; None: not computed.
        reverse_ddf: (B, 3, H, W, D) the network's displacement with the images swapped (fixed -> moving), for the
            inverse consistency; None: not computed.
        pixdim: voxel size in mm (volumes, inverse consistency).
        candidates: also every other statistic the calibration benchmark measures (those the inputs allow).

    Returns:
        one dict per pair with :data:`MEMORY_CONFIDENCE` (None without logits or without body voxels),
        :data:`SIMILARITY_IMPROVEMENT`, :data:`FOLDING_PERCENT`, the raw ``similarity_identity`` and
        ``similarity_network`` (lower is better), with ``moving_logits`` :data:`SEGMENTATION_AGREEMENT`,
        :data:`SEGMENTATION_AGREEMENT_GAIN` and :data:`RELATIVE_AGREEMENT_GAIN`, and with ``candidates``
        :data:`LOW_CONFIDENCE_FRACTION`, :data:`SIMILARITY_IMPROVEMENT_MSE`, :func:`segmentation_plausibility`'s
        and, with ``reverse_ddf``, :data:`INVERSE_CONSISTENCY_MM` (median over the memory's heart).
    """
    before = image_dissimilarity(moving, fixed, None, similarity)
    after = image_dissimilarity(moving, fixed, ddf, similarity)
    improvement = (before - after) / before.abs().clamp_min(1e-12)
    folding = folding_percent(jacobian_determinant(ddf, border=JACOBIAN_BORDER))
    results: list[dict[str, float | None]] = [
        {
            MEMORY_CONFIDENCE: None,
            SIMILARITY_IMPROVEMENT: float(improvement[index]),
            FOLDING_PERCENT: float(folding[index]),
            "similarity_identity": float(before[index]),
            "similarity_network": float(after[index]),
        }
        for index in range(ddf.shape[0])
    ]
    if candidates:
        before_mse = image_dissimilarity(moving, fixed, None, "mse")
        after_mse = image_dissimilarity(moving, fixed, ddf, "mse")
        for result, value in zip(results, (before_mse - after_mse) / before_mse.abs().clamp_min(1e-12)):
            result[SIMILARITY_IMPROVEMENT_MSE] = float(value)
    if anatomical_logits is None:
        return results
    confidence = memory_confidence(anatomical_logits)
    for result, voxels, inside in zip(results, confidence, body_mask(fixed).to(confidence.device)):
        result[MEMORY_CONFIDENCE] = float(voxels[inside].mean()) if bool(inside.any()) else None
        if candidates:
            result[LOW_CONFIDENCE_FRACTION] = (
                float((voxels[inside] < LOW_CONFIDENCE).float().mean()) if bool(inside.any()) else None
            )
    fixed_segmentation = torch.argmax(anatomical_logits, dim=1, keepdim=True)
    if candidates:
        for result, plausibility in zip(results, segmentation_plausibility(fixed_segmentation, pixdim)):
            result.update(plausibility)
    if moving_logits is not None:
        moving_segmentation = torch.argmax(moving_logits, dim=1, keepdim=True)
        agreement, agreement_before = segmentation_agreement(moving_segmentation, fixed_segmentation, ddf)
        for result, value, start in zip(results, agreement.tolist(), agreement_before.tolist()):
            present = math.isfinite(value) and math.isfinite(start)
            result[SEGMENTATION_AGREEMENT] = value if math.isfinite(value) else None
            result[SEGMENTATION_AGREEMENT_GAIN] = value - start if present else None
            result[RELATIVE_AGREEMENT_GAIN] = (value - start) / max(1.0 - start, 1e-6) if present else None
    if candidates and reverse_ddf is not None:
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


def ood_warnings(
    statistics: Mapping[str, float | None],
    thresholds: WarningThresholds = WarningThresholds(),
    suggested_refine_steps: int = SUGGESTED_REFINE_STEPS,
    advice: str | None = None,
) -> list[str]:
    """The warnings one pair deserves, as sentences naming the reason and suggesting ``--refine_steps``.

    Args:
        statistics: one pair's entry of :func:`warning_statistics` (a missing or None statistic is not judged).
        thresholds: the limits.
        suggested_refine_steps: the step count the sentences suggest.
        advice: what each sentence ends with instead of the suggestion (e.g. when the field was refined already).

    Returns:
        list of strings, empty when nothing looks wrong.
    """
    if advice is None:
        advice = f"check the result, or register again with --refine_steps {suggested_refine_steps}"
    warnings = []
    confidence = statistics.get(MEMORY_CONFIDENCE)
    if confidence is not None and confidence < thresholds.min_memory_confidence:
        warnings.append(
            f"the anatomical memory is unsure of the anatomy (mean confidence {confidence:.2f} inside the body, "
            f"below {thresholds.min_memory_confidence:.2f}): the images may differ from the training data; {advice}"
        )
    improvement = statistics.get(SIMILARITY_IMPROVEMENT)
    if improvement is not None and improvement < thresholds.min_similarity_improvement:
        warnings.append(
            f"the registration barely improved the image similarity, or worsened it ({100 * improvement:+.1f} % "
            f"against no registration, warning below {100 * thresholds.min_similarity_improvement:+.1f} %); {advice}"
        )
    folding = statistics.get(FOLDING_PERCENT)
    if folding is not None and folding > thresholds.max_folding_percent:
        warnings.append(
            f"the displacement folds in {folding:.2f} % of the voxels (above {thresholds.max_folding_percent:.2f} %); "
            f"{advice}"
        )
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

    Each of the three rules gets a third of the rate: its threshold is the ``false_alarm_rate / 3`` quantile of the
    reference values (the upper ``1 - false_alarm_rate / 3`` quantile for folding), so the union of the rules fires on
    at most ``false_alarm_rate`` of the reference pairs. Give in-distribution pairs (the phantom test split), then
    check the detection rate on perturbed ones with :func:`ood_warnings`.

    Args:
        reference: per-pair statistics (:func:`warning_statistics`) of pairs that must not be warned about.
        false_alarm_rate: the largest fraction of reference pairs allowed a warning, in (0, 1).
        fallback: thresholds kept for a statistic the reference does not have (e.g. no memory).

    Returns:
        :class:`WarningThresholds`.
    """
    if not reference:
        raise ValueError("reference statistics are empty: give the statistics of at least one pair.")
    if not 0.0 < false_alarm_rate < 1.0:
        raise ValueError(f"false_alarm_rate must lie in (0, 1), got {false_alarm_rate}.")
    per_rule = false_alarm_rate / 3.0
    # "lower"/"higher": a reference value, so at most per_rule of the reference lies strictly beyond it
    confidence = _quantile([s.get(MEMORY_CONFIDENCE) for s in reference], per_rule, "lower")
    improvement = _quantile([s.get(SIMILARITY_IMPROVEMENT) for s in reference], per_rule, "lower")
    folding = _quantile([s.get(FOLDING_PERCENT) for s in reference], 1.0 - per_rule, "higher")
    return WarningThresholds(
        min_memory_confidence=fallback.min_memory_confidence if confidence is None else confidence,
        min_similarity_improvement=fallback.min_similarity_improvement if improvement is None else improvement,
        max_folding_percent=fallback.max_folding_percent if folding is None else folding,
    )
