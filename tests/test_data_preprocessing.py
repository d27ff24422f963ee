"""Preprocessing of pair records: geometry, labels, inversion, 4D cines, mismatched grids, caching.

The data is a small synthetic ACDC-layout dataset written here with awkward geometry: 1.37 mm in-plane,
9 slices of 10 mm, an odd 171 x 203 matrix and an affine rotated about two axes and translated. The heart
(ellipsoid LV blood pool, myocardial ring, RV crescent) is defined in world millimetres, so any grid sees the
same anatomy.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import CacheDataset, DataLoader, PersistentDataset, decollate_batch
from monai.transforms import Compose, Invertd, RandomizableTrait

from scripts.data import (
    build_pair_datalist,
    chain_transforms,
    registration_augmentation,
    registration_preprocessing,
)
from tests.geometry import rotation

SPATIAL_SIZE = (128, 128, 16)
PIXDIM = (1.8, 1.8, 10.0)
STRUCTURES = {1: "RV", 2: "LVM", 3: "LVBP"}


# The heart's frame: its long axis is the slice normal of the "scanner" geometry below.
HEART_ROTATION = rotation(0, 20.0) @ rotation(2, 30.0)
HEART_CENTRE = np.array([10.0, -20.0, 30.0]) + HEART_ROTATION @ np.array([5.0, -8.0, 0.0])


def grid_affine(shape, spacing, rotation_matrix, centre) -> np.ndarray:
    """Affine of a grid with the given voxel size and rotation whose centre voxel sits at ``centre`` (mm)."""
    affine = np.eye(4)
    affine[:3, :3] = rotation_matrix @ np.diag(spacing)
    affine[:3, 3] = np.asarray(centre) - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return affine


# Fixed ("scanner") geometry: rotated about x and z, translated, odd matrix, 1.37 x 1.37 x 10 mm.
SHAPE = (171, 203, 9)
AFFINE = grid_affine(SHAPE, (1.37, 1.37, 10.0), HEART_ROTATION, [10.0, -20.0, 30.0])


def render_labels(shape, affine, blood_pool_scale: float) -> np.ndarray:
    """Label map (uint8) of the synthetic heart sampled at the voxel centres of a grid."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    u, v, w = ((index @ affine[:3, :3].T + affine[:3, 3] - HEART_CENTRE) @ HEART_ROTATION).T
    labels = np.zeros(len(u), np.uint8)
    epicardium = (u / 30) ** 2 + (v / 30) ** 2 + (w / 44) ** 2 <= 1
    beyond_epicardium = (u / 33) ** 2 + (v / 33) ** 2 + (w / 47) ** 2 > 1
    rv = ((u + 38) / 20) ** 2 + (v / 34) ** 2 + (w / 38) ** 2 <= 1
    blood_pool = (u / (22 * blood_pool_scale)) ** 2 + (v / (22 * blood_pool_scale)) ** 2 + (w / 38) ** 2 <= 1
    labels[rv & beyond_epicardium] = 1
    labels[epicardium] = 2
    labels[blood_pool] = 3
    return labels.reshape(shape)


def render_image(labels: np.ndarray, seed: int) -> np.ndarray:
    """bSSFP-like intensities per structure plus mild noise (float32)."""
    intensities = np.array([120.0, 850.0, 300.0, 900.0], np.float32)
    noise = np.random.default_rng(seed).normal(0.0, 10.0, labels.shape).astype(np.float32)
    return intensities[labels] + noise


def write_patient(
    folder: Path,
    shape=SHAPE,
    affine=AFFINE,
    frames: bool = True,
    cine: bool = True,
    es_scale: float = 0.75,
    group: str = "DCM",
) -> Path:
    """One patient in the ACDC layout: 3-frame cine, ED = frame 1, ES = frame 3, their label maps, Info.cfg."""
    folder.mkdir(parents=True, exist_ok=True)
    name = folder.name
    (folder / "Info.cfg").write_text(f"ED: 1\nES: 3\nGroup: {group}\nHeight: 180.0\nNbFrame: 3\nWeight: 80.0\n")
    phase_labels = [render_labels(shape, affine, scale) for scale in (1.0, (1.0 + es_scale) / 2, es_scale)]
    phase_images = [render_image(labels, seed) for seed, labels in enumerate(phase_labels)]
    for number in (1, 3):
        labels, image = phase_labels[number - 1], phase_images[number - 1]
        nib.save(nib.Nifti1Image(labels, affine), folder / f"{name}_frame{number:02d}_gt.nii.gz")
        if frames:
            nib.save(nib.Nifti1Image(image, affine), folder / f"{name}_frame{number:02d}.nii.gz")
    if cine:
        nib.save(nib.Nifti1Image(np.stack(phase_images, -1), affine), folder / f"{name}_4d.nii.gz")
    return folder


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def world_centroid(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return affine[:3, :3] @ np.argwhere(mask).mean(0) + affine[:3, 3]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("acdc")
    write_patient(root / "training" / "patient001")
    return root


@pytest.fixture(scope="module")
def preprocessing():
    return registration_preprocessing(spatial_size=SPATIAL_SIZE, pixdim=PIXDIM, with_labels=True)


@pytest.fixture(scope="module")
def sample(dataset, preprocessing) -> dict:
    record = build_pair_datalist(dataset, directions=("ED_to_ES",))[0]
    return preprocessing(record)


def test_images_are_float32_in_unit_range_on_the_network_grid(sample):
    for key in ("moving", "fixed"):
        image = sample[key]
        assert tuple(image.shape) == (1, *SPATIAL_SIZE)
        assert image.dtype == torch.float32
        assert float(image.min()) == 0.0 and float(image.max()) == 1.0


def test_output_affine_has_the_target_spacing_and_ras_orientation(sample):
    for key in ("moving", "fixed", "moving_label", "fixed_label"):
        affine = sample[key].affine.numpy()
        np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), PIXDIM, rtol=1e-5)
        assert nib.aff2axcodes(affine) == ("R", "A", "S")


