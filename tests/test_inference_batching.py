"""Several pairs per iteration (``batch_size``): grouping, the network's batch, the shared refinement, and the same
results as one pair at a time (scripts/inference/batching.py, network_io.py, postprocessing.py)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from scripts.errors import InvalidInputError
from scripts.inference.batching import (
    PAIRS_KEY,
    RESULTS_KEY,
    batch_pairs,
    checked_batch_size,
    pair_batch_collate,
    pairs_with_results,
)
from scripts.inference.network_io import RegistrationPairBatch
from scripts.inference.postprocessing import (
    OutOfDistributionCheckd,
    RefineDisplacementd,
    RegistrationMetricsd,
    RegistrationPostprocessing,
    UnpackRegistrationOutputd,
)
from scripts.inference.refinement import RefinementSettings
from tests.inference_helpers import assert_succeeded, run_bundle
from tests.test_inference_postprocessing import made_sample, rough_field


def test_one_pair_is_its_own_sample_and_several_are_listed_in_order() -> None:
    first, second = {"pair": {"pair_name": "a"}}, {"pair": {"pair_name": "b"}}
    assert pair_batch_collate([first]) == first
    batch = pair_batch_collate([first, second])
    assert batch == {PAIRS_KEY: [first, second]} and batch_pairs(batch) == [first, second]
    assert batch_pairs(first) == [first]
    assert pairs_with_results(batch, {RESULTS_KEY: ["ra", "rb"]}) == [(first, "ra"), (second, "rb")]
    assert pairs_with_results(first, "r") == [(first, "r")]
    with pytest.raises(ValueError, match="at least one pair"):
        pair_batch_collate([])


@pytest.mark.parametrize("value", [0, -2, 1.5, "2", True, None])
def test_an_unusable_batch_size_is_refused_naming_the_config_key(value) -> None:
    with pytest.raises(InvalidInputError, match="configs/inference.json: batch_size must be a whole number >= 1"):
        checked_batch_size(value)
    assert checked_batch_size(3) == 3


def test_prepare_batch_stacks_the_pairs_in_order() -> None:
    samples = [
        {"moving": torch.full((1, 4, 4, 2), float(i)), "fixed": torch.full((1, 4, 4, 2), 10.0 + i)} for i in range(3)
    ]
    moving, target, (fixed,), kwargs = RegistrationPairBatch()(pair_batch_collate(samples), "cpu")
    assert moving.shape == (3, 1, 4, 4, 2) and target is None and kwargs == {}
    assert moving[:, 0, 0, 0, 0].tolist() == [0.0, 1.0, 2.0] and fixed[:, 0, 0, 0, 0].tolist() == [10.0, 11.0, 12.0]
    alone, _, (fixed_alone,), _ = RegistrationPairBatch()(samples[1], "cpu")
    assert alone.shape == (1, 1, 4, 4, 2) and torch.equal(alone[0], moving[1]) and torch.equal(fixed_alone[0], fixed[1])


def _chain(refine_steps: int) -> RegistrationPostprocessing:
    """The chain's network-grid steps (the fixed-space ones need preprocessed originals) as the batch-aware chain."""
    return RegistrationPostprocessing(
        [
            OutOfDistributionCheckd(refine_steps=refine_steps),
            RefineDisplacementd(RefinementSettings(steps=refine_steps)),
            UnpackRegistrationOutputd(),
            RegistrationMetricsd(),
        ]
    )


def _batch_of(samples: list[dict]) -> dict:
    """The engine's merged dict for a batch: the samples and the inferer's outputs stacked along the batch axis."""
    prediction = {key: torch.cat([sample["pred"][key] for sample in samples]) for key in samples[0]["pred"]}
    return {PAIRS_KEY: [{k: v for k, v in sample.items() if k != "pred"} for sample in samples], "pred": prediction}


@pytest.mark.parametrize("refine_steps", [0, 4])
def test_a_batch_gives_each_pair_the_results_it_gets_alone(refine_steps) -> None:
    samples = [made_sample(), made_sample()]
    samples[1]["pred"]["ddf"] = rough_field(seed=1)
    samples[1]["pair"] = {"pair_name": "made_second"}
    batched = _chain(refine_steps)(_batch_of(samples))
    assert batched["pred"] is None and batched[PAIRS_KEY][1]["pair"]["pair_name"] == "made_second"
    results = batched[RESULTS_KEY]
    assert [result["pair"]["pair_name"] for result in results] == ["made", "made_second"]
    for sample, result in zip(samples, results):
        alone = _chain(refine_steps)(sample)
        assert result["ddf"].shape == alone["ddf"].shape == (3, 64, 64, 16)
        # the network's field passes unchanged; refined together, equal up to Adam's rounding in flat regions
        assert float((result["ddf"] - alone["ddf"]).abs().mean()) < (1e-6 if refine_steps == 0 else 2e-2)
        for name in ("dice_mean", "folding_percent", "segmentation_dice_mean"):
            assert result["metrics"][name] == pytest.approx(
                alone["metrics"][name], abs=1e-6 if refine_steps == 0 else 2e-2
            )
        assert result["warnings"] == alone["warnings"]
        if refine_steps:
            assert (
                result["refinement"]["pairs_refined_together"] == 2
                and alone["refinement"]["pairs_refined_together"] == 1
            )
            assert result["refinement"]["schedule"] == [[4, 2 * refine_steps], [2, refine_steps]]
    assert not torch.allclose(results[0]["ddf"], results[1]["ddf"])  # each pair kept its own field


@pytest.mark.slow
def test_inference_with_batch_size_2_writes_what_one_pair_at_a_time_writes(tmp_path: Path) -> None:
    both = "['ED_to_ES', 'ES_to_ED']"
    outputs = {}
    for batch_size in (1, 2):
        outputs[batch_size] = tmp_path / f"batch{batch_size}"
        result = run_bundle(
            "--output_dir",
            str(outputs[batch_size]),
            "--directions",
            both,
            "--batch_size",
            str(batch_size),
            "--refine_steps",
            "2",
            env={"OMP_NUM_THREADS": "1"},
        )
        assert_succeeded(result)
    for pair in ("patient001_ED_to_ES", "patient001_ES_to_ED"):
        alone, together = (json.loads((outputs[b] / pair / "summary.json").read_text()) for b in (1, 2))
        assert together["refinement"]["pairs_refined_together"] == 2
        assert together["metrics"]["dice_mean"] == pytest.approx(alone["metrics"]["dice_mean"], abs=5e-3)
        fields = [
            nib.load(str(outputs[b] / pair / "displacement_fixed_to_moving_mm.nii.gz")).get_fdata() for b in (1, 2)
        ]
        assert fields[0].shape == fields[1].shape
        assert float(np.abs(fields[0] - fields[1]).mean()) < 0.05  # mm; refinement's rounding only
