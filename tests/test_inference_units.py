"""The pieces of inference on their own: field conversion, world resampling, output guard, names, checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from test_inference_support import rotation, save_nifti

from scripts.data import InvalidInputError
from scripts.geometry import NiftiGeometry
from scripts.inference import (
    CheckpointError,
    MissingCheckpointError,
    OutputCollisionError,
    check_output_dir,
    inference_pairs,
    input_error_in,
    load_network_weights,
    pair_name,
    resample_through_displacement,
    world_overlap,
)
from scripts.inference.nifti_io import save_volume

AFFINE = np.eye(4)
AFFINE[:3, :3] = rotation(2, 30.0) @ np.diag([1.8, 1.8, 10.0])
AFFINE[:3, 3] = (-100.0, 20.0, 5.0)


def test_zero_field_resamples_an_image_onto_its_own_grid_unchanged() -> None:
    image = torch.rand(6, 7, 5)
    out = resample_through_displacement(image, AFFINE, torch.zeros(3, 6, 7, 5, dtype=torch.float64), AFFINE)
    torch.testing.assert_close(out, image, atol=1e-5, rtol=0)


def test_a_world_shift_of_one_voxel_samples_the_neighbour_and_zero_outside() -> None:
    image = torch.arange(6 * 7 * 5, dtype=torch.float32).reshape(6, 7, 5)
    shift = torch.zeros(3, 6, 7, 5, dtype=torch.float64)
    shift[:] = torch.as_tensor(AFFINE[:3, 0])[:, None, None, None]  # one voxel along array axis 0, in mm
    out = resample_through_displacement(image, AFFINE, shift, AFFINE)
    torch.testing.assert_close(out[:-1], image[1:], atol=1e-3, rtol=0)
    # the last row samples half a voxel past the edge: ITK's edge rule keeps it; far outside is 0
    far = resample_through_displacement(image, AFFINE, shift * 3, AFFINE)
    assert float(far[-2:].abs().max()) == 0.0


def test_world_overlap_counts_the_fixed_field_of_view_covered() -> None:
    assert world_overlap((10, 10, 10), np.eye(4), (10, 10, 10), np.eye(4)) == 1.0
    shifted = np.eye(4)
    shifted[0, 3] = 5.0
    assert world_overlap((10, 10, 10), np.eye(4), (10, 10, 10), shifted) == pytest.approx(0.5, abs=0.05)
    shifted[0, 3] = 500.0
    assert world_overlap((10, 10, 10), np.eye(4), (10, 10, 10), shifted) == 0.0


def test_output_dir_is_refused_when_it_is_a_file_or_holds_an_input(tmp_path: Path) -> None:
    inputs = tmp_path / "data"
    inputs.mkdir()
    image = inputs / "a.nii.gz"
    image.write_bytes(b"x")
    records = [{"moving": str(image), "fixed": str(image)}]
    assert check_output_dir(tmp_path / "results", records) == tmp_path / "results"
    assert check_output_dir(inputs / "results", records) == inputs / "results"  # next to the inputs is fine
    for bad in (inputs, tmp_path, image):
        with pytest.raises(OutputCollisionError, match="refusing|not a directory"):
            check_output_dir(bad, records)
    with pytest.raises(OutputCollisionError, match="model.pt"):
        check_output_dir(tmp_path / "models", [], protected=[tmp_path / "models" / "model.pt"])


def test_symlinked_output_dir_pointing_at_the_inputs_is_refused(tmp_path: Path) -> None:
    inputs = tmp_path / "data"
    inputs.mkdir()
    (inputs / "a.nii.gz").write_bytes(b"x")
    (tmp_path / "link").symlink_to(inputs)
    with pytest.raises(OutputCollisionError):
        check_output_dir(tmp_path / "link", [{"moving": str(inputs / "a.nii.gz"), "fixed": str(inputs / "a.nii.gz")}])


def test_pair_names_come_from_patient_and_direction_or_the_file_names() -> None:
    assert pair_name({"moving": "x", "fixed": "y", "patient": "patient001", "direction": "ES_to_ED"}) == (
        "patient001_ES_to_ED"
    )
    assert pair_name({"moving": "/d/ed scan.nii.gz", "fixed": "/d/es.nii"}) == "ed_scan_to_es"
    assert pair_name({"moving": "/d/cine.nii.gz", "fixed": "/d/cine.nii.gz", "moving_frame": 0, "fixed_frame": 9}) == (
        "cine_f00_to_cine_f09"
    )


def test_datalist_paths_are_relative_to_the_json_and_names_unique(tmp_path: Path) -> None:
    listing = tmp_path / "lists" / "pairs.json"
    listing.parent.mkdir()
    listing.write_text(json.dumps([{"moving": "../a.nii.gz", "fixed": "b.nii.gz"}] * 2))
    records = inference_pairs(datalist=listing)
    assert records[0]["moving"] == str(tmp_path / "a.nii.gz")
    assert records[1]["fixed"] == str(tmp_path / "lists" / "b.nii.gz")
    assert [r["pair_name"] for r in records] == ["a_to_b", "a_to_b_2"]


def test_unknown_direction_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="directions"):
        inference_pairs(dataset_dir=tmp_path, directions=["ED_to_XX"])


def test_weights_load_with_or_without_the_wrapper_prefix_and_are_fingerprinted(tmp_path: Path) -> None:
    from scripts.networks import bundle_network

    source = bundle_network("memwarp", "tiny")
    inner = {k.removeprefix("registration."): v for k, v in source.state_dict().items()}
    torch.save(inner, tmp_path / "inner.pt")
    target = bundle_network("memwarp", "tiny")
    record = load_network_weights(target, tmp_path / "inner.pt")
    assert len(record.sha256) == 64 and record.path == str(tmp_path / "inner.pt")
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value)


def test_checkpoint_errors_name_the_file(tmp_path: Path) -> None:
    from scripts.networks import bundle_network

    network = bundle_network("memwarp", "tiny")
    with pytest.raises(MissingCheckpointError, match="absent.pt"):
        load_network_weights(network, tmp_path / "absent.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="corrupt.pt: cannot be read"):
        load_network_weights(network, tmp_path / "corrupt.pt")
    torch.save({"epoch": 3}, tmp_path / "notes.pt")
    with pytest.raises(CheckpointError, match="notes.pt: not a network state_dict"):
        load_network_weights(network, tmp_path / "notes.pt")


def test_input_errors_are_found_inside_wrapping_runtime_errors() -> None:
    try:
        try:
            raise InvalidInputError("/data/x.nii.gz: bad")
        except InvalidInputError as error:
            raise RuntimeError("applying transform") from error
    except RuntimeError as wrapped:
        assert str(input_error_in(wrapped)) == "/data/x.nii.gz: bad"
    assert input_error_in(RuntimeError("other")) is None


def test_outputs_copy_the_reference_geometry_but_not_its_integer_type(tmp_path: Path) -> None:
    reference = save_nifti(np.zeros((4, 5, 6)), AFFINE, tmp_path / "ref.nii.gz", dtype=np.int16)
    geometry = NiftiGeometry(reference)
    out = save_volume(np.full((4, 5, 6), 0.25), geometry, tmp_path / "out.nii.gz")
    image = nib.load(str(out))
    np.testing.assert_allclose(image.affine, AFFINE, atol=1e-5)
    assert image.get_data_dtype() == np.float32 and float(image.get_fdata().max()) == 0.25
    assert int(image.header["sform_code"]) == 1 and int(image.header["qform_code"]) == 1
