"""``python -m scripts.benchmark robustness``: how much of each method's gain survives a change of scanner or patient.

For every perturbation of :data:`scripts.benchmark.perturbations.PERTURBATIONS` (and "unperturbed"), each test
patient's ED and ES images and label maps are read as stored, perturbed (:mod:`scripts.benchmark.perturbations`),
and written as a one-patient data set in the ACDC layout in a temporary folder (``frame01`` = ED, ``frame02`` =
ES), so every method meets the change through the bundle's real preprocessing
(``scripts.data.registration_preprocessing``). Both directed pairs of the patient are then registered by:

- every network row, ``--method "NAME=ARCHITECTURE[@PRESET]:CHECKPOINT"`` (as in the accuracy mode), on every
  test patient, and with ``--refine_steps N`` also a row ``NAME+refineN``: the same network's field refined on each
  pair by inference's instance optimisation (:func:`scripts.inference.refinement.refine_displacement`, the
  similarity of ``--refine_similarity``, the coarse-to-fine levels of ``--refine_levels``), timed with the network;
- the classical tools (``--classical``: ANTs SyN, elastix affine + B-spline, SimpleITK diffeomorphic demons,
  :mod:`scripts.benchmark.classical`) on a fixed, evenly spaced subset of ``--classical_patients`` test patients
  (they take minutes per pair on a CPU), the same subset for every perturbation, stated in the output;

and scored by the accuracy mode's code (:func:`scripts.benchmark.accuracy.score_pair`: Dice, HD95, folding and the
memory's segmentation Dice on the 128 x 128 x 16 grid), with the identity ("Initial") on the same pairs as the
"before". The ratios the robustness issue targets are computed per perturbation: each network's Dice gain over the
identity as a fraction of its unperturbed gain, whether it is ahead of every classical row (on the classical
subset) and its speed ratio against the fastest classical row of the same run.

Outputs in ``--output_dir`` (rewritten atomically after each perturbation): ``robustness_summary.json``,
``robustness_per_pair.csv`` and ``robustness_table.md`` (also printed).
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from tqdm import tqdm

from scripts.atomic_files import write_bytes_atomically, write_text_atomically
from scripts.benchmark.accuracy import FieldFunction, _timed, network_field_function, parse_method, score_pair
from scripts.benchmark.classical import CLASSICAL_METHODS, ClassicalMethod
from scripts.benchmark.command_line import run_mode
from scripts.benchmark.perturbations import PERTURBATIONS, Frame, perturbation_rng
from scripts.data import build_pair_datalist, registration_preprocessing
from scripts.engine.inputs import pair_datalist
from scripts.evaluation import (
    INITIAL_ROW,
    RECORD_COLUMNS,
    REGISTRATION_METRICS,
    SEGMENTATION_METRICS,
    protocol,
    summarise,
    write_csv_atomic,
    write_json_atomic,
)
from scripts.inference.refinement import (
    DEFAULT_LEVELS,
    DEFAULT_SIMILARITY,
    SIMILARITIES,
    level_schedule,
    refine_displacement,
)
from scripts.labels import NETWORK_PIXDIM_MM, NETWORK_SPATIAL_SIZE

__all__ = [
    "ROBUSTNESS_METRICS",
    "classical_subset",
    "main",
    "network_rows",
    "overall_speed_ratios",
    "perturbed_samples",
    "refined_field_function",
    "refined_row_name",
    "robustness_ratios",
    "robustness_tables",
    "run_robustness",
    "write_acdc_patient",
]

ROBUSTNESS_METRICS = REGISTRATION_METRICS + SEGMENTATION_METRICS + ("seconds_per_pair",)
PER_PAIR_COLUMNS = ("perturbation", "method") + RECORD_COLUMNS + ROBUSTNESS_METRICS
# The targets: every perturbation keeps >= 70 % of the unperturbed Dice gain; >= 10x faster than classical.
GAIN_FRACTION_GOAL = 0.70
SPEED_RATIO_GOAL = 10.0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.benchmark robustness", description=__doc__)
    parser.add_argument("--dataset_dir", required=True, help="ACDC-layout folder (phantom or ACDC database/)")
    parser.add_argument("--datalist", default="", help="datalist JSON (default: the reference split)")
    parser.add_argument("--section", default="test", help="datalist section to perturb and score")
    parser.add_argument("--method", dest="methods", action="append", type=parse_method, default=[])
    parser.add_argument("--preset", default="compact", help="network preset of the --method rows without @PRESET")
    parser.add_argument(
        "--classical",
        nargs="*",
        default=list(CLASSICAL_METHODS),
        choices=list(CLASSICAL_METHODS),
        help="classical rows (default: all; give the flag alone for none)",
    )
    parser.add_argument(
        "--classical_patients", type=int, default=10, help="evenly spaced test patients the classical rows run on"
    )
    parser.add_argument(
        "--perturbations",
        nargs="+",
        default=list(PERTURBATIONS),
        choices=list(PERTURBATIONS),
        help="perturbations to run ('unperturbed' always runs: the gain fractions need it)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random perturbations (noise, bias field)")
    parser.add_argument("--max_patients", type=int, default=0, help="only the first N patients (0: all)")
    parser.add_argument("--spatial_size", nargs=3, type=int, default=list(NETWORK_SPATIAL_SIZE))
    parser.add_argument("--pixdim", nargs=3, type=float, default=list(NETWORK_PIXDIM_MM))
    parser.add_argument("--threads", type=int, default=None, help="torch and ITK threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--refine_steps", type=int, default=0, help="also score each network refined with N steps (row NAME+refineN)"
    )
    parser.add_argument("--refine_similarity", default=DEFAULT_SIMILARITY, choices=list(SIMILARITIES))
    parser.add_argument(
        "--refine_levels",
        nargs="+",
        type=int,
        default=list(DEFAULT_LEVELS),
        help="in-plane factors of the refinement's levels, coarse to fine (default: inference's)",
    )
    parser.add_argument("--keep_perturbed_data", default="", help="write the perturbed data sets here (kept)")
    parser.add_argument("--output_dir", default="benchmark_robustness")
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(arguments)
    args.command = "python -m scripts.benchmark robustness " + shlex.join(arguments)
    if not args.methods and not args.classical:
        parser.error("nothing to score: give at least one --method or a --classical tool")
    if args.classical_patients < 1:
        parser.error("--classical_patients must be at least 1")
    if args.refine_steps < 0:
        parser.error("--refine_steps must be at least 0")
    try:
        level_schedule(args.refine_steps, args.refine_levels)  # the refinement's own check of its levels
    except ValueError as error:
        parser.error(f"--refine_levels {error}")
    args.perturbations = ["unperturbed"] + [name for name in args.perturbations if name != "unperturbed"]
    return args


# ---------------------------------------------------------------------------------------------------------- data


def _read_frame(image_path: str, label_path: str, frame_index: int | None) -> Frame:
    """One stored phase (a 3D frame file, or index ``frame_index`` of a 4D cine) and its label map."""
    image_file, label_file = nib.load(image_path), nib.load(label_path)
    image = np.asarray(image_file.dataobj, dtype=np.float32)
    if image.ndim == 4:
        image = image[..., 0 if frame_index is None else int(frame_index)]
    label = np.rint(np.asarray(label_file.dataobj, dtype=np.float32)).astype(np.uint8)
    return Frame(image.reshape(image.shape[:3]), label.reshape(label.shape[:3]), np.asarray(image_file.affine))


def _patient_frames(records: Sequence[Mapping[str, Any]]) -> tuple[Frame, Frame]:
    """(ED, ES) frames of one patient from its pair records (either direction will do)."""
    record = next((r for r in records if r.get("direction") != "ES_to_ED"), records[0])
    if not record.get("moving_label") or not record.get("fixed_label"):
        raise ValueError(f"{record['moving']}: the robustness benchmark needs the label maps of both frames")
    moving = _read_frame(record["moving"], record["moving_label"], record.get("moving_frame"))
    fixed = _read_frame(record["fixed"], record["fixed_label"], record.get("fixed_frame"))
    return (fixed, moving) if record.get("direction") == "ES_to_ED" else (moving, fixed)


def _nifti_bytes(array: np.ndarray, affine: np.ndarray) -> bytes:
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    return image.to_bytes()


def write_acdc_patient(root: Path, patient: str, group: str, ed: Frame, es: Frame) -> Path:
    """Write one patient's two frames as ``root/testing/<patient>/`` in the ACDC layout (frame01 = ED, 02 = ES)."""
    folder = root / "testing" / patient
    for number, frame in (("01", ed), ("02", es)):
        write_bytes_atomically(folder / f"{patient}_frame{number}.nii", _nifti_bytes(frame.image, frame.affine))
        write_bytes_atomically(folder / f"{patient}_frame{number}_gt.nii", _nifti_bytes(frame.label, frame.affine))
    info = "ED: 1\nES: 2\n" + (f"Group: {group}\n" if group else "") + "NbFrame: 2\n"
    write_text_atomically(folder / "Info.cfg", info)
    return folder


