"""Training workflow (configs/train.json) run as a user would: ``python -m monai.bundle run training``.

Tiny preset, 32 x 32 x 8 grid, batch 2, on the 6-subject phantom (the documented command on its folder, and once with
an explicit datalist); run from a folder outside the bundle, so ``scripts`` is importable only through the config's
``bundle_root``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scripts.checkpoint_card import file_sha256
from scripts.networks import bundle_network

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = BUNDLE_ROOT / "configs"
TINY = {"spatial_size": [32, 32, 8], "network_preset": "tiny", "batch_size": 2, "num_workers": 0}
# one thread per process: the 2 test cores are shared, and oversubscribed OpenMP threads slow torch down up to 10x
ENVIRONMENT = {**os.environ, "OMP_NUM_THREADS": "1"}


def run_bundle(run_id: str, config_files: list[Path], cwd: Path, **overrides: object) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run <run_id> ...`` in ``cwd``; fails the test with the output tail on error."""
    config = str(config_files[0]) if len(config_files) == 1 else str([str(path) for path in config_files])
    command = [sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", config]
    command += ["--meta_file", str(CONFIGS / "metadata.json"), "--logging_file", str(CONFIGS / "logging.conf")]
    command += ["--bundle_root", str(BUNDLE_ROOT)]
    for key, value in overrides.items():
        command += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    result = subprocess.run(command, cwd=cwd, env=ENVIRONMENT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def history(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "history.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def datalist(phantom_datalist, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Training: patients 1 and 21 (4 directed pairs); validation: 61; test: the testing/ patients."""
    return phantom_datalist(tmp_path_factory.mktemp("datalist"), training=[1, 21])


@pytest.fixture(scope="module")
def trained(phantom_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The documented command on the 6-subject phantom folder (no datalist: its reference validation patients are
    absent), two epochs, then ``--resume true`` with ``--epochs 3``; snapshots of the checkpoints after each run."""
    run = tmp_path_factory.mktemp("train_run")
    run_dir = run / "runs" / "memwarp"
    common = {"dataset_dir": str(phantom_dataset), "run_dir": str(run_dir), "learning_rate": 0.002, **TINY}
    first_run = run_bundle("training", [CONFIGS / "train.json"], run, epochs=2, **common)
    checkpoints = run_dir / "models"
    first = {name: torch.load(checkpoints / name, weights_only=True) for name in ("last.pt", "model.pt")}
    torch.save(first, run / "after_two_epochs.pt")
    run_bundle("training", [CONFIGS / "train.json"], run, epochs=3, resume="true", **common)
    return {
        "ckpt_dir": checkpoints,
        "output_dir": run_dir / "log",
        "snapshot": run / "after_two_epochs.pt",
        "log": first_run.stdout,
    }


def test_a_small_data_set_trains_on_a_validation_split_drawn_from_what_exists(trained: dict) -> None:
    # phantom patients 001 (DCM), 021 (HCM), 041 (MINF), 061 (NOR) outside the test set: one of the four validates,
    # the highest-numbered of its group (ties between groups of one go to the higher number), and the log says so
    assert "training: 6 pairs from" in trained["log"]
    (line,) = [line for line in trained["log"].splitlines() if "validation: 2 pairs from" in line]
    assert "1 of the 4 patients outside the test set, drawn stratified by group" in line
    assert line.endswith("patient061 (NOR)")


def test_checkpoints_go_to_the_run_folder_with_a_card(trained: dict) -> None:
    card = json.loads((trained["ckpt_dir"] / "model.json").read_text())
    assert {key: card[key] for key in ("architecture", "network_preset", "spatial_size", "pixdim")} == {
        "architecture": "memwarp",
        "network_preset": "tiny",
        "spatial_size": [32, 32, 8],
        "pixdim": [1.8, 1.8, 10.0],
    }
    best = max(history(trained["output_dir"]), key=lambda record: record["val_mean_dice"])
    assert (card["epoch"], card["metric_name"]) == (best["epoch"], "val_mean_dice")
    assert card["metric"] == pytest.approx(best["val_mean_dice"])
    assert card["weights_sha256"] == file_sha256(trained["ckpt_dir"] / "model.pt")
    assert card["bundle_version"] == json.loads((CONFIGS / "metadata.json").read_text())["version"]


def test_training_writes_best_and_last_checkpoints(trained: dict) -> None:
    snapshot = torch.load(trained["snapshot"], weights_only=True)
    last = snapshot["last.pt"]
    assert set(last) == {"model", "optimizer", "lr_scheduler", "best_model", "trainer"}
    assert last["trainer"]["iteration"] == 2 * last["trainer"]["epoch_length"]
    # models/model.pt is the network state dict alone: it loads strictly into the bundle's network_def
    network = bundle_network("memwarp", "tiny")
    network.load_state_dict(snapshot["model.pt"], strict=True)
    assert 1 <= last["best_model"]["best_epoch"] <= 2


def test_training_loss_decreases(trained: dict) -> None:
    records = history(trained["output_dir"])
    assert records[0]["train_total"] > records[-1]["train_total"]
    assert all(0.0 <= record["val_mean_dice"] <= 1.0 for record in records)


def test_resume_continues_epoch_counter_and_optimizer_state(trained: dict) -> None:
    assert [record["epoch"] for record in history(trained["output_dir"])] == [1, 2, 3]
    last = torch.load(trained["ckpt_dir"] / "last.pt", weights_only=True)
    epoch_length = last["trainer"]["epoch_length"]
    assert last["trainer"]["iteration"] == 3 * epoch_length
    # Adam counts its steps per parameter: 3 epochs' worth only if the state of the first run was restored
    steps = {float(state["step"]) for state in last["optimizer"]["state"].values()}
    assert steps == {3.0 * epoch_length}
    assert last["lr_scheduler"]["last_epoch"] == 3
    # the schedule's length follows the resumed run's --epochs (poly: epochs + 1), not the first run's 2
    assert last["lr_scheduler"]["total_iters"] == 4


def test_tensorboard_has_loss_terms_metrics_and_validation_figure(trained: dict) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(trained["output_dir"]), size_guidance={"images": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train_loss", "val_mean_dice", "lr", "train_similarity", "train_mask_dice", "train_region_dice"} <= scalars
    assert "validation/pair" in events.Tags()["images"]


def test_unsupervised_variant_trains_without_mask_terms(phantom_dataset: Path, datalist: Path, tmp_path: Path) -> None:
    run_bundle(
        "training",
        [CONFIGS / "train.json", CONFIGS / "variants" / "unsupervised.json"],
        tmp_path,
        dataset_dir=str(phantom_dataset),
        datalist=str(datalist),
        ckpt_dir=str(tmp_path / "models"),
        output_dir=str(tmp_path / "log"),
        epochs=1,
        **TINY,
    )
    (record,) = history(tmp_path / "log")
    assert record["train_mask_dice"] == 0.0 and record["train_region_dice"] == 0.0
    assert record["train_similarity"] > 0.0
    assert (tmp_path / "models" / "model.pt").is_file()


@pytest.mark.slow
def test_init_weights_fine_tunes_with_a_fresh_optimizer_and_schedule(
    phantom_dataset: Path, datalist: Path, trained: dict, tmp_path: Path
) -> None:
    start = trained["ckpt_dir"] / "model.pt"
    # learning rate 0: the weights stay exactly the loaded ones, so the saved model shows what was loaded
    run_bundle(
        "training",
        [CONFIGS / "train.json"],
        tmp_path,
        dataset_dir=str(phantom_dataset),
        datalist=str(datalist),
        run_dir=str(tmp_path / "fine_tune"),
        init_weights=str(start),
        learning_rate=0.0,
        epochs=1,
        **TINY,
    )
    loaded = torch.load(start, weights_only=True)
    tuned = torch.load(tmp_path / "fine_tune" / "models" / "model.pt", weights_only=True)
    parameters = dict(bundle_network("memwarp", "tiny").named_parameters())
    assert all(torch.equal(tuned[name], loaded[name]) for name in parameters)
    last = torch.load(tmp_path / "fine_tune" / "models" / "last.pt", weights_only=True)
    epoch_length = last["trainer"]["epoch_length"]
    assert {float(state["step"]) for state in last["optimizer"]["state"].values()} == {float(epoch_length)}
    assert last["lr_scheduler"]["last_epoch"] == 1 and last["trainer"]["iteration"] == epoch_length
