"""The speed benchmark's command line and its warping floor (timings themselves are not asserted: not a test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.benchmark.warp_floor import measure_warp_floor, warp_calls

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_warp_calls_are_the_37_grid_samples_of_a_five_level_forward() -> None:
    calls = warp_calls((2, 8, 16, 32, 32), (128, 128, 16))
    kinds = [kind for kind, _, _ in calls]
    assert kinds.count("integrate") == 4 and kinds.count("warp") == 9 and kinds.count("upsample") == 8
    assert sum(7 if kind == "integrate" else 1 for kind in kinds if kind != "upsample") == 37
    assert calls[0] == ("integrate", 4, (1, 3, 8, 8, 16))
    assert ("warp", 0, (1, 2, 128, 128, 16)) in calls and ("warp", 1, (1, 8, 64, 64, 16)) in calls
    assert calls[-1] == ("warp", 0, (1, 1, 128, 128, 16))


def test_warp_floor_is_measured_for_a_preset() -> None:
    floor = measure_warp_floor("tiny", (32, 32, 4), repeats=1, warmup=0, threads=1)
    assert floor["grid_samples"] == 37 and floor["seconds"] > 0


def test_speed_benchmark_writes_results_ratios_and_the_floor(tmp_path: Path) -> None:
    output = tmp_path / "speed.json"
    command = [sys.executable, "-m", "scripts.benchmark", "--models", "compact", "voxelmorph", "--spatial_size"]
    command += ["32", "32", "16", "--repeats", "1", "--warmup", "0", "--threads", "1", "--output", str(output)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(output.read_text())
    assert set(report["results"]) == {"compact", "voxelmorph"}
    assert report["results"]["compact"]["parameters"] == 459_433
    assert report["ratios"]["voxelmorph_over_compact_inference"] > 0
    assert report["warp_floor"]["grid_samples"] == 37
    assert "after 0 warm-ups" in report["protocol"]["inference"]
    assert "compact inference no slower than MONAI VoxelMorph" in result.stdout
