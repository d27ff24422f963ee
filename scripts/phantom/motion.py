"""Known motion from the ED reference anatomy to any cine frame, in both directions.

Every frame is described by a contraction level ``a`` (0 at ED, 1 at ES) and a liver shift. Points of
a frame map back to the ED anatomy (the *backward* map, frame -> ED) through one of three pieces:

* heart (points whose backward image lies inside the ED heart): in the heart-local cylindrical frame
  (r, theta, z) the base descends toward the apex (z' = z + a*descent*(1 - z/L), the apex stays),
  each height twists by a*twist(z) about the long axis, and along each ray the shells move radially:
  the LV endocardium by the fraction a*c(theta, z) (c lowered in an infarct scar), the RV free wall
  toward the septum by a*c_rv of the cavity width, while the walls and the epicardial fat keep their
  volume (area x axial stretch), so the myocardium thickens as it contracts;
* surroundings (lungs, mediastinum, chest wall...): no twist and no descent, only a radial stretch
  along the same ray between the moving heart surface and a rigid radius (the inner chest wall, or
  40 mm out), so nothing opens or overlaps at the heart surface: the normal component of the motion
  is continuous there while the tangential one (twist, descent) jumps. That is the sliding;
* liver sub-layer: rigidly shifted by the breathing offset, sliding along the chest wall.

Both directions are analytic (each piece is invertible in closed form), so the ground-truth fields
are exact up to float rounding; ``tests/test_phantom.py`` checks backward(forward(y)) = y.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .anatomy import (
    EPICARDIAL_FAT,
    LV_CAVITY,
    LV_WALL,
    OUTSIDE_HEART,
    RV_CAVITY,
    RV_WALL,
    HeartRadii,
    HeartShape,
    TorsoShape,
    heart_radii,
    infarct_weight,
    liver_inside,
    thoracic_cavity,
)

SLIDING_DEPTH = 40.0  # mm of surrounding tissue that stretches to follow the heart surface
MIN_SLIDING_DEPTH = 10.0  # keeps the stretch gentle where the heart nearly touches the chest wall


@dataclass(frozen=True)
class HeartMotion:
    """End-systolic deformation of the heart (the frame at contraction level ``a`` takes a fraction ``a``).

    Attributes:
        contraction: fractional shortening of the LV endocardial radius at ES in normal myocardium.
        akinesis: fraction of that shortening lost inside the infarct scar (1 = akinetic).
        rv_contraction: fractional shortening of the RV cavity width (free wall toward septum) at ES.
        base_descent: through-plane displacement of the base toward the apex at ES (mm).
        twist_base, twist_apex: rotation about the long axis at ES (radians, right-handed about the
            base-to-apex axis) at the base and at the apex; linear in between.
    """

    contraction: float
    akinesis: float
    rv_contraction: float
    base_descent: float
    twist_base: float
    twist_apex: float


@dataclass(frozen=True)
class HeartPose:
    """Rigid placement of the heart-local frame in the world: ``world = origin + axes @ local``.

    ``origin`` (3,) is the centre of the base plane (mm, RAS); ``axes`` (3, 3) holds the local x, y
    and z (base-to-apex) unit vectors as columns.
    """

    origin: np.ndarray
    axes: np.ndarray

    def to_local(self, world: np.ndarray) -> np.ndarray:
        """(N, 3) world mm -> (N, 3) heart-local mm."""
        return apply_linear(self.axes.T, -self.axes.T @ self.origin, world)

    def to_world(self, local: np.ndarray) -> np.ndarray:
        """(N, 3) heart-local mm -> (N, 3) world mm."""
        return apply_linear(self.axes, self.origin, local)


def apply_linear(matrix: np.ndarray, offset: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``points @ matrix.T + offset`` for (N, 3) points, keeping their dtype.

    Written out per component: numpy's matmul with an inner dimension of 3 is several times slower
    than three fused multiply-adds on long arrays.
    """
    result = np.empty_like(points)
    for row in range(3):
        column = points[:, 0] * points.dtype.type(matrix[row, 0])
        column += points[:, 1] * points.dtype.type(matrix[row, 1])
        column += points[:, 2] * points.dtype.type(matrix[row, 2])
        result[:, row] = column + points.dtype.type(offset[row])
    return result


@dataclass(frozen=True)
class FrameState:
    """One cine frame: contraction level (0 ED .. 1 ES) and liver tissue displacement (3,) in world mm."""

    contraction: float
    liver_shift: np.ndarray


