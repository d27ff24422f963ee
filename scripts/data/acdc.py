"""The ACDC raw layout: patient folders, Info.cfg, and which files hold the ED and ES frames.

ACDC ships ``database/{training,testing}/patientNNN/`` folders, each with ``Info.cfg`` (``ED: 1``,
``ES: 12``, ``Group: DCM``, ``Height``, ``Weight``, ``NbFrame``), the cine ``patientNNN_4d.nii.gz``
and the ED/ES frames ``patientNNN_frameFF.nii.gz`` with their label maps
``patientNNN_frameFF_gt.nii.gz`` (0 background, 1 RV, 2 LV myocardium, 3 LV blood pool).
ED and ES in Info.cfg are 1-based frame numbers: frame ``FF`` is index ``FF - 1`` of the 4D cine.

Nothing here opens an image: this module only decides which files to read (the transforms read them).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from scripts.data.errors import InvalidInputError, MissingInputError

__all__ = [
    "GROUPS",
    "PatientFrames",
    "find_patient_dirs",
    "find_patient_frames",
    "patient_id",
    "read_info_cfg",
]

GROUPS = ("NOR", "MINF", "DCM", "HCM", "RV")
"""ACDC disease groups: normal, previous myocardial infarction, dilated and hypertrophic
cardiomyopathy, abnormal right ventricle."""

_GROUP_ALIASES = {"ARV": "RV"}  # some ACDC descriptions call the RV group "ARV"

# Info.cfg keys, matched after lower-casing and dropping spaces/underscores/dashes.
_INFO_KEYS = {"ed": "ED", "es": "ES", "group": "Group", "height": "Height", "weight": "Weight", "nbframe": "NbFrame"}
_INT_KEYS = ("ED", "ES", "NbFrame")
_FLOAT_KEYS = ("Height", "Weight")

_PATIENT_DIR = re.compile(r"^patient(\d+)$", re.IGNORECASE)
_NIFTI_SUFFIXES = (".nii.gz", ".nii")


def patient_id(patient: int | str) -> str:
    """Normalise a patient reference: ``1``, ``"1"``, ``"001"`` and ``"patient001"`` all give ``"patient001"``."""
    if isinstance(patient, bool):
        raise TypeError(f"patient must be an int or a string, got {patient!r}")
    if isinstance(patient, int):
        return f"patient{patient:03d}"
    text = str(patient).strip()
    match = _PATIENT_DIR.match(text)
    if match:
        return f"patient{int(match.group(1)):03d}"
    if text.isdigit():
        return f"patient{int(text):03d}"
    raise ValueError(f"not a patient reference: {patient!r} (expected a number or 'patientNNN')")


def _to_int(value: str, key: str, path: Path) -> int:
    try:
        number = float(value)
    except ValueError:
        raise InvalidInputError(f"{path}: {key} must be a whole number, got {value!r}") from None
    if not number.is_integer():
        raise InvalidInputError(f"{path}: {key} must be a whole number, got {value!r}")
    return int(number)


def read_info_cfg(path: str | os.PathLike) -> dict[str, int | float | str]:
    """Parse an ACDC ``Info.cfg``.

    Tolerant of what varies between copies of ACDC and hand-written files: line order, spacing around
    the separator, ``:`` or ``=`` as separator, key case and spelling (``NbFrame``/``nb_frame``), CRLF
    line ends, blank lines and ``#`` comments.

    Args:
        path: the Info.cfg file.

    Returns:
        dict with canonical keys: ``"ED"``, ``"ES"`` (1-based frame numbers, int), ``"Group"``
        (one of :data:`GROUPS`, upper case) when present, ``"Height"``, ``"Weight"`` (float) and
        ``"NbFrame"`` (int) when present; unknown keys are kept as stripped strings.

    Raises:
        MissingInputError: the file does not exist.
        InvalidInputError: ED or ES is missing or not a positive whole number, a value is malformed, or
            the group is unknown. The message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: Info.cfg not found")
    info: dict[str, int | float | str] = {}
    for line_number, raw_line in enumerate(path.read_text(encoding="utf-8-sig", errors="replace").splitlines(), 1):
        line = raw_line.split("#", 1)[0].strip()
        if not line:
            continue
        separator = re.search(r"[:=]", line)
        if separator is None:
            raise InvalidInputError(f"{path}: line {line_number} is not 'key: value': {raw_line!r}")
        raw_key, value = line[: separator.start()].strip(), line[separator.end() :].strip()
        key = _INFO_KEYS.get(re.sub(r"[\s_\-]", "", raw_key).lower(), raw_key)
        if key in _INT_KEYS:
            info[key] = _to_int(value, key, path)
        elif key in _FLOAT_KEYS:
            try:
                info[key] = float(value)
            except ValueError:
                raise InvalidInputError(f"{path}: {key} must be a number, got {value!r}") from None
        elif key == "Group":
            group = _GROUP_ALIASES.get(value.upper(), value.upper())
            if group not in GROUPS:
                raise InvalidInputError(f"{path}: unknown group {value!r}, expected one of {', '.join(GROUPS)}")
            info[key] = group
        else:
            info[key] = value
    for key in ("ED", "ES"):
        if key not in info:
            raise InvalidInputError(f"{path}: no {key} frame given (expected a line '{key}: <frame number>')")
        if int(info[key]) < 1:
            raise InvalidInputError(f"{path}: {key} frame numbers start at 1, got {info[key]}")
    if "NbFrame" in info:
        for key in ("ED", "ES"):
            if int(info[key]) > int(info["NbFrame"]):
                raise InvalidInputError(f"{path}: {key} frame {info[key]} is beyond NbFrame {info['NbFrame']}")
    return info


