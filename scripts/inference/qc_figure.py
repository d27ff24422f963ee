"""The quality-control picture of a registered pair: one PNG to glance at before trusting the outputs.

Rows: three slices along the fixed image's slice axis (the axis with the largest voxel size), spread over the
predicted heart (or over the volume when nothing is segmented) and named base, mid and apex (the base being the end
with the larger heart cross-section) when a segmentation tells them apart. Columns, all in the fixed image's
original space and orientation (letters on the first column: R/L, A/P, S/I of the world axes the panel's edges
face): fixed with the memory's segmentation contours; moving before registration; warped moving with the warped
moving label contours (dotted); |fixed - moving| before and |fixed - warped| after on one colour scale (bar in the
images' intensity units); the deformed grid (where fixed grid lines land in the moving image, in-plane
components); the Jacobian determinant on a fixed scale 0..2 centred on 1 (blue < 1 compression, red > 1 expansion)
with J <= 0 (folding) outlined in black.

All panels are composed into one image, and each kind of line (a structure's contours, the grid, the folding
outline) is one compound path on it, so the figure has three axes (the panels and two colour bars) and a handful of
artists: several times cheaper to draw than one axes per panel.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers, and no GUI thread in the engine loop

import numpy as np  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Colormap, Normalize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import PathPatch  # noqa: E402
from matplotlib.path import Path as LinePath  # noqa: E402

from scripts.geometry import world_to_voxel_displacement  # noqa: E402
from scripts.labels import STRUCTURE_LONG_NAMES  # noqa: E402

__all__ = [
    "JACOBIAN_RANGE",
    "STRUCTURE_COLOURS",
    "choose_slices",
    "orientation_letters",
    "quality_control_figure",
    "save_quality_control_figure",
    "slice_names",
]

STRUCTURE_COLOURS = {
    value: (STRUCTURE_LONG_NAMES[value], colour) for value, colour in ((1, "#1f9bff"), (2, "#2ecc40"), (3, "#ff4136"))
}
GRID_COLOUR = "#ffdc00"
GRID_STEP_VOXELS = 8
JACOBIAN_RANGE = (0.0, 2.0)
"""The Jacobian panel's colour scale: fixed, centred on 1 (no volume change), the same for every slice and pair."""
GAP_PIXELS = 3
DPI = 80
COLUMNS = (
    "fixed + predicted segmentation",
    "moving (before)",
    "warped moving",
    "|fixed - moving| before",
    "|fixed - warped| after",
    "deformed grid (in-plane)",
    "Jacobian determinant",
)
_WORLD_LETTERS = (("L", "R"), ("P", "A"), ("I", "S"))  # (negative, positive) end of world x, y, z (RAS+)


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


def slice_names(slices: Sequence[int], segmentation: np.ndarray | None, slice_axis: int) -> list[str]:
    """Row names: "base", "mid", "apex" for three slices when the segmentation shows which end is the base (the
    larger heart cross-section), else "slice <index>"; the index is always added."""
    names = [f"slice {index}" for index in slices]
    if len(slices) != 3 or segmentation is None:
        return names
    areas = [int(np.count_nonzero(np.take(segmentation, index, axis=slice_axis))) for index in slices]
    if areas[0] == areas[-1]:
        return names
    order = ["base", "mid", "apex"] if areas[0] > areas[-1] else ["apex", "mid", "base"]
    return [f"{name} ({label})" for name, label in zip(order, names)]


def orientation_letters(direction: np.ndarray) -> tuple[str, str]:
    """The (start, end) letters of an image axis whose index runs along the world vector ``direction`` (RAS mm),
    e.g. ("L", "R") for +x; oblique axes get two or three letters, the main component first ("LA")."""
    magnitude = np.abs(direction)
    order = [int(axis) for axis in np.argsort(-magnitude) if magnitude[axis] >= 0.5 * magnitude.max()]
    end = "".join(_WORLD_LETTERS[axis][int(direction[axis] > 0)] for axis in order)
    start = "".join(_WORLD_LETTERS[axis][int(direction[axis] <= 0)] for axis in order)
    return start, end


