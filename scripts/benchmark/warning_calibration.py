"""``python -m scripts.benchmark warning``: how well the out-of-distribution warning tells failures from normal pairs.

For given weights, the network registers the unperturbed test pairs and the same pairs under the robustness
benchmark's perturbations (:func:`scripts.benchmark.robustness.perturbed_samples`, the same perturbed data and
preprocessing), in both directions and, for the statistics that need it, with the images swapped. Per pair it records
every label-free statistic the warning can use (:func:`scripts.inference.ood_warning.warning_statistics`,
:data:`~scripts.inference.ood_warning.CANDIDATE_STATISTICS`), the warnings of the rule in the code
(:data:`~scripts.inference.ood_warning.WARNING_THRESHOLDS`) and the true Dice gain of the network over no registration
(the accuracy mode's :func:`scripts.benchmark.accuracy.score_pair`).

A **low-gain pair** is a perturbed pair whose Dice gain is below half the usual gain, the usual gain being the mean
gain of the unperturbed pairs of the same run. The report gives the detection rate (low-gain pairs warned about) and
the false-alarm rate (unperturbed pairs warned about) of the rule in the code and, per statistic alone, the threshold
that keeps false alarms on the unperturbed pairs at or below ``--false_alarm_rate`` and its detection rate. This is how
the thresholds are recalibrated whenever the weights change.

Outputs in ``--output_dir`` (each written atomically, after every perturbation): ``warning_per_pair.csv`` and
``warning_summary.json``.
"""

from __future__ import annotations

import argparse
import csv
import math
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from scripts.benchmark.accuracy import MethodSpec, network_field_function, score_pair
from scripts.benchmark.command_line import run_mode
from scripts.benchmark.perturbations import PERTURBATIONS
from scripts.benchmark.robustness import perturbed_samples
from scripts.data import registration_preprocessing
from scripts.engine.inputs import pair_datalist
from scripts.evaluation import write_csv_atomic, write_json_atomic
from scripts.inference.ood_warning import (
    CANDIDATE_STATISTICS,
    WARNING_SIMILARITY,
    WARNING_THRESHOLDS,
    WarningThresholds,
    ood_warnings,
    warning_statistics,
)
from scripts.labels import NETWORK_PIXDIM_MM, NETWORK_SPATIAL_SIZE

__all__ = ["calibration_report", "main", "run_warning_calibration", "threshold_at_false_alarm_rate"]

