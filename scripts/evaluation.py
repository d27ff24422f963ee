"""Test-set evaluation: per-pair registration metrics, a per-pair CSV and a summary JSON with an "Initial" row.

Data flow: the evaluator's output of each batch (``RegistrationPrepareBatch`` targets, the network's output dict)
-> :func:`pair_metrics` for the network's field and for the identity field (ddf = 0, the "Initial" row)
-> rows (one per directed pair) -> :func:`summarise` (per patient, then over patients; overall and per group)
-> files written atomically by :class:`RegistrationEvaluationHandler`.

One warp convention everywhere: labels are warped nearest-neighbour with ``warped(x) = moving(x + ddf(x))``
(``scripts.warping``, the Warp used in training), and all metrics live on the network's grid.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents

from scripts.atomic_files import write_text_atomically
from scripts.metrics import (
    ACDC_SPACING_MM,
    JACOBIAN_BORDER,
    STRUCTURE_LABELS,
    registration_metrics,
    segmentation_dice,
)

__all__ = [
    "INITIAL_ROW",
    "METRIC_NAMES",
    "RECORD_COLUMNS",
    "REGISTRATION_METRICS",
    "RegistrationEvaluationHandler",
    "data_source",
    "pair_metrics",
    "patient_means",
    "protocol",
    "summarise",
    "write_csv_atomic",
    "write_json_atomic",
]

INITIAL_ROW = "Initial"
RECORD_COLUMNS = ("patient", "group", "direction")
REGISTRATION_METRICS = (
    "dice_rv",
    "dice_lvm",
    "dice_lvbp",
    "dice_mean",
    "hd95_rv",
    "hd95_lvm",
    "hd95_lvbp",
    "hd95_mean",
    "sdlogj_plus3",
    "std_log_j_positive",
    "folding_percent",
)
SEGMENTATION_METRICS = ("seg_dice_rv", "seg_dice_lvm", "seg_dice_lvbp", "seg_dice_mean")
METRIC_NAMES = REGISTRATION_METRICS + SEGMENTATION_METRICS + ("seconds_per_pair",)


def protocol(
    grid: Sequence[int], spacing: Sequence[float] = ACDC_SPACING_MM, border: int = JACOBIAN_BORDER
) -> dict[str, str]:
    """How every number of the summary was obtained, in words (stored in the summary JSON)."""
    grid_text = " x ".join(str(int(s)) for s in grid)
    spacing_text = " x ".join(f"{float(s):g}" for s in spacing)
    return {
        "grid": f"{grid_text} voxels of {spacing_text} mm (the network's grid; no resampling back to the originals)",
        "label_warping": (
            "moving labels warped nearest neighbour with warped(x) = moving(x + ddf(x)); ddf in voxels, channel i "
            "along array axis i; grid_sample align_corners=True, background outside the volume; the same Warp "
            "convention as in training"
        ),
        "dice": "per structure (1 RV, 2 LVM, 3 LVBP), background excluded; dice_mean over structures present",
        "hd95": (
            f"95th-percentile symmetric Hausdorff distance in mm (spacing {spacing_text}), per structure; hd95_mean "
            "averaged over the structures present in both masks"
        ),
        "jacobian": (
            f"J = det(I + grad ddf) by central differences in voxel units, {border}-voxel border crop on every axis"
        ),
        "sdlogj_plus3": "std(log(clip(J + 3, 1e-8, 1e8))) (Learn2Reg '+3' convention; the paper's SDlogJ)",
        "std_log_j_positive": "std(log J) over the voxels with J > 0",
        "folding_percent": "100 x fraction of voxels with J <= 0",
        "segmentation_dice": (
            "argmax of the anatomical memory's level-0 probabilities vs the fixed labels, per structure; "
            "blank for networks without a memory"
        ),
        "initial": f"'{INITIAL_ROW}': the identity transform (ddf = 0) through the same metrics, same run",
        "aggregation": (
            "each patient: mean over its directed pairs (ED->ES, ES->ED); reported: mean and population standard "
            "deviation (ddof 0) over patients, overall and per disease group; NaN values (structure absent) skipped"
        ),
        "seconds_per_pair": "wall time from batch ready to network output, divided by the batch size",
    }


@torch.no_grad()
def pair_metrics(
    ddf: torch.Tensor,
    moving_label: torch.Tensor,
    fixed_label: torch.Tensor,
    anatomical_logits: torch.Tensor | None = None,
    spacing: Sequence[float] = ACDC_SPACING_MM,
    labels: Sequence[int] = STRUCTURE_LABELS,
    border: int = JACOBIAN_BORDER,
) -> dict[str, torch.Tensor]:
    """Registration metrics and, with ``anatomical_logits``, the memory's segmentation Dice, per batch element.

    Args:
        ddf: (B, 3, H, W, D) displacement in voxels.
        moving_label, fixed_label: (B, 1, H, W, D) integer-valued label maps.
        anatomical_logits: (B, 4, H, W, D) level-0 logits of the memory, or None (NaN segmentation Dice).
        spacing: voxel size in mm, for HD95.
        labels: structures scored.
        border: Jacobian border crop.

    Returns:
        dict of (B,) float64 CPU tensors, keys ``REGISTRATION_METRICS + SEGMENTATION_METRICS``.
    """
    results = registration_metrics(ddf, moving_label, fixed_label, spacing=spacing, labels=labels, border=border)
    if anatomical_logits is not None:
        results.update(segmentation_dice(anatomical_logits, fixed_label, labels=labels))
    else:
        results.update({name: torch.full((ddf.shape[0],), math.nan) for name in SEGMENTATION_METRICS})
    return {name: results[name].detach().double().cpu() for name in REGISTRATION_METRICS + SEGMENTATION_METRICS}


def _finite_or_none(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def patient_means(rows: Sequence[Mapping[str, Any]], metric_name: str) -> dict[str, float]:
    """``{patient: nan-mean of the metric over its pairs}`` for the patients with at least one finite value."""
    by_patient: dict[str, list[float]] = {}
    for row in rows:
        by_patient.setdefault(str(row.get("patient", "")), []).append(row.get(metric_name, math.nan))
    means = {}
    for patient, values in by_patient.items():
        finite = np.array(values, dtype=np.float64)  # None -> NaN
        finite = finite[np.isfinite(finite)]
        if finite.size:
            means[patient] = float(finite.mean())
    return means


def _statistics(rows: Sequence[Mapping[str, Any]], metric_names: Sequence[str]) -> dict[str, Any]:
    """Per patient nan-mean over its pairs, then mean / population std over patients, per metric."""
    statistics: dict[str, Any] = {
        "num_pairs": len(rows),
        "num_patients": len({str(row.get("patient", "")) for row in rows}),
    }
    for name in metric_names:
        means = np.asarray(list(patient_means(rows, name).values()), dtype=np.float64)
        statistics[name] = {
            "mean": _finite_or_none(means.mean()) if means.size else None,
            "std": _finite_or_none(means.std()) if means.size else None,
            "n": int(means.size),
        }
    return statistics


def summarise(rows: Sequence[Mapping[str, Any]], metric_names: Sequence[str]) -> dict[str, Any]:
    """``{"all": statistics, "groups": {group: statistics}}`` of per-pair rows (see :func:`protocol`, aggregation).

    Each statistics dict has "num_pairs", "num_patients" and per metric ``{"mean", "std", "n"}`` (n = patients with
    a finite value; mean/std None when n = 0).
    """
    groups = sorted({str(row.get("group", "")) for row in rows} - {""})
    return {
        "all": _statistics(rows, metric_names),
        "groups": {group: _statistics([r for r in rows if r.get("group") == group], metric_names) for group in groups},
    }


def write_csv_atomic(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    """Write rows as CSV (NaN and None as empty cells, floats with 6 significant digits), atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            if isinstance(value, float):
                cells.append(f"{value:.6g}" if math.isfinite(value) else "")
            else:
                cells.append("" if value is None else str(value))
        writer.writerow(cells)
    return write_text_atomically(Path(path), buffer.getvalue())


