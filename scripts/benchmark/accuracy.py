"""``python -m scripts.benchmark accuracy``: the paper's Table 1 on a test split, plus end-point error on the phantom.

Every method sees the same preprocessed pairs (``scripts.data.registration_preprocessing``, the evaluation's) and is
scored by the same code as ``configs/evaluate.json`` (``scripts.evaluation.pair_metrics``: Dice, HD95, SDlogJ,
folding on the network grid), plus the end-point error against the phantom's true motion
(``scripts.benchmark.endpoint_error``) when the data set carries true fields. Rows: "Initial" (identity), ANTs SyN
(``--ants``, antspyx), and one row per ``--method "NAME=ARCHITECTURE[@PRESET]:CHECKPOINT"`` (a state dict of
``scripts.networks.bundle_network(ARCHITECTURE, PRESET or --preset)``).

Outputs in ``--output_dir``: ``accuracy_summary.json`` (protocol, methods, per-metric mean/std over patients overall
and per group; ``paired``: every two methods patient by patient, :mod:`scripts.benchmark.paired_comparison`),
``per_pair_<method>.csv`` and ``accuracy_table.md`` (also printed: the table, then the paired comparisons).
"""

from __future__ import annotations

import argparse
import math
import re
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from scripts.atomic_files import write_text_atomically
from scripts.benchmark.ants_syn import ANTS_SYN_PARAMETERS, ants_syn_ddf, ants_version
from scripts.benchmark.command_line import run_mode
from scripts.benchmark.endpoint_error import (
    BOUNDARY_MM,
    EPE_METRICS,
    endpoint_error_metrics,
    load_true_displacement,
    true_displacement_on_grid,
    true_field_path,
)
from scripts.benchmark.paired_comparison import compare_methods, paired_table
from scripts.data import registration_preprocessing
from scripts.engine.inputs import pair_datalist
from scripts.evaluation import (
    INITIAL_ROW,
    RECORD_COLUMNS,
    REGISTRATION_METRICS,
    SEGMENTATION_METRICS,
    pair_metrics,
    protocol,
    summarise,
    write_csv_atomic,
    write_json_atomic,
)
from scripts.inference.checkpoint import load_network_weights
from scripts.labels import NETWORK_PIXDIM_MM, NETWORK_SPATIAL_SIZE
from scripts.networks import bundle_network
from scripts.networks.cpu import optimise_for_device

__all__ = ["ACCURACY_METRICS", "MethodSpec", "accuracy_table", "main", "parse_method", "run_accuracy"]

ANTS_ROW = "ANTs SyN"
ACCURACY_METRICS = REGISTRATION_METRICS + SEGMENTATION_METRICS + EPE_METRICS + ("seconds_per_pair",)
# A method's field for one pair: (moving, fixed) network tensors (1, 1, H, W, D) -> (ddf (1, 3, H, W, D), logits).
FieldFunction = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, "torch.Tensor | None"]]


@dataclass(frozen=True)
class MethodSpec:
    """One network row: its table name, architecture (``scripts.networks.VARIANTS`` or "voxelmorph"), weights
    and, when given, its own preset (otherwise ``--preset``)."""

    name: str
    architecture: str
    checkpoint: str
    preset: str | None = None


def parse_method(text: str) -> MethodSpec:
    """``"NAME=ARCHITECTURE[@PRESET]:CHECKPOINT"`` -> :class:`MethodSpec`.

    NAME may contain spaces, e.g. "LapWarp (6 ep)"; ``@PRESET`` scores a checkpoint of another preset in
    the same run, e.g. ``"MemWarp paper=memwarp@paper:runs/paper/models/model.pt"``.
    """
    pattern = r"(?P<name>[^=]+)=(?P<architecture>[a-z_]+)(@(?P<preset>[A-Za-z0-9_.]+))?:(?P<checkpoint>.+)"
    match = re.fullmatch(pattern, text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"--method {text!r}: expected NAME=ARCHITECTURE[@PRESET]:CHECKPOINT, e.g. 'MemWarp=memwarp:models/model.pt'"
        )
    return MethodSpec(match["name"].strip(), match["architecture"], match["checkpoint"], match["preset"])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.benchmark accuracy", description=__doc__)
    parser.add_argument("--dataset_dir", required=True, help="ACDC-layout folder (phantom or ACDC database/)")
    parser.add_argument("--datalist", default="", help="datalist JSON (default: the reference split)")
    parser.add_argument("--section", default="test", help="datalist section to score")
    parser.add_argument("--method", dest="methods", action="append", type=parse_method, default=[])
    parser.add_argument("--preset", default="compact", help="network preset of the --method rows without @PRESET")
    parser.add_argument("--ants", action="store_true", help="add the ANTs SyN row (needs antspyx)")
    parser.add_argument("--spatial_size", nargs=3, type=int, default=list(NETWORK_SPATIAL_SIZE))
    parser.add_argument("--pixdim", nargs=3, type=float, default=list(NETWORK_PIXDIM_MM))
    parser.add_argument("--max_pairs", type=int, default=0, help="score only the first N pairs (0: all)")
    parser.add_argument("--threads", type=int, default=None, help="torch and ITK threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output_dir", default="benchmark_accuracy")
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(arguments)
    args.command = "python -m scripts.benchmark accuracy " + shlex.join(arguments)
    if not args.methods and not args.ants:
        parser.error("nothing to score: give at least one --method or --ants")
    return args


