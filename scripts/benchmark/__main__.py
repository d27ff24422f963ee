"""``python -m scripts.benchmark``: speed and memory of compact, paper, LapWarp, LKU-Net and MONAI VoxelMorph.

All of them are measured in one run on this machine and compared by ratios, so the figures do not depend on
the machine being the same as the one in docs/README.md.

``python -m scripts.benchmark accuracy ...`` is the accuracy mode: the paper's Table 1 (plus end-point error on
the phantom) from trained checkpoints, see :mod:`scripts.benchmark.accuracy`. ``python -m scripts.benchmark cine ...``
scores the cine workflow (volumes, EF, ES, strain, seconds per cine) against the phantom's truth, see
:mod:`scripts.benchmark.cine`.

``python -m scripts.benchmark robustness ...`` perturbs the test split as a scanner or a patient would and scores
networks and classical tools on it, see :mod:`scripts.benchmark.robustness`.

``python -m scripts.benchmark throughput ...`` runs the inference workflow on 100 phantom pairs in one run and
compares its whole-run time per pair with the network's forward time, see :mod:`scripts.benchmark.throughput`.

``python -m scripts.benchmark warning ...`` measures the out-of-distribution warning's detection and false-alarm
rates and the threshold of every candidate statistic, see :mod:`scripts.benchmark.warning_calibration`.

``python -m scripts.benchmark loss_balance ...`` measures which term of the training loss trains which part of the
network (gradient norms per term and part), see :mod:`scripts.benchmark.loss_balance`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from typing import Any

import torch

from scripts.atomic_files import write_text_atomically
from scripts.benchmark.speed import MODELS, as_dict, measure_in_subprocess, speed_result
from scripts.benchmark.warp_floor import measure_warp_floor
from scripts.labels import NETWORK_SPATIAL_SIZE

# Directed training pairs per epoch in the reference split, and the budget for the shipped weights.
TRAINING_PAIRS_PER_EPOCH = 170
TRAINING_BUDGET_HOURS = 2.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.benchmark", description=__doc__)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--spatial_size", nargs=3, type=int, default=list(NETWORK_SPATIAL_SIZE))
    parser.add_argument("--repeats", type=int, default=5, help="timed iterations per model and mode (median)")
    parser.add_argument("--paper_training_repeats", type=int, default=1, help="the paper preset's step takes minutes")
    parser.add_argument(
        "--warmup",
        type=int,
        default=3,
        help="untimed iterations before timing, every model and mode (CPU: the first 2-3 iterations of a fresh "
        "process are up to 1.7x slower while the allocator and oneDNN's kernel cache warm up)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--output", default="benchmark_speed.json", help="JSON file for the results")
    return parser.parse_args(argv)


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The targets of the network issue, as ratios measured in this run (>= 1 means compact is faster)."""
    out: dict[str, float] = {}
    compact = results.get("compact")
    if compact is None:
        return out
    for other in ("paper", "voxelmorph"):
        if other in results:
            out[f"{other}_over_compact_inference"] = (
                results[other]["inference_seconds_per_pair"] / compact["inference_seconds_per_pair"]
            )
            out[f"{other}_over_compact_training"] = (
                results[other]["training_seconds_per_step"] / compact["training_seconds_per_step"]
            )
    steps_per_epoch = TRAINING_PAIRS_PER_EPOCH / 2
    epoch_seconds = steps_per_epoch * compact["training_seconds_per_step"]
    out["compact_epochs_in_budget"] = TRAINING_BUDGET_HOURS * 3600 / epoch_seconds
    return out


