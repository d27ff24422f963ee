"""``python -m scripts.benchmark throughput``: the inference workflow's whole-run time per pair against its network.

Runs the bundle's inference workflow (``configs/inference.json``, exactly as the documented command does) on the
first N directed pairs of an ACDC-layout data set in ONE run, and measures in that same run:

- the whole-run time per pair: wall-clock of the evaluator's run (input checks, weights, every pair's reading,
  preprocessing, network, postprocessing and writing) divided by N;
- the network's forward time per pair: the time inside ``network(moving, fixed)``, summed over the run (timed by
  forward hooks on the workflow's own network) divided by N;
- their ratio; the goal of issue 14 is <= 2 (the rest of the pipeline costs at most one more forward);
- the forward time of the same network on its own after the run (median of a few calls with nothing else running):
  inside the run, the reading of the next pair and the writing of the previous one (two background threads) share
  the cores with the network, so its in-run forward time is longer; the ratio to the isolated forward is the
  stricter figure.

Also printed: the mean per stage from the pairs' ``summary.json`` timings. Both figures come from one process on
one machine, so the ratio does not depend on the machine's speed (it does depend on its load).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigWorkflow
from torch import nn

from scripts.atomic_files import write_text_atomically
from scripts.data import DIRECTIONS
from scripts.inference import inference_pairs

__all__ = ["ForwardTimer", "measure_throughput", "main"]

BUNDLE_ROOT = Path(__file__).resolve().parents[2]
RATIO_GOAL = 2.0


class ForwardTimer:
    """Seconds spent inside ``module``'s forward calls, summed (``self.seconds``; ``self.calls`` calls)."""

    def __init__(self, module: nn.Module) -> None:
        self.seconds, self.calls = 0.0, 0
        self._started = 0.0
        self._handles = [module.register_forward_pre_hook(self._start), module.register_forward_hook(self._stop)]

    def _start(self, module: nn.Module, args: Any) -> None:
        self._started = time.perf_counter()

    def _stop(self, module: nn.Module, args: Any, output: Any) -> None:
        self.seconds += time.perf_counter() - self._started
        self.calls += 1

    def remove(self) -> None:
        """Detach the hooks."""
        for handle in self._handles:
            handle.remove()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.benchmark throughput", description=__doc__)
    parser.add_argument("--dataset_dir", default="phantom_data", help="ACDC-layout folder (default ./phantom_data)")
    parser.add_argument("--pairs", type=int, default=100, help="directed pairs registered in the run")
    parser.add_argument("--ckpt_path", default=str(BUNDLE_ROOT / "models" / "model.pt"))
    parser.add_argument("--output_dir", default="", help="keep the outputs here (default: a temporary folder)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--output", default="", help="also write the results to this JSON file")
    return parser.parse_args(argv)


def _datalist(dataset_dir: str, pairs: int, folder: Path) -> Path:
    """A datalist JSON of the first ``pairs`` directed pairs (ED_to_ES of every patient, then ES_to_ED)."""
    records = inference_pairs(dataset_dir=dataset_dir, directions=DIRECTIONS)
    by_direction = sorted(records, key=lambda record: (DIRECTIONS.index(record["direction"]), record["patient"]))
    if len(by_direction) < pairs:
        raise ValueError(f"{dataset_dir}: {len(by_direction)} directed pairs, fewer than --pairs {pairs}")
    chosen = [{k: v for k, v in record.items() if k != "pair_name"} for record in by_direction[:pairs]]
    path = folder / "throughput_pairs.json"
    path.write_text(json.dumps(chosen, indent=4) + "\n", encoding="utf-8")
    return path


def _stage_means(output_dir: Path) -> dict[str, float]:
    """Mean seconds per stage over the pairs' summaries."""
    sums: dict[str, float] = {}
    summaries = list(output_dir.glob("*/summary.json"))
    for path in summaries:
        for stage, seconds in json.loads(path.read_text(encoding="utf-8"))["timings_seconds"].items():
            sums[stage] = sums.get(stage, 0.0) + float(seconds)
    return {stage: total / max(1, len(summaries)) for stage, total in sums.items()}


