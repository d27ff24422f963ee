"""The inference command end to end: ``python -m monai.bundle run inference --config_file configs/inference.json``.

Outputs must sit on the fixed image's original grid, the displacement field must mean the same to SimpleITK as to
us (fixed -> moving, world RAS mm), and a known translation must come out in millimetres.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from scripts.data import registration_preprocessing
from scripts.inference import file_sha256
from tests.inference_helpers import (
    BUNDLE_ROOT,
    DDF_NAME,
    SHAPE,
    assert_succeeded,
    blob_image,
    field_network_overrides,
    run_bundle,
    save_nifti,
    scanner_affine,
)

SAMPLE = BUNDLE_ROOT / "sample_data" / "patient001"
FIXED_SPACE_OUTPUTS = ("warped_moving.nii.gz", "jacobian_determinant.nii.gz")


def sample_frames() -> tuple[Path, Path]:
    """(ED, ES) image files of the shipped sample pair."""
    if not SAMPLE.is_dir():
        pytest.skip("sample_data/patient001 is not there yet")
    frames = sorted(p for p in SAMPLE.glob("patient001_frame??.nii.gz"))
    return frames[0], frames[1]


def assert_on_fixed_grid(path: Path, fixed: nib.Nifti1Image) -> None:
    image = nib.load(str(path))
    assert image.shape[:3] == fixed.shape[:3], path.name
    np.testing.assert_allclose(image.affine, fixed.affine, atol=1e-4, err_msg=path.name)


def test_default_sample_pair_writes_every_output_on_the_fixed_grid(tmp_path: Path, compact_checkpoint: Path) -> None:
    ed, es = sample_frames()
    output = tmp_path / "out"
    result = run_bundle("--ckpt_path", str(compact_checkpoint), "--output_dir", str(output))
    assert_succeeded(result)
    folder = output / "patient001_ED_to_ES"
    assert str(output) in result.stdout  # the console says where the outputs went
    fixed = nib.load(str(es))
    for name in FIXED_SPACE_OUTPUTS + ("warped_moving_label.nii.gz", "fixed_segmentation_predicted.nii.gz", DDF_NAME):
        assert_on_fixed_grid(folder / name, fixed)
    ddf = nib.load(str(folder / DDF_NAME))
    assert ddf.shape == fixed.shape[:3] + (1, 3)
    assert ddf.get_data_dtype() == np.float32
    assert int(ddf.header["intent_code"]) == 1006
    for name in ("warped_moving_label.nii.gz", "fixed_segmentation_predicted.nii.gz"):
        labels = nib.load(str(folder / name))
        assert labels.get_data_dtype() == np.uint8
        assert set(np.unique(np.asanyarray(labels.dataobj))) <= {0, 1, 2, 3}
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["checkpoint"]["sha256"] == file_sha256(compact_checkpoint)
    assert summary["inputs"]["moving"] == str(ed) and summary["inputs"]["fixed"] == str(es)
    assert 0.0 <= summary["metrics"]["dice_mean"] <= 1.0 and summary["metrics"]["folding_percent"] >= 0.0
    assert summary["timings_seconds"]["network"] > 0.0
    assert (folder / "quality_control.png").stat().st_size > 10_000
    assert not [p for p in output.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def network_grid_axes(affine: np.ndarray, pixdim=(1.8, 1.8, 10.0)) -> np.ndarray:
    """Linear part of the network grid's affine, derived independently: RAS-reordered axes, pixdim mm each."""
    ornt = nib.io_orientation(affine)  # per stored axis: (RAS axis it runs along, +1/-1)
    directions = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    columns = np.zeros((3, 3))
    for stored_axis, (ras_axis, flip) in enumerate(ornt):
        columns[:, int(ras_axis)] = flip * directions[:, stored_axis] * pixdim[int(ras_axis)]
    return columns


def test_known_translation_is_recovered_in_world_millimetres(tmp_path: Path, field_network_path: Path) -> None:
    # a wide field of view along stored axis 0 (330 mm) so part of the fixed image lies outside the network's
    shape = (220,) + SHAPE[1:]
    affine = scanner_affine(shape)
    translation_mm = np.array([4.0, -3.0, 6.0])
    fixed = save_nifti(blob_image(affine, shape), affine, tmp_path / "fixed.nii.gz")
    moving = save_nifti(blob_image(affine, shape, shift_mm=translation_mm), affine, tmp_path / "moving.nii.gz")
    datalist = tmp_path / "pairs.json"
    datalist.write_text(json.dumps([{"moving": "moving.nii.gz", "fixed": "fixed.nii.gz"}]))
    voxels = np.linalg.solve(network_grid_axes(affine), translation_mm)
    overrides, env = field_network_overrides(field_network_path, offset=tuple(voxels))
    output = tmp_path / "out"
    assert_succeeded(run_bundle(*overrides, "--datalist", str(datalist), "--output_dir", str(output), env=env))
    folder = output / "moving_to_fixed"
    ddf_image = nib.load(str(folder / DDF_NAME))
    np.testing.assert_allclose(ddf_image.affine, affine, atol=1e-5)
    ddf = ddf_image.get_fdata()[:, :, :, 0, :]
    # where each fixed voxel sits in the network grid (from the preprocessing that defines that grid)
    network = registration_preprocessing(with_labels=False)({"moving": str(moving), "fixed": str(fixed)})["fixed"]
    to_network = np.linalg.inv(network.affine.numpy()) @ affine
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    position = index @ to_network[:3, :3].T + to_network[:3, 3]
    size = np.array(network.shape[1:])
    inside = ((position >= 1) & (position <= size - 2)).all(-1)
    outside = ((position < -2) | (position > size + 1)).any(-1)
    assert inside.sum() > 1000 and outside.sum() > 1000
    np.testing.assert_allclose(ddf[inside], np.broadcast_to(translation_mm, ddf[inside].shape), atol=1e-3)
    assert np.abs(ddf[outside]).max() == 0.0
    warped = nib.load(str(folder / "warped_moving.nii.gz")).get_fdata()
    reference = nib.load(str(fixed)).get_fdata()
    core = inside & (reference > 200)
    assert np.corrcoef(warped[core], reference[core])[0, 1] >= 0.999


