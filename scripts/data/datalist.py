"""Pair records (datalist items), the reference ACDC split, and datalist JSON files.

A pair record is a dict::

    {
        "moving": ".../patient001_frame01.nii.gz",        # image path (ED for "ED_to_ES")
        "fixed": ".../patient001_frame12.nii.gz",         # image path (ES for "ED_to_ES")
        "moving_label": ".../patient001_frame01_gt.nii.gz",  # optional
        "fixed_label": ".../patient001_frame12_gt.nii.gz",   # optional
        "moving_frame": 0,  # only when "moving" is a 4D cine: 0-based frame index
        "fixed_frame": 11,  # only when "fixed" is a 4D cine
        "patient": "patient001",
        "group": "DCM",  # NOR/MINF/DCM/HCM/RV, or "" when unknown
        "direction": "ED_to_ES",  # or "ES_to_ED" (moving ES, fixed ED)
    }

Records of one datalist normally share their keys (ACDC and the phantom ship frame files, so no frame keys).
A batch mixing records with and without ``*_frame`` keys does not collate reliably (torch's collate follows
the first item's keys); the frame index is also in each loaded image's ``meta["frame_index"]`` (-1 for 3D).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scripts.atomic_files import write_text_atomically
from scripts.data.acdc import PatientFrames, find_patient_dirs, find_patient_frames, patient_id
from scripts.data.errors import InvalidInputError, MissingInputError

__all__ = [
    "DIRECTIONS",
    "PATH_KEYS",
    "REFERENCE_SPLIT_PATIENTS",
    "VALIDATION_FRACTION",
    "DatasetSplit",
    "build_pair_datalist",
    "dataset_split",
    "load_datalist",
    "pair_records",
    "reference_split",
    "save_datalist",
]

DIRECTIONS = ("ED_to_ES", "ES_to_ED")
PATH_KEYS = ("moving", "fixed", "moving_label", "fixed_label")
SECTIONS = ("training", "validation", "test")


def _blocks(starts: Iterable[int], length: int) -> tuple[int, ...]:
    return tuple(number for start in starts for number in range(start, start + length))


# The split of the MemWarp authors' code: in each block of 20 patients (one disease group each in
# ACDC 1-100) the first 17 train and the last 3 validate; the 50 ACDC test patients test.
REFERENCE_SPLIT_PATIENTS: dict[str, tuple[int, ...]] = {
    "training": _blocks((1, 21, 41, 61, 81), 17),
    "validation": _blocks((18, 38, 58, 78, 98), 3),
    "test": tuple(range(101, 151)),
}


def pair_records(frames: PatientFrames, directions: Sequence[str] = DIRECTIONS) -> list[dict]:
    """The directed pair records of one patient, one per direction (see the module docstring for the keys)."""
    phases = {
        "ED": (frames.ed_image, frames.ed_label, frames.ed_frame),
        "ES": (frames.es_image, frames.es_label, frames.es_frame),
    }
    records = []
    for direction in directions:
        if direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {direction!r}, expected one of {DIRECTIONS}")
        moving_phase, fixed_phase = direction.split("_to_")
        (moving, moving_label, moving_frame), (fixed, fixed_label, fixed_frame) = (
            phases[moving_phase],
            phases[fixed_phase],
        )
        record: dict = {"moving": moving, "fixed": fixed}
        if moving_label is not None and fixed_label is not None:
            record.update(moving_label=moving_label, fixed_label=fixed_label)
        if moving_frame is not None:
            record["moving_frame"] = moving_frame
        if fixed_frame is not None:
            record["fixed_frame"] = fixed_frame
        record.update(patient=frames.patient, group=frames.group, direction=direction)
        records.append(record)
    return records


def _collect_pair_records(
    dataset_dir: str | os.PathLike,
    patients: Iterable[int | str] | None,
    directions: Sequence[str],
    require_labels: bool,
) -> list[dict]:
    folders = find_patient_dirs(dataset_dir)
    if patients is not None:
        wanted = {patient_id(p) for p in patients}
        folders = {name: folder for name, folder in folders.items() if name in wanted}
    records: list[dict] = []
    for folder in folders.values():
        frames = find_patient_frames(folder)
        if require_labels and not frames.has_labels:
            raise MissingInputError(
                f"{folder}: label maps (patientNNN_frameFF_gt.nii.gz) of the ED and ES frames are required "
                "but missing; pass require_labels=False for image-only use"
            )
        records.extend(pair_records(frames, directions))
    return records


def build_pair_datalist(
    dataset_dir: str | os.PathLike,
    patients: Iterable[int | str] | None = None,
    directions: Sequence[str] = DIRECTIONS,
    require_labels: bool = True,
) -> list[dict]:
    """Directed ED/ES pair records of the patients found under an ACDC-like directory.

    Args:
        dataset_dir: the ACDC ``database`` folder (patient folders under ``training/`` and ``testing/``), a folder
            holding patient folders directly, or one patient folder. See :func:`scripts.data.acdc.find_patient_dirs`.
        patients: patient numbers or names to keep (``1`` or ``"patient001"``); those not on disk are skipped.
            None keeps every patient found.
        directions: which directed pairs to make per patient, in this order.
        require_labels: when True, a patient without both label maps is an error (silently dropping it would
            change an evaluation set); when False, records of such patients simply have no label keys.

    Returns:
        list of pair records sorted by patient then direction.

    Raises:
        MissingInputError: the directory, an Info.cfg, an image or (with ``require_labels``) a label map is missing.
        InvalidInputError: no patient was found (the message names ``dataset_dir``), or an Info.cfg is malformed.
    """
    records = _collect_pair_records(dataset_dir, patients, directions, require_labels)
    if not records:
        selection = "" if patients is None else " among the requested patients"
        raise InvalidInputError(
            f"{dataset_dir}: no patient folders{selection} (expected patientNNN/ with Info.cfg under "
            "training/ and testing/, directly in the directory, or the directory being one patient folder)"
        )
    return records


def reference_split(dataset_dir: str | os.PathLike, require_labels: bool = True) -> dict[str, list[dict]]:
    """The reference patient split as pair records, both directions per patient.

    Training: patients 1-17, 21-37, 41-57, 61-77, 81-97; validation: 18-20, 38-40, 58-60, 78-80, 98-100;
    test: 101-150. On the full ACDC this gives 170 / 30 / 100 directed pairs, each disease group in each set.
    Patients missing from disk are skipped (e.g. a smaller phantom).

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}``.

    Raises:
        InvalidInputError: a section would be empty (the message names ``dataset_dir`` and the section).
        MissingInputError: see :func:`build_pair_datalist`.
    """
    split = {}
    for section, numbers in REFERENCE_SPLIT_PATIENTS.items():
        split[section] = _collect_pair_records(dataset_dir, numbers, DIRECTIONS, require_labels)
        if not split[section]:
            raise InvalidInputError(
                f"{dataset_dir}: the reference {section} set is empty: none of its patients "
                f"(numbers {numbers[0]}-{numbers[-1]}) has a patientNNN folder there"
            )
    return split


VALIDATION_FRACTION = 0.15
"""Share of the development patients drawn for validation when the reference validation patients are absent: the
reference split validates 3 of every 20 development patients."""


@dataclass(frozen=True)
class DatasetSplit:
    """Pair records per section of a data set, and how each section was chosen (in words, for the log).

    Attributes:
        sections: ``{"training": [...], "validation": [...], "test": [...]}``; a section may be empty.
        how: section name -> which patients it holds and why (or why it is empty), in words.
    """

    sections: dict[str, list[dict]]
    how: dict[str, str] = field(default_factory=dict)


def _patient_number(patient: str) -> int | None:
    try:
        return int(patient_id(patient)[len("patient") :])
    except ValueError:
        return None


def _patients_text(patients: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"{name} ({group or 'no group'})" for name, group in patients)


def _draw_validation(patients: Sequence[tuple[str, str]], fraction: float) -> list[tuple[str, str]]:
    """Validation patients drawn from ``(patient, group)`` pairs, stratified by group.

    ``round(fraction x n)`` patients (at least 1, and at least 1 left to train on) are shared among the groups in
    proportion to their sizes (largest remainder; ties go to the larger group, then to the group whose last patient
    has the higher number); each group gives its highest-numbered patients, as the reference split takes the last 3
    of each block of 20. Deterministic: the same folders always give the same split.
    """
    by_group: dict[str, list[tuple[str, str]]] = {}
    for patient in sorted(patients):
        by_group.setdefault(patient[1], []).append(patient)
    total = len(patients)
    count = min(total - 1, max(1, math.floor(fraction * total + 0.5)))
    quotas = {group: count * len(members) / total for group, members in by_group.items()}
    allocation = {group: math.floor(quota) for group, quota in quotas.items()}
    ranked = sorted(
        by_group,
        key=lambda g: (quotas[g] - allocation[g], len(by_group[g]), by_group[g][-1][0]),
        reverse=True,
    )
    for group in ranked[: count - sum(allocation.values())]:
        allocation[group] += 1
    drawn = [patient for group, members in by_group.items() for patient in members[len(members) - allocation[group] :]]
    return sorted(drawn)


def dataset_split(
    dataset_dir: str | os.PathLike, require_labels: bool = True, validation_fraction: float = VALIDATION_FRACTION
) -> DatasetSplit:
    """The training, validation and test pair records of any ACDC-like data set, both directions per patient.

    - test: the reference test patients (101-150, ACDC's testing set) found on disk;
    - validation: the reference validation patients (18-20, 38-40, 58-60, 78-80, 98-100) found on disk, when there
      is at least one and at least one other patient outside the test set; otherwise ``validation_fraction`` of the
      patients outside the test set, drawn stratified by disease group (see :func:`_draw_validation`);
    - training: every other patient outside the test set.

    On the full ACDC (and on phantoms of 129 or more subjects) this is exactly :func:`reference_split`; on a smaller
    data set it still trains and validates. Sections may be empty (e.g. no test patients); the caller decides
    whether that is an error.

    Raises:
        MissingInputError, InvalidInputError: see :func:`build_pair_datalist` (a missing or empty directory, a
            patient folder without Info.cfg or images, missing labels with ``require_labels``).
    """
    records = build_pair_datalist(dataset_dir, require_labels=require_labels)
    groups = {record["patient"]: record["group"] for record in records}
    test_numbers = set(REFERENCE_SPLIT_PATIENTS["test"])
    test = sorted(p for p in groups.items() if _patient_number(p[0]) in test_numbers)
    development = sorted(p for p in groups.items() if _patient_number(p[0]) not in test_numbers)
    reference_validation = [p for p in development if _patient_number(p[0]) in REFERENCE_SPLIT_PATIENTS["validation"]]
    too_few = (
        f"{len(development)} patient(s) outside the reference test set (101-150); training needs at least 2, one "
        "to train on and one to validate"
    )
    how = {"test": f"{len(test)} patients of the reference test set (101-150)" if test else "none of 101-150 found"}
    if reference_validation and len(reference_validation) < len(development):
        validation = reference_validation
        how["validation"] = f"the {len(validation)} reference validation patients found"
    elif len(development) >= 2:
        validation = _draw_validation(development, validation_fraction)
        how["validation"] = (
            f"{len(validation)} of the {len(development)} patients outside the test set, drawn stratified by group "
            "(the reference validation patients 18-20, 38-40, 58-60, 78-80, 98-100 are not there with others to "
            f"train on): {_patients_text(validation)}"
        )
    else:
        validation = []
        how["validation"] = too_few
    chosen = {name for name, _ in validation}
    training = [p for p in development if p[0] not in chosen] if validation else []
    how["training"] = f"the other {len(training)} patients outside the test set" if training else too_few
    members = {"training": training, "validation": validation, "test": test}
    names = {section: {name for name, _ in patients} for section, patients in members.items()}
    sections = {section: [record for record in records if record["patient"] in names[section]] for section in names}
    return DatasetSplit(sections=sections, how=how)


def read_datalist_json(json_path: str | os.PathLike) -> object:
    """The parsed content of a datalist JSON file.

    Raises:
        MissingInputError: the file does not exist.
        InvalidInputError: the file is not UTF-8 JSON. The messages name the file.
    """
    path = Path(json_path)
    if not path.is_file():
        raise MissingInputError(f"{path}: datalist file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidInputError(f"{path}: not a JSON datalist ({error})") from None


def load_datalist(json_path: str | os.PathLike, section: str) -> list[dict]:
    """Read one section of an explicit datalist JSON (``{"training": [...], "validation": [...], "test": [...]}``).

    Relative image/label paths are resolved against the JSON file's folder; a missing ``"group"`` becomes ``""``.
    Files are not opened here (the preprocessing validates them when it loads them).

    Raises:
        MissingInputError: the JSON file does not exist.
        InvalidInputError: unreadable JSON, unknown section, or a record without "moving"/"fixed" or with an
            unknown direction. The message names the file.
    """
    path = Path(json_path)
    content = read_datalist_json(path)
    if not isinstance(content, dict) or section not in content:
        available = ", ".join(content) if isinstance(content, dict) else "none"
        raise InvalidInputError(f"{path}: no section {section!r} (sections: {available})")
    if not isinstance(content[section], list):
        raise InvalidInputError(f"{path}: section {section!r} must be a list of pair records")
    records = []
    for index, item in enumerate(content[section]):
        record = resolve_pair_record(item, path.parent, f"{path}: {section}[{index}]")
        record.setdefault("group", "")
        records.append(record)
    return records


def resolve_pair_record(item: object, base: Path, where: str) -> dict:
    """Check one pair record read from a datalist JSON and resolve its paths against ``base``.

    Args:
        item: the JSON value; must be a dict with "moving" and "fixed" (and a known "direction" if any).
        base: folder relative paths are resolved against (the JSON file's folder).
        where: the file and position used in error messages, e.g. ``"list.json: test[3]"``.

    Raises:
        InvalidInputError: not a pair record, or an unknown direction.
    """
    if not isinstance(item, dict) or "moving" not in item or "fixed" not in item:
        raise InvalidInputError(f"{where} must be a pair record with 'moving' and 'fixed' image paths")
    if "direction" in item and item["direction"] not in DIRECTIONS:
        raise InvalidInputError(f"{where}: unknown direction {item['direction']!r}, expected one of {DIRECTIONS}")
    record = dict(item)
    for key in PATH_KEYS:
        if key in record:
            record[key] = os.path.normpath(base / os.path.expanduser(str(record[key])))
    return record


def save_datalist(
    datalist: dict[str, list[dict]],
    output: str | os.PathLike,
    relative: bool = False,
    protected: Iterable[str | os.PathLike] = (),
) -> Path:
    """Write a datalist JSON atomically (temporary file in the same folder, then ``os.replace``).

    Args:
        datalist: section name -> pair records.
        output: the JSON file to write.
        relative: write image/label paths relative to the output's folder (portable with the data) instead of
            absolute.
        protected: files that must never be overwritten; every path inside ``datalist`` is protected too.

    Returns:
        the written path.

    Raises:
        InvalidInputError: ``output`` is an input file of the datalist (or in ``protected``), or a directory.
    """
    output = Path(output).absolute()
    inputs = {os.path.realpath(p) for p in protected}
    inputs.update(os.path.realpath(r[k]) for records in datalist.values() for r in records for k in PATH_KEYS if k in r)
    if os.path.realpath(output) in inputs:
        raise InvalidInputError(f"{output}: refusing to overwrite an input file of the datalist")
    if output.is_dir():
        raise InvalidInputError(f"{output}: is a directory, expected a JSON file path")

    def portable(path: str) -> str:
        absolute = os.path.abspath(path)
        return os.path.relpath(absolute, output.parent) if relative else absolute

    serialisable = {
        section: [{k: portable(v) if k in PATH_KEYS else v for k, v in record.items()} for record in records]
        for section, records in datalist.items()
    }
    write_text_atomically(output, json.dumps(serialisable, indent=4) + "\n")
    return output
