"""``python -m scripts.benchmark cine``: the cine workflow scored against the phantom's true motion.

Needs a phantom generated with its cine truth (``python -m scripts.phantom --output D --cine_truth``, see
:mod:`scripts.phantom.cine_truth`). For every test cine (``D/testing/`` by default) and every row, the cine workflow
runs end to end as ``configs/cine.json`` runs it (read, network grid, tracking, back to the cine grid, propagation,
volumes, strain, and the folder written to a temporary directory), timed per cine, and its ``function.json`` is
compared with ``patientNNN_true_function.json``:

- ``lv_ef_error`` / ``rv_ef_error``: |EF - true EF| in EF points (ED = frame 1, ES = each one's minimum LV volume);
- ``lv_curve_error`` / ``rv_curve_error``: mean over frames of |V(t) - V_true(t)| in % of the true EDV, and
  ``lv_curve_error_max``: the worst frame;
- ``es_frame_error``: frames between the detected ES and the phantom's ES (Info.cfg), round the cycle;
- ``radial_strain_error`` / ``circumferential_strain_error``: |strain - true strain| at the phantom's ES in strain
  points (percentage points), so that an ES detection error does not count twice;
- ``seconds`` (wall) and ``cpu_seconds`` (this process's CPU time) per cine, without the process start-up and the
  weights loading; ``network_seconds`` (wall) the part of it in the network (tracking every frame, and the ED
  segmentation when there is no label map), the rest being reading, resampling, measuring and writing.

Rows: one per ``--tracking`` mode with the network (``--ckpt_path``), and ``true fields`` (``--true_fields``): the
phantom's true ED -> frame fields fed to the same measurement, the floor that the measurement itself sets.
Outputs in ``--output_dir``: ``cine_benchmark.json`` (protocol, per-row means and targets), ``per_cine_<row>.csv``
and ``cine_table.md`` (also printed). Phantom results are not patient results.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scripts.atomic_files import write_text_atomically
from scripts.cine import CineCase, analyse_cine, check_cine_case, cine_cases, measure_cine, read_cine
from scripts.cine.outputs import write_cine_folder
from scripts.cine.tracking import TRACKING_MODES
from scripts.data import InvalidInputError, MissingInputError
from scripts.geometry import read_displacement_nifti
from scripts.inference.checkpoint import load_network_weights
from scripts.networks import bundle_network
from scripts.networks.cpu import optimise_for_device
from scripts.phantom.cine_truth import cine_truth_paths

__all__ = ["CINE_TARGETS", "TRUE_FIELDS_ROW", "cine_errors", "main", "run_cine_benchmark", "summarise_rows"]

TRUE_FIELDS_ROW = "true fields"
ERROR_KEYS = (
    "lv_ef_error",
    "rv_ef_error",
    "lv_curve_error",
    "lv_curve_error_max",
    "rv_curve_error",
    "es_frame_error",
    "radial_strain_error",
    "circumferential_strain_error",
    "seconds",
    "cpu_seconds",
    "network_seconds",
)
CINE_TARGETS: dict[str, tuple[float, str]] = {
    "lv_ef_error": (3.0, "LV EF mean absolute error <= 3 points"),
    "rv_ef_error": (5.0, "RV EF mean absolute error <= 5 points"),
    "lv_curve_error": (5.0, "LV volume-curve error <= 5 % of EDV per frame on average"),
    "es_within_one_percent": (90.0, "ES frame within +-1 frame for >= 90 % of patients"),
    "circumferential_strain_error": (2.0, "circumferential strain at ES within 2 points on average"),
    "radial_strain_error": (5.0, "radial strain at ES within 5 points on average"),
}


def cine_errors(measured: Mapping[str, Any], truth: Mapping[str, Any]) -> dict[str, float]:
    """Errors of one cine's ``function.json`` content against the phantom's true one (see the module docstring)."""
    frames = int(truth["frames"])
    true_es = int(truth.get("es_frame_info_cfg") or truth["es_frame"])
    errors: dict[str, float] = {}
    for ventricle in ("lv", "rv"):
        estimate, reference = measured[ventricle]["ef_percent"], truth[ventricle]["ef_percent"]
        errors[f"{ventricle}_ef_error"] = math.nan if None in (estimate, reference) else abs(estimate - reference)
    for ventricle, key in (("lv", "lv_blood_pool_ml"), ("rv", "rv_ml")):
        estimate = np.asarray(measured["curves"][key], np.float64)
        reference = np.asarray(truth["curves"][key], np.float64)
        relative = 100.0 * np.abs(estimate - reference) / reference[int(truth["ed_frame"]) - 1]
        errors[f"{ventricle}_curve_error"] = float(relative.mean())
        if ventricle == "lv":
            errors["lv_curve_error_max"] = float(relative.max())
    distance = abs(int(measured["es_frame"]) - true_es) % frames
    errors["es_frame_error"] = float(min(distance, frames - distance))
    for kind in ("radial", "circumferential"):
        estimate = (measured.get("strain") or {}).get(f"{kind}_percent") or [None] * frames
        reference = truth["strain"][f"{kind}_percent"]
        value = estimate[true_es - 1]
        errors[f"{kind}_strain_error"] = math.nan if value is None else abs(value - reference[true_es - 1])
    return errors


def summarise_rows(per_cine: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Means over the cines of each error, and the % of cines with the ES frame within one frame."""
    summary = {}
    for key in ERROR_KEYS:
        values = np.array([row[key] for row in per_cine if key in row], np.float64)
        summary[key] = float(np.nanmean(values)) if values.size and np.isfinite(values).any() else math.nan
    within = [row["es_frame_error"] <= 1 for row in per_cine if "es_frame_error" in row]
    summary["es_within_one_percent"] = 100.0 * float(np.mean(within)) if within else math.nan
    summary["cines"] = len(per_cine)
    return summary