UNPERTURBED = "unperturbed"
PAIR_COLUMNS = ("perturbation", "patient", "direction", "dice_identity", "dice_network", "dice_gain", "warned") + tuple(
    CANDIDATE_STATISTICS
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.benchmark warning", description=__doc__)
    parser.add_argument("--dataset_dir", default="", help="ACDC-layout folder (phantom or ACDC database/)")
    parser.add_argument("--datalist", default="", help="datalist JSON (default: the reference split)")
    parser.add_argument("--section", default="test", help="datalist section to perturb and score")
    parser.add_argument("--checkpoint", default="models/model.pt", help="the weights to calibrate for")
    parser.add_argument("--architecture", default="memwarp")
    parser.add_argument("--preset", default="compact")
    parser.add_argument(
        "--perturbations",
        nargs="+",
        default=[name for name in PERTURBATIONS if name != UNPERTURBED],
        choices=list(PERTURBATIONS),
        help="perturbations to run (the unperturbed pairs always run: they define the usual gain and false alarms)",
    )
    parser.add_argument("--max_patients", type=int, default=4, help="perturbed pairs of the first N patients (0: all)")
    parser.add_argument(
        "--reference_patients",
        type=int,
        default=0,
        help="unperturbed pairs of the first M patients (0: as many as --max_patients); more give firmer thresholds",
    )
    parser.add_argument(
        "--false_alarm_rate", type=float, default=0.05, help="allowed share of warned unperturbed pairs"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random perturbations (noise, bias field)")
    parser.add_argument("--spatial_size", nargs=3, type=int, default=list(NETWORK_SPATIAL_SIZE))
    parser.add_argument("--pixdim", nargs=3, type=float, default=list(NETWORK_PIXDIM_MM))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--from_csv",
        default="",
        help="judge the rule in the code on the pairs of an earlier run's warning_per_pair.csv (no network run)",
    )
    parser.add_argument("--output_dir", default="benchmark_warning")
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(arguments)
    args.command = "python -m scripts.benchmark warning " + shlex.join(arguments)
    if args.max_patients < 0 or args.reference_patients < 0:
        parser.error("--max_patients and --reference_patients must be at least 0")
    if not args.dataset_dir and not args.from_csv:
        parser.error("give --dataset_dir (or --from_csv to judge an earlier run's pairs)")
    if not 0.0 < args.false_alarm_rate < 1.0:
        parser.error("--false_alarm_rate must lie in (0, 1)")
    args.perturbations = [name for name in dict.fromkeys(args.perturbations) if name != UNPERTURBED]
    return args


# ------------------------------------------------------------------------------------------------------ measuring


def run_warning_calibration(args: argparse.Namespace) -> dict[str, Any]:
    """Register and measure every pair, write the per-pair CSV and the summary JSON, return the summary."""
    if args.from_csv:
        return _judge_earlier_run(args)
    if args.threads:
        torch.set_num_threads(int(args.threads))
    device = torch.device(args.device)
    spacing = tuple(float(s) for s in args.pixdim)
    spec = MethodSpec("network", args.architecture, args.checkpoint, args.preset)
    field = network_field_function(spec, args.preset, device)
    by_patient: dict[str, list[dict]] = {}
    for record in pair_datalist(args.dataset_dir, args.datalist, args.section):
        by_patient.setdefault(str(record["patient"]), []).append(record)
    patients = sorted(by_patient)
    perturbed_patients = patients[: args.max_patients or None]
    reference_patients = patients[: args.reference_patients or args.max_patients or None]
    preprocessing = registration_preprocessing(args.spatial_size, spacing, with_labels=True)
    rows: list[dict[str, Any]] = []
    report: dict[str, Any] = {}
    for name in [UNPERTURBED] + args.perturbations:
        patients_of_set = reference_patients if name == UNPERTURBED else perturbed_patients
        for patient in tqdm(patients_of_set, desc=name, unit="patient"):
            pairs, samples = perturbed_samples(by_patient[patient], name, args.seed, preprocessing)
            for record, sample in zip(pairs, samples):
                rows.append(_pair_row(name, record, sample, field, spacing))
        report = calibration_report(rows, args.false_alarm_rate)
        report.update(
            {
                "command": args.command,
                "checkpoint": args.checkpoint,
                "architecture": args.architecture,
                "preset": args.preset,
                "seed": args.seed,
                "patients": {"unperturbed": reference_patients, "perturbed": perturbed_patients},
                "perturbations": {name: PERTURBATIONS[name].description for name in args.perturbations},
                "files": {"per_pair": "warning_per_pair.csv"},
            }
        )
        # rewritten after each perturbation: a long run's partial results are readable
        write_csv_atomic(f"{args.output_dir}/warning_per_pair.csv", rows, PAIR_COLUMNS)
        write_json_atomic(f"{args.output_dir}/warning_summary.json", report)
    print(calibration_text(report))
    print(f"wrote {args.output_dir}")
    return report


def _judge_earlier_run(args: argparse.Namespace) -> dict[str, Any]:
    """The report of the rule in the code on the rows of an earlier run's per-pair CSV."""
    path = Path(args.from_csv)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such per-pair CSV (warning_per_pair.csv of an earlier run)")
    with path.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    missing = {"perturbation", "patient", "direction", "dice_gain"} - set(rows[0] if rows else {})
    if missing:
        raise ValueError(f"{path}: not a warning_per_pair.csv (no column {', '.join(sorted(missing))})")
    report = calibration_report(rows, args.false_alarm_rate)
    report.update({"command": args.command, "judged_from": str(path)})
    write_json_atomic(Path(args.output_dir) / "warning_summary.json", report)
    print(calibration_text(report))
    print(f"wrote {args.output_dir}")
    return report


def _pair_row(
    perturbation: str, record: Mapping[str, Any], sample: Mapping[str, Any], field, spacing: Sequence[float]
) -> dict[str, Any]:
    """One pair: the network both ways, every candidate statistic, the rule's verdict and the true Dice gain."""
    moving, fixed = sample["moving"][None].as_tensor(), sample["fixed"][None].as_tensor()
    ddf, fixed_logits = field(moving, fixed)
    reverse_ddf, moving_logits = field(fixed, moving)
    [statistics] = warning_statistics(
        moving.to(ddf.device),
        fixed.to(ddf.device),
        ddf.float(),
        fixed_logits,
        similarity=WARNING_SIMILARITY,
        moving_logits=moving_logits,
        reverse_ddf=reverse_ddf.float(),
        pixdim=spacing,
    )
    identity = score_pair(torch.zeros_like(ddf), None, sample, None, spacing)["dice_mean"]
    network = score_pair(ddf, None, sample, None, spacing)["dice_mean"]
    return {
        "perturbation": perturbation,
        "patient": str(record.get("patient", "")),
        "direction": str(record.get("direction", "")),
        "dice_identity": identity,
        "dice_network": network,
        "dice_gain": network - identity,
        "warned": bool(ood_warnings(statistics, WARNING_THRESHOLDS)),
        **{name: statistics.get(name) for name in CANDIDATE_STATISTICS},
    }


# -------------------------------------------------------------------------------------------------------- judging


def _present(values: Sequence[Any]) -> list[float]:
    return [float(v) for v in values if v is not None and v != "" and math.isfinite(float(v))]


def threshold_at_false_alarm_rate(
    reference: Sequence[float | None], side: str, false_alarm_rate: float
) -> tuple[float, float] | None:
    """The warning limits of one statistic under which at most ``false_alarm_rate`` of ``reference`` values warn.

    A value warns when it lies strictly beyond a limit: below ``low`` or above ``high``. "below" statistics get
    ``(low, +inf)``, "above" ones ``(-inf, high)``, "outside" ones both, each side half the rate. The limits are
    reference values, so at most ``floor(rate * n)`` of the ``n`` reference values lie beyond them.

    Args:
        reference: the statistic on pairs that must not warn (None / NaN are ignored).
        side: "below", "above" or "outside" (:data:`~scripts.inference.ood_warning.CANDIDATE_STATISTICS`).
        false_alarm_rate: in (0, 1).

    Returns:
        ``(low, high)``, or None without any reference value.
    """
    values = sorted(_present(reference))
    if not values:
        return None
    if side not in ("below", "above", "outside"):
        raise ValueError(f"side must be 'below', 'above' or 'outside', got {side!r}")
    rate = false_alarm_rate / 2.0 if side == "outside" else false_alarm_rate
    allowed = int(math.floor(rate * len(values) + 1e-9))  # reference values allowed beyond the limit
    low = values[allowed] if side in ("below", "outside") else -math.inf
    high = values[len(values) - 1 - allowed] if side in ("above", "outside") else math.inf
    return low, high


def _beyond(value: Any, limits: tuple[float, float]) -> bool:
    present = _present([value])
    return bool(present) and (present[0] < limits[0] or present[0] > limits[1])


def _rate(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def _key(row: Mapping[str, Any]) -> tuple[str, str]:
    return str(row.get("patient", "")), str(row.get("direction", ""))


def _warned(row: Mapping[str, Any], thresholds: WarningThresholds) -> bool:
    statistics = {name: (_present([row.get(name)]) or [None])[0] for name in CANDIDATE_STATISTICS}
    return bool(ood_warnings(statistics, thresholds))


def calibration_report(
    rows: Sequence[Mapping[str, Any]],
    false_alarm_rate: float = 0.05,
    thresholds: WarningThresholds = WARNING_THRESHOLDS,
) -> dict[str, Any]:
    """Low-gain definition, the rule's rates and, per statistic, its threshold at ``false_alarm_rate``.

    The usual gain is the mean Dice gain of the unperturbed pairs of the patients that were perturbed (the same pairs;
    all unperturbed pairs when none was). Two sets of failures are scored: **low-gain** pairs, perturbed pairs whose
    gain is below half the usual gain (the issue's definition: it includes pairs that gain little unperturbed too,
    because their heart barely moves), and **halved** pairs, perturbed pairs whose gain is below half the same pair's
    unperturbed gain (the perturbation cost at least half the gain). False alarms count over all unperturbed pairs.

    Args:
        rows: per-pair rows (:func:`_pair_row`, or read back from ``warning_per_pair.csv``): "perturbation",
            "patient", "direction", "dice_gain" and the statistics.
        false_alarm_rate: the allowed share of warned unperturbed pairs.
        thresholds: the rule to judge (default: the one inference uses).

    Returns:
        dict with "usual_gain", "low_gain_definition", "pairs", "rule_in_code", "per_statistic" and
        "per_perturbation".
    """
    reference = [r for r in rows if r["perturbation"] == UNPERTURBED]
    perturbed = [r for r in rows if r["perturbation"] != UNPERTURBED]
    if not reference:
        raise ValueError("no unperturbed pair: the usual gain and the false-alarm rate need them")
    perturbed_keys = {_key(r) for r in perturbed}
    same_pairs = [r for r in reference if _key(r) in perturbed_keys] or list(reference)
    usual = sum(float(r["dice_gain"]) for r in same_pairs) / len(same_pairs)
    own_gain = {_key(r): float(r["dice_gain"]) for r in reference}
    low_gain = [r for r in perturbed if float(r["dice_gain"]) < usual / 2.0]
    halved = [r for r in perturbed if _key(r) in own_gain and float(r["dice_gain"]) < own_gain[_key(r)] / 2.0]
    warned = {id(r): _warned(r, thresholds) for r in rows}
    per_statistic = {}
    for name, side in CANDIDATE_STATISTICS.items():
        limits = threshold_at_false_alarm_rate([r.get(name) for r in reference], side, false_alarm_rate)
        if limits is None:
            continue
        per_statistic[name] = {
            "warns": side,
            "low": None if math.isinf(limits[0]) else limits[0],
            "high": None if math.isinf(limits[1]) else limits[1],
            "false_alarm_rate": _rate([_beyond(r.get(name), limits) for r in reference]),
            "detection_rate": _rate([_beyond(r.get(name), limits) for r in low_gain]),
            "detection_rate_halved": _rate([_beyond(r.get(name), limits) for r in halved]),
        }
    per_perturbation = {}
    for name in dict.fromkeys(r["perturbation"] for r in rows):
        own = [r for r in rows if r["perturbation"] == name]
        own_low = [r for r in low_gain if r["perturbation"] == name]
        per_perturbation[name] = {
            "pairs": len(own),
            "mean_dice_gain": sum(float(r["dice_gain"]) for r in own) / len(own),
            "low_gain_pairs": len(own_low),
            "warned": sum(warned[id(r)] for r in own),
            "low_gain_warned": sum(warned[id(r)] for r in own_low),
        }
    return {
        "usual_gain": usual,
        "low_gain_definition": (
            f"a perturbed pair whose Dice gain over no registration is below half the usual gain, the mean gain of "
            f"the {len(same_pairs)} unperturbed pairs of the perturbed patients ({100 * usual:.2f} points): below "
            f"{50 * usual:.2f} points"
        ),
        "halved_definition": "a perturbed pair whose Dice gain is below half the same pair's unperturbed gain",
        "pairs": {
            "unperturbed": len(reference),
            "perturbed": len(perturbed),
            "low_gain": len(low_gain),
            "halved": len(halved),
        },
        "rule_in_code": {
            "thresholds": asdict(thresholds),
            "detection_rate": _rate([warned[id(r)] for r in low_gain]),
            "detection_rate_halved": _rate([warned[id(r)] for r in halved]),
            "false_alarm_rate": _rate([warned[id(r)] for r in reference]),
        },
        "false_alarm_rate_allowed": false_alarm_rate,
        "per_statistic": per_statistic,
        "per_perturbation": per_perturbation,
    }


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f} %"


def _limit(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def calibration_text(report: Mapping[str, Any]) -> str:
    """The printed summary: definition, the rule's two rates, the per-statistic table and the per-set counts."""
    rule, pairs = report["rule_in_code"], report["pairs"]
    lines = [
        f"low-gain pair: {report['low_gain_definition']}",
        f"halved pair: {report['halved_definition']}",
        f"pairs: {pairs['unperturbed']} unperturbed, {pairs['perturbed']} perturbed, {pairs['low_gain']} low-gain, "
        f"{pairs['halved']} halved",
        f"rule in the code ({', '.join(f'{k} {v}' for k, v in rule['thresholds'].items() if v is not None)}): "
        f"detection {_percent(rule['detection_rate'])} of low-gain pairs (goal >= 90 %; "
        f"{_percent(rule['detection_rate_halved'])} of halved pairs), false alarms "
        f"{_percent(rule['false_alarm_rate'])} of unperturbed pairs (goal <= 5 %)",
        "",
        f"| statistic | warns | low limit | high limit | false alarms | detection of low-gain / halved pairs (at <= "
        f"{_percent(report['false_alarm_rate_allowed'])} false alarms) |",
        "|---|---|---|---|---|---|",
    ]
    for name, entry in report["per_statistic"].items():
        cells = [name, entry["warns"], _limit(entry["low"]), _limit(entry["high"])]
        cells.append(_percent(entry["false_alarm_rate"]))
        cells.append(f"{_percent(entry['detection_rate'])} / {_percent(entry['detection_rate_halved'])}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "| set | pairs | mean Dice gain (pts) | low-gain pairs | warned | low-gain warned |",
        "|---|---|---|---|---|---|",
    ]
    for name, entry in report["per_perturbation"].items():
        cells = [name, str(entry["pairs"]), f"{100 * entry['mean_dice_gain']:+.1f}", str(entry["low_gain_pairs"])]
        cells += [str(entry["warned"]), str(entry["low_gain_warned"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; a missing or unreadable input (checkpoint, data) ends with its message and exit 2."""
    args = parse_args(argv)
    return run_mode("warning", lambda: run_warning_calibration(args))
