"""The writer: one folder per pair, written to a temporary folder and renamed into place when complete.

``<output_dir>/<pair_name>/`` holds (fixed image's original space unless said otherwise):
``warped_moving.nii.gz``, ``warped_moving_label.nii.gz`` (when a moving label is given),
``displacement_fixed_to_moving_mm.nii.gz`` (see :mod:`scripts.geometry.displacement_nifti`),
``displacement_moving_to_fixed_mm.nii.gz`` (its inverse, on the MOVING image's original grid),
``fixed_segmentation_predicted.nii.gz`` (networks with an anatomical memory), ``jacobian_determinant.nii.gz``,
``summary.json``, ``quality_control.png`` and, on request, ``network_grid/`` with the network-grid versions.
A failure while writing a pair leaves no trace of that pair; an earlier result of the same pair is replaced only
once the new folder is complete.

Writing (compression, :mod:`scripts.compressed_nifti`; the QC picture) runs on a background thread while the next
pair is registered (and the one after it read, :class:`scripts.data.PrefetchingDataLoader`); at most two pairs wait
to be written, and the run completes only once every pair is written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from ignite.engine import Engine, Events

from scripts.geometry import NiftiGeometry, voxel_to_world_displacement, write_displacement_nifti
from scripts.inference.batching import pairs_with_results
from scripts.inference.handlers import PairTimer
from scripts.inference.network_io import plain_tensor
from scripts.inference.nifti_io import save_volume
from scripts.inference.qc_figure import save_quality_control_figure
from scripts.inference.resampling import resample_slice
from scripts.inference.summary import pair_summary

__all__ = ["PairOutputWriter", "replace_directory"]

logger = logging.getLogger(__name__)


def _numpy(tensor: Any) -> np.ndarray:
    return tensor.detach().cpu().numpy() if hasattr(tensor, "detach") else np.asarray(tensor)


def replace_directory(source: Path, destination: Path) -> None:
    """Move the complete folder ``source`` to ``destination``, replacing an existing one only after the move."""
    if not destination.exists():
        os.replace(source, destination)
        return
    previous = Path(tempfile.mkdtemp(prefix=f".{destination.name}.old.", dir=destination.parent))
    os.replace(destination, previous / destination.name)
    os.replace(source, destination)
    shutil.rmtree(previous, ignore_errors=True)


def _notes(metrics: Mapping[str, float]) -> dict[str, str]:
    """The few numbers worth a glance, for the QC picture's title."""
    notes = {}
    if "dice_mean" in metrics:
        notes["Dice"] = f"{metrics.get('initial_dice_mean', float('nan')):.3f} -> {metrics['dice_mean']:.3f}"
        notes["HD95"] = f"{metrics.get('hd95_mean', float('nan')):.1f} mm"
    notes["folding"] = f"{metrics['folding_percent']:.3f} %"
    notes["SDlogJ(+3)"] = f"{metrics['sdlogj_plus3']:.3f}"
    if "max_displacement_mm" in metrics:
        notes["max |d|"] = f"{metrics['max_displacement_mm']:.1f} mm"
    return notes


