"""``python -m scripts.benchmark throughput``: whole-run time and network forward time per pair, in one run."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from torch import nn

from scripts.benchmark.throughput import ForwardTimer, main, measure_throughput


class Sleeper(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.02)
        return x


def test_forward_timer_sums_the_time_inside_forward_calls() -> None:
    module = Sleeper()
    timer = ForwardTimer(module)
    for _ in range(3):
        module(torch.zeros(1))
    timer.remove()
    module(torch.zeros(1))  # not timed any more
    assert timer.calls == 3
    assert 0.06 <= timer.seconds < 0.5


def test_one_run_reports_whole_and_forward_time_per_pair(
    tmp_path: Path, phantom_dataset: Path, compact_checkpoint: Path
) -> None:
    result = measure_throughput(str(phantom_dataset / "testing"), 2, str(compact_checkpoint), tmp_path)
    assert result["pairs"] == 2
    assert 0 < result["forward_seconds_per_pair"] < result["whole_run_seconds_per_pair"]
    assert result["ratio"] == pytest.approx(result["whole_run_seconds_per_pair"] / result["forward_seconds_per_pair"])
    assert len(list((tmp_path / "outputs").glob("*/summary.json"))) == 2
    assert {"load_and_preprocess", "network", "postprocess", "write"} <= set(result["stage_means_seconds"])


def test_a_missing_data_set_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--dataset_dir", str(tmp_path / "absent")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and str(tmp_path / "absent") in error and "python -m scripts.phantom" in error
