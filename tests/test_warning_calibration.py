"""The warning mode of ``python -m scripts.benchmark``: thresholds at a false-alarm rate, the low-gain definition and
the rates it reports, and the command end to end on a one-patient synthetic data set with the tiny network."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from scripts.benchmark.__main__ import main as benchmark_main
from scripts.benchmark.perturbations import Frame
from scripts.benchmark.robustness import write_acdc_patient
from scripts.benchmark.warning_calibration import calibration_report, threshold_at_false_alarm_rate
from scripts.data import build_pair_datalist
from scripts.inference.ood_warning import (
    CANDIDATE_STATISTICS,
    HEART_VOLUME_ML,
    MEMORY_CONFIDENCE,
    SEGMENTATION_AGREEMENT,
    SIMILARITY_IMPROVEMENT,
    WarningThresholds,
)
from scripts.networks import bundle_network


def test_a_threshold_lets_at_most_the_allowed_share_of_reference_values_beyond_it() -> None:
    values = [float(v) for v in range(1, 21)]  # 20 reference values: 5 % allows exactly one beyond the limit
    assert threshold_at_false_alarm_rate(values, "below", 0.05) == (2.0, math.inf)  # only 1.0 < 2.0
    assert threshold_at_false_alarm_rate(values, "above", 0.05) == (-math.inf, 19.0)  # only 20.0 > 19.0
    assert threshold_at_false_alarm_rate(values, "outside", 0.05) == (1.0, 20.0)  # 2.5 % per side: none beyond
    assert threshold_at_false_alarm_rate(values[:10], "below", 0.05) == (1.0, math.inf)  # 10 values: none allowed
    assert threshold_at_false_alarm_rate([None, math.nan], "below", 0.05) is None
    with pytest.raises(ValueError, match="side must be"):
        threshold_at_false_alarm_rate(values, "sideways", 0.05)


def _row(perturbation: str, patient: str, gain: float, confidence: float) -> dict:
    return {
        "perturbation": perturbation,
        "patient": patient,
        "direction": "ED_to_ES",
        "dice_gain": gain,
        MEMORY_CONFIDENCE: confidence,
    }


def test_the_report_defines_low_gain_by_the_runs_own_unperturbed_gain_and_counts_detections() -> None:
    # 20 unperturbed pairs: p0 and p1 were perturbed (gains 0.12 and 0.08: usual gain 0.10), p2-p19 gain 0.30;
    # confidence 0.905..0.995, except p0 at 0.50: a false alarm of the rule "confidence below 0.8"
    reference = [_row("unperturbed", f"p{i}", 0.30, 0.90 + 0.005 * i) for i in range(20)]
    reference[0] = _row("unperturbed", "p0", 0.12, 0.50)
    reference[1] = _row("unperturbed", "p1", 0.08, 0.905)
    perturbed = [
        _row("inverted", "p0", -0.02, 0.40),  # low gain (< 0.05) and halved (< 0.06), caught
        _row("inverted", "p1", 0.045, 0.95),  # low gain, not halved (>= 0.04), missed
        _row("gamma_2", "p0", 0.055, 0.30),  # halved (< 0.06) but not low gain; caught
        _row("gamma_2", "p1", 0.07, 0.95),  # neither
    ]
    rule = WarningThresholds(min_memory_confidence=0.8, min_similarity_improvement=None, max_folding_percent=None)
    report = calibration_report(reference + perturbed, false_alarm_rate=0.05, thresholds=rule)
    assert report["usual_gain"] == pytest.approx(0.10)  # the perturbed patients' own unperturbed pairs only
    assert report["pairs"] == {"unperturbed": 20, "perturbed": 4, "low_gain": 2, "halved": 2}
    assert "below 5.00 points" in report["low_gain_definition"]
    assert report["rule_in_code"]["detection_rate"] == pytest.approx(0.5)
    assert report["rule_in_code"]["detection_rate_halved"] == pytest.approx(1.0)
    assert report["rule_in_code"]["false_alarm_rate"] == pytest.approx(0.05)
    confidence = report["per_statistic"][MEMORY_CONFIDENCE]
    assert confidence["low"] == pytest.approx(0.905) and confidence["high"] is None  # the 0.50 outlier is allowed
    assert confidence["false_alarm_rate"] == pytest.approx(0.05) and confidence["detection_rate"] == pytest.approx(0.5)
    assert SIMILARITY_IMPROVEMENT not in report["per_statistic"]  # not measured: not judged
    assert report["per_perturbation"]["inverted"] == {
        "pairs": 2,
        "mean_dice_gain": pytest.approx(0.0125),
        "low_gain_pairs": 2,
        "warned": 1,
        "low_gain_warned": 1,
    }
    with pytest.raises(ValueError, match="no unperturbed pair"):
        calibration_report(perturbed)


def _synthetic_dataset(root: Path) -> Path:
    """One test patient in the ACDC layout, ED heart larger than ES, image = 100 * label + 50; its datalist."""
    x, y = np.meshgrid(np.arange(64), np.arange(56), indexing="ij")
    frames = []
    for scale in (1.0, 0.85):
        radius = np.hypot(x - 32, y - 28)
        label = np.zeros((64, 56), np.uint8)
        label[np.hypot(x - 32 + 14 * scale, y - 28) < 9 * scale] = 1
        label[radius < 11 * scale] = 2
        label[radius < 7 * scale] = 3
        label = np.repeat(label[:, :, None], 10, axis=2)
        frames.append(Frame((100.0 * label + 50.0).astype(np.float32), label, np.diag([1.8, 1.8, 10.0, 1.0])))
    write_acdc_patient(root / "database", "patient101", "NOR", *frames)
    datalist = root / "datalist.json"
    datalist.write_text(json.dumps({"test": build_pair_datalist(root / "database" / "testing")}))
    return datalist


def test_the_warning_mode_writes_every_statistic_per_pair_and_the_rates(tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny.pt"
    torch.save(bundle_network("memwarp", "tiny").state_dict(), checkpoint)
    output = tmp_path / "warning"
    arguments = [
        "warning",
        "--dataset_dir",
        str(tmp_path / "database"),
        "--datalist",
        str(_synthetic_dataset(tmp_path)),
    ]
    arguments += ["--checkpoint", str(checkpoint), "--preset", "tiny", "--perturbations", "inverted"]
    arguments += ["--max_patients", "1", "--threads", "1", "--output_dir", str(output)]
    arguments += ["--spatial_size", "32", "32", "8", "--pixdim", "3.6", "3.6", "12.5"]  # a coarse grid: a fast test
    assert benchmark_main(arguments) == 0
    printed = capsys.readouterr().out
    assert "low-gain pair: a perturbed pair whose Dice gain" in printed and "rule in the code" in printed
    report = json.loads((output / "warning_summary.json").read_text())
    assert report["pairs"]["unperturbed"] == 2 and report["pairs"]["perturbed"] == 2
    assert report["patients"] == {"unperturbed": ["patient101"], "perturbed": ["patient101"]}
    assert set(report["per_statistic"]) <= set(CANDIDATE_STATISTICS)
    assert SEGMENTATION_AGREEMENT in report["per_statistic"]  # the swapped pass gave the moving segmentation
    with (output / "warning_per_pair.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert [row["perturbation"] for row in rows] == ["unperturbed"] * 2 + ["inverted"] * 2
    for row in rows:
        assert float(row["dice_gain"]) == pytest.approx(float(row["dice_network"]) - float(row["dice_identity"]))
        assert 0.0 <= float(row[MEMORY_CONFIDENCE]) <= 1.0 and row["warned"] in ("True", "False")
    # the unperturbed identity Dice is the synthetic hearts' overlap, the same both ways; inversion keeps the labels
    assert float(rows[0]["dice_identity"]) == pytest.approx(float(rows[2]["dice_identity"]))


def test_the_warning_mode_names_a_missing_checkpoint(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "absent.pt"
    arguments = ["warning", "--dataset_dir", str(tmp_path), "--checkpoint", str(missing)]
    assert benchmark_main([*arguments, "--output_dir", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and str(missing) in error[0] and error[0].startswith("python -m scripts.benchmark warning")
    assert not (tmp_path / "out").exists()


def test_an_earlier_runs_pairs_are_judged_again_without_the_network(tmp_path: Path, capsys) -> None:
    path = tmp_path / "warning_per_pair.csv"
    columns = ["perturbation", "patient", "direction", "dice_gain", HEART_VOLUME_ML]
    rows = [["unperturbed", "p1", "ED_to_ES", "0.10", "400"], ["heart_x1.3", "p1", "ED_to_ES", "0.01", "900"]]
    path.write_text("\n".join(",".join(row) for row in [columns, *rows]) + "\n")
    output = tmp_path / "judged"
    assert benchmark_main(["warning", "--from_csv", str(path), "--output_dir", str(output)]) == 0
    report = json.loads((output / "warning_summary.json").read_text())
    assert report["judged_from"] == str(path) and report["pairs"]["low_gain"] == 1
    assert report["rule_in_code"]["detection_rate"] == 1.0  # 900 ml: outside the calibrated heart volumes
    assert report["rule_in_code"]["false_alarm_rate"] == 0.0
    capsys.readouterr()
    assert benchmark_main(["warning", "--from_csv", str(tmp_path / "absent.csv")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "absent.csv: no such per-pair CSV" in error[0]
