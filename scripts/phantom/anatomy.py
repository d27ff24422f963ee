"""The reference anatomy at end-diastole (ED): analytic, continuous, in millimetres.

The body is made of layers that slide against each other:

* the heart layer, described in a heart-local cylindrical frame (r, theta, z): z runs along the LV
  long axis from the base plane (z = 0) to the apex (z > 0), theta is the angle around it. Along each
  ray (theta, z) the heart is a stack of shells whose outer radii :func:`heart_radii` gives: LV blood
  pool, LV myocardium, RV blood pool (a crescent in a sector around ``rv_angle``, absent toward the
  apex), RV free wall, epicardial fat. Above the base (z < 0) the same shells continue as atria and
  atrioventricular groove, which ACDC labels as background;
* the torso layer in world coordinates, NIfTI RAS millimetres (+x toward the patient's right,
  +y anterior, +z superior): body outline, subcutaneous fat, chest wall and paraspinal muscle, ribs,
  lungs with vessels, mediastinal fat, spine, descending aorta, diaphragm and upper abdomen;
* the liver (with the right hemidiaphragm on top of it), a sub-layer of the torso that can shift as a
  whole (breathing) relative to the chest wall.

Intensities are relative bSSFP signal (blood = 1) before bias field, scaling and noise. Labels follow
ACDC: 0 background, 1 RV blood pool, 2 LV myocardium, 3 LV blood pool (papillary muscles and
trabeculations count as blood pool, as ACDC annotates them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

# Layer codes of the heart shells, inside out; OUTSIDE_HEART marks the torso layer.
LV_CAVITY, LV_WALL, RV_CAVITY, RV_WALL, EPICARDIAL_FAT, OUTSIDE_HEART = 0, 1, 2, 3, 4, 5
LABEL_BACKGROUND, LABEL_RV, LABEL_LVM, LABEL_LVBP = 0, 1, 2, 3

# Relative bSSFP signal of each tissue (blood = 1); per-subject contrast multiplies them.
TISSUES = (
    "blood",
    "myocardium",
    "fat",
    "lung",
    "lung_vessel",
    "liver",
    "muscle",
    "marrow",
    "csf",
    "abdomen",
    "mediastinum",
    "bone",
    "annulus",
)
BASE_SIGNAL = {
    "blood": 1.0,
    "myocardium": 0.30,
    "fat": 0.88,
    "lung": 0.05,
    "lung_vessel": 0.55,
    "liver": 0.36,
    "muscle": 0.26,
    "marrow": 0.52,
    "csf": 0.92,
    "abdomen": 0.48,
    "mediastinum": 0.55,
    "bone": 0.10,
    "annulus": 0.45,
}


@dataclass(frozen=True)
class HeartShape:
    """End-diastolic heart geometry in the heart-local frame (all lengths in mm, angles in radians).

    The LV cavity is a half-ellipsoid of revolution (centred ``ellipsoid_offset`` above the base
    plane) with cross-section radius ``lv_radius`` x (1 + harmonic perturbation), length
    ``cavity_length`` from the base plane to the endocardial apex; the epicardium is the ellipsoid
    ``wall_thickness`` wider whose apex lies ``apex_thickness`` beyond. The RV cavity is a crescent of
    maximum width ``rv_width`` spanning ``rv_angle`` +- ``rv_half_angle``, shrinking to nothing at
    ``rv_length`` from the base.
    """

    lv_radius: float
    cavity_length: float
    ellipsoid_offset: float
    apex_thickness: float
    wall_thickness: float
    shape_harmonics: tuple[float, float, float, float]  # (amplitude 1, phase 1, amplitude 2, phase 2)
    septal_hypertrophy: float  # relative extra thickness at the septum (HCM)
    infarct_angle: float
    infarct_half_angle: float
    infarct_z_range: tuple[float, float]  # (start, end) in mm from the base; empty when start >= end
    infarct_thinning: float  # relative wall thinning in the scar
    rv_angle: float
    rv_half_angle: float
    rv_width: float
    rv_length: float
    rv_wall_thickness: float
    fat_thickness: float
    groove_fat: float
    base_fat: float
    papillary_angles: tuple[float, float]
    papillary_size: float  # half-width in normalised cavity radius
    lv_trabeculae: int
    rv_trabeculae: int
    trabecular_phase: float

    @property
    def epicardial_length(self) -> float:
        """Distance from the base plane to the epicardial apex (mm)."""
        return self.cavity_length + self.apex_thickness


class HeartRadii(NamedTuple):
    """Outer radius (mm) of each heart shell along rays (theta, z); every field has the rays' shape."""

    lv_cavity: np.ndarray
    lv_wall: np.ndarray
    rv_cavity: np.ndarray
    rv_wall: np.ndarray
    outer: np.ndarray


