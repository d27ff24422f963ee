"""Specification of the MemWarp training loss (scripts/losses.py) and the warp helpers it uses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from scripts.losses import MemWarpLoss, diffusion_regularisation, soft_dice_loss
from scripts.warping import blur_in_plane, in_plane_pyramid, one_hot_labels, warp_image

SHAPE = (32, 32, 8)


def make_output(ddf: torch.Tensor, num_levels: int = 3, residual_scale: float = 0.0, logits=None) -> dict:
    """A network output whose level-l total field is ``ddf`` rescaled to level l (in-plane / 2^l)."""
    level_ddfs, residuals = [], []
    for level in range(num_levels):
        scale = torch.tensor([0.5**level, 0.5**level, 1.0], dtype=ddf.dtype).view(1, 3, 1, 1, 1)
        shape = (ddf.shape[2] // 2**level, ddf.shape[3] // 2**level, ddf.shape[4])
        level_ddf = F.interpolate(ddf, size=shape, mode="trilinear", align_corners=True) * scale
        level_ddfs.append(level_ddf)
        residuals.append(residual_scale * torch.randn_like(level_ddf))
    return {
        "ddf": level_ddfs[0],
        "warped": None,
        "level_ddfs": level_ddfs,
        "residuals": residuals,
        "anatomical_logits": [] if logits is None else logits,
    }


def gaussian_blob(centre: tuple[float, float, float], sigma: float = 3.0) -> torch.Tensor:
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in SHAPE], indexing="ij")
    squared = sum((g - c) ** 2 for g, c in zip(grids, centre))
    return torch.exp(-squared / (2 * sigma**2))[None, None]


def box_labels() -> torch.Tensor:
    label = torch.zeros(1, 1, *SHAPE)
    label[..., 6:20, 6:20, 2:6] = 1
    label[..., 10:16, 10:16, 2:6] = 2
    label[..., 12:14, 12:14, 3:5] = 3
    return label


def test_warp_moves_bright_voxel_at_x0_plus_s_to_x0():
    x0, s = (10, 12, 3), (2, -3, 1)
    image = torch.zeros(1, 1, *SHAPE)
    image[0, 0, x0[0] + s[0], x0[1] + s[1], x0[2] + s[2]] = 1.0
    ddf = torch.tensor(s, dtype=torch.float32).view(1, 3, 1, 1, 1).expand(1, 3, *SHAPE).contiguous()
    warped = warp_image(image, ddf)
    assert warped[0, 0, x0[0], x0[1], x0[2]].item() == pytest.approx(1.0, abs=1e-6)
    assert warped.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_blur_in_plane_keeps_constants_and_each_slice_separate():
    constant = torch.full((1, 1, *SHAPE), 0.7)
    assert torch.allclose(blur_in_plane(constant, 1.0), constant, atol=1e-6)
    impulse = torch.zeros(1, 1, *SHAPE)
    impulse[0, 0, 16, 16, 4] = 1.0
    blurred = blur_in_plane(impulse, 1.0)
    assert blurred[..., 4].sum().item() == pytest.approx(1.0, abs=1e-5)
    assert blurred[..., 3].abs().max().item() == 0.0 and blurred[..., 5].abs().max().item() == 0.0
    # separable Gaussian sigma 1: centre weight = g(0)^2 with g(0) = 1 / sum_k exp(-k^2 / 2), |k| <= 4
    g0 = 1.0 / sum(torch.exp(torch.tensor(-(k**2) / 2.0)).item() for k in range(-4, 5))
    assert blurred[0, 0, 16, 16, 4].item() == pytest.approx(g0**2, rel=1e-5)


def test_pyramid_halves_in_plane_only():
    levels = in_plane_pyramid(torch.rand(2, 1, *SHAPE), [(32, 32, 8), (16, 16, 8), (8, 8, 8)], sigma=1.0)
    assert [tuple(level.shape) for level in levels] == [(2, 1, 32, 32, 8), (2, 1, 16, 16, 8), (2, 1, 8, 8, 8)]


def test_similarity_is_zero_for_identical_images_and_zero_field():
    image = torch.rand(2, 1, *SHAPE)
    loss_fn = MemWarpLoss()
    loss = loss_fn(make_output(torch.zeros(2, 3, *SHAPE)), {"moving": image, "fixed": image.clone()})
    assert loss_fn.last_terms["similarity"] < 1e-12
    assert loss.item() < 1e-12


def test_level_weights_are_1_half_quarter():
    # a constant offset survives blur and resampling, so every level's MSE is offset^2
    fixed = torch.rand(1, 1, *SHAPE)
    offset = 0.2
    loss_fn = MemWarpLoss(regularisation_weight=0.0)
    loss = loss_fn(make_output(torch.zeros(1, 3, *SHAPE)), {"moving": fixed + offset, "fixed": fixed})
    assert loss.item() == pytest.approx(1.75 * offset**2, rel=1e-4)


def test_levels_truncate_to_the_output():
    fixed = torch.rand(1, 1, *SHAPE)
    loss_fn = MemWarpLoss(regularisation_weight=0.0)
    loss = loss_fn(make_output(torch.zeros(1, 3, *SHAPE), num_levels=1), {"moving": fixed + 0.2, "fixed": fixed})
    assert loss.item() == pytest.approx(0.04, rel=1e-4)


def test_loss_decreases_when_field_undoes_a_known_shift():
    # in-plane shift of a compact blob, so that no part of it leaves the field of view
    shift = (4.0, -3.0, 0.0)
    fixed = gaussian_blob((14.0, 17.0, 4.0), sigma=2.5)
    moving = gaussian_blob((14.0 + shift[0], 17.0 + shift[1], 4.0), sigma=2.5)
    loss_fn = MemWarpLoss(regularisation_weight=0.0)
    targets = {"moving": moving, "fixed": fixed}
    constant = torch.tensor(shift).view(1, 3, 1, 1, 1).expand(1, 3, *SHAPE).contiguous()
    losses = [loss_fn(make_output(fraction * constant), targets).item() for fraction in (0.0, 0.5, 1.0)]
    assert losses[0] > losses[1] > losses[2]
    # level 0 is exact; the coarse levels keep a small residue from align_corners resampling (63/31 != 2)
    assert losses[2] < 0.02 * losses[0]


def test_gradients_reach_level_ddfs_and_residuals():
    torch.manual_seed(0)
    output = make_output(0.5 * torch.randn(1, 3, *SHAPE), residual_scale=0.1)
    for tensors in (output["level_ddfs"], output["residuals"]):
        for tensor in tensors:
            tensor.requires_grad_(True)
    labels = box_labels()
    targets = {"moving": torch.rand(1, 1, *SHAPE), "fixed": torch.rand(1, 1, *SHAPE)}
    targets.update(moving_label=labels, fixed_label=labels.roll(2, dims=2))
    MemWarpLoss()(output, targets).backward()
    for tensor in output["level_ddfs"] + output["residuals"]:
        assert tensor.grad is not None and tensor.grad.abs().sum().item() > 0


@pytest.mark.parametrize("labels", ["absent", "none"])
def test_mask_terms_vanish_without_labels(labels):
    torch.manual_seed(0)
    image = torch.rand(1, 1, *SHAPE)
    targets = {"moving": image.roll(1, dims=2), "fixed": image}
    if labels == "none":
        targets.update(moving_label=None, fixed_label=None)
    logits = [torch.randn(1, 4, 32 // 2**level, 32 // 2**level, 8) for level in range(3)]
    loss_fn = MemWarpLoss()
    loss = loss_fn(make_output(torch.zeros(1, 3, *SHAPE), residual_scale=0.1, logits=logits), targets)
    assert loss_fn.last_terms["mask_dice"] == 0.0 and loss_fn.last_terms["region_dice"] == 0.0
    expected = loss_fn.last_terms["similarity"] + loss_fn.last_terms["regularisation"]
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_mask_terms_vanish_with_zero_weights():
    labels = box_labels()
    targets = {"moving": torch.rand(1, 1, *SHAPE), "fixed": torch.rand(1, 1, *SHAPE)}
    targets.update(moving_label=labels, fixed_label=labels.roll(3, dims=2))
    loss_fn = MemWarpLoss(mask_dice_weight=0.0, region_dice_weight=0.0)
    logits = [torch.randn(1, 4, 32 // 2**level, 32 // 2**level, 8) for level in range(3)]
    loss_fn(make_output(torch.zeros(1, 3, *SHAPE), logits=logits), targets)
    assert loss_fn.last_terms["mask_dice"] == 0.0 and loss_fn.last_terms["region_dice"] == 0.0


def test_mask_dice_includes_background_and_counts_empty_classes_as_perfect():
    # class 1 occupies x < 4 in the moving and x < 2 in the fixed 8x8x2 label: Dice 2*32/(64+32) = 2/3;
    # background: 2*64/(64+96) = 0.8; classes 2, 3 absent from both: 1.  Loss = 1 - (2/3 + 0.8 + 2) / 4.
    moving_label = torch.zeros(1, 1, 8, 8, 2)
    moving_label[:, :, :4] = 1
    fixed_label = torch.zeros(1, 1, 8, 8, 2)
    fixed_label[:, :, :2] = 1
    image = torch.zeros(1, 1, 8, 8, 2)
    targets = {"moving": image, "fixed": image, "moving_label": moving_label, "fixed_label": fixed_label}
    loss_fn = MemWarpLoss(region_dice_weight=0.0, regularisation_weight=0.0)
    loss = loss_fn(make_output(torch.zeros(1, 3, 8, 8, 2), num_levels=1), targets)
    assert loss.item() == pytest.approx(1.0 - (2.0 / 3.0 + 0.8 + 2.0) / 4.0, abs=1e-5)
    assert loss_fn.last_terms["mask_dice"] == pytest.approx(loss.item(), rel=1e-6)


def test_mask_dice_is_zero_for_identical_labels_and_zero_field():
    # at level 0 only: coarse one-hots are soft, and a soft map's Dice with itself is below 1
    labels = box_labels()
    image = torch.rand(1, 1, *SHAPE)
    targets = {"moving": image, "fixed": image, "moving_label": labels.long(), "fixed_label": labels.long()}
    loss_fn = MemWarpLoss(region_dice_weight=0.0)
    loss_fn(make_output(torch.zeros(1, 3, *SHAPE), num_levels=1), targets)
    assert loss_fn.last_terms["mask_dice"] < 1e-5


def test_region_dice_near_zero_for_confident_correct_logits():
    fixed_label = box_labels()
    logits = [100.0 * one_hot_labels(fixed_label, 4)]
    image = torch.rand(1, 1, *SHAPE)
    targets = {"moving": image, "fixed": image, "moving_label": fixed_label, "fixed_label": fixed_label}
    loss_fn = MemWarpLoss()
    loss_fn(make_output(torch.zeros(1, 3, *SHAPE), num_levels=1, logits=logits), targets)
    assert loss_fn.last_terms["region_dice"] < 1e-5


def test_region_dice_is_one_minus_mean_dice_of_wrong_logits():
    # every voxel predicted as class 3 while the fixed label is all background: Dice 0 for classes 0 and 3,
    # classes 1 and 2 absent from both (Dice 1), so the loss is 1 - 2/4 at every level, weighted 1.75 in total
    fixed_label = torch.zeros(1, 1, *SHAPE)
    logits = [torch.zeros(1, 4, 32 // 2**level, 32 // 2**level, 8) for level in range(3)]
    for tensor in logits:
        tensor[:, 3] = 100.0
    image = torch.rand(1, 1, *SHAPE)
    targets = {"moving": image, "fixed": image, "fixed_label": fixed_label}
    loss_fn = MemWarpLoss()
    loss_fn(make_output(torch.zeros(1, 3, *SHAPE), logits=logits), targets)
    assert loss_fn.last_terms["region_dice"] == pytest.approx(1.75 * 0.5, abs=1e-5)


def test_regulariser_is_diffusion_form_of_the_residuals():
    # residual u_0 = a * x_0: squared forward difference a^2 on one of 3 channels along one of 3 axes -> a^2 / 9
    a = 0.3
    ramp = a * torch.arange(SHAPE[0], dtype=torch.float32).view(1, SHAPE[0], 1, 1).expand(1, *SHAPE)
    residual = torch.cat([ramp, torch.zeros(1, *SHAPE), torch.zeros(1, *SHAPE)])[None]
    assert diffusion_regularisation(residual).item() == pytest.approx(a**2 / 9, rel=1e-5)
    output = make_output(torch.zeros(1, 3, *SHAPE), num_levels=1)
    output["residuals"] = [residual]
    image = torch.rand(1, 1, *SHAPE)
    loss_fn = MemWarpLoss(regularisation_weight=0.01)
    loss = loss_fn(output, {"moving": image, "fixed": image})
    assert loss.item() == pytest.approx(0.01 * a**2 / 9, rel=1e-4)


def test_soft_dice_loss_of_identical_one_hots_is_zero():
    one_hot = one_hot_labels(box_labels(), 4)
    assert soft_dice_loss(one_hot, one_hot).item() < 1e-6


def test_last_terms_add_up_to_total():
    torch.manual_seed(1)
    labels = box_labels()
    logits = [torch.randn(1, 4, 32 // 2**level, 32 // 2**level, 8) for level in range(3)]
    targets = {"moving": torch.rand(1, 1, *SHAPE), "fixed": torch.rand(1, 1, *SHAPE)}
    targets.update(moving_label=labels, fixed_label=labels.roll(2, dims=3))
    loss_fn = MemWarpLoss()
    loss = loss_fn(make_output(0.3 * torch.randn(1, 3, *SHAPE), residual_scale=0.1, logits=logits), targets)
    terms = loss_fn.last_terms
    assert set(terms) == {"similarity", "mask_dice", "region_dice", "regularisation", "total"}
    assert all(isinstance(value, float) and value > 0 for value in terms.values())
    parts = terms["similarity"] + terms["mask_dice"] + terms["region_dice"] + terms["regularisation"]
    assert terms["total"] == pytest.approx(parts, rel=1e-6)
    assert loss.item() == pytest.approx(terms["total"], rel=1e-6)


def test_loss_follows_the_field_dtype():
    image = torch.rand(1, 1, *SHAPE, dtype=torch.float64)
    labels = box_labels()
    output = make_output(torch.zeros(1, 3, *SHAPE, dtype=torch.float64), residual_scale=0.1)
    targets = {"moving": image, "fixed": image, "moving_label": labels, "fixed_label": labels}
    loss = MemWarpLoss()(output, targets)
    assert loss.dtype == torch.float64 and loss.ndim == 0
