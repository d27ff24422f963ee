"""A mid-slice figure of one registration pair (fixed, moving, warped, deformed grid) for TensorBoard."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["RegistrationFigureHandler", "registration_figure"]


def _slice(volume: torch.Tensor, index: int) -> np.ndarray:
    """(H, W) numpy slice of a (C, H, W, D) or (H, W, D) tensor, channel 0."""
    volume = volume.detach().float().cpu()
    if volume.ndim == 4:
        volume = volume[0]
    return volume[:, :, index].numpy()


def registration_figure(
    moving: torch.Tensor,
    fixed: torch.Tensor,
    warped: torch.Tensor,
    ddf: torch.Tensor,
    slice_index: int | None = None,
    grid_step: int = 4,
    dpi: int = 80,
) -> np.ndarray:
    """Render fixed, moving, warped and the deformed in-plane grid of one pair at one slice.

    Panels show array axis 0 horizontally and axis 1 vertically (``origin="lower"``). The grid panel draws the
    sampling positions ``x + ddf(x)`` of every ``grid_step``-th row and column: where the warped image reads the
    moving one (``warped(x) = moving(x + ddf(x))``).

    Args:
        moving, fixed, warped: (1, H, W, D) or (H, W, D) images of one pair.
        ddf: (3, H, W, D) displacement in voxels.
        slice_index: slice along axis 2; default the middle one.
        grid_step: spacing of the drawn grid lines in voxels.
        dpi: figure resolution.

    Returns:
        (rows, columns, 3) uint8 RGB image.
    """
    depth = ddf.shape[-1]
    index = depth // 2 if slice_index is None else int(slice_index)
    panels = {"fixed": _slice(fixed, index), "moving": _slice(moving, index), "warped": _slice(warped, index)}
    displacement = ddf.detach().float().cpu()[:2, :, :, index].numpy()

    figure = Figure(figsize=(4 * 3.0, 3.2), dpi=dpi)
    canvas = FigureCanvasAgg(figure)
    axes = figure.subplots(1, 4)
    for axis, (title, image) in zip(axes, panels.items()):
        axis.imshow(image.T, cmap="gray", origin="lower", vmin=0.0, vmax=1.0)
        axis.set_title(title)
    rows, columns = displacement.shape[1:]
    positions = np.stack(np.meshgrid(np.arange(rows), np.arange(columns), indexing="ij")) + displacement
    grid_axis = axes[3]
    grid_axis.imshow(panels["fixed"].T, cmap="gray", origin="lower", vmin=0.0, vmax=1.0, alpha=0.4)
    for i in range(0, rows, grid_step):
        grid_axis.plot(positions[0, i, :], positions[1, i, :], color="tab:red", linewidth=0.6)
    for j in range(0, columns, grid_step):
        grid_axis.plot(positions[0, :, j], positions[1, :, j], color="tab:red", linewidth=0.6)
    grid_axis.set_xlim(-0.5, rows - 0.5)
    grid_axis.set_ylim(-0.5, columns - 0.5)
    grid_axis.set_title("x + ddf(x)")
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(f"slice {index} of {depth}")
    figure.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


class RegistrationFigureHandler:
    """Log :func:`registration_figure` of the first pair of each validation run to TensorBoard.

    Attach to the validator; the image's step is the validator's epoch, which MONAI sets to the trainer's epoch.
    Reads the engine output of ``RegistrationPrepareBatch`` ("image" moving, "label" dict with "fixed", "pred" dict
    with "warped" and "ddf"). Main process only.

    Args:
        summary_writer: a ``torch.utils.tensorboard.SummaryWriter``.
        tag: image tag.
        grid_step: see :func:`registration_figure`.
    """

    def __init__(self, summary_writer: Any, tag: str = "validation/pair", grid_step: int = 4) -> None:
        self.summary_writer = summary_writer
        self.tag = tag
        self.grid_step = grid_step
        self._pending = False

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)

    def epoch_started(self, engine: Engine) -> None:
        self._pending = True

    def iteration_completed(self, engine: Engine) -> None:
        if not self._pending:
            return
        self._pending = False
        output = engine.state.output
        prediction, targets = output["pred"], output["label"]
        image = registration_figure(
            moving=targets["moving"][0],
            fixed=targets["fixed"][0],
            warped=prediction["warped"][0],
            ddf=prediction["ddf"][0],
            grid_step=self.grid_step,
        )
        self.summary_writer.add_image(self.tag, image, global_step=engine.state.epoch, dataformats="HWC")
        self.summary_writer.flush()