def write_json_atomic(path: str | os.PathLike, content: Any) -> Path:
    """Write JSON (4-space indent, strict: no NaN), atomically."""
    return write_text_atomically(Path(path), json.dumps(content, indent=4, allow_nan=False) + "\n")


def data_source(dataset_dir: str | os.PathLike | None, datalist: str | os.PathLike | None) -> dict[str, str | None]:
    """Where evaluated pairs came from: ``{"datalist": file or None, "dataset_dir": folder or None, "section"}``,
    absolute paths; a datalist, when given, is the only source (the data set folder is then not read)."""
    if datalist:
        return {"datalist": os.path.abspath(datalist), "dataset_dir": None, "section": "test"}
    return {
        "datalist": None,
        "dataset_dir": None if not dataset_dir else os.path.abspath(dataset_dir),
        "section": "test",
    }


def _evaluated_records(engine: Engine) -> list[dict] | None:
    """The pair records of the evaluator's data set (path strings and names only), or None when it has none."""
    records = getattr(getattr(getattr(engine, "data_loader", None), "dataset", None), "data", None)
    if not isinstance(records, list) or not all(isinstance(record, Mapping) for record in records):
        return None
    return [{k: v for k, v in record.items() if isinstance(v, (str, int, float))} for record in records]


def _as_list(value: Any, size: int) -> list[str]:
    if value is None:
        return [""] * size
    if isinstance(value, (str, int, float)):
        return [str(value)] * size
    return [str(v) for v in value]


