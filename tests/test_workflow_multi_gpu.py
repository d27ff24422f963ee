"""configs/multi_gpu_train.json under ``torchrun --standalone --nproc_per_node=2`` on CPU (gloo backend)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = BUNDLE_ROOT / "configs"


@pytest.fixture(scope="module")
def distributed_run(phantom_dataset: Path, phantom_datalist, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch on 2 CPU processes: 6 training pairs (patients 1, 21, 41), 2 validation pairs (patient 61)."""
    run = tmp_path_factory.mktemp("multi_gpu_run")
    datalist = phantom_datalist(run, training=[1, 21, 41])
    configs = str([str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json")])
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "monai.bundle", "run", "training", "--config_file", configs]
    command += ["--meta_file", str(CONFIGS / "metadata.json"), "--logging_file", str(CONFIGS / "logging.conf")]
    command += ["--bundle_root", str(BUNDLE_ROOT), "--dataset_dir", str(phantom_dataset), "--datalist", str(datalist)]
    command += ["--ckpt_dir", str(run / "models"), "--output_dir", str(run / "log"), "--record_shards", "true"]
    command += ["--spatial_size", "[32, 32, 8]", "--network_preset", "tiny", "--batch_size", "1"]
    command += ["--epochs", "1", "--num_workers", "0"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=run, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return run


@pytest.mark.slow
def test_each_process_trains_on_its_own_shard(distributed_run: Path) -> None:
    shards = {}
    for rank in (0, 1):
        (record,) = [json.loads(line) for line in (distributed_run / "log" / f"data_shard_rank{rank}.jsonl").open()]
        assert record["world_size"] == 2 and record["rank"] == rank
        shards[rank] = record["indices"]
    assert len(shards[0]) == len(shards[1]) == 3
    assert set(shards[0]).isdisjoint(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(6))


@pytest.mark.slow
def test_only_the_main_process_writes_checkpoints_and_logs(distributed_run: Path) -> None:
    assert len(list((distributed_run / "log").glob("events.out.tfevents.*"))) == 1
    (record,) = [json.loads(line) for line in (distributed_run / "log" / "history.jsonl").open()]
    assert record["epoch"] == 1 and 0.0 <= record["val_mean_dice"] <= 1.0
    model = torch.load(distributed_run / "models" / "model.pt", weights_only=True)
    last = torch.load(distributed_run / "models" / "last.pt", weights_only=True)
    # DistributedDataParallel is unwrapped: the keys match the single-process network_def
    assert not any(key.startswith("module.") for key in list(model) + list(last["model"]))
    assert last["trainer"]["iteration"] == 3  # 6 pairs / 2 processes / batch 1