def simpleitk_warp(moving: str, fixed: str, field: Path) -> np.ndarray:
    """The moving image resampled onto the fixed grid by SimpleITK through our field, as an (X, Y, Z) array."""
    moving_image = sitk.ReadImage(moving, sitk.sitkFloat64)
    fixed_image = sitk.ReadImage(fixed, sitk.sitkFloat64)
    transform = sitk.DisplacementFieldTransform(sitk.ReadImage(str(field), sitk.sitkVectorFloat64))
    warped = sitk.Resample(moving_image, fixed_image, transform, sitk.sitkLinear, 0.0)
    return np.transpose(sitk.GetArrayFromImage(warped), (2, 1, 0))  # ITK arrays are (Z, Y, X)


def test_dataset_dir_both_directions_and_simpleitk_reproduces_our_warped_image(
    tmp_path: Path, phantom_dataset: Path, field_network_path: Path
) -> None:
    overrides, env = field_network_overrides(field_network_path, offset=(1.5, -2.0, 0.3), amplitude=(4.0, 3.0, 0.5))
    output = tmp_path / "out"
    result = run_bundle(
        *overrides,
        "--dataset_dir",
        str(phantom_dataset),
        "--patients",
        "[21]",
        "--directions",
        "['ED_to_ES','ES_to_ED']",
        "--output_dir",
        str(output),
        "--save_network_grid",
        "True",
        "--save_qc",
        "False",
        env=env,
    )
    assert_succeeded(result)
    assert sorted(p.name for p in output.iterdir()) == ["patient021_ED_to_ES", "patient021_ES_to_ED"]
    for folder in output.iterdir():
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["direction"] == folder.name.split("_", 1)[1]
        assert "dice_mean" in summary["metrics"] and "hd95_mean" in summary["metrics"]
        moving, fixed_path = summary["inputs"]["moving"], summary["inputs"]["fixed"]
        fixed = nib.load(fixed_path)
        assert_on_fixed_grid(folder / "warped_moving.nii.gz", fixed)
        grid = nib.load(str(folder / "network_grid" / "warped_moving.nii.gz"))
        assert grid.shape == (128, 128, 16)
        np.testing.assert_allclose(np.linalg.norm(grid.affine[:3, :3], axis=0), (1.8, 1.8, 10.0), atol=1e-4)
        ddf_voxels = nib.load(str(folder / "network_grid" / "ddf_voxels.nii.gz")).get_fdata()
        np.testing.assert_allclose(ddf_voxels[0, 0, :, 0], 1.5, atol=1e-5)  # offset where the sine wave is 0
        # SimpleITK, reading our field as a displacement-field transform, must warp as we did
        ours = nib.load(str(folder / "warped_moving.nii.gz")).get_fdata()
        by_itk = simpleitk_warp(moving, fixed_path, folder / DDF_NAME)
        fixed_array = fixed.get_fdata()
        body = fixed_array > np.percentile(fixed_array, 50)
        assert np.linalg.norm(nib.load(str(folder / DDF_NAME)).get_fdata(), axis=-1).max() > 5.0  # not the identity
        assert np.corrcoef(ours[body], by_itk[body])[0, 1] >= 0.99
        unwarped = nib.load(moving).get_fdata()
        assert np.corrcoef(ours[body], unwarped[body])[0, 1] < np.corrcoef(ours[body], by_itk[body])[0, 1]


def test_inference_config_passes_the_bundle_property_checks() -> None:
    from monai.bundle import ConfigWorkflow

    sample_frames()
    workflow = ConfigWorkflow(
        workflow_type="infer",
        config_file=str(BUNDLE_ROOT / "configs/inference.json"),
        meta_file=str(BUNDLE_ROOT / "configs/metadata.json"),
        logging_file=str(BUNDLE_ROOT / "configs/logging.conf"),
        bundle_root=str(BUNDLE_ROOT),
    )
    workflow.initialize()
    assert workflow.check_properties() == []
    assert workflow.evaluator.val_handlers is not None if hasattr(workflow.evaluator, "val_handlers") else True
    assert {"initialize", "run", "finalize", "inference"} <= set(workflow.parser.get())
    assert isinstance(workflow.dataset[0]["fixed"], torch.Tensor)
