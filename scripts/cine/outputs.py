"""The cine workflow's files: one folder per cine, written in a temporary folder and renamed into place when complete.

``<output_dir>/<name>/`` (name = ``patientNNN`` or the cine's file stem), all on the cine's own grid (its shape and
affine, qform and sform copied from the cine file):

- ``labels_4d.nii.gz``: (X, Y, Z, T) uint8 propagated labels of every frame (0 bg, 1 RV, 2 LV myocardium, 3 LV
  blood pool);
- ``displacements/ED_to_frameFF_mm.nii.gz``: one per frame FF (1-based), the ED -> frame field (moving = ED,
  fixed = frame FF) in the bundle's convention (:data:`scripts.geometry.DISPLACEMENT_CONVENTION`: (X, Y, Z, 1, 3)
  float32 world RAS mm, intent 1006; the frame's point p is the ED point p + d(p)); ITK, SimpleITK and 3D Slicer
  read each file as a displacement-field transform;
- ``volumes.csv``: per frame, LV blood pool, LV myocardium and RV volumes (ml), LV mass (g), global radial and
  circumferential strain (%);
- ``function.json``: :func:`scripts.cine.function.function_summary` plus the inputs, the checkpoint, the tracking
  mode and the timings;
- ``function.png``: volume and strain curves with units, ED and ES marked.

One file per frame (not one 5D file) so that every field is a standard displacement-field transform, exactly like the
phantom's ``patientNNN_true_ddf_ED_to_frameFF.nii.gz``. A run also writes ``<output_dir>/cine_summary.csv`` (one row
per cine, ``status`` ok, or failed with its ``error``, or not run). A failure while writing a cine leaves no trace of
it; an earlier result is replaced only once the new folder is complete.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from scripts.atomic_files import write_text_atomically
from scripts.cine.figure import save_function_figure
from scripts.cine.volumes import VOLUME_COLUMNS
from scripts.compressed_nifti import write_nifti
from scripts.geometry import NiftiGeometry, write_displacement_nifti
from scripts.inference.writer import replace_directory

__all__ = [
    "FIELD_FOLDER",
    "LABELS_FILE",
    "SUMMARY_FILE",
    "failed_summary_row",
    "field_file_name",
    "summary_row",
    "write_cine_folder",
    "write_summary_csv",
]

LABELS_FILE = "labels_4d.nii.gz"
FIELD_FOLDER = "displacements"
SUMMARY_FILE = "cine_summary.csv"


def field_file_name(frame: int) -> str:
    """``ED_to_frameFF_mm.nii.gz`` of the 1-based ``frame``."""
    return f"ED_to_frame{frame:02d}_mm.nii.gz"


def _volumes_csv(function: Mapping[str, Any]) -> str:
    curves = function["curves"]
    strain = function.get("strain", {})
    columns = ["frame", "phase", *VOLUME_COLUMNS, "radial_strain_percent", "circumferential_strain_percent"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for index in range(function["frames"]):
        frame = index + 1
        phase = "/".join(p for p, f in (("ED", function["ed_frame"]), ("ES", function["es_frame"])) if f == frame)
        row = [frame, phase, *(curves[name][index] for name in VOLUME_COLUMNS)]
        row += [
            strain.get("radial_percent", [None] * frame)[index],
            strain.get("circumferential_percent", [None] * frame)[index],
        ]
        writer.writerow(["" if value is None else value for value in row])
    return buffer.getvalue()


def _labels_image(labels: np.ndarray, cine_path: str) -> nib.Nifti1Image:
    """The 4D label image with the cine's geometry, voxel sizes and time step."""
    header = nib.load(cine_path).header
    image = NiftiGeometry(cine_path).image(np.ascontiguousarray(labels, dtype=np.uint8))
    image.header.set_data_dtype(np.uint8)
    image.header.set_xyzt_units(*header.get_xyzt_units())
    zooms = tuple(float(z) for z in header.get_zooms()[:4])
    image.header.set_zooms(zooms + (1.0,) * (4 - len(zooms)))
    return image