def _read_truth(case: CineCase) -> dict:
    path = cine_truth_paths(Path(case.cine).parent, case.name, 0)["function"]
    if not path.is_file():
        raise MissingInputError(
            f"{path}: no cine truth for {case.name}; generate the phantom with --cine_truth "
            "(python -m scripts.phantom --output D --cine_truth)"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def _true_fields(case: CineCase, frames: int) -> torch.Tensor:
    """(T, 3, X, Y, Z) the phantom's true ED -> frame fields (world RAS mm)."""
    paths = cine_truth_paths(Path(case.cine).parent, case.name, frames)["fields"]
    return torch.stack([torch.from_numpy(read_displacement_nifti(p)[0]).permute(3, 0, 1, 2).float() for p in paths])


def _timed(function: Callable[[], dict]) -> tuple[dict, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def run_cine_benchmark(
    cases: Sequence[CineCase],
    rows: Sequence[str],
    network: torch.nn.Module | None,
    device: str = "cpu",
    batch_size: int = 4,
    blend_weight: float = 0.5,
    save_fields: bool = True,
    progress: bool = True,
    refine_steps: int = 0,
) -> dict[str, list[dict[str, Any]]]:
    """Per-cine errors of every row (a tracking mode, or :data:`TRUE_FIELDS_ROW`); see the module docstring."""
    truths = {case.name: _read_truth(case) for case in cases}
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="cine_benchmark_") as scratch:
        for row in rows:
            results[row] = []
            for case in cases:

                stages: dict[str, float] = {}

                def run() -> dict:
                    if row == TRUE_FIELDS_ROW:
                        loaded = read_cine(case)
                        fields = _true_fields(case, loaded.n_frames)
                        measured = measure_cine(
                            loaded.ed_labels, fields, loaded.affine, loaded.ed_index, case.es_frame_info
                        )
                        labels, function = measured.labels, measured.function
                    else:
                        analysis = analyse_cine(
                            case, network, device, row, batch_size, blend_weight, refine_steps=refine_steps
                        )
                        fields = analysis.fields_mm
                        stages.update(analysis.seconds)
                        labels, function = analysis.measurements.labels, analysis.measurements.function
                    write_cine_folder(
                        Path(scratch) / row.replace(" ", "_"),
                        case.name,
                        case.cine,
                        labels,
                        function,
                        fields if save_fields else None,
                    )
                    return function

                function, wall, cpu = _timed(run)
                errors = cine_errors(function, truths[case.name])
                record = {"cine": case.name, "frames": function["frames"], **errors, "seconds": wall}
                record["cpu_seconds"] = cpu
                if "network" in stages:
                    record["network_seconds"] = stages["network"]
                record["lv_ef"], record["true_lv_ef"] = (
                    function["lv"]["ef_percent"],
                    truths[case.name]["lv"]["ef_percent"],
                )
                record["rv_ef"], record["true_rv_ef"] = (
                    function["rv"]["ef_percent"],
                    truths[case.name]["rv"]["ef_percent"],
                )
                results[row].append(record)
                if progress:
                    print(
                        f"{row}: {case.name} ({function['frames']} frames) LV EF {record['lv_ef']} (true "
                        f"{record['true_lv_ef']}), RV EF {record['rv_ef']} (true {record['true_rv_ef']}), "
                        f"{wall:.1f} s",
                        file=sys.stderr,
                        flush=True,
                    )
    return results


def _format(value: float, digits: int = 2) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def cine_table(summaries: Mapping[str, Mapping[str, float]]) -> str:
    """The Markdown table of the per-row means."""
    header = (
        "| row | cines | LV EF err (points) | RV EF err (points) | LV curve err (% EDV, mean / worst frame) | "
        "RV curve err (% EDV) | ES err (frames) | ES within 1 (%) | radial strain err at ES (points) | "
        "circ. strain err at ES (points) | s / cine (wall) | CPU s / cine | network s / cine (wall) |"
    )
    lines = [header, "|" + "---|" * 13]
    for row, s in summaries.items():
        lines.append(
            f"| {row} | {s['cines']} | {_format(s['lv_ef_error'])} | {_format(s['rv_ef_error'])} | "
            f"{_format(s['lv_curve_error'])} / {_format(s['lv_curve_error_max'])} | {_format(s['rv_curve_error'])} | "
            f"{_format(s['es_frame_error'])} | {_format(s['es_within_one_percent'], 0)} | "
            f"{_format(s['radial_strain_error'])} | {_format(s['circumferential_strain_error'])} | "
            f"{_format(s['seconds'])} | {_format(s['cpu_seconds'])} | {_format(s['network_seconds'])} |"
        )
    return "\n".join(lines) + "\n"


def _targets(summary: Mapping[str, float]) -> dict[str, dict[str, Any]]:
    verdicts = {}
    for key, (goal, text) in CINE_TARGETS.items():
        value = summary.get(key, math.nan)
        met = math.isfinite(value) and (value >= goal if key == "es_within_one_percent" else value <= goal)
        verdicts[key] = {"goal": goal, "text": text, "value": value, "met": bool(met)}
    return verdicts


def _csv(records: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.benchmark cine", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset_dir", required=True, help="phantom generated with --cine_truth")
    parser.add_argument("--split", default="testing", help="subfolder holding the cines (default testing; '' = all)")
    parser.add_argument("--patients", nargs="*", default=None, help="patient numbers (default: every one)")
    parser.add_argument("--ckpt_path", default="models/model.pt", help="network weights")
    parser.add_argument("--architecture", default="memwarp")
    parser.add_argument("--network_preset", default="compact")
    parser.add_argument(
        "--tracking", nargs="*", default=["direct"], choices=list(TRACKING_MODES), help="network rows (none: skip)"
    )
    parser.add_argument("--true_fields", action="store_true", help="add the row of the phantom's true fields")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--blend_weight", type=float, default=0.5)
    parser.add_argument("--refine_steps", type=int, default=0, help="instance-optimisation steps per pair (default 0)")
    parser.add_argument("--no_fields", action="store_true", help="do not write the displacement fields (timing)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output_dir", default="benchmark_cine", help="folder for the reports")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        root = Path(args.dataset_dir) / args.split if args.split else Path(args.dataset_dir)
        cases = cine_cases(root, args.patients or None)
        for case in cases:
            check_cine_case(case)
            if not case.ed_label:
                raise MissingInputError(f"{case.cine}: no ED label map beside the cine (the phantom writes one)")
        rows = list(args.tracking) + ([TRUE_FIELDS_ROW] if args.true_fields else [])
        if not rows:
            raise InvalidInputError("nothing to score: give --tracking MODE(S) and/or --true_fields")
        network = None
        checkpoint = None
        if args.tracking:
            network = optimise_for_device(bundle_network(args.architecture, args.network_preset), args.device)
            checkpoint = load_network_weights(
                network, args.ckpt_path, args.device, architecture=args.architecture, network_preset=args.network_preset
            )
            network.eval()
        results = run_cine_benchmark(
            cases,
            rows,
            network,
            args.device,
            args.batch_size,
            args.blend_weight,
            not args.no_fields,
            refine_steps=args.refine_steps,
        )
    except (InvalidInputError, MissingInputError) as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 2
    summaries = {row: summarise_rows(records) for row, records in results.items()}
    table = cine_table(summaries)
    print(table)
    for row, summary in summaries.items():
        if row == TRUE_FIELDS_ROW:
            continue
        for verdict in _targets(summary).values():
            state = "met" if verdict["met"] else "MISSED"
            print(f"{row}: {verdict['text']}: {_format(verdict['value'])} {state}")
    output = Path(args.output_dir)
    report = {
        "command": "python -m scripts.benchmark cine " + " ".join(sys.argv[2:] if argv is None else argv),
        "dataset_dir": str(Path(args.dataset_dir).absolute()),
        "checkpoint": None if checkpoint is None else {"path": checkpoint.path, "sha256": checkpoint.sha256},
        "network": {"architecture": args.architecture, "preset": args.network_preset},
        "threads": torch.get_num_threads(),
        "refine_steps": args.refine_steps,
        "protocol": __doc__,
        "summaries": summaries,
        "targets": {row: _targets(s) for row, s in summaries.items() if row != TRUE_FIELDS_ROW},
    }
    write_text_atomically(output / "cine_benchmark.json", json.dumps(report, indent=4) + "\n")
    write_text_atomically(output / "cine_table.md", table)
    for row, records in results.items():
        if records:
            write_text_atomically(output / f"per_cine_{row.replace(' ', '_')}.csv", _csv(records))
    print(f"wrote {output}/cine_benchmark.json, cine_table.md and per_cine_*.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