def _ellipsoid_profile(z: np.ndarray, length: float, offset: float) -> np.ndarray:
    """Cross-section radius factor (0..1) of an ellipsoid centred at -offset reaching z = length."""
    u = (z + offset) / (length + offset)
    return np.sqrt(np.clip(1.0 - u * u, 0.0, None))


def wrapped_angle(angle: np.ndarray) -> np.ndarray:
    """Angle wrapped to [-pi, pi) (floor is many times faster than np.mod on large float arrays)."""
    return angle - (2.0 * np.pi) * np.floor((angle + np.pi) * (0.5 / np.pi))


def rv_sector_profile(shape: HeartShape, theta: np.ndarray) -> np.ndarray:
    """Relative RV cavity width (0..1) across the RV sector: broad, tapering smoothly at the insertions."""
    u = np.clip(np.abs(wrapped_angle(theta - shape.rv_angle)) / shape.rv_half_angle, 0.0, 1.0)
    return (1.0 - u**4) ** 2


def infarct_weight(shape: HeartShape, theta: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Scar extent (0..1): 1 inside the infarcted sector, smooth border of about 15 degrees and 8 mm."""
    start, end = shape.infarct_z_range
    if start >= end:
        return np.zeros(np.broadcast(theta, z).shape, np.result_type(theta, z))
    angular = np.clip((shape.infarct_half_angle - np.abs(wrapped_angle(theta - shape.infarct_angle))) / 0.26, 0, 1)
    axial = np.clip((z - start) / 8.0, 0, 1) * np.clip((end - z) / 8.0, 0, 1)
    return angular * axial


def heart_radii(shape: HeartShape, theta: np.ndarray, z: np.ndarray) -> HeartRadii:
    """ED shell radii along rays (theta, z) of the heart-local frame.

    Args:
        shape: the subject's heart geometry.
        theta: angles (radians), any shape broadcastable with ``z``.
        z: heights along the long axis (mm, 0 at the base plane, positive toward the apex). Rays above
            the base (z < 0) get the basal cross-section: atria and AV groove continue the shells there.

    Returns:
        HeartRadii with arrays of the broadcast shape, in mm, non-decreasing from lv_cavity to outer.
    """
    z_ventricle = np.maximum(z, 0.0)
    amp1, phase1, amp2, phase2 = shape.shape_harmonics
    roundness = 1.0 + amp1 * np.cos(theta - phase1) + amp2 * np.cos(2.0 * (theta - phase2))
    endo_profile = _ellipsoid_profile(z_ventricle, shape.cavity_length, shape.ellipsoid_offset)
    epi_profile = _ellipsoid_profile(z_ventricle, shape.epicardial_length, shape.ellipsoid_offset)
    septum = np.exp(-0.5 * (wrapped_angle(theta - shape.rv_angle) / 0.6) ** 2)
    thickness = shape.wall_thickness * (1.0 + shape.septal_hypertrophy * septum)
    thickness = thickness * (1.0 - shape.infarct_thinning * infarct_weight(shape, theta, z_ventricle))
    lv_cavity = shape.lv_radius * roundness * endo_profile
    lv_wall = np.maximum((shape.lv_radius * roundness + thickness) * epi_profile, lv_cavity)
    rv_profile = _ellipsoid_profile(z_ventricle, shape.rv_length, shape.ellipsoid_offset)
    rv_width = shape.rv_width * rv_sector_profile(shape, theta) * rv_profile
    rv_cavity = lv_wall + rv_width
    # The free wall fades out with the cavity so that the insertion points carry no stray wall.
    fade = np.clip(rv_width / 3.0, 0.0, 1.0)
    rv_wall = rv_cavity + shape.rv_wall_thickness * fade * fade * (3.0 - 2.0 * fade)
    grooves = np.exp(-0.5 * (wrapped_angle(theta - shape.rv_angle - shape.rv_half_angle) / 0.25) ** 2)
    grooves = grooves + np.exp(-0.5 * (wrapped_angle(theta - shape.rv_angle + shape.rv_half_angle) / 0.25) ** 2)
    fat = shape.fat_thickness + shape.groove_fat * grooves + shape.base_fat * np.exp(-z_ventricle / 12.0)
    outer = rv_wall + fat * np.sqrt(epi_profile)
    return HeartRadii(lv_cavity, lv_wall, rv_cavity, rv_wall, outer)


def heart_tissue(
    shape: HeartShape,
    layer: np.ndarray,
    radius: np.ndarray,
    theta: np.ndarray,
    z: np.ndarray,
    radii: HeartRadii,
    signal: dict[str, float],
) -> tuple[np.ndarray, np.ndarray]:
    """Signal and ACDC label of ED heart points given their shell.

    Args:
        shape: heart geometry.
        layer: (N,) shell code (LV_CAVITY .. EPICARDIAL_FAT) of each point.
        radius, theta, z: (N,) ED heart-local cylindrical coordinates (mm, radians, mm).
        radii: ED shell radii along the points' rays, each (N,).
        signal: tissue -> relative signal.

    Returns:
        (N,) float signal and (N,) uint8 label.
    """
    ventricle = z >= 0.0
    value = np.full(radius.shape, signal["fat"])
    label = np.zeros(radius.shape, np.uint8)

    cavity = layer == LV_CAVITY
    rho = radius / np.maximum(radii.lv_cavity, 1e-6)  # normalised cavity radius, invariant under contraction
    dark = np.zeros(radius.shape, bool)
    length = shape.cavity_length
    for angle in shape.papillary_angles:
        # Papillary muscles: ellipses in (rho, theta) attached near the wall, in the middle of the ventricle.
        extent = np.clip(1.0 - ((z - 0.5 * length) / (0.32 * length)) ** 2, 0.0, 1.0)
        size = shape.papillary_size * np.sqrt(extent)
        angular = 2.0 * (1.0 - np.cos(theta - angle)) / 0.22**2
        dark |= ((rho - 0.72) ** 2 / np.maximum(size, 1e-6) ** 2 + angular / np.maximum(size / 0.18, 1e-6) ** 2) < 1.0
    comb = np.cos(shape.lv_trabeculae * theta + shape.trabecular_phase + 0.09 * z)
    dark |= (rho > 0.87) & (comb > 0.6) & (z > 0.15 * length)
    value = np.where(cavity, np.where(dark & ventricle, signal["myocardium"], signal["blood"]), value)
    label = np.where(cavity & ventricle, LABEL_LVBP, label)

    wall = layer == LV_WALL
    value = np.where(wall, np.where(ventricle, signal["myocardium"], signal["annulus"]), value)
    label = np.where(wall & ventricle, LABEL_LVM, label)

    rv = layer == RV_CAVITY
    depth = (radius - radii.lv_wall) / np.maximum(radii.rv_cavity - radii.lv_wall, 1e-6)
    rv_comb = np.cos(shape.rv_trabeculae * theta - shape.trabecular_phase + 0.13 * z)
    rv_dark = (depth > 0.72) & (rv_comb > 0.55) & ventricle
    value = np.where(rv, np.where(rv_dark, signal["myocardium"], signal["blood"]), value)
    label = np.where(rv & ventricle, LABEL_RV, label)

    value = np.where(layer == RV_WALL, signal["myocardium"], value)
    return value, label.astype(np.uint8)


@dataclass(frozen=True)
class TorsoShape:
    """Torso geometry in world RAS mm. Ellipses are (centre x, centre y, semi-axis x, semi-axis y)."""

    body: tuple[float, float, float, float]
    subcutaneous_fat: float
    chest_wall: float
    posterior_muscle: float
    lungs: tuple[tuple[float, float, float, float], tuple[float, float, float, float]]  # (right, left)
    spine_centre: tuple[float, float]
    aorta: tuple[float, float, float]  # centre x, centre y, radius
    dome_right: tuple[float, float, float, float]  # apex x, apex y, apex z, curvature (1/mm)
    dome_left: tuple[float, float, float, float]
    diaphragm_thickness: float
    liver_left_edge: float  # x below which the liver ends (mm)
    vessel_phase: tuple[float, float, float]
    rib_count: int
    rib_phase: float


def _ellipse_radius(x: np.ndarray, y: np.ndarray, ellipse: tuple[float, float, float, float], inset: float = 0.0):
    """Normalised radius of (x, y) w.r.t. an ellipse shrunk by ``inset`` mm (< 1 inside)."""
    cx, cy, ax, ay = ellipse
    return np.sqrt(((x - cx) / (ax - inset)) ** 2 + ((y - cy) / (ay - inset)) ** 2)


def thoracic_cavity(torso: TorsoShape) -> tuple[float, float, float, float]:
    """Inner surface of the chest wall as an ellipse (world mm); the posterior muscle is thicker."""
    cx, cy, ax, ay = torso.body
    inset = torso.subcutaneous_fat + torso.chest_wall
    extra = torso.posterior_muscle - torso.chest_wall
    return cx, cy + 0.5 * extra, ax - inset, ay - inset - 0.5 * extra


def dome_height(dome: tuple[float, float, float, float], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Height (world z, mm) of a diaphragm dome above (x, y): a paraboloid, highest at its apex."""
    ax, ay, az, curvature = dome
    return az - curvature * ((x - ax) ** 2 + 0.6 * (y - ay) ** 2)


def liver_inside(torso: TorsoShape, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Whether world points lie in the liver sub-layer (liver plus the right hemidiaphragm on top of it)."""
    in_cavity = _ellipse_radius(x, y, thoracic_cavity(torso)) < 1.0
    below = z < dome_height(torso.dome_right, x, y) + torso.diaphragm_thickness
    return in_cavity & below & (x > torso.liver_left_edge)


def torso_tissue(
    torso: TorsoShape, x: np.ndarray, y: np.ndarray, z: np.ndarray, signal: dict[str, float], liver: np.ndarray
) -> np.ndarray:
    """Signal of the torso layer at world points (mm), shape of ``x``.

    Args:
        torso: torso geometry.
        x, y, z: world RAS coordinates (mm) of the points at which the torso layer is evaluated.
        signal: tissue -> relative signal.
        liver: bool mask, True where the point belongs to the liver sub-layer. The caller decides it
            (the liver may have shifted); where it is False but the point lies in the resting liver
            the lung has expanded into the space the liver left (costophrenic recess), so lung shows.
    """
    body_r = _ellipse_radius(x, y, torso.body)
    fat_r = _ellipse_radius(x, y, torso.body, torso.subcutaneous_fat)
    cavity = thoracic_cavity(torso)
    cavity_r = _ellipse_radius(x, y, cavity)
    value = np.zeros(x.shape, np.float32)
    value = np.where(body_r < 1.0, signal["fat"], value)
    muscle = fat_r < 1.0
    value = np.where(muscle, signal["muscle"], value)
    # Ribs: dark cortical bone spaced around the chest wall, their cut moving with height.
    angle = np.arctan2((y - cavity[1]) / cavity[3], (x - cavity[0]) / cavity[2])
    rib = np.cos(torso.rib_count * angle + torso.rib_phase + 0.12 * z) > 0.55
    rib &= (cavity_r > 1.03) & (cavity_r < 1.0 + 9.0 / cavity[3]) & (y > torso.spine_centre[1] + 20.0)
    value = np.where(muscle & rib, signal["bone"], value)

    inside = cavity_r < 1.0
    value = np.where(inside, signal["mediastinum"], value)
    dome_r = dome_height(torso.dome_right, x, y)
    dome_l = dome_height(torso.dome_left, x, y)
    dome = np.maximum(dome_r, dome_l)
    abdomen = inside & (z < dome)
    diaphragm = inside & (z >= dome) & (z < dome + torso.diaphragm_thickness)
    value = np.where(abdomen, signal["abdomen"], value)
    value = np.where(diaphragm, signal["muscle"], value)
    lungs = np.zeros(x.shape, bool)
    for ellipse in torso.lungs:
        lungs |= _ellipse_radius(x, y, ellipse) < 1.0
    lungs &= inside & (z >= dome + torso.diaphragm_thickness)
    px, py, pz = torso.vessel_phase
    vessels = np.cos(x / 6.5 + px) * np.cos(y / 7.5 + py) * np.cos(z / 9.0 + pz) > 0.8
    value = np.where(lungs, np.where(vessels, signal["lung_vessel"], signal["lung"]), value)
    resting_liver = liver_inside(torso, x, y, z)
    value = np.where(resting_liver & ~liver, signal["lung"], value)
    # The liver sub-layer carries the right hemidiaphragm (its top few mm) with it when it shifts.
    value = np.where(liver, np.where(z > dome_r, signal["muscle"], signal["liver"]), value)

    sx, sy = torso.spine_centre
    vertebra = (x - sx) ** 2 + (y - sy) ** 2 < 17.0**2
    canal = (x - sx) ** 2 + (y - sy + 27.0) ** 2 < 8.0**2
    ax, ay, ar = torso.aorta
    aorta = (x - ax) ** 2 + (y - ay) ** 2 < ar**2
    value = np.where(vertebra, signal["marrow"], value)
    value = np.where(canal, signal["csf"], value)
    value = np.where(aorta, signal["blood"], value)
    return value