def cardiac_cycle(n_frames: int, es_frame: int) -> np.ndarray:
    """Contraction level of each frame, (n_frames,) in [0, 1]: 0 at frame 1 (ED), 1 at ``es_frame``.

    Systole is a half cosine; diastole is rapid filling to 20 % in its first half, diastasis, then the
    atrial kick back to 0, so the loop closes smoothly (frame n_frames + 1 would be ED again).
    """
    phase = np.arange(n_frames) / n_frames
    es_phase = (es_frame - 1) / n_frames
    level = np.empty(n_frames)
    systole = phase <= es_phase
    level[systole] = 0.5 * (1.0 - np.cos(np.pi * phase[systole] / es_phase))
    u = (phase[~systole] - es_phase) / (1.0 - es_phase)
    filling = 0.2 + 0.4 * (1.0 + np.cos(np.pi * np.minimum(u / 0.5, 1.0)))
    kick = 0.1 * (1.0 + np.cos(np.pi * np.clip((u - 0.5) / 0.5, 0.0, 1.0)))
    level[~systole] = np.where(u < 0.5, filling, kick)
    return level


def breathing_cycle(n_frames: int) -> np.ndarray:
    """Relative liver shift of each frame, (n_frames,): 0 at ED, a slow drift during the breath-hold."""
    return np.sin(np.pi * np.arange(n_frames) / n_frames)


def axial_stretch(shape: HeartShape, motion: HeartMotion, level: float) -> float:
    """dz'/dz of the long-axis map at contraction ``level`` (< 1: the ventricle shortens)."""
    return 1.0 - level * motion.base_descent / shape.epicardial_length


def twist_angle(shape: HeartShape, motion: HeartMotion, z: np.ndarray, level: float) -> np.ndarray:
    """Rotation (radians) about the long axis of ED height ``z`` (mm) at contraction ``level``."""
    fraction = np.clip(z / shape.epicardial_length, 0.0, 1.0)
    return level * (motion.twist_base + (motion.twist_apex - motion.twist_base) * fraction)