def test_labels_keep_exactly_the_four_classes(sample):
    for key in ("moving_label", "fixed_label"):
        label = sample[key]
        assert tuple(label.shape) == (1, *SPATIAL_SIZE)
        assert sorted(torch.unique(label).tolist()) == [0.0, 1.0, 2.0, 3.0]


def test_structure_volumes_in_mm3_are_preserved_within_three_percent(dataset, sample):
    original = nib.load(dataset / "training" / "patient001" / "patient001_frame03_gt.nii.gz")
    original_labels = np.asarray(original.dataobj)
    original_voxel = abs(np.linalg.det(original.affine[:3, :3]))
    output_voxel = abs(np.linalg.det(sample["fixed_label"].affine.numpy()[:3, :3]))
    for value, name in STRUCTURES.items():
        before = (original_labels == value).sum() * original_voxel
        after = float((sample["fixed_label"] == value).sum()) * output_voxel
        assert after == pytest.approx(before, rel=0.03), name


def test_other_record_keys_are_kept(sample):
    assert (sample["patient"], sample["group"], sample["direction"]) == ("patient001", "DCM", "ED_to_ES")


def test_invertd_maps_the_fixed_label_back_to_the_original_grid_without_shift(dataset, sample, preprocessing):
    original = nib.load(dataset / "training" / "patient001" / "patient001_frame03_gt.nii.gz")
    original_labels = np.asarray(original.dataobj)
    result = {**sample, "prediction": sample["fixed_label"].clone()}  # stands for a network output on the grid
    inverted = Invertd("prediction", transform=preprocessing, orig_keys="fixed", nearest_interp=True)(result)
    prediction = inverted["prediction"]
    assert tuple(prediction.shape) == (1, *SHAPE)
    np.testing.assert_allclose(prediction.affine.numpy(), original.affine, atol=1e-4)
    labels = prediction[0].numpy()
    for value, name in STRUCTURES.items():
        assert dice(labels == value, original_labels == value) >= 0.95, name
        shift = world_centroid(labels == value, original.affine) - world_centroid(original_labels == value, AFFINE)
        assert np.linalg.norm(shift) < 1.0, name


def test_cine_only_patient_gives_the_same_tensors_as_frame_files(dataset, tmp_path, preprocessing):
    cine_only = tmp_path / "patient001"
    shutil.copytree(dataset / "training" / "patient001", cine_only)
    for frame_file in cine_only.glob("patient001_frame0?.nii.gz"):
        frame_file.unlink()
    from_frames = build_pair_datalist(dataset, directions=("ES_to_ED",))[0]
    from_cine = build_pair_datalist(cine_only, directions=("ES_to_ED",))[0]
    assert (from_cine["moving_frame"], from_cine["fixed_frame"]) == (2, 0)
    assert from_cine["moving"] == from_cine["fixed"] == str(cine_only / "patient001_4d.nii.gz")
    a, b = preprocessing(from_frames), preprocessing(from_cine)
    for key in ("moving", "fixed", "moving_label", "fixed_label"):
        assert torch.equal(a[key].as_tensor(), b[key].as_tensor()), key
        assert torch.equal(a[key].affine, b[key].affine), key