def perturbed_samples(
    records: Sequence[Mapping[str, Any]],
    perturbation: str,
    seed: int,
    preprocessing: Callable[[dict], dict],
    keep_dir: Path | None = None,
) -> tuple[list[dict], list[dict]]:
    """One patient's directed pairs under one perturbation, preprocessed as every method meets them.

    The patient's stored ED and ES frames (from its pair ``records``) are perturbed (:data:`PERTURBATIONS`, random
    draws from :func:`perturbation_rng` of ``seed``), written as a one-patient ACDC data set (in ``keep_dir``, kept,
    or a temporary folder, deleted) and read back as pair records through ``preprocessing``.

    Returns:
        ``(pair records, preprocessed samples)``, one of each per direction.
    """
    patient = str(records[0]["patient"])
    ed, es = PERTURBATIONS[perturbation].apply(_patient_frames(records), perturbation_rng(seed, perturbation, patient))
    with tempfile.TemporaryDirectory(prefix="robustness_") as scratch:
        root = Path(scratch) if keep_dir is None else Path(keep_dir)
        write_acdc_patient(root, patient, str(records[0].get("group", "")), ed, es)
        pairs = build_pair_datalist(root / "testing" / patient)
        samples = [preprocessing(dict(record)) for record in pairs]
    return pairs, samples


