"""Pair datalists: layouts, the reference split on a 150-patient tree, datalist JSON files and the CLI.

The tree holds empty placeholder files: building a datalist only looks at names, never opens an image.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from scripts.data import (
    GROUPS,
    InvalidInputError,
    MissingInputError,
    build_pair_datalist,
    load_datalist,
    reference_split,
    save_datalist,
)
from scripts.data.datalist import dataset_split
from scripts.data.write_datalist import main as write_datalist_main

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
ACDC_GROUP_ORDER = ("DCM", "HCM", "MINF", "NOR", "RV")


def acdc_group(number: int) -> str:
    """Group of an ACDC patient: blocks of 20 in 1-100, blocks of 10 in 101-150."""
    return ACDC_GROUP_ORDER[(number - 1) // 20] if number <= 100 else ACDC_GROUP_ORDER[(number - 101) // 10]


def make_patient(folder: Path, group: str, labels: bool = True, frame_files: bool = True) -> Path:
    folder.mkdir(parents=True)
    (folder / "Info.cfg").write_text(f"ED: 1\nES: 12\nGroup: {group}\nNbFrame: 30\n")
    names = [f"{folder.name}_4d.nii.gz"]
    names += [f"{folder.name}_frame01.nii.gz", f"{folder.name}_frame12.nii.gz"] if frame_files else []
    names += [f"{folder.name}_frame01_gt.nii.gz", f"{folder.name}_frame12_gt.nii.gz"] if labels else []
    for name in names:
        (folder / name).touch()
    return folder


def make_acdc_tree(root: Path, numbers=range(1, 151)) -> Path:
    for number in numbers:
        part = "training" if number <= 100 else "testing"
        make_patient(root / part / f"patient{number:03d}", acdc_group(number))
    return root


@pytest.fixture(scope="module")
def acdc(tmp_path_factory) -> Path:
    return make_acdc_tree(tmp_path_factory.mktemp("database"))


@pytest.fixture(scope="module")
def split(acdc) -> dict[str, list[dict]]:
    return reference_split(acdc)


def test_reference_split_has_170_30_100_directed_pairs(split):
    assert {section: len(records) for section, records in split.items()} == {
        "training": 170,
        "validation": 30,
        "test": 100,
    }


def test_every_patient_is_in_exactly_one_set(split):
    patients = {section: {r["patient"] for r in records} for section, records in split.items()}
    assert sum(len(p) for p in patients.values()) == 150
    assert set.union(*patients.values()) == {f"patient{n:03d}" for n in range(1, 151)}
    assert patients["validation"] == {f"patient{n:03d}" for b in (18, 38, 58, 78, 98) for n in range(b, b + 3)}


def test_every_group_is_in_every_set_in_proportion(split):
    for section, records in split.items():
        counts = Counter(r["group"] for r in records)
        assert set(counts) == set(GROUPS), section
        assert len(set(counts.values())) == 1, section  # stratified: as many pairs per group


def test_each_patient_gives_both_directions_with_ed_and_es_swapped(split):
    by_patient: dict[str, dict[str, dict]] = {}
    for record in split["training"]:
        by_patient.setdefault(record["patient"], {})[record["direction"]] = record
    assert all(set(pairs) == {"ED_to_ES", "ES_to_ED"} for pairs in by_patient.values())
    forward, backward = by_patient["patient001"]["ED_to_ES"], by_patient["patient001"]["ES_to_ED"]
    assert forward["moving"].endswith("patient001_frame01.nii.gz")
    assert forward["fixed_label"].endswith("patient001_frame12_gt.nii.gz")
    assert (backward["moving"], backward["fixed"]) == (forward["fixed"], forward["moving"])
    assert list(forward) == ["moving", "fixed", "moving_label", "fixed_label", "patient", "group", "direction"]


def test_patients_missing_from_disk_are_skipped(tmp_path):
    make_acdc_tree(tmp_path, numbers=[1, 2, 18, 101])
    split = reference_split(tmp_path)
    assert {s: sorted({r["patient"] for r in recs}) for s, recs in split.items()} == {
        "training": ["patient001", "patient002"],
        "validation": ["patient018"],
        "test": ["patient101"],
    }


def test_an_empty_reference_section_is_an_error_naming_the_directory(tmp_path):
    make_acdc_tree(tmp_path, numbers=[1, 101])
    with pytest.raises(InvalidInputError, match=rf"{re.escape(str(tmp_path))}: the reference validation set is empty"):
        reference_split(tmp_path)


def patients_of(records: list[dict]) -> list[str]:
    return sorted({record["patient"] for record in records})


def test_dataset_split_of_the_full_data_set_is_the_reference_split(acdc, split):
    drawn = dataset_split(acdc)
    assert drawn.sections == split
    assert drawn.how["validation"] == "the 15 reference validation patients found"


def test_a_small_data_set_validates_on_patients_drawn_from_it(tmp_path):
    # the 6-subject phantom's patients: one per group outside the test set, the ACDC test numbering
    numbers = {1: "DCM", 21: "HCM", 41: "MINF", 61: "NOR", 101: "DCM", 141: "RV"}
    for number, group in numbers.items():
        make_patient(tmp_path / f"patient{number:03d}", group)
    drawn = dataset_split(tmp_path)
    assert {section: patients_of(records) for section, records in drawn.sections.items()} == {
        "training": ["patient001", "patient021", "patient041"],
        "validation": ["patient061"],  # round(0.15 x 4) = 1; four groups of one: the highest number
        "test": ["patient101", "patient141"],
    }
    assert drawn.how["validation"].endswith(
        "drawn stratified by group (the reference validation patients 18-20, "
        "38-40, 58-60, 78-80, 98-100 are not there with others to train on): "
        "patient061 (NOR)"
    )


def test_the_drawn_validation_set_is_shared_among_groups_in_proportion(tmp_path):
    # 40 patients outside the test set: 20 NOR, 12 DCM, 8 RV; round(0.15 x 40) = 6 validate, quotas 3, 1.8 and 1.2:
    # 3 NOR, 2 DCM (largest remainder), 1 RV, each group's highest numbers
    # (numbered outside the reference validation blocks, which would otherwise be the validation set)
    groups = ["NOR"] * 20 + ["DCM"] * 12 + ["RV"] * 8
    numbers = [number for number in range(1, 101) if (number - 1) % 20 < 17][: len(groups)]
    for number, group in zip(numbers, groups):
        make_patient(tmp_path / f"patient{number:03d}", group)
    drawn = dataset_split(tmp_path)
    assert patients_of(drawn.sections["validation"]) == [f"patient{n:03d}" for n in (21, 22, 23, 34, 35, 46)]
    assert len(patients_of(drawn.sections["training"])) == 34 and drawn.sections["test"] == []
    assert dataset_split(tmp_path).sections == drawn.sections  # the same folders always give the same split


def test_a_data_set_of_test_patients_only_has_a_test_section(tmp_path):
    make_acdc_tree(tmp_path, numbers=[101, 111])
    drawn = dataset_split(tmp_path)
    assert patients_of(drawn.sections["test"]) == ["patient101", "patient111"]
    assert drawn.sections["training"] == drawn.sections["validation"] == []
    assert drawn.how["training"] == (
        "0 patient(s) outside the reference test set (101-150); training needs at least 2, one to train on and one to "
        "validate"
    )


@pytest.mark.parametrize("layout", ["flat", "database", "single"])
def test_patient_folders_are_found_in_each_layout(tmp_path, layout):
    parent = {"flat": tmp_path, "database": tmp_path / "database" / "training", "single": tmp_path}[layout]
    folder = make_patient(parent / "patient005", "NOR")
    records = build_pair_datalist(folder if layout == "single" else tmp_path)
    assert [r["patient"] for r in records] == ["patient005", "patient005"]


def test_patient_selection_and_direction_subset(acdc):
    records = build_pair_datalist(acdc, patients=[3, "patient150", 999], directions=("ES_to_ED",))
    assert [(r["patient"], r["direction"]) for r in records] == [("patient003", "ES_to_ED"), ("patient150", "ES_to_ED")]


def test_missing_labels_are_an_error_unless_not_required(tmp_path):
    make_patient(tmp_path / "patient001", "NOR", labels=False)
    with pytest.raises(MissingInputError, match=rf"{re.escape(str(tmp_path / 'patient001'))}: label maps"):
        build_pair_datalist(tmp_path)
    records = build_pair_datalist(tmp_path, require_labels=False)
    assert all("moving_label" not in r and "fixed_label" not in r for r in records)


def test_cine_only_patients_get_frame_indices(tmp_path):
    make_patient(tmp_path / "patient001", "NOR", frame_files=False)
    forward = build_pair_datalist(tmp_path)[0]
    assert forward["moving"] == forward["fixed"] == str(tmp_path / "patient001" / "patient001_4d.nii.gz")
    assert (forward["moving_frame"], forward["fixed_frame"]) == (0, 11)


def test_load_datalist_resolves_paths_against_the_json_folder(tmp_path):
    path = tmp_path / "lists" / "datalist.json"
    path.parent.mkdir()
    record = {"moving": "../data/a.nii.gz", "fixed": "/abs/b.nii.gz", "patient": "p", "direction": "ED_to_ES"}
    path.write_text(json.dumps({"training": [record], "validation": [], "test": []}))
    (loaded,) = load_datalist(path, "training")
    assert loaded["moving"] == str(tmp_path / "data" / "a.nii.gz")
    assert loaded["fixed"] == "/abs/b.nii.gz"
    assert loaded["group"] == ""


@pytest.mark.parametrize(
    "content, problem",
    [
        ({"training": []}, "no section 'test'"),
        ({"test": [{"moving": "a.nii.gz"}]}, r"test\[0\] must be a pair record"),
        ({"test": [{"moving": "a", "fixed": "b", "direction": "up"}]}, "unknown direction 'up'"),
    ],
)
def test_load_datalist_errors_name_the_file(tmp_path, content, problem):
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps(content))
    with pytest.raises(InvalidInputError, match=rf"{re.escape(str(path))}.*{problem}"):
        load_datalist(path, "test")


def test_cli_writes_the_reference_split_that_load_datalist_reads_back(acdc, split, tmp_path, capsys):
    output = tmp_path / "out" / "datalist.json"
    assert write_datalist_main(["--dataset_dir", str(acdc), "--output", str(output), "--relative"]) == 0
    assert "training 170, validation 30, test 100" in capsys.readouterr().out
    assert not str(json.loads(output.read_text())["test"][0]["moving"]).startswith("/")
    for section, records in split.items():
        assert load_datalist(output, section) == records
    assert os.listdir(output.parent) == ["datalist.json"]  # the temporary file was renamed, nothing left over


def test_cli_refuses_to_overwrite_an_input_file(acdc, capsys):
    target = acdc / "training" / "patient001" / "Info.cfg"
    before = target.read_text()
    assert write_datalist_main(["--dataset_dir", str(acdc), "--output", str(target)]) == 2
    assert "refusing to overwrite an input file" in capsys.readouterr().err
    assert target.read_text() == before


def test_save_datalist_refuses_an_image_of_the_datalist(split):
    image = split["test"][0]["moving"]
    with pytest.raises(InvalidInputError, match=rf"{re.escape(image)}: refusing to overwrite an input file"):
        save_datalist(split, image)


def test_cli_runs_as_a_module(tmp_path):
    make_acdc_tree(tmp_path / "db", numbers=[1, 18, 101])
    output = tmp_path / "datalist.json"
    command = [sys.executable, "-m", "scripts.data.write_datalist", "--dataset_dir", str(tmp_path / "db")]
    result = subprocess.run(
        [*command, "--output", str(output)], cwd=BUNDLE_ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert [len(v) for v in json.loads(output.read_text()).values()] == [2, 2, 2]


def test_cli_writes_the_drawn_split_of_a_small_data_set(tmp_path, capsys):
    make_acdc_tree(tmp_path / "db", numbers=[1, 21, 41, 101])
    output = tmp_path / "datalist.json"
    assert write_datalist_main(["--dataset_dir", str(tmp_path / "db"), "--output", str(output)]) == 0
    assert "training 4, validation 2, test 2 directed pairs" in capsys.readouterr().out
    assert patients_of(load_datalist(output, "validation")) == ["patient041"]