def print_table(results: dict[str, dict[str, Any]], derived: dict[str, float]) -> None:
    header = (
        f"{'model':<11} {'params (M)':>10} {'infer s/pair':>13} {'train s/step(b2)':>17} "
        f"{'infer MiB':>10} {'train MiB':>10}"
    )
    print(header)
    print("-" * len(header))
    for name, row in results.items():
        print(
            f"{name:<11} {row['parameters'] / 1e6:>10.3f} {row['inference_seconds_per_pair']:>13.3f} "
            f"{row['training_seconds_per_step']:>17.3f} {row['inference_peak_mib']:>10.0f} "
            f"{row['training_peak_mib']:>10.0f}"
        )
    print()
    targets = {
        "paper_over_compact_inference": (40.0, "compact inference >= 40x faster than paper"),
        "paper_over_compact_training": (40.0, "compact training step >= 40x faster than paper"),
        "voxelmorph_over_compact_inference": (1.0, "compact inference no slower than MONAI VoxelMorph"),
        "voxelmorph_over_compact_training": (1.0, "compact training step no slower than MONAI VoxelMorph"),
    }
    for key, (goal, text) in targets.items():
        if key in derived:
            verdict = "met" if derived[key] >= goal else "MISSED"
            print(f"{text}: ratio {derived[key]:.2f} (goal >= {goal:g}) {verdict}")
    if "compact_epochs_in_budget" in derived:
        print(
            f"compact: {derived['compact_epochs_in_budget']:.1f} epochs of {TRAINING_PAIRS_PER_EPOCH} pairs "
            f"(batch 2) fit in {TRAINING_BUDGET_HOURS} h of training steps on this machine"
        )


def main(argv: list[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["accuracy"]:
        from scripts.benchmark.accuracy import main as accuracy_main

        return accuracy_main(arguments[1:])
    if arguments[:1] == ["robustness"]:
        from scripts.benchmark.robustness import main as robustness_main

        return robustness_main(arguments[1:])
    if arguments[:1] == ["cine"]:
        from scripts.benchmark.cine import main as cine_main

        return cine_main(arguments[1:])
    if arguments[:1] == ["throughput"]:
        from scripts.benchmark.throughput import main as throughput_main

        return throughput_main(arguments[1:])
    if arguments[:1] == ["loss_balance"]:
        from scripts.benchmark.loss_balance import main as loss_balance_main

        return loss_balance_main(arguments[1:])
    if arguments[:1] == ["warning"]:
        from scripts.benchmark.warning_calibration import main as warning_main

        return warning_main(arguments[1:])
    args = parse_args(argv)
    size = tuple(args.spatial_size)
    results: dict[str, dict[str, Any]] = {}
    for name in args.models:
        training_repeats = args.paper_training_repeats if name == "paper" else args.repeats
        common = {"spatial_size": size, "device": args.device, "threads": args.threads, "warmup": args.warmup}
        inference = measure_in_subprocess(name, "inference", repeats=args.repeats, **common)
        training = measure_in_subprocess(name, "training", repeats=training_repeats, **common)
        results[name] = as_dict(speed_result(name, inference, training))
        print(f"measured {name}", file=sys.stderr, flush=True)
    floor = measure_warp_floor(
        "compact", size, repeats=args.repeats, warmup=args.warmup, device=args.device, threads=args.threads
    )
    derived = ratios(results)
    if "paper" in results:
        derived["paper_over_compact_warp_floor"] = results["paper"]["inference_seconds_per_pair"] / floor["seconds"]
    print_table(results, derived)
    print(
        f"warp floor of compact inference ({floor['grid_samples']} grid samples through MONAI Warp/DVF2DDF, no "
        f"convolutions): {floor['seconds']:.3f} s per pair"
        + (f"; paper inference / floor = {derived['paper_over_compact_warp_floor']:.1f}" if "paper" in results else "")
    )
    report = {
        "command": "python -m scripts.benchmark " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": args.threads or torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "device": args.device,
        },
        "protocol": {
            "spatial_size": list(size),
            "inference": f"batch 1, eval mode, torch.inference_mode, wall-clock median after {args.warmup} warm-ups",
            "training": "batch 2, forward + MemWarp loss (all terms, random labels) + backward + Adam(amsgrad) step, "
            f"wall-clock median after {args.warmup} warm-ups",
            "peak_memory": "peak resident memory of a fresh process above its resident memory before the run (CPU)",
        },
        "results": results,
        "warp_floor": floor,
        "ratios": derived,
    }
    output = write_text_atomically(args.output, json.dumps(report, indent=4) + "\n")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
