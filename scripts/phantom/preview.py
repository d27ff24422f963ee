"""A picture of one ACDC-layout subject: ED and ES mid slices, label contours, true motion field."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from scripts.data import read_info_cfg  # noqa: E402
from scripts.labels import STRUCTURE_NAMES  # noqa: E402

COLOURS = {"rv": "tab:red", "lvm": "tab:green", "lvbp": "tab:blue"}
# (label value, legend name, colour) per structure.
STRUCTURES = tuple((value, name.upper(), COLOURS[name]) for value, name in STRUCTURE_NAMES.items())
LABEL_OF = {name: value for value, name in STRUCTURE_NAMES.items()}


def _contours(axis, labels: np.ndarray) -> None:
    for value, _, colour in STRUCTURES:
        mask = (labels == value).astype(float)
        if mask.any():
            axis.contour(mask.T, levels=[0.5], colors=[colour], linewidths=1.0)


def render_preview(folder: str | os.PathLike, png: str | os.PathLike, slice_index: int | None = None) -> Path:
    """Draw ED and ES mid slices of ``folder`` (an ACDC patient folder) with contours and the true field.

    Args:
        folder: patientNNN directory with Info.cfg, the ED/ES frames, their _gt maps and (if present)
            ``patientNNN_true_ddf_ED_to_ES.nii.gz``.
        png: output image path.
        slice_index: slice to show (default: the middle of the slices where the ED LV is labelled).

    Returns:
        The written path.
    """
    folder = Path(folder)
    name = folder.name
    info = read_info_cfg(folder / "Info.cfg")
    ed, es = int(info["ED"]), int(info["ES"])
    load = lambda suffix: nib.load(str(folder / f"{name}_{suffix}.nii.gz"))  # noqa: E731
    ed_image, es_image = load(f"frame{ed:02d}"), load(f"frame{es:02d}")
    ed_labels = np.asarray(load(f"frame{ed:02d}_gt").dataobj)
    es_labels = np.asarray(load(f"frame{es:02d}_gt").dataobj)
    ed_data, es_data = ed_image.get_fdata(), es_image.get_fdata()
    if slice_index is None:
        slices = np.flatnonzero((ed_labels == LABEL_OF["lvbp"]).any(axis=(0, 1)))
        slice_index = int(slices[len(slices) // 2]) if len(slices) else ed_data.shape[2] // 2
    k = slice_index
    spacing = np.linalg.norm(ed_image.affine[:3, :3], axis=0)
    voxel_volume = float(np.prod(spacing)) / 1000.0
    volumes = {
        name: ((ed_labels == LABEL_OF[name]).sum() * voxel_volume, (es_labels == LABEL_OF[name]).sum() * voxel_volume)
        for name in ("rv", "lvbp")
    }
    lv_ef = 100 * (1 - volumes["lvbp"][1] / max(volumes["lvbp"][0], 1e-9))
    rv_ef = 100 * (1 - volumes["rv"][1] / max(volumes["rv"][0], 1e-9))

    heart = np.argwhere(ed_labels[:, :, k] > 0)
    centre = heart.mean(axis=0) if len(heart) else np.array(ed_data.shape[:2]) / 2
    half = 55.0 / spacing[0]  # 110 mm wide zoom on the heart
    limits = (centre[0] - half, centre[0] + half), (centre[1] - half, centre[1] + half)
    vmax = np.percentile(ed_data, 99.5)

    fig, axes = plt.subplots(1, 4, figsize=(20, 5.6))
    panels = (
        (axes[0], ed_data, ed_labels, f"ED (frame {ed}), slice {k + 1}/{ed_data.shape[2]}", False),
        (axes[1], ed_data, ed_labels, "ED, heart", True),
        (axes[2], es_data, es_labels, f"ES (frame {es}), heart", True),
    )
    for axis, data, labels, title, zoom in panels:
        axis.imshow(data[:, :, k].T, origin="lower", cmap="gray", vmin=0, vmax=vmax)
        _contours(axis, labels[:, :, k])
        axis.set_title(title)
        if zoom:
            axis.set_xlim(*limits[0])
            axis.set_ylim(*limits[1])
    axis = axes[3]
    axis.imshow(es_data[:, :, k].T, origin="lower", cmap="gray", vmin=0, vmax=vmax)
    _contours(axis, es_labels[:, :, k])
    ddf_path = folder / f"{name}_true_ddf_ED_to_ES.nii.gz"
    if ddf_path.exists():
        ddf = np.asarray(nib.load(str(ddf_path)).dataobj)[:, :, k, 0, :]  # (X, Y, 3) world mm
        # Components along the image columns i and j (mm), for arrows drawn in voxel coordinates.
        directions = ed_image.affine[:3, :2] / spacing[:2]
        in_plane = ddf @ directions  # (X, Y, 2)
        through = np.linalg.norm(ddf, axis=-1)
        step = max(1, int(round(5.0 / spacing[0])))  # one arrow per ~5 mm
        ii, jj = np.meshgrid(np.arange(0, ddf.shape[0], step), np.arange(0, ddf.shape[1], step), indexing="ij")
        u, v = in_plane[ii, jj, 0], in_plane[ii, jj, 1]
        inside = (ii > limits[0][0]) & (ii < limits[0][1]) & (jj > limits[1][0]) & (jj < limits[1][1])
        quiver = axis.quiver(
            ii[inside],
            jj[inside],
            u[inside] / spacing[0],
            v[inside] / spacing[1],
            through[ii, jj][inside],
            cmap="autumn",
            angles="xy",
            scale_units="xy",
            scale=1.0,
            width=0.004,
        )
        fig.colorbar(quiver, ax=axis, fraction=0.046, pad=0.02, label="|true displacement| (mm)")
        axis.set_title("ES + true ED->ES field (arrows: ES point -> ED point)")
    axis.set_xlim(*limits[0])
    axis.set_ylim(*limits[1])
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
    handles = [plt.Line2D([], [], color=colour, label=label) for _, label, colour in STRUCTURES]
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False)
    fig.suptitle(
        f"{name}  group {info.get('Group', '?')}  NbFrame {info.get('NbFrame', '?')}  "
        f"LV EF {lv_ef:.0f} %  RV EF {rv_ef:.0f} %  voxel {spacing[0]:.2f}x{spacing[1]:.2f}x{spacing[2]:.1f} mm"
    )
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=80)
    plt.close(fig)
    return png
