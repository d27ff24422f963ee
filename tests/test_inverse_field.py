"""Fixed-point inversion of displacement fields and the inverse-consistency error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scripts.inference.inverse_field import (
    compose_displacements,
    inverse_consistency_error,
    invert_displacement,
    quantiles,
)

SHAPE = (48, 40, 6)
AMPLITUDE = 2.0  # voxels


def sinusoidal_field(shape=SHAPE, amplitude=AMPLITUDE) -> torch.Tensor:
    """A smooth (1, 3, *shape) field: each in-plane component a sine of the other in-plane axis, plus a
    through-plane sine of axis 0; the largest voxel-unit gradient is 2 pi amplitude / 48 ~ 0.26."""
    x, y, z = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in shape], indexing="ij")
    field = torch.stack(
        [
            amplitude * torch.sin(2 * math.pi * y / shape[1]),
            amplitude * torch.sin(2 * math.pi * x / shape[0]),
            0.5 * torch.sin(2 * math.pi * x / shape[0]),
        ]
    )
    return field[None].float()


def interior(tensor: torch.Tensor, margin: int = 4) -> torch.Tensor:
    """Drop ``margin`` voxels at both in-plane ends (where the inverse reads the border-extended field)."""
    return tensor[..., margin:-margin, margin:-margin, :]


def test_translation_inverse_is_exact():
    shift = torch.tensor([1.5, -2.25, 0.5]).view(1, 3, 1, 1, 1).expand(2, 3, *SHAPE).contiguous()
    inverse, record = invert_displacement(shift)
    assert torch.allclose(inverse, -shift, atol=1e-6)
    assert record.converged and record.iterations <= 2


def test_inverse_of_sinusoidal_field_composes_to_identity():
    field = sinusoidal_field()
    inverse, record = invert_displacement(field)
    assert record.converged
    # u o v and v o u ~ 0: both orders undo each other within 0.1 voxel away from the faces
    assert interior(compose_displacements(inverse, field)).abs().max() < 0.1
    assert interior(compose_displacements(field, inverse)).abs().max() < 0.1


def test_inverse_of_one_dimensional_sine_matches_analytic_solution():
    # u(x) = a sin(k x) along axis 0: the inverse at y is x* - y where x* + a sin(k x*) = y (Newton, float64)
    length, a = 64, AMPLITUDE
    k = 2 * math.pi / length
    positions = np.arange(length, dtype=np.float64)
    field = torch.zeros(1, 3, length, 4, 3)
    field[:, 0] = torch.from_numpy(a * np.sin(k * positions)).float().view(length, 1, 1)
    solution = positions.copy()
    for _ in range(50):
        solution -= (solution + a * np.sin(k * solution) - positions) / (1 + a * k * np.cos(k * solution))
    inverse, _ = invert_displacement(field, tolerance=1e-5)
    analytic = torch.from_numpy(solution - positions).float()
    error = (inverse[0, 0, :, 1, 1] - analytic)[4:-4].abs().max()
    assert error < 0.1  # trilinear sampling of u between voxels is the only approximation
    assert inverse[:, 1:].abs().max() == 0


def test_iteration_stops_at_max_iterations_and_says_so():
    _, record = invert_displacement(sinusoidal_field(), tolerance=0.0, max_iterations=3)
    assert record.iterations == 3 and not record.converged


def test_inverse_follows_device_and_dtype():
    field = sinusoidal_field().double()
    inverse, _ = invert_displacement(field)
    assert inverse.dtype == torch.float64 and inverse.device == field.device and inverse.shape == field.shape


def test_inverse_consistency_error_in_millimetres():
    field = sinusoidal_field()
    inverse, _ = invert_displacement(field)
    mask = torch.zeros(1, 1, *SHAPE)
    mask[..., 16:32, 16:24, :] = 1
    exact = inverse_consistency_error(field, inverse, spacing=(1.8, 1.8, 10.0), mask=mask)
    assert float(exact["median_mm"][0]) < 0.05 and float(exact["mask_median_mm"][0]) < 0.05
    # a wrong "inverse" (-u instead of the composition's inverse) scores the known error: for the pure
    # translation u = t, v = 0 the error is |t| in mm
    shift = torch.zeros(1, 3, *SHAPE)
    shift[:, 0] = 2.0
    wrong = inverse_consistency_error(shift, torch.zeros_like(shift), spacing=(1.8, 1.8, 10.0), mask=mask)
    assert float(wrong["median_mm"][0]) == pytest.approx(3.6)
    assert float(wrong["mask_p95_mm"][0]) == pytest.approx(3.6)


def test_inverse_consistency_error_with_an_affine_equals_spacing_for_a_diagonal_grid():
    shift = torch.zeros(1, 3, *SHAPE)
    shift[:, 2] = 0.5
    affine = np.diag([1.8, 1.8, 10.0, 1.0])
    result = inverse_consistency_error(shift, torch.zeros_like(shift), affine=affine)
    assert float(result["median_mm"][0]) == pytest.approx(5.0)
    assert "mask_median_mm" not in result


def test_overall_statistics_skip_voxels_mapped_outside_the_grid():
    # u shifts by 30 of 48 rows: only rows 0-17 land inside the grid; the others read v's border-extended last row
    shift = torch.zeros(1, 3, *SHAPE)
    shift[:, 0] = 30.0
    inverse = -shift.clone()
    inverse[:, 0, -1] = 100.0  # wrong on the last row only: reached from row 17 inside, and from 30 rows outside
    result = inverse_consistency_error(shift, inverse, spacing=(1.0, 1.0, 1.0))
    assert float(result["median_mm"][0]) == pytest.approx(0.0, abs=1e-6)  # 1 of 18 counted rows is wrong
    assert float(result["p95_mm"][0]) == pytest.approx(130.0)


def test_empty_mask_gives_nan():
    shift = torch.zeros(1, 3, *SHAPE)
    result = inverse_consistency_error(shift, shift, spacing=(1.8, 1.8, 10.0), mask=torch.zeros(1, 1, *SHAPE))
    assert math.isnan(float(result["mask_median_mm"][0]))


def test_spacing_or_affine_required():
    shift = torch.zeros(1, 3, *SHAPE)
    with pytest.raises(ValueError, match="exactly one of spacing"):
        inverse_consistency_error(shift, shift)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("count", [1, 2, 3, 20, 1001, 262_144])
def test_quantiles_equal_torch_quantile_bit_for_bit(dtype: torch.dtype, count: int) -> None:
    generator = torch.Generator().manual_seed(count)
    skewed = torch.rand(count, generator=generator, dtype=torch.float64) ** 4 * 7.0
    tied = torch.round(skewed * 3) / 3  # many equal values
    levels = (0.0, 0.05, 0.5, 0.95, 0.999, 1.0)
    for values in (skewed.to(dtype), tied.to(dtype)):
        expected = torch.stack([torch.quantile(values, q) for q in levels])
        assert torch.equal(quantiles(values, levels), expected)


def test_quantiles_are_nan_when_a_value_is_nan_as_torch_quantile() -> None:
    values = torch.tensor([0.3, float("nan"), 0.1], dtype=torch.float64)
    assert torch.quantile(values, 0.5).isnan() and quantiles(values, (0.5, 0.95)).isnan().all()
    with pytest.raises(ValueError, match="non-empty 1-D floating"):
        quantiles(torch.zeros(0), (0.5,))
