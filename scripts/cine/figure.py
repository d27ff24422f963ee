"""``function.png``: the volume curves and the strain curves of one cine, with ED and ES marked.

Drawn with matplotlib's object API on an Agg canvas (no pyplot, no global backend change).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from io import BytesIO
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from scripts.atomic_files import write_bytes_atomically

__all__ = ["save_function_figure"]

VOLUME_CURVES = {
    "lv_blood_pool_ml": ("LV blood pool", "#ff4136"),
    "lv_myocardium_ml": ("LV myocardium", "#2ecc40"),
    "rv_ml": ("RV", "#1f9bff"),
}


def save_function_figure(
    path: str | os.PathLike,
    volumes: Mapping[str, Sequence[float]],
    radial_percent: Sequence[float],
    circumferential_percent: Sequence[float],
    ed_frame: int,
    es_frame: int,
    title: str = "",
    lv_ef_percent: float | None = None,
    rv_ef_percent: float | None = None,
    es_frame_info: int | None = None,
) -> Path:
    """Write the two-panel picture (volumes in ml, global strain in %) against the 1-based frame number.

    Args:
        path: the PNG file (written atomically).
        volumes: per-frame curves (``lv_blood_pool_ml``, ``lv_myocardium_ml``, ``rv_ml``).
        radial_percent, circumferential_percent: per-frame global strain in percent.
        ed_frame, es_frame: 1-based frames marked by vertical lines (ES: minimum LV volume).
        title: the picture's title (e.g. the patient).
        lv_ef_percent, rv_ef_percent: ejection fractions for the legend, if known.
        es_frame_info: Info.cfg's ES frame, marked too when it differs from ``es_frame``.
    """
    frames = np.arange(1, len(volumes["lv_blood_pool_ml"]) + 1)
    figure = Figure(figsize=(10, 4), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    volume_axis, strain_axis = figure.subplots(1, 2)
    for key, (name, colour) in VOLUME_CURVES.items():
        volume_axis.plot(frames, volumes[key], marker="o", markersize=3, color=colour, label=name)
    volume_axis.set_xlabel("frame")
    volume_axis.set_ylabel("volume (ml)")
    efs = [
        f"{name} EF {value:.1f} %"
        for name, value in (("LV", lv_ef_percent), ("RV", rv_ef_percent))
        if value is not None
    ]
    volume_axis.set_title("Volumes" + (f" ({', '.join(efs)})" if efs else ""))
    strain_axis.plot(frames, radial_percent, marker="o", markersize=3, color="#b10dc9", label="radial")
    strain_axis.plot(
        frames, circumferential_percent, marker="o", markersize=3, color="#ff851b", label="circumferential"
    )
    strain_axis.axhline(0.0, color="grey", linewidth=0.6)
    strain_axis.set_xlabel("frame")
    strain_axis.set_ylabel("global Green-Lagrange strain (%)")
    strain_axis.set_title("Strain (short-axis plane, ED reference)")
    for axis in (volume_axis, strain_axis):
        axis.axvline(ed_frame, color="black", linestyle=":", linewidth=1.0, label=f"ED (frame {ed_frame})")
        axis.axvline(es_frame, color="black", linestyle="--", linewidth=1.0, label=f"ES (frame {es_frame}, min LV)")
        if es_frame_info is not None and es_frame_info != es_frame:
            axis.axvline(
                es_frame_info, color="grey", linestyle="-.", linewidth=1.0, label=f"Info.cfg ES (frame {es_frame_info})"
            )
        axis.set_xlim(0.5, frames[-1] + 0.5)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="best")
    if title:
        figure.suptitle(title)
    buffer = BytesIO()
    figure.savefig(buffer, format="png")
    return write_bytes_atomically(path, buffer.getvalue())
