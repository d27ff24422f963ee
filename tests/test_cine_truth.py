"""Specification of the phantom's cine truth (scripts.phantom.cine_truth): opt-in, consistent with the ED/ES files."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from scripts.phantom import GenerationOptions, generate_subject
from scripts.phantom.acdc_writer import write_subject
from scripts.phantom.cine_truth import cine_truth_paths, write_cine_truth

# A normal heart (patient 061, NOR), 8 frames, in-plane matrix cropped to 128 around the heart, no partial volume.
PATIENT = 61
OPTIONS = GenerationOptions(n_frames=8, max_matrix=128, n_through=1)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """The same subject written without and with its cine truth."""
    root = tmp_path_factory.mktemp("cine_truth")
    plain = generate_subject(PATIENT, 0, options=OPTIONS)
    with_truth = generate_subject(PATIENT, 0, options=OPTIONS, cine_truth=True)
    write_subject(plain, root / "plain" / plain.name)
    write_subject(with_truth, root / "truth" / with_truth.name)
    write_cine_truth(with_truth, root / "truth" / with_truth.name)
    return {
        "plain": root / "plain" / plain.name,
        "truth": root / "truth" / with_truth.name,
        "name": with_truth.name,
        "es": with_truth.es_frame,
        "targets": with_truth.params.targets,
    }


def test_cine_truth_leaves_every_other_file_byte_identical(folders):
    plain = sorted(path.name for path in folders["plain"].iterdir())
    assert len(plain) == 8  # Info.cfg, cine, ED/ES frames and labels, the two true fields
    for name in plain:
        assert filecmp.cmp(folders["plain"] / name, folders["truth"] / name, shallow=False), name


def test_truth_files_are_one_label_cine_one_field_per_frame_and_the_function(folders):
    paths = cine_truth_paths(folders["truth"], folders["name"], OPTIONS.n_frames)
    added = {path.name for path in folders["truth"].iterdir()} - {path.name for path in folders["plain"].iterdir()}
    assert added == {paths["labels"].name, paths["function"].name, *(path.name for path in paths["fields"])}


def test_es_frame_field_is_the_ed_to_es_field_and_ed_frame_field_is_zero(folders):
    name, es = folders["name"], folders["es"]
    paths = cine_truth_paths(folders["truth"], name, OPTIONS.n_frames)["fields"]
    assert filecmp.cmp(paths[es - 1], folders["truth"] / f"{name}_true_ddf_ED_to_ES.nii.gz", shallow=False)
    ed_field = nib.load(str(paths[0]))
    assert ed_field.shape[3:] == (1, 3) and int(ed_field.header["intent_code"]) == 1006
    assert not np.asarray(ed_field.dataobj).any()


def test_true_labels_of_the_ed_and_es_frames_are_the_gt_maps_with_the_cine_affine(folders):
    name, es = folders["name"], folders["es"]
    labels = nib.load(str(cine_truth_paths(folders["truth"], name, 0)["labels"]))
    cine = nib.load(str(folders["truth"] / f"{name}_4d.nii.gz"))
    assert labels.shape == cine.shape and labels.get_data_dtype() == np.uint8
    np.testing.assert_allclose(labels.affine, cine.affine)
    data = np.asarray(labels.dataobj)
    for frame in (1, es):
        gt = np.asarray(nib.load(str(folders["truth"] / f"{name}_frame{frame:02d}_gt.nii.gz")).dataobj)
        np.testing.assert_array_equal(data[..., frame - 1], gt)


def test_true_function_has_the_calibrated_ejection_fractions_and_a_contracting_wall(folders):
    function = json.loads(cine_truth_paths(folders["truth"], folders["name"], 0)["function"].read_text())
    targets = folders["targets"]
    assert function["frames"] == OPTIONS.n_frames and function["es_frame_info_cfg"] == folders["es"]
    assert function["es_frame"] == folders["es"]  # the smallest true LV volume is at the phantom's ES
    assert function["lv"]["ef_percent"] == pytest.approx(100 * targets["lv_ef"], abs=3.0)
    assert function["rv"]["ef_percent"] == pytest.approx(100 * targets["rv_ef"], abs=3.0)
    strain = function["strain"]
    assert strain["radial_percent"][0] == 0 and strain["circumferential_percent"][0] == 0
    assert strain["radial_percent_at_es"] > 20.0  # the wall thickens
    assert strain["circumferential_percent_at_es"] < -10.0  # and shortens
