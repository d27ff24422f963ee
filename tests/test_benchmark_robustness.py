"""The robustness mode of ``python -m scripts.benchmark``: each perturbation does what its name says, the classical
tools return fields in the bundle's convention, and the command writes its tables and per-pair results."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from scripts.benchmark.__main__ import main as benchmark_main
from scripts.benchmark.classical import CLASSICAL_METHODS, ClassicalMethod
from scripts.benchmark.perturbations import (
    PERTURBATIONS,
    Frame,
    add_rician_noise,
    adjust_gamma,
    background_noise_sigma,
    blur_in_plane,
    invert_contrast,
    multiply_bias_field,
    perturbation_rng,
    resample_in_plane,
    resample_through_plane,
    rotate_in_plane,
    scale_voxel_size,
    voxel_sizes,
)
from scripts.benchmark.robustness import classical_subset
from scripts.benchmark.robustness import parse_args as robustness_arguments
from scripts.benchmark.robustness import write_acdc_patient
from scripts.data import build_pair_datalist
from scripts.inference.refinement import DEFAULT_LEVELS
from scripts.networks import bundle_network

SPACING = (1.8, 1.8, 10.0)
# an oblique voxel-to-world matrix with voxels of 1.5 x 1.5 x 8 mm, like a scanner's short-axis stack
OBLIQUE = np.array(
    [[1.2990, -0.7500, 0.0, -100.0], [0.7500, 1.2990, 0.0, -80.0], [0.0, 0.0, 8.0, 20.0], [0.0, 0.0, 0.0, 1.0]]
)


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _heart(shape: tuple[int, int, int] = (64, 56, 10), centre: tuple[float, float] = (32.0, 28.0), scale=1.0):
    """A label map of concentric discs (3 LV blood pool, 2 myocardium, 1 RV beside them) on every slice."""
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    radius = np.hypot(x - centre[0], y - centre[1])
    label = np.zeros(shape[:2], np.uint8)
    label[np.hypot(x - centre[0] + 14 * scale, y - centre[1]) < 9 * scale] = 1
    label[radius < 11 * scale] = 2
    label[radius < 7 * scale] = 3
    return np.repeat(label[:, :, None], shape[2], axis=2)


def _frames(affine: np.ndarray = OBLIQUE) -> list[Frame]:
    """ED and ES frames whose image is 100 * label + 50 (every structure recognisable by its intensity)."""
    frames = []
    for scale in (1.0, 0.85):
        label = _heart(scale=scale)
        frames.append(Frame((100.0 * label + 50.0).astype(np.float32), label, affine.copy()))
    return frames


def _centroid(mask: np.ndarray) -> np.ndarray:
    return np.array(ndimage.center_of_mass(mask.astype(float)))


def test_gamma_maps_a_ramp_through_the_power_law_within_its_range() -> None:
    ramp = np.linspace(20.0, 120.0, 5, dtype=np.float32).reshape(5, 1, 1)  # 20, 45, 70, 95, 120
    frame = Frame(ramp, np.zeros(ramp.shape, np.uint8), np.eye(4))
    for gamma in (0.5, 2.0):
        changed = adjust_gamma([frame], _rng(), gamma)[0]
        unit = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
        np.testing.assert_allclose(changed.image.ravel(), 20.0 + 100.0 * unit**gamma, rtol=1e-6)
        assert changed.label is frame.label and changed.affine is frame.affine
    assert PERTURBATIONS["gamma_0.5"].apply([frame], _rng())[0].image[1, 0, 0] == pytest.approx(70.0)  # 0.25 -> 0.5


def test_inversion_mirrors_each_image_within_its_range() -> None:
    frames = _frames()
    inverted = invert_contrast(frames, _rng())
    for before, after in zip(frames, inverted):
        np.testing.assert_allclose(after.image, 350.0 + 50.0 - before.image)  # blood pool 350 -> 50, background -> 350
        assert np.array_equal(after.label, before.label)


def test_heart_scale_multiplies_the_voxel_size_in_the_header_about_the_centre() -> None:
    frames = _frames()
    for factor in (0.75, 1.3):
        scaled = scale_voxel_size(frames, _rng(), factor)
        for before, after in zip(frames, scaled):
            np.testing.assert_allclose(voxel_sizes(after.affine), factor * np.array([1.5, 1.5, 8.0]), rtol=1e-4)
            np.testing.assert_allclose(after.affine[:3, :3], factor * before.affine[:3, :3])
            centre = np.array([31.5, 27.5, 4.5, 1.0])
            np.testing.assert_allclose(after.affine @ centre, before.affine @ centre)  # the centre stays in place
            assert after.image is before.image and after.label is before.label  # the voxel data stay


def test_rotation_turns_the_content_30_degrees_in_millimetres_and_keeps_the_affine() -> None:
    # in-plane voxels of 1 x 2 mm: a point 20 mm from the centre along axis 0 moves to (17.32, 10) mm = (17.32, 5) vox
    affine = np.diag([1.0, 2.0, 8.0, 1.0])
    shape = (81, 41, 3)
    centre = np.array([40.0, 20.0])
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    spot = np.hypot(x - centre[0] - 20.0, (y - centre[1]) * 2.0) < 3.0  # a disc of 3 mm radius
    label = np.repeat(spot[:, :, None], 3, axis=2).astype(np.uint8) * 3
    frame = Frame(label.astype(np.float32) * 100.0, label, affine)
    rotated = rotate_in_plane([frame], _rng(), 30.0)[0]
    expected = centre + np.array([20.0 * math.cos(math.radians(30)), 20.0 * math.sin(math.radians(30)) / 2.0])
    np.testing.assert_allclose(_centroid(rotated.label[:, :, 1] == 3), expected, atol=0.3)
    np.testing.assert_allclose(_centroid(rotated.image[:, :, 1] > 150.0), expected, atol=0.3)
    assert np.array_equal(rotated.affine, affine)


def _magnitude_image(sigma: float = 10.0, seed: int = 1) -> np.ndarray:
    """(96, 96, 6) magnitude image: tissue of 1000 in the middle, air around it, complex Gaussian noise ``sigma``."""
    rng = np.random.default_rng(seed)
    signal = np.zeros((96, 96, 6))
    signal[24:72, 24:72] = 1000.0
    return np.hypot(signal + sigma * rng.standard_normal(signal.shape), sigma * rng.standard_normal(signal.shape))


def test_background_noise_estimate_and_threefold_rician_noise_on_a_synthetic_magnitude_image() -> None:
    sigma = 10.0
    image = _magnitude_image(sigma)
    assert background_noise_sigma(image) == pytest.approx(sigma, rel=0.1)
    frame = Frame(image.astype(np.float32), np.zeros(image.shape, np.uint8), np.eye(4))
    noisy = add_rician_noise([frame], _rng(), factor=3.0)[0].image
    tissue = (slice(30, 66), slice(30, 66))
    ratio = noisy[tissue].std() / image[tissue].std()
    assert ratio == pytest.approx(3.0, rel=0.1)
    assert background_noise_sigma(noisy) == pytest.approx(3.0 * sigma, rel=0.1)
    assert noisy.min() >= 0.0  # still a magnitude image


def test_bias_field_is_smooth_shared_by_the_frames_and_spans_a_factor_of_4() -> None:
    constant = Frame(np.full((40, 32, 8), 100.0, np.float32), np.zeros((40, 32, 8), np.uint8), OBLIQUE)
    ed, es = multiply_bias_field([constant, constant], perturbation_rng(0, "bias_x4", "patient101"), ratio=4.0)
    assert ed.image.max() / ed.image.min() == pytest.approx(4.0, rel=1e-4)
    assert ed.image.min() == pytest.approx(50.0, rel=1e-4) and ed.image.max() == pytest.approx(200.0, rel=1e-4)
    np.testing.assert_array_equal(ed.image, es.image)  # one coil, one field for both frames
    steps = [np.abs(np.diff(np.log(ed.image), axis=a)).max() for a in range(3)]
    assert max(steps) < math.log(4.0) / 4  # no neighbour jumps by more than a quarter of the span
    other = multiply_bias_field([constant], perturbation_rng(0, "bias_x4", "patient102"))[0].image
    assert not np.allclose(other, ed.image)  # a new field per patient, reproducible per (seed, patient)


def test_in_plane_blur_has_the_stated_sigma_in_millimetres_and_none_through_plane() -> None:
    image = np.zeros((41, 41, 5), np.float32)
    image[20, 20, 2] = 1.0
    affine = np.diag([1.5, 1.2, 8.0, 1.0])
    blurred = blur_in_plane([Frame(image, np.zeros(image.shape, np.uint8), affine)], _rng(), sigma_mm=2.7)[0].image
    assert blurred[:, :, [0, 1, 3, 4]].max() == 0.0
    for axis, spacing in ((0, 1.5), (1, 1.2)):
        profile = blurred[:, :, 2].sum(axis=1 - axis)
        positions = np.arange(41) * spacing
        mean = (profile * positions).sum() / profile.sum()
        sigma_mm = math.sqrt((profile * (positions - mean) ** 2).sum() / profile.sum())
        assert sigma_mm == pytest.approx(2.7, rel=0.05)
    assert "blur_2.7mm" in PERTURBATIONS


def test_resampling_sets_the_spacing_and_keeps_the_field_of_view_centred() -> None:
    frames = _frames()
    for perturbed, spacing, shape in (
        (resample_in_plane(frames, _rng(), 2.2), (2.2, 2.2, 8.0), (44, 38, 10)),  # 64 * 1.5 / 2.2 = 43.6
        (resample_through_plane(frames, _rng(), 6.0), (1.5, 1.5, 6.0), (64, 56, 13)),  # 10 * 8 / 6 = 13.3
    ):
        for before, after in zip(frames, perturbed):
            np.testing.assert_allclose(voxel_sizes(after.affine), spacing, rtol=1e-4)
            assert after.image.shape == after.label.shape == shape
            old_centre = before.affine @ np.append((np.array(before.image.shape) - 1) / 2.0, 1.0)
            new_centre = after.affine @ np.append((np.array(after.image.shape) - 1) / 2.0, 1.0)
            np.testing.assert_allclose(new_centre, old_centre, atol=1e-6)


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_labels_stay_integer_0_to_3_and_aligned_with_their_image(name: str) -> None:
    frames = _frames()
    perturbation = PERTURBATIONS[name]
    perturbed = perturbation.apply(frames, perturbation_rng(0, name, "patient101"))
    assert len(perturbed) == 2
    for before, after in zip(frames, perturbed):
        assert after.label.dtype == np.uint8 and after.image.dtype == np.float32
        assert set(np.unique(after.label)) <= {0, 1, 2, 3} and after.label.shape == after.image.shape
        if not perturbation.changes_geometry:
            assert np.array_equal(after.label, before.label) and np.array_equal(after.affine, before.affine)
            continue
        for structure in (1, 2, 3):  # the interior of every structure still shows that structure's intensity
            interior = ndimage.binary_erosion(after.label == structure, np.ones((3, 3, 1)))
            assert interior.sum() > 10
            assert np.median(after.image[interior]) == pytest.approx(100.0 * structure + 50.0, abs=5.0)


def test_perturbations_are_reproducible_given_the_seed() -> None:
    frames = [
        Frame(_magnitude_image(seed=s).astype(np.float32), np.zeros((96, 96, 6), np.uint8), OBLIQUE) for s in (1, 2)
    ]
    first = PERTURBATIONS["noise_x3"].apply(frames, perturbation_rng(3, "noise_x3", "patient101"))
    again = PERTURBATIONS["noise_x3"].apply(frames, perturbation_rng(3, "noise_x3", "patient101"))
    other = PERTURBATIONS["noise_x3"].apply(frames, perturbation_rng(4, "noise_x3", "patient101"))
    np.testing.assert_array_equal(first[0].image, again[0].image)
    assert not np.array_equal(first[0].image, other[0].image)
    assert not np.allclose(first[0].image - frames[0].image, first[1].image - frames[1].image)  # each its own


def test_the_classical_subset_is_evenly_spaced_and_fixed() -> None:
    patients = [f"patient{n}" for n in range(101, 151)]
    assert classical_subset(patients, 10) == [f"patient{n}" for n in range(101, 151, 5)]
    assert classical_subset(patients[:3], 10) == patients[:3]


@pytest.mark.parametrize("key, module", [("ants", "ants"), ("elastix", "itk"), ("demons", "SimpleITK")])
def test_classical_tools_return_a_known_shift_in_the_bundle_convention(key: str, module: str) -> None:
    pytest.importorskip(module)
    rng = np.random.default_rng(0)
    fixed = ndimage.gaussian_filter(rng.random((48, 48, 10)), (2, 2, 0.7)).astype(np.float32)
    fixed = (fixed - fixed.min()) / (fixed.max() - fixed.min())
    moving = ndimage.shift(fixed, (2.0, -3.0, 1.0), order=1, mode="nearest")  # moving(x + s) = fixed(x)
    method = CLASSICAL_METHODS[key]
    parameters = dict(method.parameters)
    if key == "elastix":  # 32 instead of 256 iterations per resolution: the same code path, 8x less work
        parameters["overrides"] = {**parameters["overrides"], "MaximumNumberOfIterations": "32"}
    ddf = method.register(moving, fixed, SPACING, parameters, threads=1)
    assert ddf.shape == (3, 48, 48, 10) and ddf.dtype == np.float32
    interior = ddf[:, 8:-8, 8:-8, 3:-3].reshape(3, -1)
    np.testing.assert_allclose(np.median(interior, axis=1), (2.0, -3.0, 1.0), atol=0.3)


def _synthetic_dataset(root: Path) -> Path:
    """A one-patient test set in the ACDC layout (ED larger than ES), and a datalist naming it as the test section."""
    ed, es = _frames(np.diag([1.8, 1.8, 10.0, 1.0]))
    write_acdc_patient(root / "database", "patient101", "NOR", ed, es)
    datalist = root / "datalist.json"
    datalist.write_text(json.dumps({"test": build_pair_datalist(root / "database" / "testing")}))
    return datalist


def test_robustness_mode_writes_tables_ratios_and_per_pair_results(tmp_path: Path, monkeypatch) -> None:
    def shift_by_one(moving, fixed, spacing, threads=None):  # a stand-in classical tool: constant field, instant
        return np.ones((3, *fixed.shape), np.float32)

    monkeypatch.setitem(CLASSICAL_METHODS, "demons", ClassicalMethod("stand-in", shift_by_one, lambda: "0", {}))
    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny.pt"
    torch.save(bundle_network("memwarp", "tiny").state_dict(), checkpoint)
    output = tmp_path / "robustness"
    arguments = ["--dataset_dir", str(tmp_path / "database"), "--datalist", str(_synthetic_dataset(tmp_path))]
    arguments += ["--method", f"tiny=memwarp:{checkpoint}", "--preset", "tiny", "--classical", "demons"]
    arguments += ["--perturbations", "rotation_30deg", "--output_dir", str(output), "--threads", "1"]
    assert benchmark_main(["robustness", *arguments]) == 0
    report = json.loads((output / "robustness_summary.json").read_text())
    assert report["perturbations_done"] == ["unperturbed", "rotation_30deg"]  # the reference always runs first
    assert report["classical_patients"] == ["patient101"] and "--classical demons" in report["command"]
    for perturbation in ("unperturbed", "rotation_30deg"):
        tiny = report["results"][perturbation]["tiny"]
        assert tiny["after"]["all"]["num_pairs"] == 2 and tiny["before"]["all"]["num_pairs"] == 2
        assert 0.0 < tiny["before"]["all"]["dice_mean"]["mean"] < 1.0
        assert math.isfinite(tiny["after"]["all"]["seg_dice_mean"]["mean"])
        assert report["results"][perturbation]["stand-in"]["after"]["all"]["seg_dice_mean"]["mean"] is None
    ratios = report["ratios"]["rotation_30deg"]["tiny"]
    unperturbed = report["ratios"]["unperturbed"]["tiny"]
    if unperturbed["dice_gain"] > 0:
        assert ratios["gain_fraction_of_unperturbed"] == pytest.approx(ratios["dice_gain"] / unperturbed["dice_gain"])
    assert ratios["fastest_classical"]["method"] == "stand-in"
    assert ratios["speed_ratio_to_fastest_classical"] == pytest.approx(
        ratios["fastest_classical"]["seconds_per_pair"] / ratios["seconds_per_pair"]
    )
    with (output / "robustness_per_pair.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 2 * 2 * 3  # 2 perturbations x 2 directions x (Initial, tiny, stand-in)
    assert {row["method"] for row in rows} == {"Initial", "tiny", "stand-in"}
    table = (output / "robustness_table.md").read_text()
    assert "| rotation_30deg | tiny | 1 |" in table and "| rotation_30deg | stand-in | 1 |" in table
    assert "Classical rows (stand-in): 1 of the 1 patients (patient101)" in table
    speed = report["speed_over_the_run"]["tiny"]
    network_seconds = [float(row["seconds_per_pair"]) for row in rows if row["method"] == "tiny"]
    assert speed["seconds_per_pair"] == pytest.approx(np.mean(network_seconds), rel=1e-4)
    assert f"Over the whole run: tiny {speed['seconds_per_pair']:.3f} s/pair" in table


def test_robustness_mode_names_a_missing_checkpoint(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "absent.pt"
    arguments = ["robustness", "--dataset_dir", str(tmp_path), "--method", f"M=memwarp:{missing}", "--classical"]
    assert benchmark_main([*arguments, "--output_dir", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and f"{missing}: checkpoint not found" in error[0]
    assert not (tmp_path / "out").exists()


def test_refine_levels_default_to_inference_and_must_run_coarse_to_fine(capsys) -> None:
    base = ["--dataset_dir", "d", "--method", "M=memwarp:m.pt", "--refine_steps", "5"]
    assert robustness_arguments(base).refine_levels == list(DEFAULT_LEVELS) == [4, 2]
    assert robustness_arguments([*base, "--refine_levels", "2"]).refine_levels == [2]
    with pytest.raises(SystemExit):
        robustness_arguments([*base, "--refine_levels", "2", "4"])
    assert "--refine_levels must be a non-empty list of whole numbers >= 1, coarse to fine" in capsys.readouterr().err
