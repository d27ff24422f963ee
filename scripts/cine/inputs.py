"""Which cines to analyse, and reading one: the 4D image, its ED frame, and the ED label map when there is one.

Two sources:

- ``cine``: any 4D NIfTI (X, Y, Z, frames) with ``ed_frame`` (1-based frame number, as in ACDC's Info.cfg;
  default 1) and optionally ``ed_label`` (a 3D label map on the cine's grid: 0 background, 1 RV, 2 LV myocardium,
  3 LV blood pool). Without a label map the ED labels are the anatomical memory's segmentation of the ED frame.
- ``dataset_dir``: ACDC-layout patient folders (``patientNNN_4d.nii.gz``, ``Info.cfg``, and the ED label map
  ``patientNNN_frameFF_gt.nii.gz`` when present), all of them or ``patients``.

Every check that needs only the file headers runs for every cine before anything is computed or written
(:func:`check_cine_case`); reading the data (:func:`read_cine`) checks the rest. Every error is an
:class:`~scripts.data.InvalidInputError` or :class:`~scripts.data.MissingInputError` whose message starts with the
offending file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import EnsureChannelFirst, LoadImage

from scripts.data import InvalidInputError, MissingInputError, find_patient_dirs, patient_id, read_info_cfg
from scripts.labels import NUM_CLASSES

__all__ = ["CineCase", "LoadedCine", "check_cine_case", "cine_cases", "read_cine"]

AFFINE_TOLERANCE_MM = 1e-3
_NIFTI_SUFFIX = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class CineCase:
    """One cine to analyse (paths only).

    Attributes:
        name: ``patientNNN`` or the cine's file stem: the name of its output folder.
        cine: the 4D NIfTI file.
        ed_frame: 1-based ED frame number.
        ed_label: the ED label map, or None (the memory segments the ED frame).
        es_frame_info: 1-based ES frame number of Info.cfg, or None.
        info_cfg: the Info.cfg the frames came from, or None.
    """

    name: str
    cine: str
    ed_frame: int
    ed_label: str | None = None
    es_frame_info: int | None = None
    info_cfg: str | None = None

    @property
    def inputs(self) -> list[str]:
        """Every input file of the case (the outputs must not touch them)."""
        return [path for path in (self.cine, self.ed_label, self.info_cfg) if path]


@dataclass
class LoadedCine:
    """A cine read into memory.

    Attributes:
        case: where it came from.
        image: float32 MetaTensor (T, X, Y, Z), frames as channels, with the file's affine.
        ed_labels: (X, Y, Z) uint8 ED label map, or None.
        frame_duration: the 4th voxel size of the header (time between frames, in the header's time unit), or None.
    """

    case: CineCase
    image: MetaTensor
    ed_labels: np.ndarray | None
    frame_duration: float | None

    @property
    def affine(self) -> np.ndarray:
        """(4, 4) float64 voxel -> world RAS mm of the cine (and of every output)."""
        return np.asarray(self.image.affine, np.float64)

    @property
    def n_frames(self) -> int:
        return int(self.image.shape[0])

    @property
    def ed_index(self) -> int:
        """0-based ED frame index."""
        return self.case.ed_frame - 1


def _stem(path: str) -> str:
    name = _UNSAFE.sub("_", _NIFTI_SUFFIX.sub("", Path(path).name)).strip("._")
    return name or "cine"


def _find(folder: Path, stem: str) -> str | None:
    for suffix in (".nii.gz", ".nii"):
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return str(candidate)
    return None


def _frame_number(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, str)):
        raise InvalidInputError(f"{where}: the ED frame must be a whole frame number (1 = first), got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise InvalidInputError(f"{where}: the ED frame must be a whole frame number (1 = first), got {value!r}")
    return number


def _patient_case(folder: Path) -> CineCase:
    info_path = folder / "Info.cfg"
    info = read_info_cfg(info_path)
    cine = _find(folder, f"{folder.name}_4d")
    if cine is None:
        raise MissingInputError(f"{folder}: no cine {folder.name}_4d.nii.gz (the cine workflow needs the 4D image)")
    ed = int(info["ED"])
    label = _find(folder, f"{folder.name}_frame{ed:02d}_gt") or _find(folder, f"{folder.name}_frame{ed}_gt")
    return CineCase(
        name=folder.name,
        cine=os.path.abspath(cine),
        ed_frame=ed,
        ed_label=os.path.abspath(label) if label else None,
        es_frame_info=int(info["ES"]),
        info_cfg=os.path.abspath(info_path),
    )


def cine_cases(
    dataset_dir: str | os.PathLike | None = None,
    patients: Sequence[int | str] | None = None,
    cine: str | os.PathLike | None = None,
    ed_frame: int | str | None = None,
    ed_label: str | os.PathLike | None = None,
) -> list[CineCase]:
    """The cines of a run (``cine`` if given, else the patient folders of ``dataset_dir``).

    Args:
        dataset_dir: ACDC-layout folder (``database``, a folder of patient folders, or one patient folder).
        patients: patient numbers or names to keep from ``dataset_dir``; None for all.
        cine: a 4D NIfTI file; takes precedence over ``dataset_dir``.
        ed_frame: 1-based ED frame of ``cine`` (default 1).
        ed_label: ED label map of ``cine`` (optional).

    Raises:
        MissingInputError, InvalidInputError: naming the missing or unusable file or folder.
    """
    if cine:
        path = Path(cine).expanduser()
        if not path.is_file():
            raise MissingInputError(f"{path}: cine file not found")
        label = None
        if ed_label:
            label_path = Path(ed_label).expanduser()
            if not label_path.is_file():
                raise MissingInputError(f"{label_path}: ED label map not found")
            label = os.path.abspath(label_path)
        frame = 1 if ed_frame in (None, "") else _frame_number(ed_frame, str(path))
        return [CineCase(name=_stem(str(path)), cine=os.path.abspath(path), ed_frame=frame, ed_label=label)]
    if not dataset_dir:
        raise InvalidInputError("no input: pass --cine <4D NIfTI> (with --ed_frame) or --dataset_dir <ACDC folder>")
    folders = find_patient_dirs(dataset_dir)
    if patients is not None:
        try:
            wanted = [patient_id(p) for p in ([patients] if isinstance(patients, (int, str)) else patients)]
        except (TypeError, ValueError) as error:
            raise InvalidInputError(f"{dataset_dir}: patients {patients!r}: {error}") from None
        absent = [name for name in wanted if name not in folders]
        if absent:
            raise MissingInputError(f"{dataset_dir}: no folder for {', '.join(absent)}")
        folders = {name: folders[name] for name in wanted}
    if not folders:
        raise MissingInputError(f"{dataset_dir}: no patientNNN folders found")
    return [_patient_case(folder) for folder in folders.values()]


def _header(path: str) -> nib.Nifti1Image:
    try:
        return nib.load(path)
    except Exception as error:  # nibabel raises many types for one meaning: not a readable NIfTI file
        raise InvalidInputError(f"{path}: cannot be read as NIfTI ({type(error).__name__}: {error})") from error


def check_cine_case(case: CineCase) -> None:
    """Header checks of one case, before anything is computed: a cine of >= 2 frames, the ED frame in range, an ED
    label map that is 3D and on the cine's grid.

    Raises:
        InvalidInputError: naming the file and the problem.
    """
    image = _header(case.cine)
    shape = tuple(int(n) for n in image.shape)
    if len(shape) != 4:
        raise InvalidInputError(
            f"{case.cine}: a {len(shape)}D image of shape {shape}; the cine workflow needs a 4D cine (X, Y, Z, frames)"
        )
    frames = shape[3]
    if frames < 2:
        raise InvalidInputError(
            f"{case.cine}: a cine with {frames} frame; at least 2 frames are needed to track motion"
        )
    if not 1 <= case.ed_frame <= frames:
        where = case.info_cfg or case.cine
        raise InvalidInputError(
            f"{where}: ED frame {case.ed_frame} out of range for the cine {Path(case.cine).name} of {frames} frames "
            "(frames are numbered from 1)"
        )
    if case.es_frame_info is not None and not 1 <= case.es_frame_info <= frames:
        raise InvalidInputError(
            f"{case.info_cfg}: ES frame {case.es_frame_info} out of range for the cine of {frames} frames"
        )
    if case.ed_label:
        label = _header(case.ed_label)
        label_shape = tuple(int(n) for n in label.shape)
        if len(label_shape) == 4 and label_shape[3] == 1:
            label_shape = label_shape[:3]
        if len(label_shape) != 3:
            raise InvalidInputError(f"{case.ed_label}: a label map must be 3D, got shape {label_shape}")
        if label_shape != shape[:3] or not np.allclose(label.affine, image.affine, atol=AFFINE_TOLERANCE_MM):
            raise InvalidInputError(
                f"{case.ed_label}: the label map's grid (shape {label_shape}) differs from the cine's "
                f"{Path(case.cine).name} (shape {shape[:3]}, or another affine); it must be on the cine's grid"
            )


def read_cine(case: CineCase) -> LoadedCine:
    """Read a checked case (:func:`check_cine_case`): the cine as (T, X, Y, Z) float32 and the ED labels.

    Raises:
        InvalidInputError: unreadable data, non-finite values, a constant ED frame, label values outside 0-3 or not
            integers, an empty label map; the message names the file.
    """
    try:
        loaded = LoadImage(reader="NibabelReader", image_only=True, dtype=np.float32)(case.cine)
    except Exception as error:  # the readers raise many types; say which file failed
        raise InvalidInputError(f"{case.cine}: cannot be read as an image ({type(error).__name__}: {error})") from error
    image = EnsureChannelFirst(channel_dim=-1)(loaded)
    if not torch.isfinite(image).all():
        raise InvalidInputError(f"{case.cine}: the cine holds NaN or infinite values")
    ed = image[case.ed_frame - 1]
    if float(ed.max()) == float(ed.min()):
        raise InvalidInputError(f"{case.cine}: ED frame {case.ed_frame} is constant (an empty frame?)")
    labels = None
    if case.ed_label:
        try:
            values = np.asarray(nib.load(case.ed_label).dataobj, dtype=np.float64)
        except Exception as error:
            raise InvalidInputError(f"{case.ed_label}: cannot be read ({type(error).__name__}: {error})") from error
        values = values.reshape(values.shape[:3])
        if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
            raise InvalidInputError(f"{case.ed_label}: label values must be whole numbers 0-{NUM_CLASSES - 1}")
        if values.min() < 0 or values.max() >= NUM_CLASSES:
            raise InvalidInputError(
                f"{case.ed_label}: label values {int(values.min())}-{int(values.max())} outside 0-{NUM_CLASSES - 1} "
                "(0 background, 1 RV, 2 LV myocardium, 3 LV blood pool)"
            )
        if not np.any(values == 2):
            raise InvalidInputError(f"{case.ed_label}: the ED label map has no LV myocardium (label 2)")
        labels = values.astype(np.uint8)
    zooms = nib.load(case.cine).header.get_zooms()
    duration = float(zooms[3]) if len(zooms) > 3 and zooms[3] > 0 else None
    return LoadedCine(case=case, image=image, ed_labels=labels, frame_duration=duration)
