"""Ventricular function from per-frame volumes and strain: ED/ES, EDV, ESV, SV, EF, LV mass, strain at ES.

Rules (written once here, used by the workflow's ``function.json`` and by the phantom's true function):

- frame numbers are 1-based, as in ACDC's Info.cfg;
- ED is the given ED frame; ES is the frame of minimum LV blood-pool volume (the first one if several), reported
  beside the ES frame of Info.cfg when there is one;
- EDV and ESV are the volumes at ED and at that ES, for the LV blood pool and for the RV alike;
  SV = EDV - ESV; EF = 100 * SV / EDV (percent);
- LV mass is the LV myocardium volume at ED times 1.05 g/ml;
- global radial and circumferential strain (:mod:`scripts.cine.strain`) are reported per frame and at ES, in
  percent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from scripts.cine.volumes import VOLUME_COLUMNS

__all__ = ["STRAIN_DEFINITION", "end_systolic_index", "function_summary", "ventricular_function"]

STRAIN_DEFINITION = (
    "Green-Lagrange strain in the short-axis (image) plane, Lagrangian at ED: E = (F^T F - I) / 2 with F the "
    "in-plane deformation gradient of the ED -> frame map; radial = r^T E r with r the in-plane unit vector from the "
    "ED LV blood-pool centroid of the point's slice, circumferential = c^T E c with c perpendicular to r in the "
    "plane; averaged over the voxels of the ED LV myocardium; percent"
)


def _number(value: float) -> float | None:
    """A JSON-safe float (None for NaN or infinity), rounded to 4 decimals (no negative zero)."""
    value = float(value)
    return round(value, 4) + 0.0 if math.isfinite(value) else None


def end_systolic_index(lv_blood_pool_ml: Sequence[float]) -> int:
    """0-based index of the frame of minimum LV blood-pool volume (the first one if several)."""
    return int(np.argmin(np.asarray(lv_blood_pool_ml, np.float64)))


def ventricular_function(end_diastolic_ml: float, end_systolic_ml: float) -> dict[str, float | None]:
    """EDV, ESV, SV (ml) and EF (percent) of one ventricle; EF is None when EDV is 0."""
    stroke = end_diastolic_ml - end_systolic_ml
    ejection = 100.0 * stroke / end_diastolic_ml if end_diastolic_ml > 0 else float("nan")
    return {
        "edv_ml": _number(end_diastolic_ml),
        "esv_ml": _number(end_systolic_ml),
        "sv_ml": _number(stroke),
        "ef_percent": _number(ejection),
    }


def function_summary(
    volumes: Mapping[str, Sequence[float]],
    ed_index: int,
    radial_strain: Sequence[float] | None = None,
    circumferential_strain: Sequence[float] | None = None,
    es_frame_info: int | None = None,
) -> dict:
    """The content of ``function.json`` (see the module docstring for the rules).

    Args:
        volumes: per-frame curves with the keys of :data:`scripts.cine.volumes.VOLUME_COLUMNS`, each (T,).
        ed_index: 0-based ED frame.
        radial_strain, circumferential_strain: (T,) global strain per frame as fractions, or None.
        es_frame_info: 1-based ES frame given by Info.cfg, or None.

    Returns:
        a JSON-ready dict: ``frames``, ``ed_frame``, ``es_frame`` (minimum LV volume), ``es_frame_info_cfg``,
        ``lv`` (``edv_ml``, ``esv_ml``, ``sv_ml``, ``ef_percent``, ``mass_g``), ``rv`` (the same without mass),
        ``strain`` (definition, ``radial_percent_at_es``, ``circumferential_percent_at_es`` and the per-frame
        lists), ``curves`` (the per-frame volume lists).
    """
    curves = {name: np.asarray(volumes[name], np.float64) for name in VOLUME_COLUMNS}
    frames = len(curves["lv_blood_pool_ml"])
    if not 0 <= ed_index < frames:
        raise ValueError(f"ED frame index {ed_index} out of range for {frames} frames")
    es_index = end_systolic_index(curves["lv_blood_pool_ml"])
    lv = ventricular_function(curves["lv_blood_pool_ml"][ed_index], curves["lv_blood_pool_ml"][es_index])
    lv["mass_g"] = _number(curves["lv_mass_g"][ed_index])
    rv = ventricular_function(curves["rv_ml"][ed_index], curves["rv_ml"][es_index])
    summary: dict = {
        "frames": frames,
        "ed_frame": ed_index + 1,
        "es_frame": es_index + 1,
        "es_frame_info_cfg": None if es_frame_info is None else int(es_frame_info),
        "lv": lv,
        "rv": rv,
    }
    if radial_strain is not None and circumferential_strain is not None:
        radial = 100.0 * np.asarray(radial_strain, np.float64)
        circumferential = 100.0 * np.asarray(circumferential_strain, np.float64)
        summary["strain"] = {
            "definition": STRAIN_DEFINITION,
            "radial_percent_at_es": _number(radial[es_index]),
            "circumferential_percent_at_es": _number(circumferential[es_index]),
            "radial_percent": [_number(v) for v in radial],
            "circumferential_percent": [_number(v) for v in circumferential],
        }
    summary["curves"] = {name: [_number(v) for v in curve] for name, curve in curves.items()}
    return summary