def heart_ed_coordinates(
    shape: HeartShape, motion: HeartMotion, theta_frame: np.ndarray, z_frame: np.ndarray, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """Backward long-axis and twist map: frame (theta', z') -> ED (theta, z) of the heart layer."""
    z = (z_frame - level * motion.base_descent) / axial_stretch(shape, motion, level)
    return theta_frame - twist_angle(shape, motion, z, level), z


def frame_radii(
    shape: HeartShape, motion: HeartMotion, radii: HeartRadii, theta: np.ndarray, z: np.ndarray, level: float
) -> HeartRadii:
    """Shell radii at contraction ``level`` of the rays whose ED angle/height are (theta, z).

    Args:
        radii: ED radii of those rays (:func:`heart_radii` at (theta, z)).

    Returns:
        HeartRadii in mm in the frame: the LV cavity shrinks by level*c, the RV cavity width by
        level*c_rv, the other shells keep their area divided by the axial stretch.
    """
    stretch = axial_stretch(shape, motion, level)
    shortening = motion.contraction * (1.0 - motion.akinesis * infarct_weight(shape, theta, np.maximum(z, 0.0)))
    lv_cavity = radii.lv_cavity * (1.0 - level * shortening)
    lv_wall = np.sqrt(lv_cavity**2 + (radii.lv_wall**2 - radii.lv_cavity**2) / stretch)
    rv_cavity = lv_wall + (radii.rv_cavity - radii.lv_wall) * (1.0 - level * motion.rv_contraction)
    rv_wall = np.sqrt(rv_cavity**2 + (radii.rv_wall**2 - radii.rv_cavity**2) / stretch)
    outer = np.sqrt(rv_wall**2 + (radii.outer**2 - radii.rv_wall**2) / stretch)
    return HeartRadii(lv_cavity, lv_wall, rv_cavity, rv_wall, outer)


def shell_of(radius: np.ndarray, radii: HeartRadii) -> np.ndarray:
    """Shell code (LV_CAVITY .. OUTSIDE_HEART) of points at ``radius`` on rays with shell ``radii``."""
    layer = np.zeros(radius.shape, np.int8)
    for bound in radii:
        layer += radius >= bound
    return layer


def _radial_map(layer: np.ndarray, radius: np.ndarray, source: HeartRadii, target: HeartRadii, stretch: float):
    """Map radii shell by shell from ``source`` radii to ``target`` radii (same rays).

    Cavities scale linearly (their content, e.g. papillary muscles, keeps its relative position); walls
    and fat keep their area times ``stretch`` (target area = source area * stretch).
    """
    eps = 1e-9
    result = radius.copy()
    scale = target.lv_cavity / np.maximum(source.lv_cavity, eps)
    result = np.where(layer == LV_CAVITY, radius * scale, result)
    pairs = (
        (LV_WALL, source.lv_cavity, target.lv_cavity),
        (RV_WALL, source.rv_cavity, target.rv_cavity),
        (EPICARDIAL_FAT, source.rv_wall, target.rv_wall),
    )
    for code, inner_source, inner_target in pairs:
        area_kept = np.sqrt(np.maximum(inner_target**2 + stretch * (radius**2 - inner_source**2), 0.0))
        result = np.where(layer == code, area_kept, result)
    width = (target.rv_cavity - target.lv_wall) / np.maximum(source.rv_cavity - source.lv_wall, eps)
    result = np.where(layer == RV_CAVITY, target.lv_wall + (radius - source.lv_wall) * width, result)
    return result


@dataclass(frozen=True)
class SubjectMotionModel:
    """Everything the maps need for one subject: shapes, motion and the heart's placement."""

    heart: HeartShape
    motion: HeartMotion
    torso: TorsoShape
    pose: HeartPose

    def rigid_radius(self, theta: np.ndarray, z: np.ndarray, outer_ed: np.ndarray) -> np.ndarray:
        """Radius (mm) along the surroundings' rays (theta, z) beyond which tissue does not move.

        The inner chest wall (ray/elliptic-cylinder intersection in world x-y), at most
        SLIDING_DEPTH beyond the ED heart surface and at least MIN_SLIDING_DEPTH beyond the heart
        surface of any frame on that ray (twist can turn the wide RV into a ray, so the largest of
        ED, mid-systole and ES is used).
        """
        largest = outer_ed
        for level in (0.5, 1.0):
            ed_theta, ed_z = heart_ed_coordinates(self.heart, self.motion, theta, z, level)
            radii = heart_radii(self.heart, ed_theta, ed_z)
            largest = np.maximum(largest, frame_radii(self.heart, self.motion, radii, ed_theta, ed_z, level).outer)
        cx, cy, ax, ay = thoracic_cavity(self.torso)
        axes, origin = self.pose.axes.tolist(), self.pose.origin.tolist()  # Python floats keep float32
        ox = (origin[0] + z * axes[0][2] - cx) / ax
        oy = (origin[1] + z * axes[1][2] - cy) / ay
        dx = (np.cos(theta) * axes[0][0] + np.sin(theta) * axes[0][1]) / ax
        dy = (np.cos(theta) * axes[1][0] + np.sin(theta) * axes[1][1]) / ay
        a = np.maximum(dx * dx + dy * dy, 1e-12)
        b = ox * dx + oy * dy
        c = ox * ox + oy * oy - 1.0
        wall = (-b + np.sqrt(np.maximum(b * b - a * c, 0.0))) / a
        wall = np.where(c < 0.0, wall - 2.0, 0.0)
        lower = largest + MIN_SLIDING_DEPTH
        return np.clip(wall, lower, np.maximum(lower, outer_ed + SLIDING_DEPTH))

    def surroundings_rays(self, local: np.ndarray) -> dict[str, np.ndarray]:
        """Static per-point quantities of the surroundings' rays through heart-local points (N, 3) mm.

        Returns dict with (N,) arrays: radius, theta, z (cylindrical coordinates), outer_ed (ED heart
        surface radius on the ray) and rigid (see :meth:`rigid_radius`).
        """
        radius = np.hypot(local[:, 0], local[:, 1])
        theta = np.arctan2(local[:, 1], local[:, 0])
        z = local[:, 2]
        outer_ed = heart_radii(self.heart, theta, z).outer
        return {
            "radius": radius,
            "theta": theta,
            "z": z,
            "outer_ed": outer_ed,
            "rigid": self.rigid_radius(theta, z, outer_ed),
        }

    def in_sliding_zone(self, rays: dict[str, np.ndarray]) -> np.ndarray:
        """Points that any cardiac frame can move: inside the rigid radius, not beyond the apex."""
        return (rays["radius"] < rays["rigid"]) & (rays["z"] < self.heart.epicardial_length + 1.0)

    def backward(self, rays: dict[str, np.ndarray], frame: FrameState) -> dict[str, np.ndarray]:
        """Backward map (frame -> ED) of frame points given by their surroundings' rays.

        Args:
            rays: output of :meth:`surroundings_rays` for the frame points (N,).
            frame: contraction level and liver shift.

        Returns:
            dict of (N,) arrays: ``layer`` (heart shell code, OUTSIDE_HEART for surroundings),
            ``radius``, ``theta``, ``z`` (ED heart-local cylindrical coordinates of heart points),
            ``world`` (N, 3) ED world position (mm) of every point, ``liver`` (bool, surroundings
            mapped through the shifted liver) and ``radii`` (ED HeartRadii on the heart points' rays).
        """
        level = frame.contraction
        theta, z = heart_ed_coordinates(self.heart, self.motion, rays["theta"], rays["z"], level)
        radii = heart_radii(self.heart, theta, z)
        moved = frame_radii(self.heart, self.motion, radii, theta, z, level)
        layer = shell_of(rays["radius"], moved)
        stretch = axial_stretch(self.heart, self.motion, level)
        radius = _radial_map(layer, rays["radius"], moved, radii, stretch)

        # Surroundings: stretch [frame surface, rigid] onto [ED surface, rigid] along the same ray.
        rigid, outer_ed = rays["rigid"], rays["outer_ed"]
        if np.any((layer == OUTSIDE_HEART) & (moved.outer > rigid - 1.0)):
            raise RuntimeError("heart surface moved beyond the sliding zone; parameters out of range")
        ratio = (rigid - outer_ed) / np.maximum(rigid - moved.outer, 1e-9)
        outside_radius = np.where(rays["radius"] < rigid, rigid - (rigid - rays["radius"]) * ratio, rays["radius"])
        outside = layer == OUTSIDE_HEART
        use_radius = np.where(outside, outside_radius, radius)
        use_theta = np.where(outside, rays["theta"], theta)
        use_z = np.where(outside, rays["z"], z)
        local = np.stack([use_radius * np.cos(use_theta), use_radius * np.sin(use_theta), use_z], axis=1)
        world = self.pose.to_world(local)
        shifted = world - frame.liver_shift
        liver = outside & liver_inside(self.torso, shifted[:, 0], shifted[:, 1], shifted[:, 2])
        world = np.where(liver[:, None], shifted, world)
        return {
            "layer": layer,
            "radius": radius,
            "theta": theta,
            "z": z,
            "world": world,
            "liver": liver,
            "radii": radii,
        }

    def backward_world(self, world: np.ndarray, frame: FrameState) -> dict[str, np.ndarray]:
        """Backward map of arbitrary frame points (N, 3) world mm; see :meth:`backward`."""
        return self.backward(self.surroundings_rays(self.pose.to_local(world)), frame)

    def forward_world(self, world: np.ndarray, frame: FrameState) -> np.ndarray:
        """Forward map (ED -> frame) of ED points (N, 3) world mm; returns (N, 3) frame world mm.

        Heart points follow the heart's closed-form forward map; surroundings first leave the liver
        shift (if they are liver), then invert the radial stretch of their ray. Points the other piece
        hides in the frame (e.g. lung where the liver moved in) keep the position their tissue moves to.
        """
        level = frame.contraction
        local = self.pose.to_local(world)
        radius = np.hypot(local[:, 0], local[:, 1])
        theta = np.arctan2(local[:, 1], local[:, 0])
        z = local[:, 2]
        radii = heart_radii(self.heart, theta, z)
        layer = shell_of(radius, radii)
        stretch = axial_stretch(self.heart, self.motion, level)
        moved = frame_radii(self.heart, self.motion, radii, theta, z, level)
        heart_radius = _radial_map(layer, radius, radii, moved, 1.0 / stretch)
        heart_theta = theta + twist_angle(self.heart, self.motion, z, level)
        heart_z = z + level * self.motion.base_descent * (1.0 - z / self.heart.epicardial_length)
        heart_local = np.stack([heart_radius * np.cos(heart_theta), heart_radius * np.sin(heart_theta), heart_z], 1)

        liver = (layer == OUTSIDE_HEART) & liver_inside(self.torso, world[:, 0], world[:, 1], world[:, 2])
        pushed = self.pose.to_local(np.where(liver[:, None], world + frame.liver_shift, world))
        rays = self.surroundings_rays(pushed)
        ed_theta, ed_z = heart_ed_coordinates(self.heart, self.motion, rays["theta"], rays["z"], level)
        moved_outer = frame_radii(
            self.heart, self.motion, heart_radii(self.heart, ed_theta, ed_z), ed_theta, ed_z, level
        )
        rigid, outer_ed = rays["rigid"], rays["outer_ed"]
        ratio = (rigid - moved_outer.outer) / np.maximum(rigid - outer_ed, 1e-9)
        frame_radius = np.where(rays["radius"] < rigid, rigid - (rigid - rays["radius"]) * ratio, rays["radius"])
        outside_local = np.stack(
            [frame_radius * np.cos(rays["theta"]), frame_radius * np.sin(rays["theta"]), rays["z"]], axis=1
        )
        result_local = np.where((layer == OUTSIDE_HEART)[:, None], outside_local, heart_local)
        return self.pose.to_world(result_local)