def _isolated_forward_seconds(network: nn.Module, spatial_size: Sequence[int], device: Any, repeats: int = 3) -> float:
    """Median seconds of ``network(moving, fixed)`` on one random pair of the network grid, after one warm-up."""
    moving, fixed = (torch.rand(1, 1, *spatial_size, device=device) for _ in range(2))
    seconds = []
    with torch.inference_mode():
        for repeat in range(repeats + 1):
            started = time.perf_counter()
            network(moving, fixed)
            if repeat:
                seconds.append(time.perf_counter() - started)
    return sorted(seconds)[len(seconds) // 2]


def measure_throughput(dataset_dir: str, pairs: int, ckpt_path: str, output_dir: Path) -> dict[str, Any]:
    """Run the inference workflow once on ``pairs`` pairs and return the figures of the module docstring."""
    listing = _datalist(dataset_dir, pairs, output_dir)
    workflow = ConfigWorkflow(
        workflow_type="infer",
        config_file=str(BUNDLE_ROOT / "configs" / "inference.json"),
        meta_file=str(BUNDLE_ROOT / "configs" / "metadata.json"),
        logging_file=False,
        bundle_root=str(BUNDLE_ROOT),
        datalist=str(listing),
        ckpt_path=ckpt_path,
        output_dir=str(output_dir / "outputs"),
    )
    workflow.initialize()
    timer = ForwardTimer(workflow.parser.get_parsed_content("network"))
    started = time.perf_counter()
    workflow.run()
    whole = time.perf_counter() - started
    timer.remove()
    workflow.finalize()
    if timer.calls != pairs:
        raise RuntimeError(f"expected {pairs} network calls, timed {timer.calls}")
    isolated = _isolated_forward_seconds(
        workflow.parser.get_parsed_content("network"),
        workflow.parser.get_parsed_content("spatial_size"),
        workflow.parser.get_parsed_content("device"),
    )
    return {
        "pairs": pairs,
        "whole_run_seconds": whole,
        "whole_run_seconds_per_pair": whole / pairs,
        "forward_seconds_per_pair": timer.seconds / pairs,
        "ratio": whole / timer.seconds,
        "isolated_forward_seconds_per_pair": isolated,
        "ratio_to_isolated_forward": whole / pairs / isolated,
        "ratio_goal": RATIO_GOAL,
        "stage_means_seconds": _stage_means(output_dir / "outputs"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; a missing or unusable input ends with one line naming it and exit 2."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if not Path(args.dataset_dir).is_dir():
            raise FileNotFoundError(
                f"{args.dataset_dir}: data set not found; make one with python -m scripts.phantom --output "
                f"{args.dataset_dir} or pass --dataset_dir"
            )
        if args.output_dir:
            Path(args.output_dir).mkdir(parents=True, exist_ok=True)
            result = measure_throughput(args.dataset_dir, args.pairs, args.ckpt_path, Path(args.output_dir))
        else:
            with tempfile.TemporaryDirectory(prefix="memwarp_throughput_") as folder:
                result = measure_throughput(args.dataset_dir, args.pairs, args.ckpt_path, Path(folder))
    except (OSError, ValueError) as error:  # the bundle's input errors derive from these
        print(f"python -m scripts.benchmark throughput: {error}", file=sys.stderr)
        return 2
    verdict = "met" if result["ratio"] <= RATIO_GOAL else "MISSED"
    stages = ", ".join(f"{stage} {seconds:.3f} s" for stage, seconds in result["stage_means_seconds"].items())
    lines = {
        "pairs registered in one run": f"{result['pairs']}",
        "whole-run time per pair": f"{result['whole_run_seconds_per_pair']:.3f} s",
        "network forward time per pair": f"{result['forward_seconds_per_pair']:.3f} s (in the run)",
        "ratio whole / forward": f"{result['ratio']:.2f} (goal <= {RATIO_GOAL:g}) {verdict}",
        "isolated forward time": f"{result['isolated_forward_seconds_per_pair']:.3f} s (nothing else running)",
        "ratio whole / isolated forward": f"{result['ratio_to_isolated_forward']:.2f}",
        "mean per pair and stage": stages,
    }
    for label, value in lines.items():
        print(f"{label + ':':<32}{value}")
    if args.output:
        report = {
            "command": "python -m scripts.benchmark throughput " + " ".join(sys.argv[2:] if argv is None else argv),
            "machine": {
                "cpu_count": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "platform": platform.platform(),
                "torch": torch.__version__,
            },
            "results": result,
        }
        written = write_text_atomically(args.output, json.dumps(report, indent=4) + "\n")
        print(f"wrote {written}")
    return 0
