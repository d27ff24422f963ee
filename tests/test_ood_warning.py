"""Out-of-distribution warning rules: the statistics, the rules, and thresholds set from data."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from scripts.inference.ood_warning import (
    CANDIDATE_STATISTICS,
    FOLDING_PERCENT,
    HEART_VOLUME_ML,
    INVERSE_CONSISTENCY_MM,
    LARGEST_COMPONENT_FRACTION,
    LOW_CONFIDENCE_FRACTION,
    LV_ENCLOSURE,
    MEMORY_CONFIDENCE,
    RELATIVE_AGREEMENT_GAIN,
    SEGMENTATION_AGREEMENT,
    SEGMENTATION_AGREEMENT_GAIN,
    SIMILARITY_IMPROVEMENT,
    SIMILARITY_IMPROVEMENT_MSE,
    WARNING_THRESHOLDS,
    WarningThresholds,
    body_mask,
    memory_confidence,
    ood_warnings,
    otsu_threshold,
    segmentation_agreement,
    segmentation_plausibility,
    thresholds_from_statistics,
    warning_statistics,
    warning_thresholds,
)
from scripts.inference.postprocessing import OutOfDistributionCheckd

SHAPE = (32, 32, 6)


def blob_pair(shift: float = 3.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A Gaussian blob on a dim body inside zero padding, and the same shifted by ``shift`` voxels along axis 0.

    Returns (moving, fixed, true_ddf) with ``moving(x + true_ddf) = fixed(x)``.
    """
    x, y, _ = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in SHAPE], indexing="ij")

    def image(offset: float) -> torch.Tensor:
        blob = torch.exp(-((x - 16 - offset) ** 2 + (y - 16) ** 2) / (2 * 3.0**2))
        body = 0.3 * ((x > 5 + offset) & (x < 26 + offset) & (y > 5) & (y < 26)).float()
        return torch.maximum(body, blob)[None, None]

    moving, fixed = image(shift), image(0.0)
    true_ddf = torch.zeros(1, 3, *SHAPE)
    true_ddf[:, 0] = shift
    return moving, fixed, true_ddf


def test_memory_confidence_is_one_for_a_certain_class_and_zero_for_uniform_probabilities():
    certain = torch.zeros(1, 4, *SHAPE)
    certain[:, 2] = 50.0
    assert float(memory_confidence(certain).min()) == pytest.approx(1.0, abs=1e-6)
    assert float(memory_confidence(torch.zeros(1, 4, *SHAPE)).max()) == pytest.approx(0.0, abs=1e-6)
    # two classes at 1/2: H = log 2, confidence 1 - log 2 / log 4 = 1/2
    halves = torch.zeros(1, 4, *SHAPE)
    halves[:, :2] = 50.0
    assert float(memory_confidence(halves).mean()) == pytest.approx(0.5, abs=1e-5)


def test_otsu_threshold_splits_two_modes():
    values = torch.cat([torch.full((300,), 0.1), torch.full((100,), 0.7)])
    threshold = otsu_threshold(values)
    assert 0.1 < threshold < 0.7


def test_body_mask_excludes_padding_and_air():
    torch.manual_seed(0)
    fixed = torch.zeros(1, 1, *SHAPE)
    fixed[..., 4:28, :, :] = 0.05 + 0.02 * torch.rand(24, 32, 6)  # air inside the field of view
    fixed[..., 10:20, 10:20, :] = 0.8  # body
    mask = body_mask(fixed)
    assert mask.shape == fixed.shape and mask.dtype == torch.bool
    assert int(mask.sum()) == 10 * 10 * 6 and bool(mask[..., 10:20, 10:20, :].all())


def test_statistics_of_a_good_registration_warn_of_nothing():
    moving, fixed, true_ddf = blob_pair()
    logits = torch.zeros(1, 4, *SHAPE)
    logits[:, 0] = 20.0  # a memory certain of every voxel
    [statistics] = warning_statistics(moving, fixed, true_ddf, logits)
    assert statistics[MEMORY_CONFIDENCE] == pytest.approx(1.0, abs=1e-4)
    assert statistics[SIMILARITY_IMPROVEMENT] > 0.5
    assert statistics[FOLDING_PERCENT] == 0.0
    assert ood_warnings(statistics) == []


def test_identity_registration_warns_that_similarity_barely_improved():
    moving, fixed, _ = blob_pair()
    [statistics] = warning_statistics(moving, fixed, torch.zeros(1, 3, *SHAPE))
    assert statistics[SIMILARITY_IMPROVEMENT] == pytest.approx(0.0, abs=1e-6)
    assert statistics[MEMORY_CONFIDENCE] is None  # no memory: not judged
    [warning] = ood_warnings(statistics)
    assert "barely improved the image similarity" in warning and "--refine_steps" in warning


