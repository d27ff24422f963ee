"""Bad inputs: each raises InvalidInputError (a ValueError) or MissingInputError (a FileNotFoundError) naming
the file and the problem, on load, through the Compose built by registration_preprocessing."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from scripts.data import (
    InvalidInputError,
    MissingInputError,
    build_pair_datalist,
    reference_split,
    registration_preprocessing,
)

SHAPE = (40, 36, 6)
AFFINE = np.diag([1.5, 1.5, 10.0, 1.0])


def label_map() -> np.ndarray:
    """A small valid label map: a blood pool in a myocardial ring, an RV block beside them."""
    x, y = np.meshgrid(np.arange(SHAPE[0]) - 20, np.arange(SHAPE[1]) - 18, indexing="ij")
    radius = np.hypot(x, y)
    plane = np.zeros(SHAPE[:2], np.uint8)
    plane[radius < 10] = 2
    plane[radius < 6] = 3
    plane[(x < -12) & (x > -18) & (np.abs(y) < 8)] = 1
    labels = np.repeat(plane[..., None], SHAPE[2], axis=2)
    labels[..., 0] = 0
    return labels


def write(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> str:
    nib.save(nib.Nifti1Image(array, affine), path)
    return str(path)


@pytest.fixture
def record(tmp_path) -> dict:
    """A valid pair record; tests overwrite one of its files with something bad."""
    labels = label_map()
    image = (labels * 100.0 + 50.0).astype(np.float32)
    return {
        "moving": write(tmp_path / "moving.nii.gz", image),
        "fixed": write(tmp_path / "fixed.nii.gz", image[::-1].copy()),
        "moving_label": write(tmp_path / "moving_gt.nii.gz", labels),
        "fixed_label": write(tmp_path / "fixed_gt.nii.gz", labels[::-1].copy()),
        "patient": "patient001",
        "group": "NOR",
        "direction": "ED_to_ES",
    }


def raises_naming(error: type, path: str, problem: str):
    """pytest.raises for ``error`` whose message names ``path`` and matches ``problem``."""
    return pytest.raises(error, match=rf"{re.escape(path)}.*{problem}")


def test_the_valid_record_passes(record):
    out = registration_preprocessing(spatial_size=(32, 32, 8))(record)
    assert tuple(out["fixed"].shape) == (1, 32, 32, 8)


def test_missing_image_file(record, tmp_path):
    record["fixed"] = str(tmp_path / "absent.nii.gz")
    with raises_naming(MissingInputError, record["fixed"], "file not found"):
        registration_preprocessing()(record)
    assert issubclass(MissingInputError, FileNotFoundError)


def test_label_value_outside_zero_to_three(record):
    labels = label_map()
    labels[5, 5, 3] = 5
    write(Path(record["fixed_label"]), labels)
    with raises_naming(InvalidInputError, record["fixed_label"], r"integers 0\.\.3, found 5"):
        registration_preprocessing()(record)
    assert issubclass(InvalidInputError, ValueError)


def test_non_integer_label_values(record):
    write(Path(record["moving_label"]), label_map().astype(np.float32) * 0.5)
    with raises_naming(InvalidInputError, record["moving_label"], "found 0.5"):
        registration_preprocessing()(record)


def test_label_shape_differs_from_its_image(record):
    write(Path(record["moving_label"]), label_map()[:, :-2])
    with raises_naming(InvalidInputError, record["moving_label"], "label shape .* differs from its image"):
        registration_preprocessing()(record)


def test_label_affine_differs_from_its_image(record):
    shifted = AFFINE.copy()
    shifted[0, 3] = 3.0
    write(Path(record["fixed_label"]), label_map()[::-1].copy(), shifted)
    with raises_naming(InvalidInputError, record["fixed_label"], "label affine differs from its image"):
        registration_preprocessing()(record)


def test_two_dimensional_file(record):
    write(Path(record["moving"]), np.ones(SHAPE[:2], np.float32))
    with raises_naming(InvalidInputError, record["moving"], "a 2D image"):
        registration_preprocessing()(record)


def test_cine_without_frame_index(record, tmp_path):
    record["fixed"] = write(tmp_path / "cine_4d.nii.gz", np.random.default_rng(0).random((*SHAPE, 3), np.float32))
    with raises_naming(InvalidInputError, record["fixed"], "4D cine of 3 frames but the record gives no frame index"):
        registration_preprocessing()(record)


def test_frame_index_beyond_the_cine(record, tmp_path):
    record["fixed"] = write(tmp_path / "cine_4d.nii.gz", np.random.default_rng(0).random((*SHAPE, 3), np.float32))
    record["fixed_frame"] = 3
    with raises_naming(InvalidInputError, record["fixed"], "frame index 3 out of range"):
        registration_preprocessing()(record)


def test_frame_index_for_a_3d_file(record):
    record["moving_frame"] = 0
    with raises_naming(InvalidInputError, record["moving"], "gives frame index 0 .* but the file is 3D"):
        registration_preprocessing()(record)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_nan_or_inf_in_an_image_also_at_inference(record, bad_value):
    image = np.asarray(nib.load(record["moving"]).dataobj).copy()
    image[3, 4, 2] = bad_value
    write(Path(record["moving"]), image)
    with raises_naming(InvalidInputError, record["moving"], "1 NaN or infinite voxel"):
        registration_preprocessing(with_labels=False)(record)


def test_empty_label_map_when_labels_are_required(record):
    write(Path(record["fixed_label"]), np.zeros(SHAPE, np.uint8))
    with raises_naming(InvalidInputError, record["fixed_label"], r"empty \(background only\)"):
        registration_preprocessing()(record)


def test_missing_label_key_when_labels_are_required(record):
    del record["fixed_label"]
    with raises_naming(InvalidInputError, record["moving"], "the record has no 'fixed_label'"):
        registration_preprocessing()(record)


def test_unreadable_file(record):
    Path(record["moving"]).write_bytes(b"not a nifti file")
    with raises_naming(InvalidInputError, record["moving"], "cannot be read as an image"):
        registration_preprocessing()(record)


def test_empty_dataset_directory(tmp_path):
    with raises_naming(InvalidInputError, str(tmp_path), "no patient folders"):
        build_pair_datalist(tmp_path)
    with raises_naming(InvalidInputError, str(tmp_path), "reference training set is empty"):
        reference_split(tmp_path)


def test_missing_dataset_directory(tmp_path):
    with raises_naming(MissingInputError, str(tmp_path / "nowhere"), "dataset directory not found"):
        build_pair_datalist(tmp_path / "nowhere")
