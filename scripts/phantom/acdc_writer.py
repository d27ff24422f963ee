"""Write a phantom subject in ACDC's raw layout, plus the true displacement fields.

Files of ``patientNNN/`` (FF = 1-based frame number on two digits, as ACDC)::

    Info.cfg                              ED, ES, Group, Height, Weight, NbFrame
    patientNNN_4d.nii.gz                  (X, Y, Z, NbFrame) int16 cine
    patientNNN_frameFF.nii.gz             (X, Y, Z) int16, the ED and the ES frame
    patientNNN_frameFF_gt.nii.gz          (X, Y, Z) uint8 labels: 0 bg, 1 RV, 2 LVM, 3 LVBP
    patientNNN_true_ddf_ED_to_ES.nii.gz   (X, Y, Z, 1, 3) float32, intent 1006, see below
    patientNNN_true_ddf_ES_to_ED.nii.gz   the reverse pair

``true_ddf_ED_to_ES`` (moving = ED, fixed = ES) lives on the ES frame's voxel grid (the same grid and
affine as every frame of the subject) and holds the world displacement d(x) in millimetres (NIfTI RAS)
such that the point x of the ES frame corresponds to the point x + d(x) of the ED frame: sampling the
ED image at x + d(x) reproduces the ES image. ``true_ddf_ES_to_ED`` is the same for moving = ES,
fixed = ED. The NIfTI intent is 1006 ("displacement vector"), so ITK/SimpleITK read the files as
displacement-field transforms (converting RAS to LPS on read) that map fixed points to moving points.

Every file is written to a temporary name in the same directory and moved into place with
``os.replace``, so a reader never sees a half-written file. Compression is reproducible
(:mod:`scripts.compressed_nifti`), so the same subject always gives byte-identical files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np

from scripts.atomic_files import write_bytes_atomically
from scripts.compressed_nifti import nifti_file_bytes, write_nifti
from scripts.geometry import displacement_nifti_image

if TYPE_CHECKING:
    from .generator import PhantomSubject

MANIFEST_NAME = "phantom_manifest.json"
DDF_SUFFIXES = {"ED_to_ES": "true_ddf_ED_to_ES", "ES_to_ED": "true_ddf_ES_to_ED"}
FRAME_DURATION_MS = 30.0  # nominal temporal resolution written as the 4th zoom of the cine


def _nifti(array: np.ndarray, affine: np.ndarray, zooms_extra: tuple[float, ...] = ()) -> nib.Nifti1Image:
    image = nib.Nifti1Image(array, affine)
    image.header.set_data_dtype(array.dtype)
    image.header.set_xyzt_units("mm", "msec")
    spacing = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
    image.header.set_zooms(spacing + zooms_extra)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    return image


def displacement_image(ddf: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """NIfTI displacement field: ``ddf`` (X, Y, Z, 3) world RAS mm -> (X, Y, Z, 1, 3), intent 1006."""
    image = displacement_nifti_image(ddf, affine, intent_name="true_ddf_mm_RAS", channel_axis=-1)
    image.header.set_xyzt_units("mm", "msec")  # as every file of the subject (the cine's frame times are in ms)
    return image


def info_cfg(subject: "PhantomSubject") -> str:
    """Info.cfg text in ACDC's format."""
    params = subject.params
    return (
        f"ED: {subject.ed_frame}\nES: {subject.es_frame}\nGroup: {params.group}\n"
        f"Height: {params.height}\nWeight: {params.weight}\nNbFrame: {params.n_frames}\n"
    )


def write_subject(
    subject: "PhantomSubject", folder: str | os.PathLike, write_cine: bool = True, ddf_budget: int | None = None
) -> list[Path]:
    """Write ``subject`` into ``folder`` (created if needed) in ACDC layout; returns the written paths.

    Args:
        write_cine: also write the 4D cine.
        ddf_budget: if given, write the two true fields only if the folder's total size stays within
            this many bytes (the committed sample must stay small); None always writes them.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name, affine = subject.name, subject.affine
    written = []

    info = folder / "Info.cfg"
    write_bytes_atomically(info, info_cfg(subject).encode())
    written.append(info)
    if write_cine:
        path = folder / f"{name}_4d.nii.gz"
        write_nifti(_nifti(subject.cine, affine, (FRAME_DURATION_MS,)), path)
        written.append(path)
    for frame, labels in ((subject.ed_frame, subject.ed_labels), (subject.es_frame, subject.es_labels)):
        path = folder / f"{name}_frame{frame:02d}.nii.gz"
        write_nifti(_nifti(np.ascontiguousarray(subject.cine[..., frame - 1]), affine), path)
        label_path = folder / f"{name}_frame{frame:02d}_gt.nii.gz"
        write_nifti(_nifti(labels.astype(np.uint8), affine), label_path)
        written += [path, label_path]
    fields = {}
    for direction, ddf in (("ED_to_ES", subject.ddf_ed_to_es), ("ES_to_ED", subject.ddf_es_to_ed)):
        path = folder / f"{name}_{DDF_SUFFIXES[direction]}.nii.gz"
        fields[path] = nifti_file_bytes(displacement_image(ddf, affine), path)
    total = sum(path.stat().st_size for path in written) + sum(len(data) for data in fields.values())
    if ddf_budget is None or total <= ddf_budget:
        for path, data in fields.items():
            write_bytes_atomically(path, data)
            written.append(path)
    return written
