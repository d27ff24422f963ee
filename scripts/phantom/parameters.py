"""Random subject parameters: anatomy, function per disease group, acquisition and appearance.

All draws come from one generator seeded by (seed, patient number), so a patient's phantom does not
depend on which other patients are generated, nor on the number of worker processes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from .anatomy import BASE_SIGNAL, HeartShape, TorsoShape
from .geometry import Acquisition, short_axis_acquisition
from .motion import HeartMotion, HeartPose

# Ranges (uniform) per disease group, mm and degrees. Volumes follow from radius, length and RV width
# (ED LV blood pool about 100-130 ml NOR, 200-280 DCM, 60-90 HCM with a thick wall, 150-190 MINF;
# RV 100-150 ml, 200-280 in the RV group). lv_ef / rv_ef are the targets the contraction is
# calibrated to (label-based ejection fraction, as a fraction).
GROUP_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "NOR": {
        "lv_radius": (27, 30),
        "cavity_length": (78, 88),
        "wall_thickness": (8.5, 10.5),
        "rv_width": (31, 38),
        "rv_half_angle": (62, 75),
        "lv_ef": (0.58, 0.67),
        "rv_ef": (0.52, 0.62),
        "base_descent": (10, 14),
        "twist_scale": (0.9, 1.1),
    },
    "DCM": {
        "lv_radius": (33, 37),
        "cavity_length": (92, 102),
        "wall_thickness": (6.0, 7.5),
        "rv_width": (30, 37),
        "rv_half_angle": (62, 75),
        "lv_ef": (0.14, 0.26),
        "rv_ef": (0.35, 0.50),
        "base_descent": (3, 6),
        "twist_scale": (0.2, 0.4),
    },
    "HCM": {
        "lv_radius": (21, 24),
        "cavity_length": (72, 80),
        "wall_thickness": (13, 16),
        "rv_width": (27, 33),
        "rv_half_angle": (60, 72),
        "lv_ef": (0.73, 0.82),
        "rv_ef": (0.55, 0.65),
        "base_descent": (7, 10),
        "twist_scale": (1.0, 1.2),
    },
    "MINF": {
        "lv_radius": (29.5, 32.5),
        "cavity_length": (86, 94),
        "wall_thickness": (8.0, 10.0),
        "rv_width": (30, 37),
        "rv_half_angle": (62, 75),
        "lv_ef": (0.34, 0.42),
        "rv_ef": (0.40, 0.52),
        "base_descent": (6, 9),
        "twist_scale": (0.5, 0.7),
    },
    "RV": {
        "lv_radius": (25, 28),
        "cavity_length": (76, 86),
        "wall_thickness": (8.0, 10.0),
        "rv_width": (46, 54),
        "rv_half_angle": (75, 88),
        "lv_ef": (0.52, 0.62),
        "rv_ef": (0.23, 0.35),
        "base_descent": (8, 11),
        "twist_scale": (0.8, 1.0),
    },
}


@dataclass(frozen=True)
class Appearance:
    """bSSFP-like appearance of one subject.

    Attributes:
        signal: tissue -> relative signal (blood = 1), jittered per subject.
        scale: stored intensity of blood (image units).
        noise: Rician noise standard deviation relative to blood signal.
        bias: (10,) coefficients of the log bias field in (1, x, y, z, x^2, y^2, z^2, xy, xz, yz) of
            world coordinates divided by 200 mm.
        blur: in-plane Gaussian point-spread sigma, voxels.
    """

    signal: dict[str, float]
    scale: float
    noise: float
    bias: np.ndarray
    blur: float


@dataclass(frozen=True)
class SubjectParameters:
    """Everything random about one phantom subject."""

    patient_id: int
    group: str
    heart: HeartShape
    motion: HeartMotion
    torso: TorsoShape
    pose: HeartPose
    acquisition: Acquisition
    appearance: Appearance
    n_frames: int
    es_frame: int
    liver_shift: np.ndarray  # (3,) world mm, liver displacement (along z only) at the peak of the drift
    height: float
    weight: float
    targets: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class GenerationOptions:
    """Overrides of the random draw, for tests, the compact sample and experiments.

    Attributes:
        n_frames: force NbFrame (default: drawn in ``frame_range``).
        frame_range: inclusive range NbFrame is drawn from.
        max_matrix: cap the in-plane matrix; the spacing is kept, so the field of view shrinks around
            the heart (same anatomy and motion), e.g. 160 for the committed sample and quick tests.
        in_plane_rotation: force the rotation (degrees) of the slice axes about the slice normal.
        n_through: samples through the slice thickness for partial volume (odd, >= 1).
        resolution: force (in-plane spacing, slice spacing) in mm, slice thickness = slice spacing;
            e.g. a fine grid to check the true fields without the label discretisation of ACDC voxels.
        max_slices: cap of the slice count (18 as in ACDC; raise it with a fine ``resolution``).
    """

    n_frames: int | None = None
    frame_range: tuple[int, int] = (12, 20)
    max_matrix: int | None = None
    in_plane_rotation: float | None = None
    n_through: int = 3
    resolution: tuple[float, float] | None = None
    max_slices: int = 18


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def draw_subject(patient_id: int, group: str, seed: int, options: GenerationOptions | None = None) -> SubjectParameters:
    """Draw the parameters of ``patient_id`` (group ``group``) from the data set ``seed``.

    The function targets are stored in ``targets``; the contraction fields of ``motion`` are still 0
    and are set by :func:`scripts.phantom.calibration.calibrate_function`.
    """
    options = options or GenerationOptions()
    rng = np.random.default_rng([int(seed), int(patient_id), 7919])
    ranges = GROUP_RANGES[group]

    def draw(name: str) -> float:
        low, high = ranges[name]
        return float(rng.uniform(low, high))

    # Torso first: the heart is placed inside it.
    body = (
        float(rng.normal(0, 4)),
        float(rng.normal(0, 4)),
        float(rng.uniform(160, 190)),
        float(rng.uniform(108, 126)),
    )
    torso_draw = {
        "subcutaneous_fat": float(rng.uniform(7, 20)),
        "chest_wall": float(rng.uniform(10, 14)),
        "posterior_muscle": float(rng.uniform(36, 46)),
    }
    bx, by, ba, bb = body
    cavity_back = by - bb + torso_draw["subcutaneous_fat"] + torso_draw["posterior_muscle"]
    spine = (bx + float(rng.normal(0, 3)), cavity_back - 4.0)
    right_dome_z = float(rng.uniform(-48, -34))
    torso = TorsoShape(
        body=body,
        lungs=(
            (bx + 0.45 * ba + float(rng.normal(0, 4)), by - 2.0, 0.46 * ba, 0.92 * bb),
            (bx - 0.45 * ba + float(rng.normal(0, 4)), by - 4.0, 0.46 * ba, 0.9 * bb),
        ),
        spine_centre=spine,
        aorta=(spine[0] - 24.0, spine[1] + 24.0, float(rng.uniform(10, 13))),
        dome_right=(bx + 55.0, by - 5.0, right_dome_z, 1.0 / float(rng.uniform(130, 170))),
        dome_left=(bx - 70.0, by - 10.0, right_dome_z - float(rng.uniform(12, 20)), 1.0 / float(rng.uniform(130, 170))),
        diaphragm_thickness=float(rng.uniform(3.5, 5.0)),
        liver_left_edge=bx - float(rng.uniform(20, 45)),
        vessel_phase=tuple(float(v) for v in rng.uniform(0, 2 * np.pi, 3)),
        rib_count=int(rng.integers(10, 14)),
        rib_phase=float(rng.uniform(0, 2 * np.pi)),
        **torso_draw,
    )

    lv_radius = draw("lv_radius")
    cavity_length = draw("cavity_length")
    wall = draw("wall_thickness")
    infarct = group == "MINF"
    heart = HeartShape(
        lv_radius=lv_radius,
        cavity_length=cavity_length,
        ellipsoid_offset=float(rng.uniform(0.12, 0.22)) * cavity_length,
        apex_thickness=float(rng.uniform(0.55, 0.75)) * wall,
        wall_thickness=wall,
        shape_harmonics=(
            float(rng.uniform(0.0, 0.05)),
            float(rng.uniform(0, 2 * np.pi)),
            float(rng.uniform(0.02, 0.07)),
            float(rng.uniform(0, np.pi)),
        ),
        septal_hypertrophy=float(rng.uniform(0.25, 0.5)) if group == "HCM" else float(rng.uniform(0.0, 0.08)),
        infarct_angle=float(rng.uniform(0, 2 * np.pi)),
        infarct_half_angle=math.radians(float(rng.uniform(35, 60))),
        infarct_z_range=(
            (float(rng.uniform(0.1, 0.4)) * cavity_length, float(rng.uniform(0.8, 1.1)) * cavity_length)
            if infarct
            else (0.0, 0.0)
        ),
        infarct_thinning=float(rng.uniform(0.3, 0.45)) if infarct else 0.0,
        rv_angle=0.0,  # set below from the pose (the RV lies right-anterior of the LV)
        rv_half_angle=math.radians(draw("rv_half_angle")),
        rv_width=draw("rv_width"),
        rv_length=float(rng.uniform(0.7, 0.82)) * cavity_length,
        rv_wall_thickness=float(rng.uniform(3.0, 4.5)),
        fat_thickness=float(rng.uniform(0.8, 2.0)),
        groove_fat=float(rng.uniform(2.0, 5.0)),
        base_fat=float(rng.uniform(2.0, 6.0)),
        papillary_angles=(0.0, 0.0),
        papillary_size=float(rng.uniform(0.16, 0.22)),
        lv_trabeculae=int(rng.integers(9, 15)),
        rv_trabeculae=int(rng.integers(7, 12)),
        trabecular_phase=float(rng.uniform(0, 2 * np.pi)),
    )

    # Pose: the long axis points to the patient's left (-x), anterior (+y) and inferior (-z).
    long_axis = _unit(np.array([-0.6, 0.55, -0.58]) + rng.normal(0, 0.07, 3))
    anterior = np.array([0.0, 1.0, 0.0])
    local_y = _unit(anterior - long_axis * (anterior @ long_axis))
    local_x = np.cross(local_y, long_axis)
    axes = np.stack([local_x, local_y, long_axis], axis=1)
    origin = np.array([bx - float(rng.uniform(10, 28)), by + float(rng.uniform(0, 16)), float(rng.normal(0, 5))])
    pose = HeartPose(origin=origin, axes=axes)
    right_anterior = np.array([1.0, 1.0, 0.2]) @ axes  # patient right + anterior, in the local frame
    rv_angle = float(np.arctan2(right_anterior[1], right_anterior[0]) + rng.normal(0, math.radians(8)))
    septum_opposite = rv_angle + np.pi
    heart = replace(
        heart,
        rv_angle=rv_angle,
        papillary_angles=(
            septum_opposite - math.radians(float(rng.uniform(35, 55))),
            septum_opposite + math.radians(float(rng.uniform(45, 65))),
        ),
        infarct_angle=(rv_angle + float(rng.uniform(-0.8, 0.8))) if infarct else heart.infarct_angle,
    )

    twist_scale = draw("twist_scale")
    motion = HeartMotion(
        contraction=0.0,
        akinesis=float(rng.uniform(0.85, 1.0)) if infarct else 0.0,
        rv_contraction=0.0,
        base_descent=draw("base_descent"),
        twist_base=-math.radians(float(rng.uniform(2.0, 4.0))) * twist_scale,
        twist_apex=math.radians(float(rng.uniform(6.0, 9.0))) * twist_scale,
    )

    # Acquisition like ACDC: 1.3-1.9 mm in-plane, 5-10 mm slices, 150-260 matrix, 6-18 slices.
    in_plane = float(rng.uniform(1.3, 1.9))
    fov = float(rng.uniform(330, 420))
    nx = int(np.clip(round(fov / in_plane), 150, 260))
    ny = int(np.clip(round(nx * float(rng.uniform(0.78, 1.0))), 150, 260))
    slice_spacing = float(np.round(rng.uniform(5.0, 10.0) * 2) / 2)
    slice_thickness = float(np.round(slice_spacing * rng.uniform(0.65, 1.0) * 2) / 2)
    first_fraction = float(rng.uniform(0.2, 0.8))
    if options.resolution is not None:
        fov_x, fov_y = nx * in_plane, ny * in_plane
        in_plane, slice_spacing = (float(v) for v in options.resolution)
        slice_thickness = slice_spacing
        nx, ny = int(round(fov_x / in_plane)), int(round(fov_y / in_plane))
    if options.max_matrix is not None:
        nx, ny = min(nx, options.max_matrix), min(ny, options.max_matrix)
    first = -first_fraction * slice_spacing
    coverage = heart.epicardial_length + 0.3 * slice_spacing - first
    n_slices = int(np.clip(np.ceil(coverage / slice_spacing) + 1, 6, options.max_slices))
    rotation = float(rng.uniform(-25, 25))
    if options.in_plane_rotation is not None:
        rotation = float(options.in_plane_rotation)
    centre_height = 0.4 * heart.epicardial_length
    acquisition = short_axis_acquisition(
        origin,
        long_axis,
        in_plane_spacing=in_plane,
        matrix=(nx, ny),
        slice_spacing=slice_spacing,
        slice_thickness=slice_thickness,
        n_slices=n_slices,
        first_slice_height=first,
        tilt=rng.normal(0, math.radians(4), 3),
        in_plane_rotation=math.radians(rotation),
        centre_offset=(float(rng.uniform(-12, 12)), float(rng.uniform(-12, 12))),
    )
    # The FOV is centred near the heart's mid-height, not on the first slice: shift along the slices'
    # plane so that the heart centre at mid-ventricle projects near the FOV centre.
    mid_point = origin + centre_height * long_axis
    mid_voxel = acquisition.world_to_voxel(mid_point[None])[0]
    shift = np.zeros(4)
    shift[:2] = mid_voxel[:2] - [(nx - 1) / 2, (ny - 1) / 2]
    affine = acquisition.affine.copy()
    affine[:3, 3] += affine[:3, :2] @ shift[:2]
    acquisition = replace(acquisition, affine=affine)

    signal = {name: value * float(rng.uniform(0.9, 1.1)) for name, value in BASE_SIGNAL.items()}
    signal["blood"] = 1.0
    appearance = Appearance(
        signal=signal,
        scale=float(rng.uniform(250, 1000)),
        noise=float(rng.uniform(0.025, 0.055)),
        bias=np.concatenate([[0.0], rng.normal(0, 0.25, 3), rng.normal(0, 0.15, 6)]),
        blur=float(rng.uniform(0.4, 0.7)),
    )

    n_frames = int(rng.integers(options.frame_range[0], options.frame_range[1] + 1))
    n_frames = options.n_frames or n_frames  # drawn anyway so that an override changes nothing else
    es_frame = int(round(float(rng.uniform(0.30, 0.40)) * n_frames)) + 1
    height = float(np.clip(rng.normal(171, 9), 150, 198))
    weight = float(np.clip(rng.uniform(20, 31) * (height / 100) ** 2, 45, 140))
    # Breath-hold drift of the liver: along the body axis only (inferior), as the diaphragm moves.
    liver_shift = np.array([0.0, 0.0, -float(rng.uniform(1.5, 4.0))])
    return SubjectParameters(
        patient_id=patient_id,
        group=group,
        heart=heart,
        motion=motion,
        torso=torso,
        pose=pose,
        acquisition=acquisition,
        appearance=appearance,
        n_frames=n_frames,
        es_frame=es_frame,
        liver_shift=liver_shift,
        height=round(height, 1),
        weight=round(weight, 1),
        targets={"lv_ef": draw("lv_ef"), "rv_ef": draw("rv_ef")},
    )