def _window(image: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(image, [1.0, 99.5])
    return float(low), float(high if high > low else low + 1.0)


@functools.lru_cache(maxsize=None)
def _colormap(name: str) -> Colormap:
    """The named colour map, its lookup table built once (``colormaps[name]`` hands out a new copy every time)."""
    colormap = colormaps[name]
    colormap(0.0)  # builds the lookup table now, not lazily in whichever thread draws first
    return colormap


def _colour(plane: np.ndarray, cmap: str, low: float, high: float, fade: float = 0.0) -> np.ndarray:
    """(n0, n1) plane -> (n1, n0, 3) 8-bit RGB in display order: first array axis left to right, second bottom to
    top; ``fade`` > 0 blends that share of white over the colours."""
    rgb = _colormap(cmap)(Normalize(low, high, clip=True)(plane.T[::-1]))[..., :3]
    if fade:
        rgb = fade + (1.0 - fade) * rgb
    return np.round(rgb * 255).astype(np.uint8)


def _edges(mask: np.ndarray) -> np.ndarray:
    """Pixel-edge outline of a (n0, n1) mask as (N, 2, 2) segments in plane coordinates (voxel centres at ints)."""
    padded = np.pad(mask.astype(bool), 1)
    segments = []
    i, j = np.nonzero(padded[1:, :] != padded[:-1, :])  # between voxels i-1 and i along axis 0
    x = i - 0.5
    segments.append(np.stack([np.stack([x, j - 1.5], -1), np.stack([x, j - 0.5], -1)], 1))
    i, j = np.nonzero(padded[:, 1:] != padded[:, :-1])
    y = j - 0.5
    segments.append(np.stack([np.stack([i - 1.5, y], -1), np.stack([i - 0.5, y], -1)], 1))
    return np.concatenate(segments, axis=0)


def _lines_patch(pieces: Sequence[np.ndarray], colour: str, width: float, **style) -> PathPatch:
    """One unfilled compound path: pieces are polylines (n, 2) or arrays of separate segments (N, 2, 2)."""
    vertices, codes = [], []
    for piece in pieces:
        starts = np.zeros(piece.shape[:-1], dtype=bool)
        if piece.ndim == 3:
            starts[:, 0] = True  # every segment starts anew
        else:
            starts[0] = True
        vertices.append(piece.reshape(-1, 2))
        codes.append(np.where(starts.reshape(-1), LinePath.MOVETO, LinePath.LINETO).astype(LinePath.code_type))
    path = LinePath(np.concatenate(vertices), np.concatenate(codes))
    return PathPatch(path, fill=False, edgecolor=colour, linewidth=width, **style)


class _Mosaic:
    """Panel placement: plane coordinates (first axis right, second up) -> image pixel coordinates of the mosaic."""

    def __init__(self, plane_shape: Sequence[int], rows: int, columns: int) -> None:
        self.width, self.height = int(plane_shape[0]), int(plane_shape[1])
        self.rows, self.columns = rows, columns
        shape = (rows * (self.height + GAP_PIXELS) - GAP_PIXELS, columns * (self.width + GAP_PIXELS) - GAP_PIXELS, 3)
        self.pixels = np.full(shape, 255, dtype=np.uint8)  # 8-bit RGB, white gaps

    def origin(self, row: int, column: int) -> tuple[int, int]:
        return row * (self.height + GAP_PIXELS), column * (self.width + GAP_PIXELS)

    def put(self, row: int, column: int, rgb: np.ndarray) -> None:
        top, left = self.origin(row, column)
        self.pixels[top : top + self.height, left : left + self.width] = rgb

    def place(self, points: np.ndarray, row: int, column: int) -> np.ndarray:
        """(..., 2) plane coordinates -> (..., 2) mosaic (x, y) pixel coordinates (y downwards)."""
        top, left = self.origin(row, column)
        return np.stack([left + points[..., 0], top + self.height - 1 - points[..., 1]], axis=-1)

    def centre(self, row: int, column: int) -> tuple[float, float]:
        top, left = self.origin(row, column)
        return left + (self.width - 1) / 2, top + (self.height - 1) / 2


def _grid_lines(displacement_voxels: Sequence[np.ndarray], shape: Sequence[int]) -> list[np.ndarray]:
    """Polylines (each (n, 2), plane coordinates) of constant in-plane index, moved by the in-plane displacement."""
    first, second = displacement_voxels
    rows, cols = np.arange(shape[0]), np.arange(shape[1])
    lines = [np.stack([rows + first[:, c], c + second[:, c]], -1) for c in range(0, shape[1], GRID_STEP_VOXELS)]
    lines += [np.stack([r + first[r, :], cols + second[r, :]], -1) for r in range(0, shape[0], GRID_STEP_VOXELS)]
    return lines


def quality_control_figure(
    fixed: np.ndarray,
    moving: np.ndarray | Callable[[int, int], np.ndarray],
    warped: np.ndarray,
    displacement_mm: np.ndarray,
    affine: np.ndarray,
    segmentation: np.ndarray | None = None,
    warped_label: np.ndarray | None = None,
    jacobian: np.ndarray | None = None,
    title: str = "",
    notes: Mapping[str, str] | None = None,
) -> Figure:
    """The QC figure (see the module docstring); not saved.

    Args:
        fixed, warped: (X, Y, Z) images on the fixed image's grid.
        moving: the moving image resampled without deformation on the fixed grid, (X, Y, Z), or a function
            ``(axis, index) -> plane`` giving it on one slice (only the drawn slices are then resampled).
        displacement_mm: (3, X, Y, Z) world RAS displacement in mm (fixed -> moving).
        affine: (4, 4) affine of the fixed grid.
        segmentation: (X, Y, Z) predicted labels of the fixed image (0..3) or None.
        warped_label: (X, Y, Z) warped moving labels or None (dotted contours on the warped image).
        jacobian: (X, Y, Z) Jacobian determinant or None.
        title: figure title (pair name).
        notes: short "name: value" entries printed under the title (metrics).

    Returns:
        a matplotlib Figure (Agg canvas) whose axes are the panels' image and the two colour bars, labelled
        "|intensity difference| ..." and "Jacobian determinant ...".
    """
    affine = np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    slice_axis = int(np.argmax(spacing))
    in_plane = [a for a in range(3) if a != slice_axis]
    reference = segmentation if segmentation is not None else warped_label
    slices = choose_slices(fixed.shape, reference, slice_axis)
    names = slice_names(slices, reference, slice_axis)
    low, high = _window(fixed)
    plane_shape = [fixed.shape[a] for a in in_plane]
    mosaic = _Mosaic(plane_shape, len(slices), len(COLUMNS))
    solid: dict[str, list[np.ndarray]] = {}
    dotted: dict[str, list[np.ndarray]] = {}
    grid: list[np.ndarray] = []
    folding: list[np.ndarray] = []

    def plane(volume: np.ndarray | None, index: int) -> np.ndarray | None:
        return None if volume is None else volume[(slice(None),) * slice_axis + (index,)]  # a view, not a copy

    moving_planes = [
        np.asarray(moving(slice_axis, index)) if callable(moving) else plane(moving, index) for index in slices
    ]
    before = [np.abs(plane(fixed, index) - moving_plane) for index, moving_plane in zip(slices, moving_planes)]
    after = [np.abs(plane(fixed, index) - plane(warped, index)) for index in slices]
    difference_max = float(np.percentile(np.stack(before), 99.5)) or 1.0

    def outline(into: dict[str, list[np.ndarray]], labels: np.ndarray | None, row: int, column: int) -> None:
        if labels is None:
            return
        for value, (_, colour) in STRUCTURE_COLOURS.items():
            mask = labels == value
            if mask.any():
                into.setdefault(colour, []).append(mosaic.place(_edges(mask), row, column))

    for row, index in enumerate(slices):
        for column, image in enumerate((plane(fixed, index), moving_planes[row], plane(warped, index))):
            mosaic.put(row, column, _colour(image, "gray", low, high))
        for column, difference in ((3, before[row]), (4, after[row])):
            mosaic.put(row, column, _colour(difference, "magma", 0.0, difference_max))
        mosaic.put(row, 5, _colour(plane(fixed, index), "gray", low, high, fade=0.4))  # faded under the grid
        seg = plane(segmentation, index)
        for column in (0, 1, 2):
            outline(solid, seg, row, column)
        outline(dotted, plane(warped_label, index), row, 2)
        # displacement in voxels of the fixed grid, to draw the deformed grid in index space (drawn slices only)
        slab = np.asarray(displacement_mm[(slice(None),) * (slice_axis + 1) + (slice(index, index + 1),)], np.float64)
        voxels = world_to_voxel_displacement(slab, affine)
        moved = _grid_lines([np.take(voxels[a], 0, axis=slice_axis) for a in in_plane], plane_shape)
        grid += [mosaic.place(line, row, 5) for line in moved]
        if jacobian is not None:
            values = plane(jacobian, index)
            mosaic.put(row, 6, _colour(values, "RdBu_r", *JACOBIAN_RANGE))
            if (values <= 0).any():
                folding.append(mosaic.place(_edges(values <= 0), row, 6))

    height_inches = 2.35 * len(slices) + 1.6
    figure = Figure(figsize=(2.3 * len(COLUMNS) + 0.5, height_inches), dpi=DPI)
    FigureCanvasAgg(figure)
    bottom, top = 0.9 / height_inches, 1.0 - 0.75 / height_inches
    axes = figure.add_axes((0.055, bottom, 0.94, top - bottom))
    aspect = float(spacing[in_plane[1]] / spacing[in_plane[0]])
    # 8-bit RGB: matplotlib would otherwise convert a float image to 8-bit RGBA on every draw
    axes.imshow(mosaic.pixels, aspect=aspect, interpolation="nearest")
    axes.set_axis_off()
    patches = [_lines_patch(pieces, colour, 0.8) for colour, pieces in solid.items()]
    patches += [_lines_patch(pieces, colour, 0.8, linestyle=":") for colour, pieces in dotted.items()]
    patches += [_lines_patch(grid, GRID_COLOUR, 0.45, alpha=0.9)] if grid else []
    patches += [_lines_patch(folding, "black", 0.9)] if folding else []
    for patch in patches:
        # add_artist, not add_patch: the image already sets the limits, and add_patch would walk every vertex
        patch.set_transform(axes.transData)
        axes.add_artist(patch)
    for column, name in enumerate(COLUMNS):
        x, _ = mosaic.centre(0, column)
        axes.text(x, -4, name, ha="center", va="bottom", fontsize=9)
    starts_ends = [orientation_letters(affine[:3, a]) for a in in_plane]
    for row, name in enumerate(names):
        _, y = mosaic.centre(row, 0)
        axes.text(-12, y, name, ha="right", va="center", rotation=90, fontsize=9)
        top_row, left = mosaic.origin(row, 0)
        letters = {
            (left + 2, y): (starts_ends[0][0], "left", "center"),
            (left + mosaic.width - 3, y): (starts_ends[0][1], "right", "center"),
            (left + (mosaic.width - 1) / 2, top_row + 1): (starts_ends[1][1], "center", "top"),
            (left + (mosaic.width - 1) / 2, top_row + mosaic.height - 2): (starts_ends[1][0], "center", "bottom"),
        }
        for (x, y_letter), (letter, horizontal, vertical) in letters.items():
            axes.text(x, y_letter, letter, ha=horizontal, va=vertical, color="white", fontsize=8, weight="bold")
    _colour_bars(figure, mosaic, axes, difference_max, jacobian is not None)
    handles = [Line2D([], [], color=colour, label=f"{name} (predicted)") for name, colour in STRUCTURE_COLOURS.values()]
    if warped_label is not None:
        handles.append(Line2D([], [], color="grey", linestyle=":", label="warped moving label (dotted)"))
    handles.append(Line2D([], [], color=GRID_COLOUR, label="deformed grid"))
    if folding:
        handles.append(Line2D([], [], color="black", label="J <= 0 (folding)"))
    figure.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.05, 0.0), ncol=3, fontsize=8, frameon=False)
    lines = [title] + ["   ".join(f"{k}: {v}" for k, v in (notes or {}).items())]
    figure.suptitle("\n".join(line for line in lines if line), fontsize=10, y=1.0 - 0.08 / height_inches)
    return figure


