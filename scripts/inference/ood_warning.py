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

import torch

from scripts.inference.refinement import DEFAULT_SIMILARITY, image_dissimilarity
from scripts.metrics import JACOBIAN_BORDER, folding_percent, jacobian_determinant

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
) -> list[dict[str, float | None]]:
    """The three statistics of the warning rules, per pair (module docstring).

    Args:
        moving, fixed: (B, 1, H, W, D) network inputs in [0, 1].
        ddf: (B, 3, H, W, D) the network's displacement in voxel units (``warped(x) = moving(x + ddf(x))``).
        anatomical_logits: (B, N, H, W, D) the memory's level-0 logits, or None for networks without a memory.
        similarity: the dissimilarity of the improvement (see :data:`scripts.inference.refinement.SIMILARITIES`).

    Returns:
        one dict per pair with :data:`MEMORY_CONFIDENCE` (None without logits or without body voxels),
        :data:`SIMILARITY_IMPROVEMENT`, :data:`FOLDING_PERCENT`, and the raw ``similarity_identity`` and
        ``similarity_network`` (lower is better).
    """
    before = image_dissimilarity(moving, fixed, None, similarity)
    after = image_dissimilarity(moving, fixed, ddf, similarity)
    improvement = (before - after) / before.abs().clamp_min(1e-12)
    folding = folding_percent(jacobian_determinant(ddf, border=JACOBIAN_BORDER))
    confidences: list[float | None] = [None] * ddf.shape[0]
    if anatomical_logits is not None:
        confidence = memory_confidence(anatomical_logits)
        for index, (voxels, inside) in enumerate(zip(confidence, body_mask(fixed).to(confidence.device))):
            confidences[index] = float(voxels[inside].mean()) if bool(inside.any()) else None
    return [
        {
            MEMORY_CONFIDENCE: confidences[index],
            SIMILARITY_IMPROVEMENT: float(improvement[index]),
            FOLDING_PERCENT: float(folding[index]),
            "similarity_identity": float(before[index]),
            "similarity_network": float(after[index]),
        }
        for index in range(ddf.shape[0])
    ]


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
