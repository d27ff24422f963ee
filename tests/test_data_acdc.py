"""ACDC layout: Info.cfg parsing and locating a patient's ED/ES images and label maps (no image is opened)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scripts.data import InvalidInputError, MissingInputError, find_patient_frames, patient_id, read_info_cfg

ACDC_INFO = "ED: 1\nES: 12\nGroup: DCM\nHeight: 184.0\nNbFrame: 30\nWeight: 95.0\n"


def make_patient(folder: Path, info: str = ACDC_INFO, files: tuple[str, ...] = ()) -> Path:
    """A patient folder with Info.cfg and empty placeholder files (names only matter here)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Info.cfg").write_text(info)
    for name in files:
        (folder / name.format(p=folder.name)).touch()
    return folder


FRAME_FILES = (
    "{p}_4d.nii.gz",
    "{p}_frame01.nii.gz",
    "{p}_frame01_gt.nii.gz",
    "{p}_frame12.nii.gz",
    "{p}_frame12_gt.nii.gz",
)


def test_read_info_cfg_of_an_acdc_file(tmp_path):
    path = tmp_path / "Info.cfg"
    path.write_text(ACDC_INFO)
    assert read_info_cfg(path) == {"ED": 1, "ES": 12, "Group": "DCM", "Height": 184.0, "NbFrame": 30, "Weight": 95.0}


def test_read_info_cfg_tolerates_order_spacing_case_and_separators(tmp_path):
    path = tmp_path / "Info.cfg"
    path.write_text("\ufeff# comment\r\n  es =  7 \r\n\r\ngroup:hcm\r\nnb_frame : 25\r\n ed:1.0\r\nPatientName: x\r\n")
    assert read_info_cfg(path) == {"ES": 7, "Group": "HCM", "NbFrame": 25, "ED": 1, "PatientName": "x"}


def test_read_info_cfg_maps_the_arv_alias_to_rv(tmp_path):
    path = tmp_path / "Info.cfg"
    path.write_text("ED: 1\nES: 9\nGroup: ARV\n")
    assert read_info_cfg(path)["Group"] == "RV"


@pytest.mark.parametrize(
    "content, problem",
    [
        ("ED: 1\nGroup: NOR\n", "no ES frame given"),
        ("ES: 10\n", "no ED frame given"),
        ("ED: 1\nES: ten\n", "ES must be a whole number"),
        ("ED: 0\nES: 10\n", "ED frame numbers start at 1, got 0"),
        ("ED: 1\nES: 31\nNbFrame: 30\n", "ES frame 31 is beyond NbFrame 30"),
        ("ED: 1\nES: 10\nGroup: XYZ\n", "unknown group 'XYZ'"),
        ("ED 1\nES: 10\n", "line 1 is not 'key: value'"),
    ],
)
def test_read_info_cfg_errors_name_the_file(tmp_path, content, problem):
    path = tmp_path / "Info.cfg"
    path.write_text(content)
    with pytest.raises(InvalidInputError, match=rf"{re.escape(str(path))}: {problem}"):
        read_info_cfg(path)


def test_read_info_cfg_of_a_missing_file(tmp_path):
    with pytest.raises(MissingInputError, match=re.escape(str(tmp_path / "Info.cfg"))):
        read_info_cfg(tmp_path / "Info.cfg")


def test_find_patient_frames_prefers_the_frame_files(tmp_path):
    folder = make_patient(tmp_path / "patient007", files=FRAME_FILES)
    frames = find_patient_frames(folder)
    assert (frames.patient, frames.group) == ("patient007", "DCM")
    assert frames.ed_image == str(folder / "patient007_frame01.nii.gz")
    assert frames.es_label == str(folder / "patient007_frame12_gt.nii.gz")
    assert (frames.ed_frame, frames.es_frame) == (None, None)
    assert frames.has_labels


def test_find_patient_frames_falls_back_to_the_cine_with_zero_based_indices(tmp_path):
    folder = make_patient(tmp_path / "patient007", files=("{p}_4d.nii", "{p}_frame01_gt.nii.gz"))
    frames = find_patient_frames(folder)
    assert frames.ed_image == frames.es_image == str(folder / "patient007_4d.nii")
    assert (frames.ed_frame, frames.es_frame) == (0, 11)
    assert frames.ed_label is not None and frames.es_label is None and not frames.has_labels


def test_find_patient_frames_without_group_gives_empty_group(tmp_path):
    folder = make_patient(tmp_path / "patient002", info="ED: 1\nES: 12\n", files=FRAME_FILES)
    assert find_patient_frames(folder).group == ""


def test_find_patient_frames_without_any_image_of_a_phase(tmp_path):
    folder = make_patient(tmp_path / "patient003", files=("{p}_frame01.nii.gz",))
    with pytest.raises(MissingInputError, match=rf"{re.escape(str(folder))}: no image for ES \(frame 12\)"):
        find_patient_frames(folder)


def test_find_patient_frames_without_info_cfg(tmp_path):
    folder = tmp_path / "patient004"
    folder.mkdir()
    with pytest.raises(MissingInputError, match=re.escape(str(folder / "Info.cfg"))):
        find_patient_frames(folder)


@pytest.mark.parametrize("reference", [1, "1", "001", "patient001", "Patient1"])
def test_patient_id_normalises_references(reference):
    assert patient_id(reference) == "patient001"
