"""The pieces of inference on their own: field conversion, world resampling, output guard, names, checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from scripts.data import InvalidInputError
from scripts.errors import CheckpointError, MissingCheckpointError, OutputCollisionError, input_error_in
from scripts.geometry import NiftiGeometry
from scripts.inference import (
    InferencePreprocessing,
    check_output_dir,
    inference_pairs,
    load_network_weights,
    pair_name,
    read_nifti_header,
    resample_through_displacement,
    single_pair_record,
    world_overlap,
)
from scripts.inference.nifti_io import save_volume
from scripts.inference.resampling import WorldPointSampler
from tests.geometry import rotation
from tests.inference_helpers import save_nifti

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


def test_a_multi_channel_field_is_sampled_in_one_call_exactly_as_channel_by_channel() -> None:
    field = torch.rand(3, 6, 7, 5)
    target = np.diag([1.3, 1.1, 7.0, 1.0])
    sampler = WorldPointSampler.on_grid((9, 8, 4), target, AFFINE, (6, 7, 5))
    together = sampler(field)
    assert together.shape == (3, 9, 8, 4)
    torch.testing.assert_close(together, torch.stack([sampler(component) for component in field]), atol=0, rtol=0)
    with pytest.raises(ValueError, match=r"expected an image of shape \(6, 7, 5\)"):
        sampler(field[:, :-1])


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


def test_single_pair_options_make_one_record_named_after_the_files(tmp_path: Path) -> None:
    records = inference_pairs(
        dataset_dir=tmp_path / "ignored", moving="/d/ed.nii.gz", fixed="/d/es.nii.gz", fixed_label="/d/es_gt.nii.gz"
    )
    assert records == [
        {"moving": "/d/ed.nii.gz", "fixed": "/d/es.nii.gz", "fixed_label": "/d/es_gt.nii.gz", "pair_name": "ed_to_es"}
    ]
    with pytest.raises(InvalidInputError, match="--moving /d/ed.nii.gz: a single pair needs both"):
        single_pair_record("/d/ed.nii.gz", "")
    with pytest.raises(InvalidInputError, match="missing --moving"):
        single_pair_record("", "", moving_label="/d/ed_gt.nii.gz")
    assert single_pair_record("", "") is None


def test_header_check_refuses_empty_and_non_nifti_files_in_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty.nii.gz"
    empty.write_bytes(b"")
    with pytest.raises(InvalidInputError, match=r"empty.nii.gz: empty file \(0 bytes\)"):
        read_nifti_header(empty, "moving")
    for name, content in (("text.nii.gz", b"not an image at all"), ("text.nii", b"x" * 400)):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(InvalidInputError, match=f"{name}: cannot be read as a NIfTI image") as caught:
            read_nifti_header(tmp_path / name, "fixed")
        assert "\n" not in str(caught.value)


def sample_record(tmp_path: Path, with_labels: bool) -> dict:
    affine = AFFINE.copy()
    rng = np.random.default_rng(0)
    record = {
        "moving": str(save_nifti(rng.random((40, 36, 6)) * 300, affine, tmp_path / "moving.nii.gz", np.int16)),
        "fixed": str(save_nifti(rng.random((40, 36, 6)) * 300, affine, tmp_path / "fixed.nii.gz", np.int16)),
        "pair_name": "moving_to_fixed",
    }
    if with_labels:
        labels = np.zeros((40, 36, 6), np.uint8)
        labels[10:20, 10:20, 1:5] = 2
        for key in ("moving_label", "fixed_label"):
            record[key] = str(save_nifti(labels, affine, tmp_path / f"{key}.nii.gz", np.uint8))
    return record


@pytest.mark.parametrize("with_labels", [False, True])
def test_each_file_is_read_once_and_the_network_sees_the_bundle_preprocessing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_labels: bool
) -> None:
    from monai.data import NibabelReader

    from scripts.data import registration_preprocessing

    record = sample_record(tmp_path, with_labels)
    reads: list[str] = []
    original_read = NibabelReader.read

    def counting_read(self, data, **kwargs):
        reads.extend(str(path) for path in (data if isinstance(data, (tuple, list)) else [data]))
        return original_read(self, data, **kwargs)

    monkeypatch.setattr(NibabelReader, "read", counting_read)
    sample = InferencePreprocessing()(record)
    assert sorted(reads) == sorted(value for key, value in record.items() if key != "pair_name")
    assert sample["pair"] == record
    monkeypatch.setattr(NibabelReader, "read", original_read)
    reference = registration_preprocessing(with_labels=with_labels)(dict(record))
    for key in ("moving", "fixed") + (("moving_label", "fixed_label") if with_labels else ()):
        assert sample[key].shape == (1, 128, 128, 16)
        assert sample[key].as_tensor().numpy().tobytes() == reference[key].as_tensor().numpy().tobytes(), key
        np.testing.assert_array_equal(sample[key].affine.numpy(), reference[key].affine.numpy())
    assert ("moving_label" in sample) == with_labels
    original = sample["fixed_original"]
    assert original.shape == (40, 36, 6)
    np.testing.assert_array_equal(original.numpy(), nib.load(record["fixed"]).get_fdata().astype(np.float32))
    np.testing.assert_array_equal(original.affine.numpy(), nib.load(record["fixed"]).affine)


def test_the_documented_datalist_example_is_read_as_documented(tmp_path: Path) -> None:
    docs = (Path(__file__).resolve().parents[1] / "docs" / "README.md").read_text(encoding="utf-8")
    section = docs[docs.index("**Registering your own images.**") :]
    example = section[section.index("```json") + len("```json") : section.index("```", section.index("```json") + 7)]
    listing = tmp_path / "lists" / "pairs.json"
    listing.parent.mkdir()
    listing.write_text(example)
    records = inference_pairs(datalist=listing)
    assert records[0]["moving"] == str(tmp_path / "lists" / "patient042" / "patient042_frame01.nii.gz")
    assert set(records[0]) == {"moving", "fixed", "moving_label", "fixed_label", "pair_name"}
    assert records[0]["pair_name"] == "patient042_frame01_to_patient042_frame12"
    assert (records[1]["moving_frame"], records[1]["fixed_frame"]) == (0, 11)
    assert records[1]["pair_name"] == "scan7_ED_to_ES"