def test_moving_on_another_grid_is_aligned_with_fixed_in_world_space(dataset, tmp_path, preprocessing):
    # Another in-plane resolution, matrix, in-plane rotation and offset: a crop by index alone would misalign.
    moving_shape = (150, 160, 11)
    moving_rotation = HEART_ROTATION @ rotation(2, 12.0)
    moving_centre = np.array([10.0, -20.0, 30.0]) + HEART_ROTATION @ np.array([14.0, -9.0, 0.0])
    moving_affine = grid_affine(moving_shape, (1.6, 1.5, 10.0), moving_rotation, moving_centre)
    other = write_patient(tmp_path / "patient002", moving_shape, moving_affine, cine=False, es_scale=1.0)
    fixed_dir = write_patient(tmp_path / "patient003", cine=False, es_scale=1.0)
    record = {
        "moving": str(other / "patient002_frame01.nii.gz"),
        "fixed": str(fixed_dir / "patient003_frame01.nii.gz"),
        "moving_label": str(other / "patient002_frame01_gt.nii.gz"),
        "fixed_label": str(fixed_dir / "patient003_frame01_gt.nii.gz"),
        "patient": "patient002",
        "group": "",
        "direction": "ED_to_ES",
    }
    out = preprocessing(record)
    assert "ResampleToMatch" in [op["class"] for op in out["moving"].applied_operations]
    np.testing.assert_allclose(out["moving"].affine.numpy(), out["fixed"].affine.numpy(), atol=1e-4)
    moving, fixed, affine = out["moving_label"][0].numpy(), out["fixed_label"][0].numpy(), out["fixed"].affine.numpy()
    for value, name in STRUCTURES.items():
        assert dice(moving == value, fixed == value) >= 0.9, name
        shift = world_centroid(moving == value, affine) - world_centroid(fixed == value, affine)
        assert np.linalg.norm(shift) < 1.0, name
    # and the moving result maps back onto its own original grid
    back = Invertd("moving_label", transform=preprocessing, orig_keys="moving_label", nearest_interp=True)(dict(out))
    assert tuple(back["moving_label"].shape) == (1, *moving_shape)
    np.testing.assert_allclose(back["moving_label"].affine.numpy(), moving_affine, atol=1e-4)


def test_preprocessing_without_labels_needs_only_the_images(dataset):
    record = build_pair_datalist(dataset, directions=("ED_to_ES",), require_labels=False)[0]
    record = {k: v for k, v in record.items() if not k.endswith("_label")}
    out = registration_preprocessing(with_labels=False)(record)
    assert tuple(out["moving"].shape) == tuple(out["fixed"].shape) == (1, *SPATIAL_SIZE)
    assert "moving_label" not in out


def test_the_whole_preprocessing_is_cached_when_chained_with_augmentation(dataset, preprocessing):
    assert not any(isinstance(t, RandomizableTrait) for t in preprocessing.transforms)
    augmentation = registration_augmentation()
    chained = chain_transforms(preprocessing, augmentation)
    first_random = chained.get_index_of_first(lambda t: isinstance(t, RandomizableTrait))
    assert first_random == len(preprocessing.transforms)
    # the trap chain_transforms avoids: a nested Compose counts as random, so nothing would be cached
    assert Compose([preprocessing, augmentation]).get_index_of_first(lambda t: isinstance(t, RandomizableTrait)) == 0
    records = build_pair_datalist(dataset)
    cached = CacheDataset(records, transform=chained, num_workers=0, progress=False)
    item = cached[0]
    assert tuple(item["moving"].shape) == (1, *SPATIAL_SIZE)
    assert [op["class"] for op in cached._cache[0]["fixed"].applied_operations][-1] == "ResizeWithPadOrCrop"


def test_persistent_cache_with_track_meta_is_read_back_and_keeps_what_invertd_needs(dataset, preprocessing, tmp_path):
    records = build_pair_datalist(dataset, directions=("ED_to_ES",))
    cache = PersistentDataset(records, transform=preprocessing, cache_dir=tmp_path / "cache", track_meta=True)
    cache[0]  # computes and writes
    (cache_file,) = (tmp_path / "cache").iterdir()
    written = cache_file.stat().st_mtime_ns
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # MONAI warns "Corrupt cache file" when weights_only loading fails
        item = cache[0]  # read back from disk
    assert cache_file.stat().st_mtime_ns == written
    item["prediction"] = item["fixed_label"].clone()
    inverted = Invertd("prediction", transform=preprocessing, orig_keys="fixed", nearest_interp=True)(item)
    assert tuple(inverted["prediction"].shape) == (1, *SHAPE)
    np.testing.assert_allclose(inverted["prediction"].affine.numpy(), AFFINE, atol=1e-4)


def test_batched_results_invert_per_item_after_decollation(dataset, preprocessing):
    batch = next(
        iter(DataLoader(CacheDataset(build_pair_datalist(dataset), preprocessing, progress=False), batch_size=2))
    )
    assert tuple(batch["fixed"].shape) == (2, 1, *SPATIAL_SIZE)
    batch["prediction"] = batch["fixed_label"].clone()
    invert = Invertd("prediction", transform=preprocessing, orig_keys="fixed", nearest_interp=True)
    for item in decollate_batch(batch):
        assert tuple(invert(item)["prediction"].shape) == (1, *SHAPE)
