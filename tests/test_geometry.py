"""scripts.geometry: voxel <-> world millimetres, the half-voxel inside rule, displacement NIfTI files."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from scripts.geometry import (
    NiftiGeometry,
    grid_voxel_positions,
    grid_world_points,
    inside_within_half_voxel,
    read_displacement_nifti,
    voxel_to_world_displacement,
    voxel_to_world_points,
    world_to_voxel_displacement,
    world_to_voxel_points,
    write_displacement_nifti,
)

_ANGLE = np.deg2rad(30.0)
AFFINE = np.eye(4)
AFFINE[:3, :3] = np.array(
    [[np.cos(_ANGLE), -np.sin(_ANGLE), 0.0], [np.sin(_ANGLE), np.cos(_ANGLE), 0.0], [0.0, 0.0, 1.0]]
) @ np.diag([1.8, 1.8, 10.0])
AFFINE[:3, 3] = (-100.0, 20.0, 5.0)


def test_one_voxel_along_each_axis_becomes_that_axis_column_in_millimetres() -> None:
    ddf = torch.zeros(3, 2, 2, 2)
    ddf[2] = 1.0  # one slice through-plane
    world = voxel_to_world_displacement(ddf, AFFINE)
    np.testing.assert_allclose(world[:, 0, 0, 0].numpy(), AFFINE[:3, 2], atol=1e-6)
    assert float(world.norm(dim=0).max()) == pytest.approx(10.0, abs=1e-5)


def test_displacements_round_trip_and_keep_their_kind_dtype_and_batch_axis() -> None:
    ddf = torch.randn(1, 3, 4, 5, 6)
    back = world_to_voxel_displacement(voxel_to_world_displacement(ddf, AFFINE), AFFINE)
    assert back.dtype == torch.float32 and back.shape == ddf.shape
    torch.testing.assert_close(back, ddf, atol=1e-5, rtol=0)
    array = np.random.default_rng(0).normal(size=(3, 4, 5, 6))
    world = voxel_to_world_displacement(array, AFFINE)
    assert isinstance(world, np.ndarray) and world.dtype == np.float64
    np.testing.assert_allclose(world, np.einsum("ij,j...->i...", AFFINE[:3, :3], array), atol=1e-12)


def test_voxel_centres_map_through_the_whole_affine_and_back() -> None:
    points = grid_world_points((4, 5, 6), AFFINE)
    assert points.shape == (4, 5, 6, 3) and points.dtype == torch.float64
    np.testing.assert_allclose(points[3, 1, 2].numpy(), (AFFINE @ [3, 1, 2, 1])[:3], atol=1e-12)
    index = np.array([[0.25, -0.5, 7.0]])
    np.testing.assert_allclose(world_to_voxel_points(voxel_to_world_points(index, AFFINE), AFFINE), index, atol=1e-12)


def test_grid_positions_on_another_grid_equal_the_world_point_round_trip_with_and_without_a_displacement() -> None:
    shape = (7, 5, 3)
    target = np.diag([1.2, 0.9, 6.0, 1.0])
    target[:3, 3] = (-90.0, 25.0, -4.0)
    displacement = torch.randn(3, *shape, dtype=torch.float64) * 4.0
    for field in (None, displacement):
        points = grid_world_points(shape, AFFINE)
        if field is not None:
            points = points + torch.movedim(field, 0, -1)
        expected = world_to_voxel_points(points, target)
        positions = grid_voxel_positions(shape, AFFINE, target, field)
        assert positions.shape == (*shape, 3) and positions.dtype == torch.float64
        np.testing.assert_allclose(positions.numpy(), expected.numpy(), atol=1e-9)
    with pytest.raises(ValueError, match=r"displacement_mm must be \(3, \(7, 5, 3\)\)"):
        grid_voxel_positions(shape, AFFINE, target, displacement[:, :-1])


def test_inside_means_within_half_a_voxel_of_the_outer_centres_for_numpy_and_torch() -> None:
    voxel = np.array([[-0.5, 0.0, 0.0], [3.5, 4.5, 5.5], [-0.51, 0.0, 0.0], [0.0, 4.51, 0.0], [2.0, 2.0, 5.6]])
    expected = [True, True, False, False, False]
    assert inside_within_half_voxel(voxel, (4, 5, 6)).tolist() == expected
    assert inside_within_half_voxel(torch.from_numpy(voxel), (4, 5, 6)).tolist() == expected


def test_displacement_file_is_x_y_z_1_3_float32_intent_1006_and_reads_back_exactly(tmp_path: Path) -> None:
    field = np.random.default_rng(1).normal(size=(4, 5, 6, 3)).astype(np.float32)
    path = write_displacement_nifti(tmp_path / "ddf.nii.gz", field, AFFINE)
    image = nib.load(str(path))
    assert image.shape == (4, 5, 6, 1, 3) and image.get_data_dtype() == np.float32
    assert int(image.header["intent_code"]) == 1006
    read, affine = read_displacement_nifti(path)
    assert read.shape == (4, 5, 6, 3) and np.array_equal(read, field)
    np.testing.assert_allclose(affine, AFFINE, atol=1e-5)


def test_channel_first_and_channel_last_fields_give_the_same_bytes(tmp_path: Path) -> None:
    field = np.random.default_rng(2).normal(size=(4, 5, 6, 3))
    last = write_displacement_nifti(tmp_path / "last.nii.gz", field, AFFINE)
    first = write_displacement_nifti(tmp_path / "first.nii.gz", torch.from_numpy(np.moveaxis(field, -1, 0)), AFFINE)
    again = write_displacement_nifti(tmp_path / "again.nii.gz", field, AFFINE)
    assert last.read_bytes() == first.read_bytes() == again.read_bytes()
    with pytest.raises(ValueError, match="ambiguous"):
        write_displacement_nifti(tmp_path / "x.nii.gz", np.zeros((3, 4, 5, 3)), AFFINE)


def test_a_reference_files_qform_and_sform_codes_are_kept(tmp_path: Path) -> None:
    reference = nib.Nifti1Image(np.zeros((4, 5, 6), np.int16), AFFINE)
    reference.set_qform(AFFINE, code=1)
    reference.set_sform(AFFINE, code=2)
    nib.save(reference, str(tmp_path / "ref.nii.gz"))
    path = write_displacement_nifti(
        tmp_path / "ddf.nii.gz", np.ones((3, 4, 5, 6)), NiftiGeometry(tmp_path / "ref.nii.gz")
    )
    header = nib.load(str(path)).header
    assert (int(header["qform_code"]), int(header["sform_code"])) == (1, 2)


def test_reading_refuses_other_files_naming_them(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="absent.nii.gz"):
        read_displacement_nifti(tmp_path / "absent.nii.gz")
    (tmp_path / "text.nii.gz").write_text("not an image")
    with pytest.raises(ValueError, match="text.nii.gz: cannot be read as NIfTI"):
        read_displacement_nifti(tmp_path / "text.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), AFFINE), str(tmp_path / "scalar.nii.gz"))
    with pytest.raises(ValueError, match=r"scalar.nii.gz: expected a \(X, Y, Z, 1, 3\)"):
        read_displacement_nifti(tmp_path / "scalar.nii.gz")
