"""The cine workflow of ``configs/cine.json``: every cine of the run, from the files to the written folder.

Per cine: read (:mod:`.inputs`) -> all frames on the network grid (:mod:`.frames`) -> ED -> frame fields
(:mod:`.tracking`) -> back to the cine's grid in world mm (:mod:`.frames`) -> ED labels carried to every frame,
volumes, strain, function (:mod:`.measurements`) -> one folder (:mod:`.outputs`). Before anything is computed, every
cine's headers, the output folders and the weights are checked, so a bad input ends the run with one line naming
the file and nothing written. A cine that fails later (data corrupt behind a valid header) stops the run with one
line naming its file: it gets no folder, the cines completed before it keep theirs, and ``cine_summary.csv`` lists
them with the failure and the cines not run (nothing is written when the first cine fails).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from scripts.cine.frames import CINE_KEY, cine_preprocessing, network_fields_to_world, to_cine_grid
from scripts.cine.inputs import CineCase, LoadedCine, check_cine_case, read_cine
from scripts.cine.measurements import CineMeasurements, measure_cine
from scripts.cine.outputs import failed_summary_row, summary_row, write_cine_folder, write_summary_csv
from scripts.cine.strain import LV_MYOCARDIUM
from scripts.cine.tracking import TRACKING_MODES, segment_frame, track_cine
from scripts.data import InvalidInputError
from scripts.engine.checkpoints import as_flag
from scripts.errors import input_error_in, one_line
from scripts.geometry import DISPLACEMENT_CONVENTION
from scripts.inference import load_network_weights
from scripts.labels import NETWORK_PIXDIM_MM, NETWORK_SPATIAL_SIZE

__all__ = ["CineAnalysis", "CineWorkflow", "analyse_cine", "check_output_folders"]

logger = logging.getLogger(__name__)


@dataclass
class CineAnalysis:
    """Everything computed for one cine, before writing.

    Attributes:
        loaded: the cine as read.
        ed_labels: (X, Y, Z) uint8 ED labels used (the given map, or the memory's segmentation).
        ed_labels_source: ``"file"`` or ``"memory segmentation"``.
        fields_mm: (T, 3, X, Y, Z) ED -> frame fields in world RAS mm on the cine's grid.
        measurements: labels of every frame, volumes, strain and function.
        seconds: time per stage.
    """

    loaded: LoadedCine
    ed_labels: np.ndarray
    ed_labels_source: str
    fields_mm: torch.Tensor
    measurements: CineMeasurements
    seconds: dict[str, float] = field(default_factory=dict)


def analyse_cine(
    case: CineCase,
    network: nn.Module,
    device: str | torch.device = "cpu",
    tracking: str = "direct",
    batch_size: int = 4,
    blend_weight: float = 0.5,
    spatial_size: Sequence[int] = NETWORK_SPATIAL_SIZE,
    pixdim: Sequence[float] = NETWORK_PIXDIM_MM,
    refine_steps: int = 0,
) -> CineAnalysis:
    """Track one (checked) cine with ``network`` (weights loaded, eval mode) and measure it; writes nothing.

    ``refine_steps`` > 0 refines every network field on its pair (:mod:`scripts.cine.tracking`).
    """
    seconds: dict[str, float] = {}
    mark = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        seconds[stage] = now - mark
        mark = now

    loaded = read_cine(case)
    lap("read")
    preprocessing = cine_preprocessing(spatial_size, pixdim)
    network_cine = preprocessing({CINE_KEY: loaded.image})[CINE_KEY]
    frames = network_cine.as_tensor()[:, None].to(device)
    lap("preprocess")
    fields = track_cine(network, frames, loaded.ed_index, tracking, batch_size, blend_weight, refine_steps=refine_steps)
    source = "file"
    ed_labels = loaded.ed_labels
    if ed_labels is None:
        source = "memory segmentation"
        segmentation = segment_frame(network, frames[loaded.ed_index : loaded.ed_index + 1])
        ed_labels = to_cine_grid(segmentation, network_cine, preprocessing, nearest=True)[0].round().numpy()
        ed_labels = ed_labels.astype(np.uint8)
        if not np.any(ed_labels == LV_MYOCARDIUM):
            raise InvalidInputError(
                f"{case.cine}: the anatomical memory found no LV myocardium in ED frame {case.ed_frame}; give the ED "
                "label map (--ed_label)"
            )
    lap("network")
    fields_mm = network_fields_to_world(fields.cpu(), network_cine, preprocessing)
    lap("to_cine_grid")
    measurements = measure_cine(ed_labels, fields_mm, loaded.affine, loaded.ed_index, case.es_frame_info)
    lap("measure")
    return CineAnalysis(loaded, ed_labels, source, fields_mm, measurements, seconds)


def check_output_folders(cases: Sequence[CineCase], output_dir: str, protected: Sequence[str] = ()) -> None:
    """Refuse names used twice, and output folders that would replace or hold an input (or ``protected``) file.

    Raises:
        InvalidInputError: naming the folder and the file.
    """
    output = Path(output_dir).expanduser().absolute()
    if output.exists() and not output.is_dir():
        raise InvalidInputError(f"{output}: output_dir exists and is not a folder")
    names = [case.name for case in cases]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InvalidInputError(f"{output}: two cines would write the same folder {repeated}; rename one of the files")
    inputs = [Path(p).expanduser().absolute() for case in cases for p in case.inputs]
    inputs += [Path(p).expanduser().absolute() for p in protected if p]
    for name in names:
        folder = output / name
        for path in inputs:
            if path == folder or folder in path.parents:
                raise InvalidInputError(
                    f"{folder}: the output folder would replace the input {path}; choose another --output_dir"
                )


class CineWorkflow:
    """Run the cine workflow on every case (see the module docstring).

    Args:
        cases: the cines (:func:`scripts.cine.inputs.cine_cases`).
        network: the bundle's ``network_def`` on ``device``.
        ckpt_path: its weights.
        output_dir: one folder per cine is written under it, and ``cine_summary.csv``.
        device: where the network runs.
        tracking: ``"direct"``, ``"sequential"`` or ``"blend"`` (:mod:`scripts.cine.tracking`).
        batch_size: pairs per network call.
        blend_weight: the direct field's weight of ``"blend"``.
        spatial_size, pixdim: the network grid (as the weights were trained).
        refine_steps: instance-optimisation steps per network field (0: none, the default and the measured speed).
        save_fields: write the ED -> frame displacement fields (one file per frame); ``true``/``false`` as typed.
        save_figure: write ``function.png``; ``true``/``false`` as typed.
        network_description: what goes into ``function.json`` about the network (architecture, preset...).
    """

    def __init__(
        self,
        cases: Sequence[CineCase],
        network: nn.Module,
        ckpt_path: str,
        output_dir: str,
        device: str | torch.device = "cpu",
        tracking: str = "direct",
        batch_size: int = 4,
        blend_weight: float = 0.5,
        spatial_size: Sequence[int] = NETWORK_SPATIAL_SIZE,
        pixdim: Sequence[float] = NETWORK_PIXDIM_MM,
        refine_steps: int = 0,
        save_fields: bool | str = True,
        save_figure: bool | str = True,
        network_description: Mapping[str, Any] | None = None,
    ) -> None:
        if tracking not in TRACKING_MODES:
            raise InvalidInputError(f"tracking {tracking!r}: expected one of {list(TRACKING_MODES)}")
        if not 0.0 <= float(blend_weight) <= 1.0:
            raise InvalidInputError(f"blend_weight {blend_weight}: expected a number between 0 and 1")
        if isinstance(refine_steps, bool) or not isinstance(refine_steps, int) or refine_steps < 0:
            raise InvalidInputError(f"refine_steps {refine_steps!r}: expected a whole number >= 0")
        self.cases, self.network, self.ckpt_path = list(cases), network, ckpt_path
        self.output_dir, self.device = output_dir, device
        self.tracking, self.batch_size, self.blend_weight = tracking, int(batch_size), float(blend_weight)
        self.spatial_size, self.pixdim = tuple(spatial_size), tuple(pixdim)
        self.refine_steps = refine_steps
        # "--save_fields false" reaches here as the string "false" (truthy): read it as the flag it is
        self.save_fields, self.save_figure = as_flag(save_fields, "save_fields"), as_flag(save_figure, "save_figure")
        self.network_description = dict(network_description or {})

    def run(self) -> list[Path]:
        """Check everything, then analyse and write every cine; returns the written folders.

        Raises:
            InvalidInputError, MissingInputError: a bad input, naming the file; after the checks, the first cine that
                fails stops the run (see the module docstring for what is written then).
        """
        for case in self.cases:
            check_cine_case(case)
        check_output_folders(self.cases, self.output_dir, [self.ckpt_path])
        checkpoint = load_network_weights(
            self.network,
            self.ckpt_path,
            self.device,
            architecture=self.network_description.get("architecture"),
            network_preset=self.network_description.get("preset"),
        )
        self.network.eval()
        logger.info(f"cine workflow: {len(self.cases)} cine(s), weights {checkpoint.path}, tracking {self.tracking}")
        folders: list[Path] = []
        rows: list[dict[str, Any]] = []
        for position, case in enumerate(self.cases):
            try:
                folder, row = self._analyse_and_write(case, checkpoint)
            except Exception as error:
                self._stop(position, error, rows)
                raise
            folders.append(folder)
            rows.append(row)
        summary_csv = write_summary_csv(self.output_dir, rows)
        logger.info(f"wrote {len(folders)} cine folder(s) and {summary_csv}")
        return folders

    def _analyse_and_write(self, case: CineCase, checkpoint) -> tuple[Path, dict[str, Any]]:
        """Analyse one cine and write its folder (atomically); returns the folder and its summary row."""
        started = time.perf_counter()
        analysis = analyse_cine(
            case,
            self.network,
            self.device,
            self.tracking,
            self.batch_size,
            self.blend_weight,
            self.spatial_size,
            self.pixdim,
            self.refine_steps,
        )
        function = self._function_record(analysis, checkpoint)
        write_started = time.perf_counter()
        folder = write_cine_folder(
            self.output_dir,
            case.name,
            case.cine,
            analysis.measurements.labels,
            function,
            analysis.fields_mm if self.save_fields else None,
            self.save_figure,
        )
        analysis.seconds["write"] = time.perf_counter() - write_started
        total = time.perf_counter() - started
        summary = analysis.measurements.function
        logger.info(
            f"{case.name}: {analysis.loaded.n_frames} frames in {total:.1f} s "
            f"({', '.join(f'{k} {v:.2f}' for k, v in analysis.seconds.items())}); LV EF "
            f"{summary['lv']['ef_percent']} %, RV EF {summary['rv']['ef_percent']} %, ES frame "
            f"{summary['es_frame']}; wrote {folder}"
        )
        return folder, summary_row(case.name, summary, total)

    def _stop(self, position: int, error: Exception, rows: list[dict[str, Any]]) -> None:
        """The run stops at the cine ``position`` that failed (after its headers passed the checks, e.g. data corrupt
        behind a valid header): the cines completed before it keep their (complete) folders and, if there are any,
        ``cine_summary.csv`` lists them, the failed cine with its error and the cines not run. The failed cine has no
        folder (writing is atomic); the caller re-raises the error, which ends the run with one line."""
        if not rows:
            return
        cause = input_error_in(error)
        message = one_line(cause) if cause is not None else f"{type(error).__name__}: {one_line(error)}"
        failed = [failed_summary_row(self.cases[position].name, "failed", message)]
        failed += [failed_summary_row(case.name, "not run") for case in self.cases[position + 1 :]]
        summary_csv = write_summary_csv(self.output_dir, rows + failed)
        logger.info(
            f"stopped at {self.cases[position].name} ({position + 1} of {len(self.cases)}): the {len(rows)} cine(s) "
            f"before it are complete and listed in {summary_csv} with the failure"
        )

    def _function_record(self, analysis: CineAnalysis, checkpoint) -> dict[str, Any]:
        case = analysis.loaded.case
        return {
            "cine": case.cine,
            **analysis.measurements.function,
            "inputs": {
                "cine": case.cine,
                "ed_frame": case.ed_frame,
                "ed_labels": case.ed_label or analysis.ed_labels_source,
                "info_cfg": case.info_cfg,
            },
            "tracking": {
                "mode": self.tracking,
                "blend_weight": self.blend_weight if self.tracking == "blend" else None,
                "batch_size": self.batch_size,
                "refine_steps": self.refine_steps,
            },
            "checkpoint": {"path": checkpoint.path, "sha256": checkpoint.sha256},
            "network": {
                **self.network_description,
                "spatial_size": list(self.spatial_size),
                "pixdim_mm": list(self.pixdim),
            },
            "conventions": {
                "frames": "1-based frame numbers, as in ACDC's Info.cfg",
                "displacements": "displacements/ED_to_frameFF_mm.nii.gz: moving = ED, fixed = frame FF; "
                + DISPLACEMENT_CONVENTION,
                "volumes": "sum of the propagated label probabilities (partial volume) x voxel volume",
                "lv_mass": "LV myocardium volume at ED x 1.05 g/ml",
            },
            "seconds": {k: round(v, 3) for k, v in analysis.seconds.items()},
        }
