"""Specification of the registration metrics (scripts/metrics.py) on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scripts.metrics import (
    crop_border,
    dice_per_structure,
    folding_percent,
    hd95_per_structure,
    jacobian_determinant,
    registration_metrics,
    sdlogj_plus3,
    segmentation_dice,
    std_log_jacobian_positive,
)
from scripts.warping import one_hot_labels, warp_labels_nearest

SHAPE = (32, 32, 16)
SPACING = (1.8, 1.8, 10.0)


def empty_labels() -> torch.Tensor:
    return torch.zeros(1, 1, *SHAPE)


def constant_field(shift: tuple[float, float, float], shape: tuple[int, int, int] = SHAPE) -> torch.Tensor:
    return torch.tensor(shift, dtype=torch.float32).view(1, 3, 1, 1, 1).expand(1, 3, *shape).contiguous()


def affine_field(matrix: list[list[float]], shape: tuple[int, int, int] = SHAPE) -> torch.Tensor:
    """ddf(x) = (A - I) x, the displacement of the map x -> A x."""
    grid = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in shape], indexing="ij"))
    displacement = torch.tensor(matrix, dtype=torch.float64) - torch.eye(3, dtype=torch.float64)
    return torch.einsum("ij,j...->i...", displacement, grid)[None]


def test_dice_of_two_offset_boxes():
    # 8-voxel boxes overlapping on 6 voxels along x: Dice = 2 * 6 / (8 + 8) = 0.75
    pred, target = empty_labels(), empty_labels()
    pred[..., 2:10, 4:8, 3:6] = 1
    target[..., 4:12, 4:8, 3:6] = 1
    # structure 2: 4 voxels predicted inside a 12-voxel target: 2 * 4 / 16 = 0.5
    pred[..., 20:24, 20, 8] = 2
    target[..., 20:32, 20, 8] = 2
    dice = dice_per_structure(pred, target)
    assert dice.shape == (1, 3)
    assert dice[0, 0].item() == pytest.approx(0.75)
    assert dice[0, 1].item() == pytest.approx(0.5)
    assert math.isnan(dice[0, 2].item())


def test_dice_accepts_integer_numpy_maps_without_channel():
    pred = np.zeros(SHAPE, dtype=np.int64)
    pred[:4] = 3
    assert dice_per_structure(pred, pred, labels=(3,))[0, 0].item() == 1.0


def test_hd95_along_z_honours_10_mm_slices():
    # one-slice patches two slices apart: every surface voxel is exactly 2 x 10 mm from the other
    pred, target = empty_labels(), empty_labels()
    pred[..., 10:14, 10:14, 5] = 1
    target[..., 10:14, 10:14, 7] = 1
    per_structure, mean = hd95_per_structure(pred, target, spacing=SPACING)
    assert per_structure[0, 0].item() == pytest.approx(20.0)
    assert mean[0].item() == pytest.approx(20.0)


def test_hd95_in_mm_for_an_oblique_offset():
    # single voxels offset by (3, 4, 1) voxels: sqrt(5.4^2 + 7.2^2 + 10^2) = sqrt(181) mm
    pred, target = empty_labels(), empty_labels()
    pred[0, 0, 10, 10, 5] = 1
    target[0, 0, 13, 14, 6] = 1
    per_structure, _ = hd95_per_structure(pred, target, spacing=SPACING)
    assert per_structure[0, 0].item() == pytest.approx(math.sqrt(181.0), rel=1e-5)


def test_hd95_mean_skips_structures_missing_from_either_mask():
    pred, target = empty_labels(), empty_labels()
    pred[..., 10:14, 10:14, 5] = 1
    target[..., 10:14, 10:14, 7] = 1  # RV: 20 mm
    pred[0, 0, 20, 20, 10] = 2
    target[0, 0, 23, 20, 10] = 2  # LVM: 3 x 1.8 = 5.4 mm
    pred[0, 0, 28, 28, 12] = 3  # LVBP only in the prediction
    per_structure, mean = hd95_per_structure(pred, target, spacing=SPACING)
    assert per_structure[0, 1].item() == pytest.approx(5.4)
    assert math.isnan(per_structure[0, 2].item())
    assert mean[0].item() == pytest.approx((20.0 + 5.4) / 2)


def test_jacobian_of_zero_field_is_one():
    jac = jacobian_determinant(torch.zeros(2, 3, *SHAPE))
    assert jac.shape == (2, *SHAPE)
    assert torch.all(jac == 1.0)


def test_jacobian_of_scaling_is_the_product_of_scales():
    jac = jacobian_determinant(affine_field([[1.1, 0, 0], [0, 0.9, 0], [0, 0, 1.2]]), border=2)
    assert jac.shape == (1, 28, 28, 12)
    assert torch.allclose(jac, torch.full_like(jac, 1.188), atol=1e-10)


def test_jacobian_of_a_sheared_affine_is_its_determinant():
    # det [[1.1, 0.3, 0], [0.2, 0.9, 0], [0, 0, 1.2]] = 1.2 * (0.99 - 0.06) = 1.116
    jac = jacobian_determinant(affine_field([[1.1, 0.3, 0], [0.2, 0.9, 0], [0, 0, 1.2]]), border=2)
    assert torch.allclose(jac, torch.full_like(jac, 1.116), atol=1e-10)


def test_folding_percent_of_a_folded_band():
    # ddf_x = -2x where y < 5: J = 1 - 2 = -1 there (only d ddf_x / dx enters the determinant), 1 elsewhere
    ddf = torch.zeros(1, 3, 16, 16, 8)
    x = torch.arange(16, dtype=torch.float32).view(16, 1, 1)
    ddf[0, 0, :, :5, :] = (-2.0 * x).expand(16, 5, 8)
    jac = jacobian_determinant(ddf)
    assert set(jac.unique().tolist()) == {-1.0, 1.0}
    assert folding_percent(jac)[0].item() == pytest.approx(100 * 5 / 16)  # 31.25 %
    # with the 2-voxel crop y runs over 2..13, of which 2, 3, 4 fold: 3 / 12
    assert folding_percent(jacobian_determinant(ddf, border=2))[0].item() == pytest.approx(25.0)


def test_sdlogj_plus3_of_zero_field_is_zero():
    jac = jacobian_determinant(torch.zeros(1, 3, *SHAPE), border=2)
    assert sdlogj_plus3(jac)[0].item() == pytest.approx(0.0, abs=1e-12)
    assert std_log_jacobian_positive(jac)[0].item() == 0.0
    assert folding_percent(jac)[0].item() == 0.0


def test_sdlogj_of_a_quadratic_field_matches_hand_computation():
    # ddf_x = c x^2 / 2: central differences give exactly d ddf_x / dx = c x, so J = 1 + c x, constant in y, z
    c = 0.1
    x = torch.arange(16, dtype=torch.float64)
    ddf = torch.zeros(1, 3, 16, 12, 8, dtype=torch.float64)
    ddf[0, 0] = (c * x**2 / 2).view(16, 1, 1)
    jac = jacobian_determinant(ddf, border=2)
    interior_x = np.arange(2, 14)
    expected_plus3 = np.std(np.log(4.0 + c * interior_x))
    expected_positive = np.std(np.log(1.0 + c * interior_x))
    assert sdlogj_plus3(jac)[0].item() == pytest.approx(expected_plus3, rel=1e-9)
    assert std_log_jacobian_positive(jac)[0].item() == pytest.approx(expected_positive, rel=1e-9)


def test_std_log_jacobian_positive_ignores_folded_voxels():
    jac = torch.tensor([[[[-1.0, math.e, 1.0, 0.0]]]])  # only e and 1 count: logs 1 and 0, std 0.5
    assert std_log_jacobian_positive(jac)[0].item() == pytest.approx(0.5)
    assert folding_percent(jac)[0].item() == pytest.approx(50.0)


def test_nearest_label_warp_moves_label_from_x0_plus_s_to_x0_and_stays_integer():
    label = torch.zeros(1, 1, *SHAPE, dtype=torch.long)
    label[0, 0, 12, 9, 6] = 3
    warped = warp_labels_nearest(label, constant_field((2.0, -3.0, 1.0)))
    assert warped.dtype == torch.long
    assert warped[0, 0, 10, 12, 5].item() == 3 and warped.sum().item() == 3
    fractional = warp_labels_nearest(label.float() + (label == 0) * 2, constant_field((0.4, 0.3, 0.2)))
    assert set(fractional.unique().tolist()) <= {0.0, 2.0, 3.0}


def test_registration_metrics_of_a_field_that_undoes_a_known_shift():
    fixed = empty_labels()
    fixed[..., 8:16, 8:16, 4:8] = 1
    fixed[..., 16:20, 8:16, 4:8] = 2
    fixed[..., 10:14, 10:14, 5:7] = 3
    shift = (3, -2, 1)
    moving = fixed.roll(shifts=shift, dims=(2, 3, 4))
    identity = registration_metrics(torch.zeros(1, 3, *SHAPE), fixed, fixed)
    assert set(identity) == {
        "dice_rv",
        "dice_lvm",
        "dice_lvbp",
        "dice_mean",
        "hd95_rv",
        "hd95_lvm",
        "hd95_lvbp",
        "hd95_mean",
        "sdlogj_plus3",
        "std_log_j_positive",
        "folding_percent",
    }
    aligned = registration_metrics(constant_field(tuple(float(s) for s in shift)), moving, fixed)
    for key in ("dice_rv", "dice_lvm", "dice_lvbp", "dice_mean"):
        assert aligned[key][0].item() == 1.0
    for key in ("hd95_rv", "hd95_lvm", "hd95_lvbp", "hd95_mean", "sdlogj_plus3", "folding_percent"):
        assert aligned[key][0].item() == pytest.approx(0.0, abs=1e-12)
    unaligned = registration_metrics(torch.zeros(1, 3, *SHAPE), moving, fixed)
    assert unaligned["dice_mean"][0].item() < 0.7
    # the 1-slice through-plane offset alone is 10 mm
    assert unaligned["hd95_mean"][0].item() >= 10.0


def test_segmentation_dice_from_memory_logits():
    fixed = empty_labels()
    fixed[..., 8:16, 8:16, 4:8] = 1
    fixed[..., 16:20, 8:16, 4:8] = 2
    fixed[..., 10:14, 10:14, 5:7] = 3
    logits = 10.0 * one_hot_labels(fixed, 4)
    scores = segmentation_dice(logits, fixed)
    assert {key: value[0].item() for key, value in scores.items()} == {
        "seg_dice_rv": 1.0,
        "seg_dice_lvm": 1.0,
        "seg_dice_lvbp": 1.0,
        "seg_dice_mean": 1.0,
    }
    # predicting LVBP as LVM: LVBP Dice 0, LVM Dice 2 * 128 / (128 + 128 + 32) = 8 / 9
    wrong = one_hot_labels(torch.where(fixed == 3, 2.0, fixed), 4)
    scores = segmentation_dice(wrong, fixed)
    assert scores["seg_dice_lvbp"][0].item() == 0.0
    assert scores["seg_dice_lvm"][0].item() == pytest.approx(8 / 9)


def folding_field(shape=(48, 48, 16)) -> torch.Tensor:
    """Smooth motion of a few voxels plus voxel noise that folds in places (a network-like field)."""
    generator = torch.Generator().manual_seed(1)
    coarse = 4.0 * torch.randn(1, 3, 6, 6, 4, generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=shape, mode="trilinear", align_corners=True)
    return smooth + 0.4 * torch.randn(1, 3, *shape, generator=generator)


def test_cropping_the_uncropped_jacobian_equals_computing_it_cropped():
    ddf = folding_field()
    uncropped = jacobian_determinant(ddf)
    assert float(folding_percent(uncropped)) > 0.0
    for border in (0, 1, 2):
        assert torch.equal(crop_border(uncropped, border), jacobian_determinant(ddf, border=border))
    with pytest.raises(ValueError, match="border 8 leaves nothing"):
        crop_border(uncropped, 8)


def test_registration_metrics_with_a_given_jacobian_equal_those_computing_it():
    ddf = folding_field()
    fixed = torch.zeros(1, 1, 48, 48, 16)
    fixed[..., 12:36, 12:36, 3:13] = 1
    fixed[..., 18:30, 18:30, 3:13] = 3
    moving = torch.roll(fixed, shifts=(2, 1), dims=(2, 3))
    computed = registration_metrics(ddf, moving, fixed)
    reused = registration_metrics(ddf, moving, fixed, jacobian=jacobian_determinant(ddf))
    assert computed.keys() == reused.keys()
    for key, value in computed.items():
        assert torch.equal(value, reused[key]) or (value.isnan().all() and reused[key].isnan().all()), key
