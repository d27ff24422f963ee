"""Speed and memory of the registration networks, each measured in a fresh process.

Every model is built and timed in its own spawned process, so its peak resident memory is its own
(ru_maxrss of that process minus the resident memory before the measured work), and one model's
allocator state does not slow the next. Times are wall-clock medians after warm-up iterations.
"""

from __future__ import annotations

import multiprocessing
import resource
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from scripts.labels import IMAGE_KEYS, LABEL_KEYS, NETWORK_SPATIAL_SIZE, NUM_CLASSES
from scripts.losses import MemWarpLoss
from scripts.networks import registration_network
from scripts.networks.cpu import optimise_for_device

__all__ = ["MODELS", "SpeedResult", "measure", "measure_in_subprocess", "timed_runs"]

# name -> (architecture, preset); the comparators share the compact preset's widths.
MODELS: dict[str, tuple[str, str]] = {
    "compact": ("memwarp", "compact"),
    "paper": ("memwarp", "paper"),
    "lapwarp": ("lapwarp", "compact"),
    "lkunet": ("lkunet", "compact"),
    "voxelmorph": ("voxelmorph", "compact"),
}


@dataclass
class SpeedResult:
    """What one model measured: parameters, seconds and peak memory (MiB above the process baseline)."""

    name: str
    parameters: int
    inference_seconds_per_pair: float
    training_seconds_per_step: float
    training_seconds_per_pair: float
    inference_peak_mib: float
    training_peak_mib: float
    inference_repeats: int
    training_repeats: int


def _resident_mib() -> float:
    """Current resident memory of this process in MiB (Linux /proc)."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _peak_mib() -> float:
    """Peak resident memory of this process in MiB (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_runs(step: Callable[[], None], repeats: int, warmup: int, device: torch.device) -> list[float]:
    """Run ``step`` ``warmup`` times untimed, then ``repeats`` times timed: wall-clock seconds (CUDA synchronised)."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        _synchronise(device)
        start = time.perf_counter()
        step()
        _synchronise(device)
        times.append(time.perf_counter() - start)
    return times


def _pair(batch: int, spatial_size: tuple[int, int, int], device: torch.device) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    shape = (batch, 1, *spatial_size)
    images = {key: torch.rand(shape, generator=generator).to(device) for key in IMAGE_KEYS}
    labels = {key: torch.randint(0, NUM_CLASSES, shape, generator=generator).float().to(device) for key in LABEL_KEYS}
    return {**images, **labels}


def measure(
    name: str,
    mode: str,
    spatial_size: tuple[int, int, int] = NETWORK_SPATIAL_SIZE,
    repeats: int = 3,
    warmup: int = 1,
    device: str = "cpu",
    threads: int | None = None,
) -> dict[str, Any]:
    """Measure one model in one mode.

    ``mode`` is "inference" (batch 1, no grad) or "training" (batch 2: forward, MemWarp loss, backward, Adam step).
    The network runs as the bundle runs it on ``device`` (:func:`scripts.networks.cpu.optimise_for_device`).
    """
    warnings.filterwarnings("ignore", category=UserWarning)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    target = torch.device(device)
    architecture, preset = MODELS[name]
    network = optimise_for_device(registration_network(architecture, preset), target)
    parameters = sum(p.numel() for p in network.parameters())
    if mode == "inference":
        batch = _pair(1, spatial_size, target)
        network.eval()

        def step() -> None:
            with torch.inference_mode():
                network(batch["moving"], batch["fixed"])

    elif mode == "training":
        batch = _pair(2, spatial_size, target)
        network.train()
        loss_function = MemWarpLoss()
        optimiser = torch.optim.Adam(network.parameters(), lr=1e-4, amsgrad=True)

        def step() -> None:
            optimiser.zero_grad(set_to_none=True)
            loss = loss_function(network(batch["moving"], batch["fixed"]), batch)
            loss.backward()
            optimiser.step()

    else:
        raise ValueError(f"unknown mode {mode!r}")
    if target.type == "cuda":
        torch.cuda.reset_peak_memory_stats(target)
    baseline = _resident_mib()
    times = timed_runs(step, repeats, warmup, target)
    if target.type == "cuda":
        peak = torch.cuda.max_memory_allocated(target) / 2**20
    else:
        peak = _peak_mib() - baseline
    return {"parameters": parameters, "seconds": statistics.median(times), "peak_mib": peak, "repeats": repeats}


def _child(queue: multiprocessing.Queue, args: tuple, kwargs: dict) -> None:
    try:
        queue.put(("ok", measure(*args, **kwargs)))
    except BaseException as error:  # report any failure to the parent instead of hanging it
        queue.put(("error", f"{type(error).__name__}: {error}"))


def measure_in_subprocess(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Run :func:`measure` in a fresh spawned process and return its result."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, args, kwargs))
    process.start()
    status, value = queue.get()
    process.join()
    if status != "ok":
        raise RuntimeError(f"measuring {args[:2]} failed: {value}")
    return value


def speed_result(name: str, inference: dict[str, Any], training: dict[str, Any]) -> SpeedResult:
    """Combine the two measurements of one model."""
    return SpeedResult(
        name=name,
        parameters=inference["parameters"],
        inference_seconds_per_pair=inference["seconds"],
        training_seconds_per_step=training["seconds"],
        training_seconds_per_pair=training["seconds"] / 2,
        inference_peak_mib=inference["peak_mib"],
        training_peak_mib=training["peak_mib"],
        inference_repeats=inference["repeats"],
        training_repeats=training["repeats"],
    )


def as_dict(result: SpeedResult) -> dict[str, Any]:
    """JSON-ready dict of a result."""
    return asdict(result)