def _timed(function: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    started = time.perf_counter()
    result = function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.perf_counter() - started


def network_field_function(spec: MethodSpec, preset: str, device: torch.device) -> FieldFunction:
    """Build the network of ``spec``, load its checkpoint (weights_only) and return its field function."""
    network = bundle_network(spec.architecture, preset)
    load_network_weights(network, spec.checkpoint, map_location="cpu")
    network = optimise_for_device(network, device).eval()

    def field(moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        with torch.inference_mode():
            output = network(moving.to(device), fixed.to(device))
        logits = output.get("anatomical_logits") or []
        return output["ddf"], (logits[0] if len(logits) else None)

    return field


def ants_field_function(spacing: Sequence[float], threads: int | None) -> FieldFunction:
    """ANTs SyN (:data:`ANTS_SYN_PARAMETERS`) as a field function; no segmentation."""
    ants_version()  # fail before any work when antspyx is missing

    def field(moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, None]:
        ddf = ants_syn_ddf(moving[0, 0].cpu().numpy(), fixed[0, 0].cpu().numpy(), spacing, threads=threads)
        return torch.from_numpy(ddf)[None], None

    return field


def _row(record: Mapping[str, Any], metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {**{c: str(record.get(c, "")) for c in RECORD_COLUMNS}, **{k: float(v) for k, v in metrics.items()}}


def score_pair(
    ddf: torch.Tensor,
    logits: torch.Tensor | None,
    sample: Mapping[str, Any],
    truth: tuple[np.ndarray, np.ndarray] | None,
    spacing: Sequence[float],
) -> dict[str, float]:
    """Evaluation metrics of one pair (:func:`scripts.evaluation.pair_metrics`) plus end-point errors (NaN without
    a true field)."""
    ddf = ddf.detach().float().cpu()
    moving_label, fixed_label = sample["moving_label"][None].cpu(), sample["fixed_label"][None].cpu()
    logits = None if logits is None else logits.detach().float().cpu()
    metrics = {k: float(v[0]) for k, v in pair_metrics(ddf, moving_label, fixed_label, logits, spacing).items()}
    if truth is None:
        metrics.update({name: math.nan for name in EPE_METRICS})
    else:
        true_on_grid, inside = truth
        affine = np.asarray(sample["fixed"].affine, dtype=np.float64)
        metrics.update(endpoint_error_metrics(ddf, affine, true_on_grid, inside, fixed_label, tuple(spacing)))
    return metrics


def _truth_of(record: Mapping[str, Any], sample: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    path = true_field_path(record)
    if not path.is_file():
        return None
    field, field_affine = load_true_displacement(path)
    grid_shape = tuple(int(s) for s in sample["fixed"].shape[1:])
    return true_displacement_on_grid(field, field_affine, grid_shape, np.asarray(sample["fixed"].affine, np.float64))


def run_accuracy(args: argparse.Namespace) -> dict[str, Any]:
    """Score every method on every pair of the section; write the files; return the report."""
    if args.threads:
        torch.set_num_threads(int(args.threads))
    device = torch.device(args.device)
    spacing = tuple(float(s) for s in args.pixdim)
    methods: dict[str, FieldFunction] = {}
    if args.ants:
        methods[ANTS_ROW] = ants_field_function(spacing, args.threads)
    for spec in args.methods:
        if spec.name in methods or spec.name == INITIAL_ROW:
            raise ValueError(f"--method name {spec.name!r} is used twice or reserved")
        methods[spec.name] = network_field_function(spec, spec.preset or args.preset, device)
    records = pair_datalist(args.dataset_dir, args.datalist, args.section)
    if args.max_pairs:
        records = records[: args.max_pairs]
    preprocessing = registration_preprocessing(args.spatial_size, spacing, with_labels=True)
    rows: dict[str, list[dict[str, Any]]] = {INITIAL_ROW: [], **{name: [] for name in methods}}
    warmed_up: set[str] = set()
    for record in tqdm(records, desc="accuracy", unit="pair"):
        sample = preprocessing(dict(record))
        truth = _truth_of(record, sample)
        moving, fixed = sample["moving"][None].as_tensor(), sample["fixed"][None].as_tensor()
        zero = torch.zeros((1, 3, *moving.shape[2:]))
        rows[INITIAL_ROW].append(_row(record, score_pair(zero, None, sample, truth, spacing)))
        for name, field in methods.items():
            if name not in warmed_up and name != ANTS_ROW:
                field(moving, fixed)  # first call pays for allocations and kernel selection: not timed
                warmed_up.add(name)
            (ddf, logits), seconds = _timed(lambda: field(moving, fixed), device)
            metrics = score_pair(ddf, logits, sample, truth, spacing)
            rows[name].append(_row(record, {**metrics, "seconds_per_pair": seconds}))
    return _write_report(args, rows, spacing, methods)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _write_report(
    args: argparse.Namespace, rows: Mapping[str, list[dict[str, Any]]], spacing: Sequence[float], methods: Mapping
) -> dict[str, Any]:
    output = Path(args.output_dir)
    files = {}
    for name, method_rows in rows.items():
        files[name] = f"per_pair_{_slug(name)}.csv"
        write_csv_atomic(output / files[name], method_rows, RECORD_COLUMNS + ACCURACY_METRICS)
    description = protocol(args.spatial_size, spacing)
    description.update(
        {
            "endpoint_error": (
                "|A[:3,:3] u(x) - d_true(A x)| in mm on the network grid, true field sampled trilinearly; overall: "
                f"voxels inside the true field's grid; heart: fixed label > 0; boundary: voxel centres within "
                f"{BOUNDARY_MM:g} mm of a voxel with another fixed label; heart in-plane / through-plane: the error "
                "split along the grid's slice axes and its slice-normal axis (scripts/benchmark/endpoint_error.py)"
            ),
            "seconds_per_pair": (
                "wall time of one pair's registration (networks: batch-1 forward in inference mode after one untimed "
                "warm-up; ANTs: ants.registration + composing the transforms)"
            ),
        }
    )
    report = {
        "command": args.command,
        "protocol": description,
        "threads": {"torch": torch.get_num_threads(), "itk": args.threads},
        "methods": {
            **{
                spec.name: {
                    "architecture": spec.architecture,
                    "preset": spec.preset or args.preset,
                    "checkpoint": spec.checkpoint,
                }
                for spec in args.methods
            },
            **({ANTS_ROW: {"antspyx": ants_version(), "parameters": dict(ANTS_SYN_PARAMETERS)}} if args.ants else {}),
        },
        "files": files,
        "results": {name: summarise(method_rows, ACCURACY_METRICS) for name, method_rows in rows.items()},
        "paired": compare_methods(rows, skip=(INITIAL_ROW,)),
    }
    write_json_atomic(output / "accuracy_summary.json", report)
    table = accuracy_table(report)
    if report["paired"]:
        table += "\nPaired per patient (each patient's two directions averaged; A is the method listed first):\n\n"
        table += paired_table(report["paired"])
    write_text_atomically(output / "accuracy_table.md", table)
    print(table)
    print(f"wrote {output}")
    return report


def _cell(statistics: Mapping[str, Any], name: str, scale: float = 1.0, digits: int = 2, spread: bool = False) -> str:
    value = statistics.get(name, {})
    if value.get("mean") is None:
        return "-"
    text = f"{value['mean'] * scale:.{digits}f}"
    return text + (f" ± {value['std'] * scale:.{digits}f}" if spread else "")


def accuracy_table(report: Mapping[str, Any]) -> str:
    """Markdown table of a report: Dice in %, HD95 and EPE in mm, mean (± std over patients) of the whole split."""
    header = (
        "| method | Dice avg | RV | LVM | LVBP | HD95 mm | SDlogJ (+3) | std log J | % J<=0 | EPE all mm "
        "| EPE heart mm (in-plane / through) | EPE boundary mm | memory seg Dice | s/pair |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for name, result in report["results"].items():
        s = result["all"]
        cells = [
            name,
            _cell(s, "dice_mean", 100, spread=True),
            _cell(s, "dice_rv", 100),
            _cell(s, "dice_lvm", 100),
            _cell(s, "dice_lvbp", 100),
            _cell(s, "hd95_mean", spread=True),
            _cell(s, "sdlogj_plus3", digits=3),
            _cell(s, "std_log_j_positive", digits=3),
            _cell(s, "folding_percent"),
            _cell(s, "epe_overall_mm"),
            f"{_cell(s, 'epe_heart_mm')} ({_cell(s, 'epe_heart_inplane_mm')} / "
            f"{_cell(s, 'epe_heart_throughplane_mm')})",
            _cell(s, "epe_boundary_mm"),
            _cell(s, "seg_dice_mean", 100),
            _cell(s, "seconds_per_pair", digits=3),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; a missing or unreadable input (checkpoint, data, antspyx) ends with its message and exit 2."""
    args = parse_args(argv)
    return run_mode("accuracy", lambda: run_accuracy(args))
