"""The quality-control picture of a registered pair: one PNG to glance at before trusting the outputs.

Rows: three slices along the fixed image's slice axis (the axis with the largest voxel size), spread over the
predicted heart (or over the volume when nothing is segmented). Columns, all in the fixed image's original space:
fixed with the memory's segmentation contours; moving before registration; warped moving; |fixed - moving| before
and |fixed - warped| after (same scale); the deformed grid (where fixed grid lines land in the moving image, in-plane
components); the Jacobian determinant (blue < 1 compression, red > 1 expansion, black contour at J = 0: folding).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers, and no GUI thread in the engine loop

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from scripts.geometry import world_to_voxel_displacement  # noqa: E402

__all__ = ["STRUCTURE_COLOURS", "choose_slices", "save_quality_control_figure"]

STRUCTURE_COLOURS = {1: ("RV", "#1f9bff"), 2: ("LV myocardium", "#2ecc40"), 3: ("LV blood pool", "#ff4136")}
GRID_STEP_VOXELS = 8


def choose_slices(shape: Sequence[int], segmentation: np.ndarray | None, slice_axis: int, count: int = 3) -> list[int]:
    """``count`` slice indices along ``slice_axis`` of a ``shape`` volume: spread over the segmented heart (labels
    > 0 in ``segmentation``), else over the whole volume."""
    size = int(shape[slice_axis])
    if segmentation is not None and segmentation.any():
        other = tuple(a for a in range(3) if a != slice_axis)
        present = np.flatnonzero(segmentation.any(axis=other))
        low, high = int(present[0]), int(present[-1])
    else:
        low, high = 0, size - 1
    fractions = np.linspace(0.2, 0.8, count) if count > 1 else np.array([0.5])
    return sorted({int(round(low + f * (high - low))) for f in fractions})


def _window(image: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(image, [1.0, 99.5])
    return float(low), float(high if high > low else low + 1.0)


def _show(axis, plane: np.ndarray, aspect: float, **kwargs) -> None:
    # transpose + origin="lower": first in-plane array axis runs left to right, second bottom to top
    axis.imshow(plane.T, origin="lower", aspect=aspect, interpolation="nearest", **kwargs)
    axis.set_xticks([])
    axis.set_yticks([])


def _contours(axis, labels: np.ndarray | None, linestyle: str = "solid", linewidth: float = 0.8) -> None:
    if labels is None:
        return
    for value, (_, colour) in STRUCTURE_COLOURS.items():
        mask = (labels == value).T.astype(float)
        if mask.any() and not mask.all():
            axis.contour(mask, levels=[0.5], colors=[colour], linewidths=linewidth, linestyles=linestyle)


def _grid(axis, displacement_voxels: np.ndarray, shape: Sequence[int]) -> None:
    """Lines of constant in-plane index, moved by the in-plane displacement (in voxels of the fixed grid)."""
    rows = np.arange(shape[0])
    cols = np.arange(shape[1])
    first, second = displacement_voxels
    for c in range(0, shape[1], GRID_STEP_VOXELS):
        axis.plot(rows + first[:, c], c + second[:, c], color="#ffdc00", linewidth=0.45, alpha=0.85)
    for r in range(0, shape[0], GRID_STEP_VOXELS):
        axis.plot(r + first[r, :], cols + second[r, :], color="#ffdc00", linewidth=0.45, alpha=0.85)
    axis.set_xlim(-0.5, shape[0] - 0.5)
    axis.set_ylim(-0.5, shape[1] - 0.5)


def save_quality_control_figure(
    path: str | os.PathLike,
    fixed: np.ndarray,
    moving: np.ndarray,
    warped: np.ndarray,
    displacement_mm: np.ndarray,
    affine: np.ndarray,
    segmentation: np.ndarray | None = None,
    warped_label: np.ndarray | None = None,
    jacobian: np.ndarray | None = None,
    title: str = "",
    notes: Mapping[str, str] | None = None,
) -> Path:
    """Write the QC PNG (see the module docstring).

    Args:
        path: PNG file to write.
        fixed, moving, warped: (X, Y, Z) images on the fixed image's grid (moving resampled without deformation).
        displacement_mm: (3, X, Y, Z) world RAS displacement in mm (fixed -> moving).
        affine: (4, 4) affine of the fixed grid.
        segmentation: (X, Y, Z) predicted labels of the fixed image (0..3) or None.
        warped_label: (X, Y, Z) warped moving labels or None (dashed contours on the warped image).
        jacobian: (X, Y, Z) Jacobian determinant or None.
        title: figure title (pair name).
        notes: short "name: value" lines printed under the title (metrics).

    Returns:
        the written path.
    """
    affine = np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    slice_axis = int(np.argmax(spacing))
    in_plane = [a for a in range(3) if a != slice_axis]
    aspect = float(spacing[in_plane[1]] / spacing[in_plane[0]])
    # displacement in voxels of the fixed grid, to draw the deformed grid in index space
    voxels = world_to_voxel_displacement(np.asarray(displacement_mm, dtype=np.float64), affine)
    slices = choose_slices(fixed.shape, segmentation if segmentation is not None else warped_label, slice_axis)
    low, high = _window(fixed)
    before, after = np.abs(fixed - moving), np.abs(fixed - warped)
    difference_max = float(np.percentile(before, 99.5)) or 1.0
    columns = [
        "fixed + predicted segmentation" if segmentation is not None else "fixed",
        "moving (before)",
        "warped moving",
        "|fixed - moving| before",
    ]
    columns += ["|fixed - warped| after", "deformed grid (in-plane)", "Jacobian determinant"]
    figure, axes = plt.subplots(len(slices), len(columns), figsize=(2.3 * len(columns), 2.35 * len(slices) + 1.1))
    axes = np.atleast_2d(axes)

    def plane(volume: np.ndarray | None, index: int) -> np.ndarray | None:
        return None if volume is None else np.take(volume, index, axis=slice_axis)

    for row, index in enumerate(slices):
        seg = plane(segmentation, index)
        grey = dict(cmap="gray", vmin=low, vmax=high)
        for column, image in enumerate((fixed, moving, warped)):
            _show(axes[row, column], plane(image, index), aspect, **grey)
            _contours(axes[row, column], seg, linewidth=0.9 if column == 0 else 0.6)
        _contours(axes[row, 2], plane(warped_label, index), linestyle="dashed")
        for column, image in ((3, before), (4, after)):
            _show(axes[row, column], plane(image, index), aspect, cmap="magma", vmin=0.0, vmax=difference_max)
        _show(axes[row, 5], plane(fixed, index), aspect, cmap="gray", vmin=low, vmax=high, alpha=0.6)
        _grid(axes[row, 5], [plane(voxels[a], index) for a in in_plane], [fixed.shape[a] for a in in_plane])
        if jacobian is not None:
            values = plane(jacobian, index)
            norm = TwoSlopeNorm(vcenter=1.0, vmin=min(0.0, float(values.min())), vmax=max(2.0, float(values.max())))
            _show(axes[row, 6], values, aspect, cmap="RdBu_r", norm=norm)
            if (values <= 0).any():
                axes[row, 6].contour((values <= 0).T.astype(float), levels=[0.5], colors="black", linewidths=0.8)
        else:
            axes[row, 6].axis("off")
        axes[row, 0].set_ylabel(f"slice {index} (axis {slice_axis})", fontsize=9)
    for column, name in enumerate(columns):
        axes[0, column].set_title(name, fontsize=9)
    handles = [Line2D([], [], color=colour, label=name) for name, colour in STRUCTURE_COLOURS.values()]
    if warped_label is not None:
        handles.append(Line2D([], [], color="grey", linestyle="dashed", label="warped moving label"))
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    lines = [title] + ["   ".join(f"{k}: {v}" for k, v in (notes or {}).items())]
    figure.suptitle("\n".join(line for line in lines if line), fontsize=10, y=1.0 - 0.08 / figure.get_figheight())
    # fixed margins in inches: room for the two title lines on top and the legend below
    height = figure.get_figheight()
    figure.subplots_adjust(
        left=0.03, right=0.995, top=1.0 - 0.75 / height, bottom=0.35 / height, wspace=0.04, hspace=0.06
    )
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return Path(path)
