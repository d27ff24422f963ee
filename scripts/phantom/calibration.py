"""Calibrate the contraction so that the label-based ejection fractions hit the group's targets.

ACDC measures volumes by counting labelled voxels slice by slice, so the calibration mimics that:
the volume of a structure is the sum over the stack's slices of (slice spacing x cross-section area at
the height where the slice crosses the long axis), the area integrated over 360 rays of the analytic
shells. The twist does not change areas; the base descent does (the basal slices see the atria at ES).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .anatomy import heart_radii
from .motion import HeartMotion, frame_radii, heart_ed_coordinates
from .parameters import SubjectParameters

N_RAYS = 360


def slice_planes(params: SubjectParameters) -> tuple[np.ndarray, np.ndarray]:
    """Slice planes in the heart-local frame: z = height - r * slope(theta) on each slice.

    Returns:
        (Z,) height (mm) where each slice plane crosses the long axis, and (3,) the slice normal in
        heart-local coordinates (used for the per-ray slope and the obliquity of the cut).
    """
    affine = params.acquisition.affine
    normal = params.pose.axes.T @ (affine[:3, 2] / np.linalg.norm(affine[:3, 2]))
    centres = affine[:3, 3][None] + np.arange(params.acquisition.shape[2])[:, None] * affine[:3, 2][None]
    local_centres = (centres - params.pose.origin) @ params.pose.axes
    return local_centres @ normal / normal[2], normal


def ventricular_volumes(params: SubjectParameters, motion: HeartMotion, level: float) -> dict[str, float]:
    """LV blood pool, LV myocardium and RV blood pool volumes (ml) as the labels would count them.

    Each slice plane is tilted with respect to the long axis, so a ray at angle theta crosses it at a
    height depending on the radius; each structure is evaluated at the height where the plane cuts
    the middle of that structure (two fixed-point iterations).

    Args:
        params: subject (geometry, shape).
        motion: the motion to evaluate (its contraction fields may differ from ``params.motion``).
        level: contraction level (0 = ED, 1 = ES).
    """
    heights, normal = slice_planes(params)
    theta_frame = np.linspace(-np.pi, np.pi, N_RAYS, endpoint=False)[None, :]
    slope = (normal[0] * np.cos(theta_frame) + normal[1] * np.sin(theta_frame)) / normal[2]
    ray_area = 2.0 * np.pi / N_RAYS / 2.0
    spacing = params.acquisition.spacing[2]
    obliquity = 1.0 / abs(normal[2])  # an oblique cut is wider than the perpendicular cross-section

    def shells(middle: np.ndarray):
        z_frame = heights[:, None] - middle * slope
        theta, z = heart_ed_coordinates(params.heart, motion, theta_frame, z_frame, level)
        radii = frame_radii(params.heart, motion, heart_radii(params.heart, theta, z), theta, z, level)
        return radii, (z >= 0.0)

    def volume(inner_of, outer_of) -> float:
        middle = np.zeros((len(heights), N_RAYS))
        for _ in range(3):
            radii, ventricle = shells(middle)
            inner, outer = inner_of(radii), outer_of(radii)
            middle = 0.5 * (inner + outer)
        area = ((outer**2 - inner**2) * ventricle).sum(axis=1) * ray_area * obliquity
        return float(area.sum() * spacing / 1000.0)

    return {
        "lvbp": volume(lambda r: 0.0 * r.lv_cavity, lambda r: r.lv_cavity),
        "lvm": volume(lambda r: r.lv_cavity, lambda r: r.lv_wall),
        "rv": volume(lambda r: r.lv_wall, lambda r: r.rv_cavity),
    }


def _solve(function, target: float, low: float, high: float, steps: int = 24) -> float:
    """Bisection for an increasing ``function`` on [low, high]; clamps to the ends if out of range."""
    for _ in range(steps):
        middle = 0.5 * (low + high)
        if function(middle) < target:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


def calibrate_function(params: SubjectParameters) -> SubjectParameters:
    """Set ``motion.contraction`` and ``motion.rv_contraction`` to reach ``targets['lv_ef']``/``['rv_ef']``.

    Returns the updated parameters; ``targets`` gains the expected volumes (ml) at ED and ES.
    """
    ed = ventricular_volumes(params, params.motion, 0.0)

    def lv_ef(contraction: float) -> float:
        motion = replace(params.motion, contraction=contraction)
        return 1.0 - ventricular_volumes(params, motion, 1.0)["lvbp"] / ed["lvbp"]

    motion = replace(params.motion, contraction=_solve(lv_ef, params.targets["lv_ef"], 0.0, 0.8))

    def rv_ef(rv_contraction: float) -> float:
        candidate = replace(motion, rv_contraction=rv_contraction)
        return 1.0 - ventricular_volumes(params, candidate, 1.0)["rv"] / ed["rv"]

    motion = replace(motion, rv_contraction=_solve(rv_ef, params.targets["rv_ef"], 0.0, 0.9))
    es = ventricular_volumes(params, motion, 1.0)
    targets = dict(params.targets)
    targets.update({f"{name}_ed_ml": value for name, value in ed.items()})
    targets.update({f"{name}_es_ml": value for name, value in es.items()})
    return replace(params, motion=motion, targets=targets)
