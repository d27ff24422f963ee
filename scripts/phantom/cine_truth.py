"""The phantom's truth for every frame of the cine: labels, displacement fields, volumes and strain.

Opt-in (``python -m scripts.phantom --output D --cine_truth``), because the fields of every frame multiply the
data set's size (about 1 MB per frame, 20-30 MB per subject) and are needed only to score cine tracking
(``python -m scripts.benchmark cine``). With the flag the generator writes, beside the unchanged ACDC files and the
unchanged ED<->ES fields::

    patientNNN_true_labels_4d.nii.gz            (X, Y, Z, NbFrame) uint8: the labels of every frame, drawn at the
                                                voxel centres like the ED/ES ``_gt`` maps (frame FF = index FF - 1)
    patientNNN_true_ddf_ED_to_frameFF.nii.gz    one per frame FF (1-based, 2 digits): the true displacement with
                                                moving = ED and fixed = frame FF, in the convention (and the exact
                                                encoding) of ``patientNNN_true_ddf_ED_to_ES.nii.gz``: on the
                                                frame's grid, world RAS mm, the point x of frame FF is the point
                                                x + d(x) of ED. The ES frame's file is byte-identical to
                                                ``true_ddf_ED_to_ES``; the ED frame's is zero.
    patientNNN_true_function.json               the true ventricular function in the schema of the cine workflow's
                                                ``function.json`` (:func:`scripts.cine.function.function_summary`):
                                                volume curves, EDV/ESV/SV/EF, ES, global strain per frame

How the truth is computed:

- volumes: the true label maps of every frame counted as the workflow counts its propagated labels
  (:mod:`scripts.cine.volumes`), so a perfect tracking of the true ED labels would score exactly on frames where
  the label maps are related by the motion (see the benchmark for the floor this sets);
- strain: the definition of :mod:`scripts.cine.strain` applied to the ANALYTIC forward map ED -> frame of the
  motion model (:meth:`scripts.phantom.motion.SubjectMotionModel.forward_world`), differentiated by central
  differences of 0.001 mm in float64 at the voxel centres of the ED LV myocardium: the continuum strain of the
  phantom at those points, free of any grid or field discretisation.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from scripts.atomic_files import write_text_atomically
from scripts.cine.function import function_summary
from scripts.cine.strain import global_strain, in_plane_basis, in_plane_gradient, myocardium_voxels, slice_centroids
from scripts.cine.volumes import frame_volumes
from scripts.compressed_nifti import write_nifti

from .acdc_writer import FRAME_DURATION_MS, _nifti, displacement_image
from .motion import FrameState, SubjectMotionModel
from .render import displacement_field

if TYPE_CHECKING:
    from .generator import PhantomSubject

__all__ = [
    "CineTruth",
    "CineTruthRecorder",
    "STRAIN_STEP_MM",
    "cine_truth_paths",
    "true_global_strain",
    "write_cine_truth",
]

STRAIN_STEP_MM = 1e-3
"""Half-width of the central differences of the analytic map (mm): far below a voxel, far above float64 noise."""


@dataclass
class CineTruth:
    """The truth of every frame of one subject (in memory).

    Attributes:
        labels: (X, Y, Z, T) uint8 label maps (0 bg, 1 RV, 2 LV myocardium, 3 LV blood pool).
        ddf_ed_to_frame: (T, X, Y, Z, 3) float32 world RAS mm on the frame grid: frame point x <-> ED point
            x + d(x) (moving = ED, fixed = the frame), rounded like the ED<->ES fields.
        radial_strain, circumferential_strain: (T,) true global strain (fractions) of every frame.
    """

    labels: np.ndarray
    ddf_ed_to_frame: np.ndarray
    radial_strain: np.ndarray
    circumferential_strain: np.ndarray

    def function(self, affine: np.ndarray, es_frame: int, ed_index: int = 0) -> dict:
        """The true ``function.json`` content (see :func:`scripts.cine.function.function_summary`)."""
        return function_summary(
            frame_volumes(self.labels, affine),
            ed_index,
            self.radial_strain,
            self.circumferential_strain,
            es_frame_info=es_frame,
        )


def true_global_strain(
    model: SubjectMotionModel, frame: FrameState, ed_labels: np.ndarray, affine: np.ndarray
) -> tuple[float, float]:
    """True global radial and circumferential strain (fractions) of one frame, from the analytic ED -> frame map.

    Args:
        model: the subject's motion model.
        frame: the frame's state (contraction level, liver shift).
        ed_labels: (X, Y, Z) ED label map (its LV myocardium voxels are the material points).
        affine: (4, 4) voxel -> world affine of the grid.
    """
    affine = np.asarray(affine, np.float64)
    voxels = myocardium_voxels(ed_labels)
    if len(voxels) == 0:
        return float("nan"), float("nan")
    points = voxels @ affine[:3, :3].T + affine[:3, 3]
    basis, _ = in_plane_basis(affine)
    offsets = STRAIN_STEP_MM * basis.T  # (2, 3): one step along each in-plane direction
    probes = np.concatenate([points[:, None, :] + offsets[None], points[:, None, :] - offsets[None]], axis=1)
    mapped = model.forward_world(probes.reshape(-1, 3), frame).reshape(len(points), 4, 3)
    step = np.broadcast_to(2.0 * STRAIN_STEP_MM * np.eye(2), (len(points), 2, 2))
    gradient = in_plane_gradient(mapped[:, :2], mapped[:, 2:], step, basis)
    centroids = slice_centroids(ed_labels, affine)[voxels[:, 2]]
    return global_strain(gradient, points, centroids, basis)


@dataclass
class CineTruthRecorder:
    """Collects the truth frame by frame while the generator renders the cine (frames in order, ED first).

    Args:
        model: the subject's motion model.
        affine: (4, 4) the subject's affine.
        grid: (X*Y*Z, 3) world positions of the voxel centres (the renderer's).
        shape: (X, Y, Z).
    """

    model: SubjectMotionModel
    affine: np.ndarray
    grid: np.ndarray
    shape: tuple[int, int, int]
    _labels: list = field(default_factory=list)
    _fields: list = field(default_factory=list)
    _strain: list = field(default_factory=list)

    def add(self, frame: FrameState, rendered: dict[str, np.ndarray]) -> None:
        """Record one frame from :meth:`~scripts.phantom.render.SubjectRenderer.render_frame` (with labels)."""
        self._labels.append(rendered["labels"])
        self._fields.append(displacement_field(rendered["backward"], self.grid, self.shape))
        self._strain.append(true_global_strain(self.model, frame, self._labels[0], self.affine))

    def finish(self) -> CineTruth:
        """The recorded :class:`CineTruth`."""
        strain = np.asarray(self._strain, np.float64).reshape(-1, 2)
        return CineTruth(
            labels=np.stack(self._labels, axis=-1).astype(np.uint8),
            ddf_ed_to_frame=np.stack(self._fields, axis=0),
            radial_strain=strain[:, 0],
            circumferential_strain=strain[:, 1],
        )


def cine_truth_paths(folder: str | os.PathLike, name: str, n_frames: int) -> dict[str, Path | list[Path]]:
    """Where the truth of patient ``name`` lives in ``folder``: ``labels``, ``fields`` (one per frame), ``function``."""
    folder = Path(folder)
    return {
        "labels": folder / f"{name}_true_labels_4d.nii.gz",
        "fields": [folder / f"{name}_true_ddf_ED_to_frame{frame:02d}.nii.gz" for frame in range(1, n_frames + 1)],
        "function": folder / f"{name}_true_function.json",
    }


def write_cine_truth(subject: "PhantomSubject", folder: str | os.PathLike) -> list[Path]:
    """Write the cine truth of ``subject`` (generated with ``cine_truth=True``) into its patient folder.

    Returns the written paths. Every file is written atomically with reproducible bytes (gzip mtime 0).
    """
    truth = subject.cine_truth
    if truth is None:
        raise ValueError(f"{subject.name}: generated without its cine truth (generate_subject(..., cine_truth=True))")
    paths = cine_truth_paths(folder, subject.name, truth.labels.shape[-1])
    write_nifti(_nifti(truth.labels, subject.affine, (FRAME_DURATION_MS,)), paths["labels"])
    for path, ddf in zip(paths["fields"], truth.ddf_ed_to_frame):
        write_nifti(displacement_image(ddf, subject.affine), path)
    function = truth.function(subject.affine, subject.es_frame)
    function["patient"] = subject.name
    function["source"] = "scripts.phantom truth: label maps of every frame, analytic ED -> frame map for strain"
    write_text_atomically(paths["function"], json.dumps(function, indent=4) + "\n")
    return [paths["labels"], *paths["fields"], paths["function"]]