@dataclass(frozen=True)
class PatientFrames:
    """Where one patient's ED and ES images and label maps are.

    Attributes:
        patient: folder name, e.g. ``"patient001"``.
        group: disease group (one of :data:`GROUPS`) or ``""`` when Info.cfg gives none.
        ed_image, es_image: the 3D frame files, or the 4D cine when a frame file is absent.
        ed_frame, es_frame: 0-based frame index into the 4D cine, or None when the image is a 3D frame file.
        ed_label, es_label: the label maps, or None when absent.
        info_cfg: the Info.cfg the phases came from.
    """

    patient: str
    group: str
    ed_image: str
    es_image: str
    ed_frame: int | None
    es_frame: int | None
    ed_label: str | None
    es_label: str | None
    info_cfg: str

    @property
    def has_labels(self) -> bool:
        """True when both label maps exist."""
        return self.ed_label is not None and self.es_label is not None


def _find_nifti(folder: Path, names: list[str], stem_pattern: str) -> str | None:
    """First of ``names`` whose stem matches ``stem_pattern`` (any zero padding) and ends .nii.gz or .nii."""
    pattern = re.compile(stem_pattern, re.IGNORECASE)
    for suffix in _NIFTI_SUFFIXES:
        for name in names:
            if name.lower().endswith(suffix) and pattern.fullmatch(name[: -len(suffix)]):
                return str(folder / name)
    return None


def find_patient_frames(patient_dir: str | os.PathLike) -> PatientFrames:
    """Locate the ED and ES images (frame files, else the 4D cine) and label maps of one patient folder.

    Args:
        patient_dir: a ``patientNNN`` folder in the ACDC layout (with Info.cfg).

    Returns:
        :class:`PatientFrames`. A phase whose ``patientNNN_frameFF.nii(.gz)`` file is absent is read from
        ``patientNNN_4d.nii(.gz)`` at index ``FF - 1``. Label maps are optional here (None when absent).

    Raises:
        MissingInputError: the folder or its Info.cfg is missing, or a phase has neither a frame file nor a cine.
        InvalidInputError: Info.cfg is malformed (see :func:`read_info_cfg`).
    """
    folder = Path(patient_dir)
    if not folder.is_dir():
        raise MissingInputError(f"{folder}: patient folder not found")
    info_path = folder / "Info.cfg"
    if not info_path.is_file():
        raise MissingInputError(f"{info_path}: Info.cfg not found; it gives the ED and ES frames of {folder.name}")
    info = read_info_cfg(info_path)
    names = sorted(entry.name for entry in folder.iterdir() if entry.is_file())
    prefix = re.escape(folder.name)
    cine = _find_nifti(folder, names, rf"{prefix}_4d")
    found: dict[str, tuple[str, int | None, str | None]] = {}
    for phase in ("ED", "ES"):
        number = int(info[phase])
        image = _find_nifti(folder, names, rf"{prefix}_frame0*{number}")
        label = _find_nifti(folder, names, rf"{prefix}_frame0*{number}_gt")
        frame: int | None = None
        if image is None:
            if cine is None:
                raise MissingInputError(
                    f"{folder}: no image for {phase} (frame {number}): neither {folder.name}_frame{number:02d}.nii.gz "
                    f"nor the cine {folder.name}_4d.nii.gz exists"
                )
            image, frame = cine, number - 1
        found[phase] = (image, frame, label)
    return PatientFrames(
        patient=folder.name,
        group=str(info.get("Group", "")),
        ed_image=found["ED"][0],
        es_image=found["ES"][0],
        ed_frame=found["ED"][1],
        es_frame=found["ES"][1],
        ed_label=found["ED"][2],
        es_label=found["ES"][2],
        info_cfg=str(info_path),
    )


def _patient_dirs_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(entry for entry in folder.iterdir() if entry.is_dir() and _PATIENT_DIR.match(entry.name))


def find_patient_dirs(dataset_dir: str | os.PathLike) -> dict[str, Path]:
    """Map ``"patientNNN"`` to its folder under an ACDC-like dataset directory.

    Looked for, in order: ``dataset_dir`` itself when it is a patient folder (it holds Info.cfg or is
    named patientNNN); ``dataset_dir/{training,testing}``; ``dataset_dir/database/{training,testing}``
    (the unpacked ACDC archive); patient folders directly under ``dataset_dir``.

    Raises:
        MissingInputError: ``dataset_dir`` does not exist.
        InvalidInputError: the same patient appears in two places (ambiguous).
    """
    root = Path(dataset_dir)
    if not root.is_dir():
        raise MissingInputError(f"{root}: dataset directory not found")
    if (root / "Info.cfg").is_file() or _PATIENT_DIR.match(root.name):
        return {patient_id(root.name) if _PATIENT_DIR.match(root.name) else root.name: root}
    candidates = [root / "training", root / "testing", root / "database" / "training", root / "database" / "testing"]
    folders: dict[str, Path] = {}
    for folder in [*candidates, root]:
        for patient_dir in _patient_dirs_in(folder):
            key = patient_id(patient_dir.name)
            if key in folders and folders[key] != patient_dir:
                raise InvalidInputError(f"{root}: {key} found twice: {folders[key]} and {patient_dir}")
            folders[key] = patient_dir
    return dict(sorted(folders.items()))