class PairOutputWriter:
    """At ``Events.ITERATION_COMPLETED``: write each pair's folder (in the background); at ``COMPLETED``: wait for
    the last ones and say where everything went. When the run fails, the pairs already handed over are still
    written (Python joins the writer thread before it exits).

    Args:
        output_dir: folder receiving one subfolder per pair (created when the first pair is written).
        checkpoint: the weights loader (``scripts.engine.WeightsLoader``) whose ``record`` (path, sha256) goes into
            the summaries.
        timer: the :class:`PairTimer` whose stage times go into the summaries.
        network: description for the summaries (architecture, preset, device...).
        save_network_grid: also write the network-grid images to ``network_grid/``.
        save_qc: write ``quality_control.png``.
        max_pending: pairs that may wait to be written before the next one is registered (0: write in the
            foreground).
    """

    def __init__(
        self,
        output_dir: str,
        checkpoint: Any = None,
        timer: PairTimer | None = None,
        network: Mapping[str, Any] | None = None,
        save_network_grid: bool = False,
        save_qc: bool = True,
        max_pending: int = 2,
    ) -> None:
        self.output_dir = Path(output_dir).expanduser().absolute()
        self.checkpoint, self.timer = checkpoint, timer
        self.network = dict(network or {})
        self.save_network_grid, self.save_qc = save_network_grid, save_qc
        self.max_pending = max_pending
        self.written: list[Path] = []
        self._pending: deque[Future] = deque()
        self._executor: ThreadPoolExecutor | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self._report)

    def _reset(self, engine: Engine) -> None:
        self.written = []
        self._pending.clear()

    def __call__(self, engine: Engine) -> None:
        pairs = pairs_with_results(engine.state.batch, engine.state.output)
        for sample, result in pairs:
            data = {**sample, **result}
            # a batch's stage times are shared by its pairs: each pair's summary gets its share
            timings = {k: v / len(pairs) for k, v in self.timer.current.items()} if self.timer is not None else {}
            if self.max_pending <= 0:
                self.written.append(self.write_pair(data, timings))
                continue
            while len(self._pending) >= self.max_pending or (self._pending and self._pending[0].done()):
                self.written.append(self._pending.popleft().result())  # a failed write raises here
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pair-writer")
            self._pending.append(self._executor.submit(self.write_pair, data, timings))

    def _wait_for_pending(self) -> None:
        while self._pending:
            self.written.append(self._pending.popleft().result())

    def _report(self, engine: Engine) -> None:
        self._wait_for_pending()
        logger.info(f"registered {len(self.written)} pair(s); outputs written to {self.output_dir}")

    def write_pair(self, data: Mapping[str, Any], timings: Mapping[str, float] | None = None) -> Path:
        """Write one pair's folder from the postprocessed dict (``timings``: its stage times so far, seconds);
        returns the folder."""
        started = time.perf_counter()
        record = data["pair"]
        destination = self.output_dir / record["pair_name"]
        self.output_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{record['pair_name']}.", suffix=".partial", dir=self.output_dir))
        try:
            files = self._write_files(staging, data, record)
            timings = dict(timings or {})
            timings["write"] = time.perf_counter() - started
            timings["total"] = sum(timings.values())
            summary = pair_summary(
                record,
                data.get("metrics", {}),
                timings,
                None if self.checkpoint is None else self.checkpoint.record,
                files + ["summary.json"],
                self.network,
                refinement=data.get("refinement"),
                warnings=data.get("warnings", ()),
                out_of_distribution=data.get("out_of_distribution"),
                inverse_consistency=data.get("inverse_consistency"),
            )
            (staging / "summary.json").write_text(json.dumps(summary, indent=4) + "\n", encoding="utf-8")
            os.chmod(staging, 0o755)  # mkdtemp makes it private; outputs are meant to be shared like any folder
            replace_directory(staging, destination)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        logger.info(f"{record['pair_name']}: wrote {destination}")
        return destination

    def _write_files(self, folder: Path, data: Mapping[str, Any], record: Mapping[str, Any]) -> list[str]:
        fixed_space = NiftiGeometry.from_header_fields(data["fixed_original"].meta)
        files = []

        def volume(name: str, key: str, dtype=np.float32, geometry: NiftiGeometry = fixed_space, where: Path = folder):
            if key in data:
                save_volume(data[key], geometry, where / name, dtype=dtype)
                files.append(str((where / name).relative_to(folder)))

        volume("warped_moving.nii.gz", "warped_moving_fixed_space")
        volume("warped_moving_label.nii.gz", "warped_moving_label_fixed_space", np.uint8)
        write_displacement_nifti(
            folder / "displacement_fixed_to_moving_mm.nii.gz", data["ddf_fixed_space"], fixed_space
        )
        files.append("displacement_fixed_to_moving_mm.nii.gz")
        if "ddf_moving_space" in data:
            moving_space = NiftiGeometry.from_header_fields(data["moving_original"].meta)
            write_displacement_nifti(
                folder / "displacement_moving_to_fixed_mm.nii.gz", data["ddf_moving_space"], moving_space
            )
            files.append("displacement_moving_to_fixed_mm.nii.gz")
        volume("fixed_segmentation_predicted.nii.gz", "fixed_segmentation_fixed_space", np.uint8)
        volume("jacobian_determinant.nii.gz", "jacobian_fixed_space")
        if self.save_qc:
            save_quality_control_figure(
                folder / "quality_control.png",
                fixed=_numpy(data["fixed_original"]).astype(np.float32, copy=False),
                # the moving image before registration, resampled only on the slices the picture shows
                moving=partial(
                    resample_slice,
                    plain_tensor(data["moving_original"]),
                    data["moving_original"].affine,
                    tuple(data["fixed_original"].shape),
                    data["fixed_affine"],
                ),
                warped=_numpy(data["warped_moving_fixed_space"]),
                displacement_mm=_numpy(data["ddf_fixed_space"]),
                affine=_numpy(data["fixed_affine"]),
                segmentation=(
                    _numpy(data["fixed_segmentation_fixed_space"][0])
                    if "fixed_segmentation_fixed_space" in data
                    else None
                ),
                warped_label=(
                    _numpy(data["warped_moving_label_fixed_space"])
                    if "warped_moving_label_fixed_space" in data
                    else None
                ),
                jacobian=_numpy(data["jacobian_fixed_space"][0]) if "jacobian_fixed_space" in data else None,
                title=str(record["pair_name"]),
                notes=_notes(data.get("metrics", {})),
            )
            files.append("quality_control.png")
        if self.save_network_grid:
            files += self._write_network_grid(folder, data)
        return files

    def _write_network_grid(self, folder: Path, data: Mapping[str, Any]) -> list[str]:
        grid = folder / "network_grid"
        grid.mkdir()
        affine = data["fixed"].affine
        geometry = NiftiGeometry(affine)
        names = {
            "fixed.nii.gz": "fixed",
            "moving.nii.gz": "moving",
            "warped_moving.nii.gz": "warped",
            "jacobian_determinant.nii.gz": "jacobian",
        }
        written = []
        for name, key in names.items():
            save_volume(data[key], geometry, grid / name)
            written.append(f"network_grid/{name}")
        if "fixed_segmentation" in data:
            save_volume(data["fixed_segmentation"], geometry, grid / "fixed_segmentation_predicted.nii.gz", np.uint8)
            written.append("network_grid/fixed_segmentation_predicted.nii.gz")
        ddf = data["ddf"]
        world = voxel_to_world_displacement(ddf, affine)
        write_displacement_nifti(grid / "displacement_fixed_to_moving_mm.nii.gz", world, geometry)
        save_volume(np.moveaxis(_numpy(ddf), 0, -1), geometry, grid / "ddf_voxels.nii.gz")
        written += ["network_grid/displacement_fixed_to_moving_mm.nii.gz", "network_grid/ddf_voxels.nii.gz"]
        return written