class RegistrationEvaluationHandler:
    """Evaluate every test pair and write ``<output_dir>/per_pair_metrics.csv``, ``per_pair_metrics_initial.csv``,
    ``summary.json`` and ``datalist_used.json``.

    Attach to a ``SupervisedEvaluator`` fed by ``RegistrationPrepareBatch`` with ``decollate=False``. Per iteration it
    reads the network's "ddf" (and level-0 "anatomical_logits" when the network has a memory), the targets' label
    maps and the batch's "patient", "group" and "direction", and computes :func:`pair_metrics` for the network and
    for the identity field. The time from batch ready (GET_BATCH_COMPLETED) to network output (FORWARD_COMPLETED),
    divided by the batch size, is each pair's ``seconds_per_pair``. At COMPLETED the rows of all processes are
    gathered and the main process writes the files.

    The summary's "data" says where the pairs came from: the datalist file when one was given (then the data set
    folder played no part), otherwise the data set folder's test split; ``datalist_used.json`` holds the evaluated
    pair records as a datalist (``{"test": [...]}``, absolute paths), so ``--datalist`` with it repeats the run.

    Args:
        output_dir: folder of the output files.
        spacing: voxel size in mm of the network grid (HD95).
        labels: structures scored.
        border: Jacobian border crop.
        model_name: row name of the network in the summary (e.g. the architecture); the identity is "Initial".
        run_info: free-form description stored in the summary (architecture, preset, checkpoint, ...).
        dataset_dir: the data set folder the pairs were split from (when ``datalist`` is empty).
        datalist: the datalist JSON the pairs were read from, or ""/None.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        spacing: Sequence[float] = ACDC_SPACING_MM,
        labels: Sequence[int] = STRUCTURE_LABELS,
        border: int = JACOBIAN_BORDER,
        model_name: str = "model",
        run_info: Mapping[str, Any] | None = None,
        dataset_dir: str | os.PathLike | None = None,
        datalist: str | os.PathLike | None = None,
    ) -> None:
        if model_name == INITIAL_ROW:
            raise ValueError(f"model_name {INITIAL_ROW!r} is reserved for the identity transform")
        self.output_dir = Path(output_dir)
        self.spacing = tuple(float(s) for s in spacing)
        self.labels = tuple(labels)
        self.border = int(border)
        self.model_name = str(model_name)
        self.run_info = dict(run_info or {})
        self.data_source = data_source(dataset_dir, datalist)
        self.rows: list[dict[str, Any]] = []
        self.initial_rows: list[dict[str, Any]] = []
        self.grid: tuple[int, ...] = ()
        self._started = math.nan
        self._forward_seconds = math.nan

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, self.batch_ready)
        engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, self.forward_completed)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def started(self, engine: Engine) -> None:
        self.rows, self.initial_rows = [], []

    def batch_ready(self, engine: Engine) -> None:
        self._started = time.perf_counter()

    def forward_completed(self, engine: Engine) -> None:
        ddf = engine.state.output["pred"]["ddf"]
        if ddf.is_cuda:
            torch.cuda.synchronize(ddf.device)  # CUDA kernels run asynchronously: wait before reading the clock
        self._forward_seconds = time.perf_counter() - self._started

    def iteration_completed(self, engine: Engine) -> None:
        output, batch = engine.state.output, engine.state.batch
        prediction, targets = output["pred"], output["label"]
        ddf = prediction["ddf"]
        size = ddf.shape[0]
        self.grid = tuple(int(s) for s in ddf.shape[2:])
        logits = prediction.get("anatomical_logits") or []
        model = pair_metrics(
            ddf,
            targets["moving_label"],
            targets["fixed_label"],
            logits[0] if len(logits) else None,
            self.spacing,
            self.labels,
            self.border,
        )
        initial = pair_metrics(
            torch.zeros_like(ddf),
            targets["moving_label"],
            targets["fixed_label"],
            None,
            self.spacing,
            self.labels,
            self.border,
        )
        records = {column: _as_list(batch.get(column), size) for column in RECORD_COLUMNS}
        for index in range(size):
            record = {column: records[column][index] for column in RECORD_COLUMNS}
            self.rows.append(
                {
                    **record,
                    **{name: float(values[index]) for name, values in model.items()},
                    "seconds_per_pair": self._forward_seconds / size,
                }
            )
            self.initial_rows.append({**record, **{name: float(initial[name][index]) for name in REGISTRATION_METRICS}})

    def _gathered(self) -> tuple[list[dict], list[dict]]:
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self.rows, self.initial_rows
        shards: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(shards, (self.rows, self.initial_rows, self.grid))
        rows = [row for shard in shards for row in shard[0]]
        initial_rows = [row for shard in shards for row in shard[1]]
        self.grid = next((shard[2] for shard in shards if shard[2]), self.grid)
        return rows, initial_rows

    def completed(self, engine: Engine) -> None:
        rows, initial_rows = self._gathered()
        if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
            return
        order = sorted(range(len(rows)), key=lambda i: (rows[i]["patient"], rows[i]["direction"]))
        rows = [rows[i] for i in order]
        initial_rows = [initial_rows[i] for i in order]
        write_csv_atomic(self.output_dir / "per_pair_metrics.csv", rows, RECORD_COLUMNS + METRIC_NAMES)
        write_csv_atomic(
            self.output_dir / "per_pair_metrics_initial.csv", initial_rows, RECORD_COLUMNS + REGISTRATION_METRICS
        )
        files = {"per_pair": "per_pair_metrics.csv", "per_pair_initial": "per_pair_metrics_initial.csv"}
        records = _evaluated_records(engine)
        if records is not None:
            write_json_atomic(self.output_dir / "datalist_used.json", {self.data_source["section"]: records})
            files["datalist_used"] = "datalist_used.json"
        summary = {
            "protocol": protocol(self.grid, self.spacing, self.border),
            "run": self.run_info,
            "data": {**self.data_source, "num_pairs": len(rows)},
            "files": files,
            "results": {
                INITIAL_ROW: summarise(initial_rows, REGISTRATION_METRICS),
                self.model_name: summarise(rows, METRIC_NAMES),
            },
        }
        write_json_atomic(self.output_dir / "summary.json", summary)
        engine.logger.info(
            f"evaluated {len(rows)} pairs: mean Dice {self.model_name} "
            f"{summary['results'][self.model_name]['all']['dice_mean']['mean']}, {INITIAL_ROW} "
            f"{summary['results'][INITIAL_ROW]['all']['dice_mean']['mean']}; wrote {self.output_dir}"
        )
