"""The postprocessing chain's network-grid steps on a made pair: each product computed once and reused exactly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import scripts.inference.ood_warning as ood_warning
import scripts.inference.postprocessing as postprocessing
import scripts.metrics as metrics
from scripts.inference.postprocessing import (
    OutOfDistributionCheckd,
    RefineDisplacementd,
    RegistrationMetricsd,
    UnpackRegistrationOutputd,
)
from scripts.inference.refinement import RefinementSettings
from scripts.metrics import JACOBIAN_BORDER, folding_percent, jacobian_determinant, registration_metrics, sdlogj_plus3
from scripts.warping import warp_image

SHAPE = (64, 64, 16)


def rough_field(seed: int = 0) -> torch.Tensor:
    """A network-like (1, 3, H, W, D) field: smooth motion of a few voxels plus voxel noise that folds in places."""
    generator = torch.Generator().manual_seed(seed)
    coarse = 4.0 * torch.randn(1, 3, 8, 8, 4, generator=generator)
    smooth = F.interpolate(coarse, size=SHAPE, mode="trilinear", align_corners=True)
    return smooth + 0.4 * torch.randn(1, 3, *SHAPE, generator=generator)


def made_sample() -> dict:
    """The engine's merged dict for one pair: network inputs, labels and the inferer's output (batch of one)."""
    x, y, _ = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in SHAPE], indexing="ij")
    fixed = torch.exp(-((x - 32) ** 2 + (y - 32) ** 2) / 200.0)[None]
    moving = torch.exp(-((x - 34) ** 2 + (y - 31) ** 2) / 180.0)[None]
    label = ((x - 32) ** 2 + (y - 32) ** 2 < 100).float()[None] + ((x - 32) ** 2 + (y - 32) ** 2 < 36).float()[None]
    moved_label = torch.roll(label, shifts=(2, -1), dims=(1, 2))
    ddf = rough_field()
    logits = torch.stack([1.0 - label[0], label[0] == 1, label[0] == 2, 0.0 * label[0]]).float()[None] * 10.0
    return {
        "pred": {"ddf": ddf, "warped": warp_image(moving[None], ddf), "fixed_logits": logits},
        "moving": moving,
        "fixed": fixed,
        "moving_label": moved_label,
        "fixed_label": label,
        "pair": {"pair_name": "made"},
    }


def network_grid_steps(sample: dict, refine_steps: int = 0) -> dict:
    """The chain's network-grid steps in their order (the fixed-space ones need a preprocessed original)."""
    for step in (
        OutOfDistributionCheckd(refine_steps=refine_steps),
        RefineDisplacementd(RefinementSettings(steps=refine_steps)),
        UnpackRegistrationOutputd(),
        RegistrationMetricsd(),
    ):
        sample = step(sample)
    return sample


@pytest.fixture
def jacobian_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """Every call of ``jacobian_determinant`` from postprocessing, the warning and the metrics: the field shapes."""
    calls: list[tuple[int, ...]] = []
    original = metrics.jacobian_determinant

    def counting(ddf, border: int = 0):
        calls.append(tuple(ddf.shape))
        return original(ddf, border=border)

    for module in (postprocessing, ood_warning, metrics):
        monkeypatch.setattr(module, "jacobian_determinant", counting)
    return calls


def test_the_network_field_jacobian_is_computed_once_per_pair(jacobian_calls: list) -> None:
    result = network_grid_steps(made_sample())
    assert jacobian_calls == [(1, 3, *SHAPE)]
    assert postprocessing.NETWORK_JACOBIAN_KEY not in result  # a cache, not an output


def test_the_reused_jacobian_gives_exactly_the_numbers_computed_afresh() -> None:
    sample = made_sample()
    ddf = sample["pred"]["ddf"].clone()
    result = network_grid_steps(sample)
    fresh = jacobian_determinant(ddf)
    assert float(folding_percent(fresh)) > 0.0  # the field folds: negative J is covered
    assert torch.equal(result["jacobian"], fresh)
    cropped = jacobian_determinant(ddf, border=JACOBIAN_BORDER)
    assert result["out_of_distribution"]["statistics"]["folding_percent"] == float(folding_percent(cropped)[0])
    assert result["metrics"]["folding_percent"] == float(folding_percent(cropped)[0])
    assert result["metrics"]["sdlogj_plus3"] == float(sdlogj_plus3(cropped)[0])
    scores = registration_metrics(ddf, sample["moving_label"][None], sample["fixed_label"][None])
    assert result["metrics"]["dice_mean"] == float(scores["dice_mean"][0])
    assert result["metrics"]["hd95_mean"] == float(scores["hd95_mean"][0])


def test_a_refined_field_gets_its_own_jacobian(jacobian_calls: list) -> None:
    result = network_grid_steps(made_sample(), refine_steps=2)
    assert len(jacobian_calls) == 2  # the network's field (the warning) and the refined one
    assert not torch.equal(result["ddf"], rough_field()[0])
    assert torch.equal(result["jacobian"], jacobian_determinant(result["ddf"][None]))
