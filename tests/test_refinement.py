"""Instance optimisation of a displacement field on one pair (scripts/inference/refinement.py)."""

from __future__ import annotations

import pytest
import torch
from monai.losses import LocalNormalizedCrossCorrelationLoss

from scripts.errors import InvalidInputError
from scripts.inference.refinement import (
    SIMILARITIES,
    RefinementSettings,
    SliceLocalCorrelation,
    image_dissimilarity,
    level_schedule,
    refine_displacement,
)

SHAPE = (32, 32, 6)
SHIFT = 2.0  # voxels along axis 0


def blob_pair(batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Moving: a blob on a dim square body; fixed: the same moved by -SHIFT along axis 0, so the true field is
    ``ddf = +SHIFT`` along axis 0 (``moving(x + SHIFT) = fixed(x)``). Images in [0, 1], (batch, 1, *SHAPE)."""
    x, y, _ = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in SHAPE], indexing="ij")

    def image(offset: float) -> torch.Tensor:
        blob = torch.exp(-((x - 16 - offset) ** 2 + (y - 16) ** 2) / (2 * 3.0**2))
        body = 0.3 * torch.sigmoid(4 - ((x - 16 - offset).abs().maximum((y - 16).abs()) - 8))
        return torch.maximum(body, blob)[None, None].expand(batch, 1, *SHAPE).contiguous()

    return image(SHIFT), image(0.0)


def blob_region(ddf: torch.Tensor) -> torch.Tensor:
    """The field's axis-0 component around the blob's centre in the fixed image."""
    return ddf[:, 0, 12:21, 12:21, :]


def test_slice_correlation_equals_monai_lncc_of_every_slice():
    generator = torch.Generator().manual_seed(0)
    warped, fixed = torch.rand(2, 1, *SHAPE, generator=generator), torch.rand(2, 1, *SHAPE, generator=generator)
    fixed[..., :6, :, :] = 0.0  # zero padding: flat windows hit the variance floor
    warped[..., -5:, :, :] = 0.7
    monai_lncc = LocalNormalizedCrossCorrelationLoss(spatial_dims=2, kernel_size=7, reduction="none")
    for pair in range(2):
        slices = [image[pair, :, :, :, z][None] for z in range(SHAPE[2]) for image in (warped, fixed)]
        expected = torch.stack([monai_lncc(slices[2 * z], slices[2 * z + 1]).mean() for z in range(SHAPE[2])]).mean()
        assert float(SliceLocalCorrelation(fixed, 7)(warped)[pair]) == pytest.approx(float(expected), abs=1e-6)


@pytest.mark.parametrize("similarity", SIMILARITIES)
def test_refinement_lowers_the_similarity_loss_and_moves_towards_the_true_shift(similarity):
    moving, fixed = blob_pair()
    ddf, record = refine_displacement(
        moving, fixed, torch.zeros(1, 3, *SHAPE), steps=20, similarity=similarity, learning_rate=0.2
    )
    assert record.steps == 20 and record.similarity == similarity
    assert record.similarity_after[0] < record.similarity_before[0]
    assert 0.5 < float(blob_region(ddf).mean()) < 1.5 * SHIFT


def test_record_matches_image_dissimilarity_of_the_fields():
    moving, fixed = blob_pair()
    initial = torch.zeros(1, 3, *SHAPE)
    ddf, record = refine_displacement(moving, fixed, initial, steps=5)
    assert record.similarity_before[0] == pytest.approx(float(image_dissimilarity(moving, fixed, initial)[0]), abs=1e-6)
    assert record.similarity_after[0] == pytest.approx(float(image_dissimilarity(moving, fixed, ddf)[0]), abs=1e-6)
    assert record.seconds > 0


def test_zero_steps_return_the_input_field_unchanged():
    moving, fixed = blob_pair()
    initial = torch.randn(1, 3, *SHAPE)
    ddf, record = refine_displacement(moving, fixed, initial, steps=0)
    assert ddf is initial
    assert record.steps == 0 and record.similarity_after == record.similarity_before


def test_output_keeps_shape_dtype_and_device_and_leaves_the_input_alone():
    moving, fixed = blob_pair()
    initial = torch.zeros(1, 3, *SHAPE, dtype=torch.float64)
    ddf, _ = refine_displacement(moving.double(), fixed.double(), initial, steps=3)
    assert ddf.shape == initial.shape and ddf.dtype == torch.float64 and ddf.device == initial.device
    assert not ddf.requires_grad
    assert initial.abs().max() == 0


def test_refinement_works_inside_inference_mode():
    with torch.inference_mode():
        moving, fixed = blob_pair()
        initial = torch.zeros(1, 3, *SHAPE)
        ddf, record = refine_displacement(moving, fixed, initial, steps=5)
    assert record.similarity_after[0] < record.similarity_before[0]
    assert float(blob_region(ddf).mean()) > 0


def test_a_pair_is_refined_the_same_alone_and_in_a_batch():
    moving, fixed = blob_pair(batch=2)
    fixed[1] = torch.roll(fixed[1], shifts=1, dims=2)  # a different second pair
    initial = torch.zeros(2, 3, *SHAPE)
    batched, record = refine_displacement(moving, fixed, initial, steps=10)
    alone, alone_record = refine_displacement(moving[:1], fixed[:1], initial[:1], steps=10)
    # equal up to rounding, which Adam's normalised steps enlarge where the gradient is ~0 (flat background): over
    # the 30 steps of two levels by 0.011 voxel on average; where the images drive the field, by far less
    assert float((batched[:1] - alone).abs().mean()) < 2e-2
    assert float((blob_region(batched[:1]) - blob_region(alone)).abs().mean()) < 5e-3
    assert len(record.similarity_after) == 2
    assert record.similarity_after[0] == pytest.approx(alone_record.similarity_after[0], abs=1e-4)
    assert record.pair(1)["similarity_after"] == record.similarity_after[1]


def test_regularisation_keeps_the_residual_smooth():
    moving, fixed = blob_pair()
    loose, _ = refine_displacement(moving, fixed, torch.zeros(1, 3, *SHAPE), steps=20, regularisation_weight=0.0)
    stiff, _ = refine_displacement(moving, fixed, torch.zeros(1, 3, *SHAPE), steps=20, regularisation_weight=100.0)
    roughness = [float(torch.diff(field, dim=2).pow(2).mean()) for field in (loose, stiff)]
    assert roughness[1] < roughness[0]


def test_invalid_arguments_raise_one_clear_error():
    moving, fixed = blob_pair()
    with pytest.raises(ValueError, match="unknown similarity"):
        refine_displacement(moving, fixed, torch.zeros(1, 3, *SHAPE), steps=1, similarity="ncc")
    with pytest.raises(ValueError, match="initial_ddf"):
        refine_displacement(moving, fixed, torch.zeros(1, 2, *SHAPE), steps=1)
    with pytest.raises(ValueError, match="steps must be >= 0"):
        refine_displacement(moving, fixed, torch.zeros(1, 3, *SHAPE), steps=-1)
    with pytest.raises(ValueError, match="coarse to fine"):
        refine_displacement(moving, fixed, torch.zeros(1, 3, *SHAPE), steps=1, levels=(2, 4))


def test_each_coarser_level_takes_twice_the_steps_of_the_one_below():
    assert level_schedule(20) == [[4, 40], [2, 20]]
    assert level_schedule(5, (8, 4, 1)) == [[8, 20], [4, 10], [1, 5]]
    assert level_schedule(7, (2,)) == [[2, 7]]


def test_coarse_to_fine_equals_its_levels_run_one_after_the_other():
    moving, fixed = blob_pair()
    initial = 0.3 * torch.ones(1, 3, *SHAPE)
    both, record = refine_displacement(moving, fixed, initial, steps=6, levels=(4, 2))
    coarse, _ = refine_displacement(moving, fixed, initial, steps=12, levels=(4,))
    then_fine, _ = refine_displacement(moving, fixed, coarse, steps=6, levels=(2,))
    assert torch.allclose(both, then_fine, atol=1e-6)
    assert not torch.allclose(both, coarse, atol=1e-3)  # the fine level did move the field
    assert record.steps == 6 and record.schedule == [[4, 12], [2, 6]]
    assert record.pair(0)["schedule"] == [[4, 12], [2, 6]]


@pytest.mark.parametrize(
    "levels, message",
    [((2, 4), "decreasing"), ((0,), ">= 1"), ("42", "whole numbers"), ((), "non-empty"), ((2.5,), "whole numbers")],
)
def test_settings_refuse_unusable_levels_naming_the_config_key(levels, message):
    with pytest.raises(InvalidInputError, match=f"configs/inference.json: refine_levels .*{message}"):
        RefinementSettings(steps=5, levels=levels)


def test_settings_take_a_list_or_a_single_level():
    assert RefinementSettings(steps=5, levels=[4, 2]).levels == (4, 2)
    assert RefinementSettings(steps=5, levels=2).levels == (2,)
