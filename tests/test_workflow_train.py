"""Training workflow (configs/train.json) run as a user would: ``python -m monai.bundle run training``.

Tiny preset, 32 x 32 x 8 grid, batch 2, on the 6-subject phantom with an explicit datalist; run from a folder
outside the bundle, so ``scripts`` is importable only through the config's ``bundle_root``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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
def trained(phantom_dataset: Path, datalist: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two epochs, then ``--resume true`` with ``--epochs 3``; snapshots of the checkpoints after each run."""
    run = tmp_path_factory.mktemp("train_run")
    directories = {"ckpt_dir": run / "models", "output_dir": run / "log"}
    common = {"dataset_dir": str(phantom_dataset), "datalist": str(datalist), "learning_rate": 0.002, **TINY}
    common.update({key: str(path) for key, path in directories.items()})
    run_bundle("training", [CONFIGS / "train.json"], run, epochs=2, **common)
    first = {name: torch.load(directories["ckpt_dir"] / name, weights_only=True) for name in ("last.pt", "model.pt")}
    torch.save(first, run / "after_two_epochs.pt")
    run_bundle("training", [CONFIGS / "train.json"], run, epochs=3, resume="true", **common)
    return {**directories, "snapshot": run / "after_two_epochs.pt"}


def test_training_writes_best_and_last_checkpoints(trained: dict[str, Path]) -> None:
    snapshot = torch.load(trained["snapshot"], weights_only=True)
    last = snapshot["last.pt"]
    assert set(last) == {"model", "optimizer", "lr_scheduler", "best_model", "trainer"}
    assert last["trainer"]["iteration"] == 2 * last["trainer"]["epoch_length"]
    # models/model.pt is the network state dict alone: it loads strictly into the bundle's network_def
    network = bundle_network("memwarp", "tiny")
    network.load_state_dict(snapshot["model.pt"], strict=True)
    assert 1 <= last["best_model"]["best_epoch"] <= 2


def test_training_loss_decreases(trained: dict[str, Path]) -> None:
    records = history(trained["output_dir"])
    assert records[0]["train_total"] > records[-1]["train_total"]
    assert all(0.0 <= record["val_mean_dice"] <= 1.0 for record in records)


def test_resume_continues_epoch_counter_and_optimizer_state(trained: dict[str, Path]) -> None:
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


def test_tensorboard_has_loss_terms_metrics_and_validation_figure(trained: dict[str, Path]) -> None:
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