def test_statistics_are_per_pair_in_a_batch():
    moving, fixed, true_ddf = blob_pair()
    batch = warning_statistics(
        torch.cat([moving, moving]), torch.cat([fixed, fixed]), torch.cat([true_ddf, torch.zeros_like(true_ddf)])
    )
    assert len(batch) == 2
    assert batch[0][SIMILARITY_IMPROVEMENT] > 0.5 and batch[1][SIMILARITY_IMPROVEMENT] == pytest.approx(0.0, abs=1e-6)


LNCC_STATISTICS = (SIMILARITY_IMPROVEMENT, "similarity_identity", "similarity_network")


def test_without_a_similarity_the_lncc_statistics_are_absent_and_the_others_unchanged():
    moving, fixed, true_ddf = blob_pair()
    logits = torch.zeros(1, 4, *SHAPE)
    logits[:, 1, 10:22, 10:22] = 20.0
    [full] = warning_statistics(moving, fixed, true_ddf, logits)
    [lean] = warning_statistics(moving, fixed, true_ddf, logits, similarity=None)
    assert all(name in full and name not in lean for name in LNCC_STATISTICS)
    assert lean == {name: value for name, value in full.items() if name not in LNCC_STATISTICS}
    assert lean[SIMILARITY_IMPROVEMENT_MSE] > 0.5  # the MSE improvement stays


@pytest.mark.parametrize("judged", [False, True])
def test_inference_computes_the_lncc_improvement_only_when_a_rule_judges_it(judged):
    moving, fixed, true_ddf = blob_pair()
    thresholds = replace(WARNING_THRESHOLDS, min_similarity_improvement=-0.5 if judged else None)
    sample = {"pred": {"ddf": true_ddf}, "moving": moving[0], "fixed": fixed[0], "pair": {"pair_name": "blob"}}
    record = OutOfDistributionCheckd(thresholds)(sample)["out_of_distribution"]
    assert all((name in record["statistics"]) is judged for name in LNCC_STATISTICS)
    assert record["similarity"] == ("lncc" if judged else None)
    assert record["statistics"][SIMILARITY_IMPROVEMENT_MSE] > 0.5


def test_each_rule_names_its_reason():
    thresholds = WarningThresholds(min_memory_confidence=0.6, min_similarity_improvement=0.05, max_folding_percent=0.5)
    fine = {MEMORY_CONFIDENCE: 0.9, SIMILARITY_IMPROVEMENT: 0.3, FOLDING_PERCENT: 0.0}
    assert ood_warnings(fine, thresholds) == []
    [unsure] = ood_warnings({**fine, MEMORY_CONFIDENCE: 0.3}, thresholds)
    assert "unsure of the anatomy" in unsure and "0.30" in unsure
    [folding] = ood_warnings({**fine, FOLDING_PERCENT: 2.5}, thresholds, suggested_refine_steps=20)
    assert "folds in 2.50 %" in folding and "--refine_steps 20" in folding
    assert len(ood_warnings({MEMORY_CONFIDENCE: 0.1, SIMILARITY_IMPROVEMENT: -0.2, FOLDING_PERCENT: 3.0})) == 3


def test_thresholds_from_statistics_keep_false_alarms_below_the_rate():
    generator = torch.Generator().manual_seed(0)
    reference = [
        {
            MEMORY_CONFIDENCE: float(0.8 + 0.05 * torch.randn(1, generator=generator)),
            SIMILARITY_IMPROVEMENT: float(0.3 + 0.05 * torch.randn(1, generator=generator)),
            FOLDING_PERCENT: float(0.1 * torch.rand(1, generator=generator)),
        }
        for _ in range(200)
    ]
    thresholds = thresholds_from_statistics(reference, false_alarm_rate=0.05)
    warned = sum(bool(ood_warnings(statistics, thresholds)) for statistics in reference) / len(reference)
    assert 0.0 < warned <= 0.05
    # a pair far outside the reference on one statistic is caught
    assert ood_warnings({**reference[0], MEMORY_CONFIDENCE: 0.4}, thresholds)


def test_thresholds_fall_back_for_a_statistic_the_reference_lacks():
    reference = [{MEMORY_CONFIDENCE: None, SIMILARITY_IMPROVEMENT: 0.2, FOLDING_PERCENT: 0.0}] * 10
    thresholds = thresholds_from_statistics(reference, fallback=WarningThresholds(min_memory_confidence=0.42))
    assert thresholds.min_memory_confidence == 0.42
    assert math.isclose(thresholds.min_similarity_improvement, 0.2)


def test_thresholds_need_reference_pairs():
    with pytest.raises(ValueError, match="reference statistics are empty"):
        thresholds_from_statistics([])


def _ring_segmentation(shift: int = 0) -> torch.Tensor:
    """(1, 1, 32, 32, 6) labels: an LV blood pool (3) inside a myocardial ring (2), an RV (1) beside, moved along
    axis 0 by ``shift`` voxels."""
    x, y = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    radius = torch.hypot(x - 16 - shift, y - 16)
    label = torch.zeros(32, 32, dtype=torch.long)
    label[torch.hypot(x - 16 - shift, y - 6) < 4] = 1
    label[radius < 7] = 2
    label[radius < 4] = 3
    return label[None, None, :, :, None].repeat(1, 1, 1, 1, 6)


