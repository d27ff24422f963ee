"""Evaluation: the per-pair handler against hand-computed values, and configs/evaluate.json run as a user would."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator
from torch import nn

from scripts.engine import RegistrationPrepareBatch
from scripts.evaluation import INITIAL_ROW, RegistrationEvaluationHandler
from scripts.networks import bundle_network

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = BUNDLE_ROOT / "configs"
SHAPE = (32, 32, 8)


class ConstantShift(nn.Module):
    """A stand-in network: ddf = +2 voxels along axis 0 everywhere; with memory, logits peaked on the fixed labels
    (the hand-made fixed image is its label map / 3), i.e. a perfect segmentation."""

    def __init__(self, with_memory: bool = True) -> None:
        super().__init__()
        self.with_memory = with_memory
        self.anchor = nn.Parameter(torch.zeros(()))  # the evaluator moves the network to its device

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> dict:
        ddf = torch.zeros(moving.shape[0], 3, *moving.shape[2:]) + self.anchor
        ddf[:, 0] = 2.0
        logits = []
        if self.with_memory:
            labels = torch.round(fixed * 3.0).long()[:, 0]
            logits = [10.0 * nn.functional.one_hot(labels, 4).movedim(-1, 1).float()]
        return {"ddf": ddf, "warped": moving, "anatomical_logits": logits}


def box(label: int, x: tuple[int, int], y: tuple[int, int], z: tuple[int, int] = (2, 6)) -> torch.Tensor:
    volume = torch.zeros(1, *SHAPE)
    volume[0, x[0] : x[1], y[0] : y[1], z[0] : z[1]] = label
    return volume


def hand_made_pairs() -> list[dict]:
    """patient001 (NOR): LVBP moved by +2 voxels along axis 0, RV still; patient002 (DCM): nothing moves."""
    rv = box(1, (2, 6), (2, 6))
    lvbp, lvbp_moved = box(3, (10, 20), (10, 20)), box(3, (12, 22), (10, 20))
    pairs = []
    for patient, group, moving_lvbp in (("patient001", "NOR", lvbp_moved), ("patient002", "DCM", lvbp)):
        for direction in ("ED_to_ES", "ES_to_ED"):
            moving_label, fixed_label = rv + moving_lvbp, rv + lvbp
            pairs.append(
                {
                    "moving": moving_label / 3.0,
                    "fixed": fixed_label / 3.0,
                    "moving_label": moving_label,
                    "fixed_label": fixed_label,
                    "patient": patient,
                    "group": group,
                    "direction": direction,
                }
            )
    return pairs


def evaluate_hand_made_pairs(output_dir: Path, with_memory: bool = True) -> dict:
    """Run a SupervisedEvaluator with the handler over :func:`hand_made_pairs`; return the summary."""
    handler = RegistrationEvaluationHandler(output_dir, spacing=(1.8, 1.8, 10.0), model_name="shift")
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(hand_made_pairs(), batch_size=1),
        network=ConstantShift(with_memory),
        prepare_batch=RegistrationPrepareBatch(),
        val_handlers=[handler],
        decollate=False,
    )
    evaluator.run()
    return json.loads((output_dir / "summary.json").read_text())


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


def test_identity_row_is_the_dice_of_the_labels_themselves(tmp_path: Path) -> None:
    evaluate_hand_made_pairs(tmp_path)
    initial = read_csv(tmp_path / "per_pair_metrics_initial.csv")
    moved = [row for row in initial if row["patient"] == "patient001"]
    # RV still: Dice 1; LVBP 10 voxels long, shifted by 2: 2 * 8 / (10 + 10) = 0.8; no LVM anywhere: blank
    assert [float(row["dice_rv"]) for row in moved] == [1.0, 1.0]
    assert [float(row["dice_lvbp"]) for row in moved] == pytest.approx([0.8, 0.8])
    assert [row["dice_lvm"] for row in moved] == ["", ""]
    assert float(moved[0]["dice_mean"]) == pytest.approx(0.9)
    assert float(moved[0]["sdlogj_plus3"]) == 0.0 and float(moved[0]["folding_percent"]) == 0.0


def test_model_rows_follow_the_warp_convention(tmp_path: Path) -> None:
    evaluate_hand_made_pairs(tmp_path)
    rows = {(row["patient"], row["direction"]): row for row in read_csv(tmp_path / "per_pair_metrics.csv")}
    moved = rows[("patient001", "ED_to_ES")]
    # warped(x) = moving(x + 2): the moved LVBP lands exactly on the fixed one, the still RV slides 2 of 4 voxels off
    assert float(moved["dice_lvbp"]) == 1.0 and float(moved["hd95_lvbp"]) == 0.0
    assert float(moved["dice_rv"]) == 0.5
    assert float(moved["hd95_rv"]) > 0.0
    # a constant shift has J = 1 everywhere
    assert float(moved["sdlogj_plus3"]) == pytest.approx(0.0, abs=1e-12)
    assert float(moved["std_log_j_positive"]) == pytest.approx(0.0, abs=1e-12)
    assert float(moved["folding_percent"]) == 0.0
    assert float(moved["seg_dice_rv"]) == 1.0 and float(moved["seg_dice_lvbp"]) == 1.0
    assert float(moved["seg_dice_mean"]) == 1.0
    still = rows[("patient002", "ES_to_ED")]
    assert float(still["dice_lvbp"]) == pytest.approx(0.8)
    assert all(float(row["seconds_per_pair"]) > 0.0 for row in rows.values())


def test_summary_aggregates_per_patient_and_per_group_with_initial_row(tmp_path: Path) -> None:
    summary = evaluate_hand_made_pairs(tmp_path)
    results = summary["results"]
    assert set(results) == {INITIAL_ROW, "shift"}
    model = results["shift"]
    # patient001: (0.5 + 1.0) / 2 = 0.75; patient002: (0.5 + 0.8) / 2 = 0.65
    assert model["groups"]["NOR"]["dice_mean"]["mean"] == pytest.approx(0.75)
    assert model["groups"]["DCM"]["dice_mean"]["mean"] == pytest.approx(0.65)
    assert model["all"]["dice_mean"]["mean"] == pytest.approx(0.70)
    assert model["all"]["dice_mean"]["std"] == pytest.approx(0.05)
    assert model["all"]["num_pairs"] == 4 and model["all"]["num_patients"] == 2
    assert model["all"]["dice_lvm"] == {"mean": None, "std": None, "n": 0}
    initial = results[INITIAL_ROW]["all"]
    assert initial["dice_mean"]["mean"] == pytest.approx((0.9 + 1.0) / 2)
    assert "seconds_per_pair" not in initial and "seg_dice_mean" not in initial
    assert "align_corners=True" in summary["protocol"]["label_warping"]
    assert summary["protocol"]["grid"].startswith("32 x 32 x 8 voxels of 1.8 x 1.8 x 10 mm")


def test_segmentation_columns_are_blank_without_memory(tmp_path: Path) -> None:
    summary = evaluate_hand_made_pairs(tmp_path, with_memory=False)
    rows = read_csv(tmp_path / "per_pair_metrics.csv")
    assert all(row["seg_dice_mean"] == "" for row in rows)
    assert summary["results"]["shift"]["all"]["seg_dice_mean"]["mean"] is None


@pytest.fixture(scope="module")
def evaluated(phantom_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``run evaluating`` with ``--dataset_dir`` a folder holding only the two test patients (testing/ of the phantom)
    and ``--ckpt_path`` an untrained tiny MemWarp; the outputs go to ``--output_dir``."""
    run = tmp_path_factory.mktemp("evaluate_run")
    torch.manual_seed(0)
    (run / "models").mkdir()
    torch.save(bundle_network("memwarp", "tiny").state_dict(), run / "models" / "model.pt")
    configs = str([str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")])
    command = [sys.executable, "-m", "monai.bundle", "run", "evaluating", "--config_file", configs]
    command += ["--meta_file", str(CONFIGS / "metadata.json"), "--logging_file", str(CONFIGS / "logging.conf")]
    command += ["--bundle_root", str(BUNDLE_ROOT), "--dataset_dir", str(phantom_dataset / "testing")]
    command += ["--ckpt_path", str(run / "models" / "model.pt"), "--output_dir", str(run / "eval")]
    command += ["--spatial_size", "[32, 32, 8]", "--network_preset", "tiny", "--num_workers", "0"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}  # shared cores: avoid oversubscribed OpenMP threads
    result = subprocess.run(command, cwd=run, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return run / "eval"


def test_evaluate_config_writes_per_pair_csv_with_finite_metrics(evaluated: Path) -> None:
    rows = read_csv(evaluated / "per_pair_metrics.csv")
    assert len(rows) == 4  # two testing/ patients, both directions
    assert {row["direction"] for row in rows} == {"ED_to_ES", "ES_to_ED"}
    for row in rows:
        for column in ("dice_mean", "hd95_mean", "sdlogj_plus3", "std_log_j_positive", "folding_percent"):
            assert math.isfinite(float(row[column])), column
        assert 0.0 <= float(row["dice_mean"]) <= 1.0
        assert math.isfinite(float(row["seg_dice_mean"]))  # MemWarp has a memory
        assert float(row["seconds_per_pair"]) > 0.0


def test_evaluate_config_writes_summary_with_initial_row_and_protocol(evaluated: Path) -> None:
    summary = json.loads((evaluated / "summary.json").read_text())
    assert set(summary["results"]) == {INITIAL_ROW, "memwarp"}
    for row in summary["results"].values():
        assert row["all"]["num_pairs"] == 4
        assert math.isfinite(row["all"]["dice_mean"]["mean"])
        assert math.isfinite(row["all"]["hd95_mean"]["mean"])
        assert row["groups"]
    assert summary["run"]["network_preset"] == "tiny"
    assert summary["run"]["checkpoint"] == str(evaluated.parent / "models" / "model.pt")
    assert "2-voxel border crop" in summary["protocol"]["jacobian"]
    assert "clip(J + 3, 1e-8, 1e8)" in summary["protocol"]["sdlogj_plus3"]
    assert not list(evaluated.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_evaluation_of_a_test_only_folder_records_the_pairs_it_used(evaluated: Path, phantom_dataset: Path) -> None:
    summary = json.loads((evaluated / "summary.json").read_text())
    assert summary["data"] == {
        "datalist": None,
        "dataset_dir": str(phantom_dataset / "testing"),
        "section": "test",
        "num_pairs": 4,
    }
    used = json.loads((evaluated / summary["files"]["datalist_used"]).read_text())
    patients = sorted(folder.name for folder in (phantom_dataset / "testing").iterdir())
    assert len(patients) == 2
    assert sorted((record["patient"], record["direction"]) for record in used["test"]) == [
        (patient, direction) for patient in patients for direction in ("ED_to_ES", "ES_to_ED")
    ]
    assert all(record["moving"].startswith(str(phantom_dataset / "testing")) for record in used["test"])


def test_summary_names_the_datalist_and_not_the_dataset_folder_when_a_datalist_is_given(tmp_path: Path) -> None:
    handler = RegistrationEvaluationHandler(tmp_path, dataset_dir="phantom_data", datalist=tmp_path / "pairs.json")
    assert handler.data_source == {"datalist": str(tmp_path / "pairs.json"), "dataset_dir": None, "section": "test"}


def test_evaluation_writes_to_its_own_folder_by_default() -> None:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")])
    inference = ConfigParser()
    inference.read_config(str(CONFIGS / "inference.json"))
    assert parser.get_parsed_content("output_dir") == "./eval_results"
    assert parser.get_parsed_content("output_dir") != inference.get_parsed_content("output_dir")
    # by default evaluation scores the shipped weights, as inference does; --ckpt_path names a trained model.pt
    assert parser.get_parsed_content("ckpt_path") == inference.get_parsed_content("ckpt_path") == "./models/model.pt"