def classical_subset(patients: Sequence[str], count: int) -> list[str]:
    """``count`` evenly spaced patients of ``patients`` (all when there are fewer): 101, 106, ..., 146 of 101-150."""
    if count >= len(patients):
        return list(patients)
    return [patients[(index * len(patients)) // count] for index in range(count)]


# ------------------------------------------------------------------------------------------------------ methods


def classical_field_function(method: ClassicalMethod, spacing: Sequence[float], threads: int | None) -> FieldFunction:
    """A classical tool as a field function on network tensors (1, 1, H, W, D); no segmentation."""
    method.version()  # fail before any work when its package is missing

    def field(moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, None]:
        ddf = method.ddf(moving[0, 0].cpu().numpy(), fixed[0, 0].cpu().numpy(), spacing, threads)
        return torch.from_numpy(ddf)[None], None

    return field


def refined_row_name(network: str, steps: int) -> str:
    """The row of ``network`` refined with ``steps`` steps: ``NAME+refineN``."""
    return f"{network}+refine{steps}"


def refined_field_function(
    field: FieldFunction, steps: int, similarity: str, levels: Sequence[int] = DEFAULT_LEVELS
) -> FieldFunction:
    """``field`` followed by inference's instance optimisation of its displacement on the pair (the memory's
    segmentation unchanged), with inference's default weights and learning rate, over ``levels``."""

    def refined(moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        ddf, logits = field(moving, fixed)
        ddf, _ = refine_displacement(
            moving.to(ddf.device), fixed.to(ddf.device), ddf, steps, similarity, levels=tuple(levels)
        )
        return ddf, logits

    return refined


def network_rows(args: argparse.Namespace) -> list[str]:
    """The network rows of the run: each ``--method`` and, with ``--refine_steps``, its refined row after it."""
    rows = []
    for spec in args.methods:
        rows.append(spec.name)
        if args.refine_steps > 0:
            rows.append(refined_row_name(spec.name, args.refine_steps))
    return rows


def _pair_row(perturbation: str, method: str, record: Mapping[str, Any], metrics: Mapping[str, float]) -> dict:
    return {
        "perturbation": perturbation,
        "method": method,
        **{column: str(record.get(column, "")) for column in RECORD_COLUMNS},
        **{name: float(metrics.get(name, math.nan)) for name in ROBUSTNESS_METRICS},
    }


def run_robustness(args: argparse.Namespace) -> dict[str, Any]:
    """Perturb, register and score every pair; write the files after each perturbation; return the report."""
    if args.threads:
        torch.set_num_threads(int(args.threads))
    device = torch.device(args.device)
    spacing = tuple(float(s) for s in args.pixdim)
    classical = {CLASSICAL_METHODS[key].row: CLASSICAL_METHODS[key] for key in args.classical}
    methods: dict[str, FieldFunction] = {
        row: classical_field_function(method, spacing, args.threads) for row, method in classical.items()
    }
    for spec in args.methods:
        if spec.name in methods or spec.name == INITIAL_ROW:
            raise ValueError(f"--method name {spec.name!r} is used twice or reserved")
        methods[spec.name] = network_field_function(spec, spec.preset or args.preset, device)
        if args.refine_steps > 0:
            refined = refined_field_function(
                methods[spec.name], args.refine_steps, args.refine_similarity, args.refine_levels
            )
            methods[refined_row_name(spec.name, args.refine_steps)] = refined
    by_patient: dict[str, list[dict]] = {}
    for record in pair_datalist(args.dataset_dir, args.datalist, args.section):
        by_patient.setdefault(str(record["patient"]), []).append(record)
    patients = sorted(by_patient)[: args.max_patients or None]
    subset = classical_subset(patients, args.classical_patients) if classical else []
    preprocessing = registration_preprocessing(args.spatial_size, spacing, with_labels=True)
    rows: list[dict[str, Any]] = []
    warmed_up: set[str] = set()
    report: dict[str, Any] = {}
    for name in args.perturbations:
        for patient in tqdm(patients, desc=name, unit="patient"):
            keep = Path(args.keep_perturbed_data) / name if args.keep_perturbed_data else None
            pairs, samples = perturbed_samples(by_patient[patient], name, args.seed, preprocessing, keep)
            for record, sample in zip(pairs, samples):
                moving, fixed = sample["moving"][None].as_tensor(), sample["fixed"][None].as_tensor()
                identity = torch.zeros((1, 3, *moving.shape[2:]))
                rows.append(_pair_row(name, INITIAL_ROW, record, score_pair(identity, None, sample, None, spacing)))
                for method, field in methods.items():
                    if method in classical and patient not in subset:
                        continue
                    if method not in warmed_up and method not in classical:
                        field(moving, fixed)  # first call pays for allocations and kernel selection: not timed
                        warmed_up.add(method)
                    (ddf, logits), seconds = _timed(lambda: field(moving, fixed), device)
                    metrics = score_pair(ddf, logits, sample, None, spacing)
                    rows.append(_pair_row(name, method, record, {**metrics, "seconds_per_pair": seconds}))
        report = _write_report(args, rows, patients, subset, classical, spacing)
    print(robustness_tables(report))
    print(f"wrote {args.output_dir}")
    return report


# ------------------------------------------------------------------------------------------------------ results


def _mean(statistics: Mapping[str, Any], metric: str) -> float | None:
    return statistics.get(metric, {}).get("mean")


def _summaries(rows: Sequence[Mapping[str, Any]], subset: Sequence[str]) -> dict[str, Any]:
    """``{method: {"patients", "before", "after", "on_classical_subset"}}`` of one perturbation's rows.

    "before" is the identity on the method's own pairs, "after" the method itself (both :func:`summarise`), and
    "on_classical_subset" the method on the classical rows' patients only (the fair comparison with them).
    """
    initial = [r for r in rows if r["method"] == INITIAL_ROW]
    summaries = {}
    for method in dict.fromkeys(r["method"] for r in rows if r["method"] != INITIAL_ROW):
        own = [r for r in rows if r["method"] == method]
        patients = sorted({r["patient"] for r in own})
        summaries[method] = {
            "patients": patients,
            "before": summarise([r for r in initial if r["patient"] in patients], REGISTRATION_METRICS),
            "after": summarise(own, ROBUSTNESS_METRICS),
            "on_classical_subset": summarise([r for r in own if r["patient"] in subset], ROBUSTNESS_METRICS),
        }
    return summaries


def robustness_ratios(results: Mapping[str, Mapping[str, Any]], networks: Sequence[str], classical) -> dict[str, Any]:
    """The issue's targets, per perturbation and network row.

    Args:
        results: ``{perturbation: {method: _summaries(...)}}``; "unperturbed" gives the reference gain.
        networks: the network rows.
        classical: the classical rows.

    Returns:
        ``{perturbation: {network: {...}}}`` with ``dice_gain`` (after - before, all the network's pairs),
        ``gain_fraction_of_unperturbed``, ``above_identity``, ``seconds_per_pair`` and, with classical rows,
        ``network_dice_on_classical_subset``, ``best_classical``, ``ahead_of_every_classical_row``,
        ``fastest_classical`` and ``speed_ratio_to_fastest_classical`` (fastest classical s/pair / network s/pair).
    """
    reference = {network: _gain(results.get("unperturbed", {}).get(network)) for network in networks}
    ratios: dict[str, Any] = {}
    for perturbation, methods in results.items():
        ratios[perturbation] = {}
        classical_rows = {m: s for m, s in methods.items() if m in classical}
        for network in (n for n in networks if n in methods):
            gain, unperturbed = _gain(methods[network]), reference[network]
            entry: dict[str, Any] = {
                "dice_gain": gain,
                "gain_fraction_of_unperturbed": _ratio(gain, unperturbed),
                "above_identity": None if gain is None else gain > 0,
                "seconds_per_pair": _mean(methods[network]["after"]["all"], "seconds_per_pair"),
            }
            if classical_rows:
                dice = {m: _mean(s["after"]["all"], "dice_mean") for m, s in classical_rows.items()}
                seconds = {m: _mean(s["after"]["all"], "seconds_per_pair") for m, s in classical_rows.items()}
                network_dice = _mean(methods[network]["on_classical_subset"]["all"], "dice_mean")
                best = max(dice, key=lambda m: -math.inf if dice[m] is None else dice[m])
                fastest = min(seconds, key=lambda m: math.inf if seconds[m] is None else seconds[m])
                entry.update(
                    {
                        "network_dice_on_classical_subset": network_dice,
                        "best_classical": {"method": best, "dice_mean": dice[best]},
                        "ahead_of_every_classical_row": (
                            None if network_dice is None else all(d is None or network_dice > d for d in dice.values())
                        ),
                        "fastest_classical": {"method": fastest, "seconds_per_pair": seconds[fastest]},
                        "speed_ratio_to_fastest_classical": _ratio(seconds[fastest], entry["seconds_per_pair"]),
                    }
                )
            ratios[perturbation][network] = entry
    return ratios


def overall_speed_ratios(
    rows: Sequence[Mapping[str, Any]], networks: Sequence[str], classical: Sequence[str]
) -> dict[str, Any]:
    """Mean s/pair of every row over all perturbations of the run, and per network the ratio of the fastest
    classical row's to the network's (``{network: {"seconds_per_pair", "fastest_classical", "speed_ratio"}}``)."""

    def mean_seconds(method: str) -> float | None:
        values = [r["seconds_per_pair"] for r in rows if r["method"] == method and math.isfinite(r["seconds_per_pair"])]
        return float(np.mean(values)) if values else None

    seconds = {m: mean_seconds(m) for m in classical}
    timed = {m: s for m, s in seconds.items() if s is not None}
    fastest = min(timed, key=lambda m: timed[m]) if timed else None
    out = {}
    for network in networks:
        own = mean_seconds(network)
        out[network] = {
            "seconds_per_pair": own,
            "fastest_classical": None if fastest is None else {"method": fastest, "seconds_per_pair": timed[fastest]},
            "speed_ratio": None if fastest is None else _ratio(timed[fastest], own),
        }
    return out


def _gain(summaries: Mapping[str, Any] | None) -> float | None:
    if summaries is None:
        return None
    after, before = _mean(summaries["after"]["all"], "dice_mean"), _mean(summaries["before"]["all"], "dice_mean")
    return None if after is None or before is None else after - before


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def _write_report(
    args: argparse.Namespace,
    rows: Sequence[Mapping[str, Any]],
    patients: Sequence[str],
    subset: Sequence[str],
    classical: Mapping[str, ClassicalMethod],
    spacing: Sequence[float],
) -> dict[str, Any]:
    """Summaries and ratios of the rows so far; the three output files, each written atomically."""
    output = Path(args.output_dir)
    done = list(dict.fromkeys(r["perturbation"] for r in rows))
    results = {name: _summaries([r for r in rows if r["perturbation"] == name], subset) for name in done}
    networks = network_rows(args)
    description = protocol(args.spatial_size, spacing)
    description.update(
        {
            "perturbations": (
                "applied to the stored NIfTI files of each test patient (geometry identically to both frames and "
                "their labels, intensities to the images), written as a one-patient ACDC data set and read through "
                "the bundle's preprocessing (scripts/benchmark/perturbations.py)"
            ),
            "before_after": "before: the identity (ddf = 0) on the same pairs as the method; after: the method",
            "classical_subset": (
                f"classical rows on {len(subset)} of the {len(patients)} test patients, evenly spaced, both "
                f"directions, the same for every perturbation: {', '.join(subset)}"
            ),
            "gain_fraction_of_unperturbed": (
                "(Dice after - Dice before) under the perturbation / the same on the unperturbed test split, per "
                f"network, all its pairs; goal >= {GAIN_FRACTION_GOAL:g}"
            ),
            "ahead_of_every_classical_row": "the network's mean Dice on the classical subset > every classical row's",
            "speed_ratio_to_fastest_classical": (
                f"mean s/pair of the fastest classical row / the network's, same perturbation; goal >= "
                f"{SPEED_RATIO_GOAL:g}"
            ),
            "seconds_per_pair": (
                "wall time of one pair's registration (networks: batch-1 forward in inference mode after one "
                "untimed warm-up, refined rows: forward and refinement; classical tools: their registration and "
                "the field's conversion)"
            ),
        }
    )
    report = {
        "command": args.command,
        "protocol": description,
        "threads": {"torch": torch.get_num_threads(), "itk": args.threads},
        "seed": args.seed,
        "perturbations": {name: PERTURBATIONS[name].description for name in args.perturbations},
        "perturbations_done": done,
        "patients": list(patients),
        "classical_patients": list(subset),
        "methods": {
            **{
                spec.name: {
                    "architecture": spec.architecture,
                    "preset": spec.preset or args.preset,
                    "checkpoint": spec.checkpoint,
                }
                for spec in args.methods
            },
            **{
                refined_row_name(spec.name, args.refine_steps): {
                    "network": spec.name,
                    "refine_steps": args.refine_steps,
                    "refine_similarity": args.refine_similarity,
                    "refine_levels": list(args.refine_levels),
                }
                for spec in args.methods
                if args.refine_steps > 0
            },
            **{
                row: {"version": method.version(), "parameters": _plain(method.parameters)}
                for row, method in classical.items()
            },
        },
        "files": {"per_pair": "robustness_per_pair.csv", "table": "robustness_table.md"},
        "results": results,
        "ratios": robustness_ratios(results, networks, set(classical)),
        "speed_over_the_run": overall_speed_ratios(rows, networks, list(classical)),
    }
    write_csv_atomic(output / "robustness_per_pair.csv", rows, PER_PAIR_COLUMNS)
    write_json_atomic(output / "robustness_summary.json", report)
    write_text_atomically(output / "robustness_table.md", robustness_tables(report))
    return report


def _plain(value: Any) -> Any:
    """Parameters as JSON values (tuples as lists, nested mappings as dicts)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _number(value: float | None, scale: float = 1.0, digits: int = 2) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "**no**")


def robustness_tables(report: Mapping[str, Any]) -> str:
    """Markdown: the results table (one row per perturbation and method) and the targets table (per network)."""
    lines = [
        "| perturbation | method | patients | Dice before | Dice after | HD95 mm | % J<=0 | memory seg Dice | s/pair |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for perturbation, methods in report["results"].items():
        for method, summary in methods.items():
            before, after = summary["before"]["all"], summary["after"]["all"]
            cells = [
                perturbation,
                method,
                str(after["num_patients"]),
                _number(_mean(before, "dice_mean"), 100),
                _number(_mean(after, "dice_mean"), 100),
                _number(_mean(after, "hd95_mean")),
                _number(_mean(after, "folding_percent")),
                _number(_mean(after, "seg_dice_mean"), 100),
                _number(_mean(after, "seconds_per_pair"), digits=3),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    classical = [m for m in report["methods"] if "version" in report["methods"][m]]
    subset = report["classical_patients"]
    lines += [
        "",
        (
            f"Classical rows ({', '.join(classical)}): {len(subset)} of the {len(report['patients'])} patients "
            f"({', '.join(subset)}), both directions; networks: all of them."
            if classical
            else f"No classical rows; networks on all {len(report['patients'])} patients."
        ),
        "",
        f"| perturbation | network | Dice gain (pts) | gain / unperturbed gain (goal >= {GAIN_FRACTION_GOAL:g}) "
        "| above identity | network Dice on classical subset | best classical Dice | ahead of every classical row "
        f"| speed ratio to fastest classical (goal >= {SPEED_RATIO_GOAL:g}) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for perturbation, networks in report["ratios"].items():
        for network, entry in networks.items():
            best = entry.get("best_classical", {})
            cells = [
                perturbation,
                network,
                _number(entry["dice_gain"], 100),
                _number(entry["gain_fraction_of_unperturbed"]),
                _yes_no(entry["above_identity"]),
                _number(entry.get("network_dice_on_classical_subset"), 100),
                f"{_number(best.get('dice_mean'), 100)} ({best['method']})" if best else "-",
                _yes_no(entry.get("ahead_of_every_classical_row")),
                _number(entry.get("speed_ratio_to_fastest_classical"), digits=1),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    for network, speed in report.get("speed_over_the_run", {}).items():
        if speed["fastest_classical"] is not None:
            fastest = speed["fastest_classical"]
            lines += [
                "",
                f"Over the whole run: {network} {_number(speed['seconds_per_pair'], digits=3)} s/pair, the fastest "
                f"classical row ({fastest['method']}) {_number(fastest['seconds_per_pair'], digits=3)} s/pair: "
                f"{_number(speed['speed_ratio'], digits=1)}x (goal >= {SPEED_RATIO_GOAL:g}).",
            ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; a missing or unreadable input (checkpoint, data, optional package) ends with its message and
    exit 2."""
    args = parse_args(argv)
    return run_mode("robustness", lambda: run_robustness(args))