def test_plausibility_of_an_enclosed_blood_pool_in_one_piece_and_of_a_torn_one():
    [ring] = segmentation_plausibility(_ring_segmentation(), pixdim=(2.0, 2.0, 10.0))
    assert ring[LV_ENCLOSURE] == 1.0 and ring[LARGEST_COMPONENT_FRACTION] == 1.0
    heart_voxels = int((_ring_segmentation() > 0).sum())
    assert ring[HEART_VOLUME_ML] == pytest.approx(heart_voxels * 0.04)  # 2 x 2 x 10 mm = 0.04 ml a voxel
    torn = _ring_segmentation()
    torn[..., 16:, 14:19, :] = 0  # cut the ring and the blood pool open towards +x
    [open_ring] = segmentation_plausibility(torn)
    assert 0.5 < open_ring[LV_ENCLOSURE] < 1.0
    scattered = _ring_segmentation()
    scattered[..., 2:4, 28:30, :] = 3  # a second, separate piece of blood pool
    assert segmentation_plausibility(scattered)[0][LARGEST_COMPONENT_FRACTION] < 1.0
    [empty] = segmentation_plausibility(torch.zeros(1, 1, 8, 8, 6, dtype=torch.long))
    assert empty[LV_ENCLOSURE] is None and empty[LARGEST_COMPONENT_FRACTION] is None and empty[HEART_VOLUME_ML] == 0


def test_segmentation_agreement_is_perfect_for_the_true_field_and_imperfect_without_registration():
    moving, fixed = _ring_segmentation(shift=2), _ring_segmentation()
    true_ddf = torch.zeros(1, 3, 32, 32, 6)
    true_ddf[:, 0] = 2.0  # warped(x) = moving(x + 2 e0) = fixed(x)
    after, before = segmentation_agreement(moving, fixed, true_ddf)
    assert float(after[0]) == pytest.approx(1.0) and 0.3 < float(before[0]) < 0.9


def test_candidate_statistics_of_a_consistent_pair():
    moving, fixed, true_ddf = blob_pair()
    fixed_logits = 20.0 * torch.nn.functional.one_hot(_ring_segmentation()[:, 0], 4).permute(0, 4, 1, 2, 3).float()
    moving_logits = 20.0 * torch.nn.functional.one_hot(_ring_segmentation(3)[:, 0], 4).permute(0, 4, 1, 2, 3).float()
    [statistics] = warning_statistics(
        moving, fixed, true_ddf, fixed_logits, moving_logits=moving_logits, reverse_ddf=-true_ddf
    )
    assert set(statistics) >= set(CANDIDATE_STATISTICS)
    assert statistics[SEGMENTATION_AGREEMENT] == pytest.approx(1.0)
    assert 0.0 < statistics[SEGMENTATION_AGREEMENT_GAIN] < 1.0
    assert statistics[RELATIVE_AGREEMENT_GAIN] == pytest.approx(1.0)  # all of the disagreement removed
    assert statistics[INVERSE_CONSISTENCY_MM] == pytest.approx(0.0, abs=1e-5)  # a shift and its opposite
    assert statistics[LOW_CONFIDENCE_FRACTION] == 0.0


@pytest.mark.parametrize(
    "choice, expected",
    [
        ("calibrated", WARNING_THRESHOLDS.heart_volume_range_ml),
        ("off", None),
        (None, None),
        ([150, 900], (150.0, 900.0)),
    ],
)
def test_users_choose_the_heart_volume_limits_and_keep_the_other_rules(choice, expected):
    thresholds = warning_thresholds(choice)
    assert thresholds.heart_volume_range_ml == expected
    assert thresholds.min_memory_confidence == WARNING_THRESHOLDS.min_memory_confidence
    assert thresholds.max_folding_percent == WARNING_THRESHOLDS.max_folding_percent


@pytest.mark.parametrize("choice", [[900, 150], [100], "wide"])
def test_unusable_heart_volume_limits_are_refused_naming_the_key(choice):
    with pytest.raises(ValueError, match="warning_heart_volume_range_ml must be"):
        warning_thresholds(choice)


def test_inference_config_passes_the_heart_volume_limits_to_the_warning():
    parser = ConfigParser()
    parser.read_config(str(Path(__file__).resolve().parents[1] / "configs" / "inference.json"))
    assert parser.get_parsed_content("postprocessing#warning_thresholds") is WARNING_THRESHOLDS
    parser["warning_heart_volume_range_ml"] = [150, 900]
    assert parser.get_parsed_content("postprocessing#warning_thresholds").heart_volume_range_ml == (150.0, 900.0)
