"""The accuracy mode of ``python -m scripts.benchmark``: end-point error against the phantom's true motion, the
ANTs SyN field convention, and the report it writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from scripts.benchmark.__main__ import main as benchmark_main
from scripts.benchmark.accuracy import parse_method
from scripts.benchmark.endpoint_error import (
    boundary_mask,
    endpoint_error_metrics,
    load_true_displacement,
    true_displacement_on_grid,
    true_field_path,
)
from scripts.data import build_pair_datalist, registration_preprocessing
from scripts.evaluation import pair_metrics
from scripts.networks import bundle_network

SPACING = (1.8, 1.8, 10.0)


@pytest.fixture(scope="module")
def test_pair(phantom_dataset: Path) -> tuple[dict, dict, np.ndarray, np.ndarray, np.ndarray]:
    """A phantom test pair on the network grid: (record, sample, true field on the grid (mm), inside, affine)."""
    record = build_pair_datalist(phantom_dataset / "testing")[0]
    sample = registration_preprocessing((128, 128, 16), SPACING, with_labels=True)(dict(record))
    affine = np.asarray(sample["fixed"].affine, dtype=np.float64)
    field, field_affine = load_true_displacement(true_field_path(record))
    true_on_grid, inside = true_displacement_on_grid(field, field_affine, (128, 128, 16), affine)
    return record, sample, true_on_grid, inside, affine


def test_the_true_field_in_voxels_has_zero_error_and_registers_the_labels(test_pair) -> None:
    _, sample, true_on_grid, inside, affine = test_pair
    oracle = np.einsum("ij,j...->i...", np.linalg.inv(affine[:3, :3]), true_on_grid)  # world mm -> network voxels
    errors = endpoint_error_metrics(oracle, affine, true_on_grid, inside, sample["fixed_label"], SPACING)
    assert all(value < 1e-9 for value in errors.values()), errors
    labels = sample["moving_label"][None], sample["fixed_label"][None]
    oracle_dice = float(pair_metrics(torch.from_numpy(oracle).float()[None], *labels)["dice_mean"][0])
    initial_dice = float(pair_metrics(torch.zeros(1, 3, 128, 128, 16), *labels)["dice_mean"][0])
    reversed_dice = float(pair_metrics(-torch.from_numpy(oracle).float()[None], *labels)["dice_mean"][0])
    # the true field and the network's voxel convention agree: following it registers the labels, reversing it hurts
    assert oracle_dice > initial_dice + 0.03 and reversed_dice < initial_dice, (oracle_dice, initial_dice)


def test_the_identity_error_is_the_true_motion_per_region(test_pair) -> None:
    _, sample, true_on_grid, inside, affine = test_pair
    errors = endpoint_error_metrics(
        np.zeros((3, 128, 128, 16)), affine, true_on_grid, inside, sample["fixed_label"], SPACING
    )
    magnitude = np.linalg.norm(true_on_grid, axis=0)
    heart = inside & (sample["fixed_label"][0].numpy() > 0)
    assert errors["epe_overall_mm"] == pytest.approx(magnitude[inside].mean())
    assert errors["epe_heart_mm"] == pytest.approx(magnitude[heart].mean())
    assert 1.0 < errors["epe_heart_mm"] < 15.0  # a beating heart moves millimetres between ED and ES
    # the split along the grid axes: in-plane and through-plane parts of the same vectors (Pythagoras per voxel)
    axes = (
        np.einsum("ij,j...->i...", np.linalg.inv(affine[:3, :3]), true_on_grid) * np.array(SPACING)[:, None, None, None]
    )
    assert errors["epe_heart_inplane_mm"] == pytest.approx(np.hypot(axes[0], axes[1])[heart].mean())
    assert errors["epe_heart_throughplane_mm"] == pytest.approx(np.abs(axes[2])[heart].mean())
    assert np.allclose(np.sqrt((axes**2).sum(0)), magnitude)
    assert 0.2 < inside.mean() < 1.0  # the crop's padding lies outside the original grid


def test_boundary_band_is_the_neighbours_within_3_mm() -> None:
    label = np.zeros((8, 8, 3), dtype=np.int64)
    label[4:, :, :] = 2  # a plane between x = 3 and x = 4
    band = boundary_mask(label, SPACING, 3.0)
    assert band[3].all() and band[4].all()  # 1.8 mm from the other side
    assert not band[2].any() and not band[5].any()  # 3.6 mm: outside
    assert not boundary_mask(np.ones((4, 4, 2)), SPACING).any()  # one label: no boundary


def test_ants_syn_returns_the_shift_in_the_bundle_convention() -> None:
    pytest.importorskip("ants")
    from scripts.benchmark.ants_syn import ants_syn_ddf

    rng = np.random.default_rng(0)
    fixed = ndimage.gaussian_filter(rng.random((64, 64, 12)), (2, 2, 0.7)).astype(np.float32)
    fixed = (fixed - fixed.min()) / (fixed.max() - fixed.min())
    moving = ndimage.shift(fixed, (2.0, -3.0, 1.0), order=1, mode="nearest")  # moving(x + s) = fixed(x)
    ddf = ants_syn_ddf(moving, fixed, SPACING, threads=1)
    interior = ddf[:, 8:-8, 8:-8, 3:-3].reshape(3, -1)
    np.testing.assert_allclose(np.median(interior, axis=1), (2.0, -3.0, 1.0), atol=0.2)


def test_accuracy_mode_writes_the_table_and_the_summary(phantom_dataset: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny.pt"
    torch.save(bundle_network("memwarp", "tiny").state_dict(), checkpoint)
    output = tmp_path / "accuracy"
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"test": build_pair_datalist(phantom_dataset / "testing")}))
    code = benchmark_main(
        [
            "accuracy",
            "--dataset_dir",
            str(phantom_dataset),
            "--datalist",
            str(datalist),
            "--method",
            f"MemWarp tiny=memwarp:{checkpoint}",
            "--method",
            f"Same weights=memwarp:{checkpoint}",
            "--preset",
            "tiny",
            "--max_pairs",
            "2",
            "--output_dir",
            str(output),
        ]
    )
    assert code == 0
    report = json.loads((output / "accuracy_summary.json").read_text())
    assert list(report["results"]) == ["Initial", "MemWarp tiny", "Same weights"]
    assert f"--datalist {datalist}" in report["command"] and "--preset tiny --max_pairs 2" in report["command"]
    network, initial = report["results"]["MemWarp tiny"]["all"], report["results"]["Initial"]["all"]
    assert network["num_pairs"] == 2 and initial["num_pairs"] == 2
    # an untrained network's field is near zero at initialisation: it scores like the identity
    assert network["dice_mean"]["mean"] == pytest.approx(initial["dice_mean"]["mean"], abs=0.02)
    assert network["epe_heart_mm"]["mean"] == pytest.approx(initial["epe_heart_mm"]["mean"], abs=0.1)
    assert math.isfinite(network["seg_dice_mean"]["mean"]) and network["seconds_per_pair"]["mean"] > 0
    table = (output / "accuracy_table.md").read_text()
    assert "| MemWarp tiny |" in table and "| Initial |" in table
    # the same weights twice: the one patient (both directions of a pair) is a tie on Dice and on boundary EPE
    assert [(c["metric"], c["patients"], c["ties"]) for c in report["paired"]] == [
        ("dice_mean", 1, 1),
        ("epe_boundary_mm", 1, 1),
    ]
    assert "| MemWarp tiny | Same weights | Dice (pts) | 1 | 0 | 0 | 1 | +0.00 | 1 |" in table
    assert (output / "per_pair_memwarp_tiny.csv").read_text().count("\n") == 3  # header + 2 pairs


def test_accuracy_mode_rejects_a_malformed_method(capsys) -> None:
    with pytest.raises(SystemExit):
        benchmark_main(["accuracy", "--dataset_dir", "x", "--method", "no-architecture"])
    assert "NAME=ARCHITECTURE[@PRESET]:CHECKPOINT" in capsys.readouterr().err


def test_a_method_may_name_its_own_preset() -> None:
    spec = parse_method("MemWarp paper=memwarp@paper:runs/paper/models/model.pt")
    assert (spec.name, spec.architecture, spec.preset, spec.checkpoint) == (
        "MemWarp paper",
        "memwarp",
        "paper",
        "runs/paper/models/model.pt",
    )
    assert parse_method("LapWarp=lapwarp:runs/a:b.pt").preset is None  # a colon may sit in the path


def test_accuracy_mode_names_a_missing_checkpoint(phantom_dataset: Path, tmp_path: Path, capsys) -> None:
    missing = tmp_path / "absent.pt"
    output = tmp_path / "accuracy"
    arguments = ["--dataset_dir", str(phantom_dataset), "--method", f"M=memwarp:{missing}", "--output_dir", str(output)]
    assert benchmark_main(["accuracy", *arguments]) == 2
    assert f"{missing}: checkpoint not found" in capsys.readouterr().err
    assert not output.exists()  # nothing written