def write_cine_folder(
    output_dir: str | os.PathLike,
    name: str,
    cine_path: str,
    labels: np.ndarray,
    function: Mapping[str, Any],
    fields_mm: torch.Tensor | None = None,
    save_figure: bool = True,
) -> Path:
    """Write one cine's folder (see the module docstring); returns it.

    Args:
        output_dir: parent folder (created if needed).
        name: the cine's folder name.
        cine_path: the cine file (its geometry goes on every image).
        labels: (X, Y, Z, T) uint8 propagated labels.
        function: the ``function.json`` content (``function_summary`` plus run details).
        fields_mm: (T, 3, X, Y, Z) ED -> frame fields in world RAS mm, or None not to write them.
        save_figure: write ``function.png``.
    """
    output = Path(output_dir).expanduser().absolute()
    output.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=output))
    try:
        files = [LABELS_FILE]
        write_nifti(_labels_image(labels, cine_path), staging / LABELS_FILE, atomic=False)
        if fields_mm is not None:
            geometry = NiftiGeometry(cine_path)
            (staging / FIELD_FOLDER).mkdir()
            for index, field in enumerate(fields_mm):
                relative = f"{FIELD_FOLDER}/{field_file_name(index + 1)}"
                write_displacement_nifti(staging / relative, field.cpu(), geometry, "ddf_mm_RAS", channel_axis=0)
                files.append(relative)
        (staging / "volumes.csv").write_text(_volumes_csv(function), encoding="utf-8")
        files.append("volumes.csv")
        if save_figure:
            strain = function.get("strain") or {}
            frames = function["frames"]
            save_function_figure(
                staging / "function.png",
                function["curves"],
                [np.nan if v is None else v for v in strain.get("radial_percent", [None] * frames)],
                [np.nan if v is None else v for v in strain.get("circumferential_percent", [None] * frames)],
                function["ed_frame"],
                function["es_frame"],
                title=name,
                lv_ef_percent=function["lv"]["ef_percent"],
                rv_ef_percent=function["rv"]["ef_percent"],
                es_frame_info=function.get("es_frame_info_cfg"),
            )
            files.append("function.png")
        content = {**function, "files": files + ["function.json"]}
        (staging / "function.json").write_text(json.dumps(content, indent=4) + "\n", encoding="utf-8")
        os.chmod(staging, 0o755)  # mkdtemp makes it private; outputs are meant to be shared like any folder
        replace_directory(staging, output / name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output / name


def summary_row(name: str, function: Mapping[str, Any], seconds: float | None = None) -> dict[str, Any]:
    """One row of ``cine_summary.csv``."""
    strain = function.get("strain") or {}
    row: dict[str, Any] = {
        "cine": name,
        "status": "ok",
        "frames": function["frames"],
        "ed_frame": function["ed_frame"],
        "es_frame": function["es_frame"],
        "es_frame_info_cfg": function.get("es_frame_info_cfg"),
    }
    for ventricle in ("lv", "rv"):
        for key, value in function[ventricle].items():
            row[f"{ventricle}_{key}"] = value
    row["radial_strain_percent_at_es"] = strain.get("radial_percent_at_es")
    row["circumferential_strain_percent_at_es"] = strain.get("circumferential_percent_at_es")
    row["seconds"] = None if seconds is None else round(float(seconds), 3)
    return row


def failed_summary_row(name: str, status: str, error: str | None = None) -> dict[str, Any]:
    """The ``cine_summary.csv`` row of a cine without results: ``status`` ``"failed"`` (with the ``error`` line) or
    ``"not run"`` (the run stopped before it)."""
    return {"cine": name, "status": status, "error": error}


def write_summary_csv(output_dir: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``<output_dir>/cine_summary.csv`` (atomically) from :func:`summary_row` and :func:`failed_summary_row`
    rows; the columns are every row's keys in order of appearance, empty where a row has none."""
    buffer = io.StringIO()
    columns = list(dict.fromkeys(key for row in rows for key in row)) or ["cine"]
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if value is None else value for key, value in row.items()})
    return write_text_atomically(Path(output_dir) / SUMMARY_FILE, buffer.getvalue())