def _colour_bars(figure: Figure, mosaic: _Mosaic, axes, difference_max: float, with_jacobian: bool) -> None:
    """Horizontal colour bars under the difference columns and under the Jacobian column."""
    position = axes.get_position()
    width_pixels = mosaic.pixels.shape[1]

    def span(first: int, last: int) -> tuple[float, float]:
        _, left = mosaic.origin(0, first)
        _, right = mosaic.origin(0, last)
        right += mosaic.width
        return (
            position.x0 + position.width * left / width_pixels,
            position.x0 + position.width * right / width_pixels,
        )

    bar_height = 0.1 / figure.get_figheight()
    bar_bottom = position.y0 - 0.3 / figure.get_figheight()
    bars = [((3, 4), Normalize(0.0, difference_max), "magma", "|intensity difference| (input image units)")]
    if with_jacobian:
        bars.append(((6, 6), Normalize(*JACOBIAN_RANGE), "RdBu_r", "volume ratio (1 = unchanged)"))
    for (first, last), norm, cmap, label in bars:
        x0, x1 = span(first, last)
        margin = 0.1 * (x1 - x0)
        bar_axes = figure.add_axes((x0 + margin, bar_bottom, x1 - x0 - 2 * margin, bar_height))
        bar = figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=bar_axes, orientation="horizontal")
        bar.set_label(label, fontsize=8, labelpad=1)
        bar.ax.tick_params(labelsize=7, length=2, pad=1)


def save_quality_control_figure(path: str | os.PathLike, **panels) -> Path:
    """Write the QC PNG of :func:`quality_control_figure` (same keyword arguments) to ``path``; returns the path."""
    figure = quality_control_figure(**panels)
    figure.savefig(path, dpi=DPI, pil_kwargs={"compress_level": 1})  # zlib level 1: a third of level 6's time
    return Path(path)
