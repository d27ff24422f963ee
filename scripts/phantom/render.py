"""Render cine frames, label maps and true displacement fields of one subject.

Each frame is the analytic ED anatomy evaluated at the backward-mapped positions of points spread
through every voxel's slice thickness (partial volume), averaged, blurred in-plane (point-spread
function), multiplied by a smooth bias field, scaled and corrupted by Rician noise. Labels are the
anatomy's labels at the voxel centres (no partial volume, like a manual annotation).

Speed: most of the field of view never moves. The renderer evaluates the torso once for all points,
then per frame only re-evaluates the points the heart's sliding zone can move and the thin bands
around the liver's top surfaces that the (vertical) liver shift can change.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from .anatomy import OUTSIDE_HEART, HeartRadii, dome_height, heart_radii, heart_tissue, liver_inside, torso_tissue
from .motion import FrameState, SubjectMotionModel
from .parameters import SubjectParameters

DDF_QUANTUM = 2.0**-10  # mm; the stored fields are rounded to it (exact in float32, compresses well)


class SubjectRenderer:
    """Renders frames of one subject; build once, then call :meth:`render_frame` per frame."""

    def __init__(self, params: SubjectParameters, n_through: int = 3) -> None:
        if n_through < 1 or n_through % 2 == 0:
            raise ValueError(f"n_through must be odd and >= 1, got {n_through}")
        self.params = params
        self.n_through = n_through
        self.model = SubjectMotionModel(params.heart, params.motion, params.torso, params.pose)
        acquisition = params.acquisition
        points = acquisition.through_slice_points(n_through)  # (V, S, 3)
        self.n_voxels = points.shape[0]
        self.world = points.reshape(-1, 3)
        self.centre_index = np.arange(self.n_voxels) * n_through + n_through // 2

        # Sliding zone: first a cheap cylinder bound, then the exact per-ray rigid radius.
        local = self.params.pose.to_local(self.world)
        radius = np.hypot(local[:, 0], local[:, 1])
        bound = self._max_outer_radius() + 45.0
        candidates = np.flatnonzero((radius < bound) & (local[:, 2] < params.heart.epicardial_length + 1.0))
        rays = self.model.surroundings_rays(local[candidates])
        keep = self.model.in_sliding_zone(rays)
        self.zone = candidates[keep]
        self.zone_rays = {name: value[keep] for name, value in rays.items()}
        zone_mask = np.zeros(len(self.world), bool)
        zone_mask[self.zone] = True
        self.zone_mask = zone_mask
        position = np.full(len(self.world), -1)
        position[self.zone] = np.arange(len(self.zone))
        self.centre_zone_position = position[self.centre_index]  # index into the zone arrays, -1 outside

        # Bands around the liver top surfaces that a vertical shift of at most |liver_shift| can cross.
        torso = params.torso
        x, y, z = self.world.T
        dome = dome_height(torso.dome_right, x, y)
        reach = float(np.abs(params.liver_shift).max()) + 0.5
        band = (np.abs(z - dome) < reach) | (np.abs(z - dome - torso.diaphragm_thickness) < reach)
        band &= x > torso.liver_left_edge - 1.0
        self.band = np.flatnonzero(band & ~zone_mask)

        signal = params.appearance.signal
        self.static = torso_tissue(torso, x, y, z, signal, liver_inside(torso, x, y, z)).astype(np.float32)
        self.bias = self._bias_field()

    def _max_outer_radius(self) -> float:
        """Largest ED outer heart radius (mm) over all rays: bounds the sliding zone cheaply."""
        theta = np.linspace(-np.pi, np.pi, 181)[:, None]
        z = np.linspace(-5.0, self.params.heart.epicardial_length, 60)[None, :]
        return float(heart_radii(self.params.heart, theta, z).outer.max())

    def _bias_field(self) -> np.ndarray:
        """(X, Y, Z) smooth multiplicative coil-sensitivity field (static across frames)."""
        centres = self.world[self.centre_index] / 200.0
        x, y, z = centres.T
        basis = np.stack([np.ones_like(x), x, y, z, x * x, y * y, z * z, x * y, x * z, y * z], axis=1)
        field = np.exp(basis @ self.params.appearance.bias)
        return (field / np.median(field)).reshape(self.params.acquisition.shape).astype(np.float32)

    def frame_state(self, level: float, breathing: float) -> FrameState:
        """Frame at contraction ``level`` (0..1) and breathing drift fraction ``breathing`` (0..1)."""
        shift = (float(breathing) * self.params.liver_shift).astype(self.world.dtype)
        return FrameState(contraction=float(level), liver_shift=shift)

    def render_frame(self, frame: FrameState, with_labels: bool = False) -> dict[str, np.ndarray]:
        """Noise-free signal of one frame.

        Returns:
            dict with ``signal`` (X, Y, Z) float relative signal (blood = 1, bias applied), and if
            ``with_labels`` ``labels`` (X, Y, Z) uint8 and ``backward`` (X*Y*Z, 3) ED world position (mm)
            of every voxel centre (the true frame -> ED map).
        """
        params = self.params
        signal = params.appearance.signal
        values = self.static.copy()

        mapped = self.model.backward(self.zone_rays, frame)
        layer = mapped["layer"]
        heart = np.flatnonzero(layer != OUTSIDE_HEART)
        radii = HeartRadii(*(r[heart] for r in mapped["radii"]))
        heart_values, heart_labels = heart_tissue(
            params.heart,
            layer[heart],
            mapped["radius"][heart],
            mapped["theta"][heart],
            mapped["z"][heart],
            radii,
            signal,
        )
        outside = np.flatnonzero(layer == OUTSIDE_HEART)
        ed = mapped["world"][outside]
        outside_values = torso_tissue(params.torso, ed[:, 0], ed[:, 1], ed[:, 2], signal, mapped["liver"][outside])
        values[self.zone[heart]] = heart_values
        values[self.zone[outside]] = outside_values

        band_world = self.world[self.band]
        band_ed, band_liver = self._liver_backward(band_world, frame)
        values[self.band] = torso_tissue(params.torso, *band_ed.T, signal, band_liver)

        image = values.reshape(self.n_voxels, self.n_through).mean(axis=1).reshape(params.acquisition.shape)
        blur = params.appearance.blur
        image = gaussian_filter(image, sigma=(blur, blur, 0.0), mode="nearest") * self.bias
        result = {"signal": image}
        if with_labels:
            zone_labels = np.zeros(len(self.zone), np.uint8)
            zone_labels[heart] = heart_labels
            in_zone = self.centre_zone_position >= 0
            labels = np.zeros(self.n_voxels, np.uint8)
            labels[in_zone] = zone_labels[self.centre_zone_position[in_zone]]
            result["labels"] = labels.reshape(params.acquisition.shape)
            backward = self.world[self.centre_index].copy()
            backward[in_zone] = mapped["world"][self.centre_zone_position[in_zone]]
            backward[~in_zone], _ = self._liver_backward(backward[~in_zone], frame)
            result["backward"] = backward
        return result

    def _liver_backward(self, world: np.ndarray, frame: FrameState) -> tuple[np.ndarray, np.ndarray]:
        """Backward map of points outside the sliding zone: liver tissue shifted, the rest static."""
        shifted = world - frame.liver_shift
        liver = liver_inside(self.params.torso, shifted[:, 0], shifted[:, 1], shifted[:, 2])
        return np.where(liver[:, None], shifted, world), liver

    def forward_field(self, frame: FrameState) -> np.ndarray:
        """(X*Y*Z, 3) frame world position (mm) of every ED voxel centre (the true ED -> frame map)."""
        centres = self.world[self.centre_index]
        torso = self.params.torso
        moving = self.zone_mask[self.centre_index] | liver_inside(torso, centres[:, 0], centres[:, 1], centres[:, 2])
        forward = centres.copy()
        forward[moving] = self.model.forward_world(centres[moving], frame)
        return forward

    def noisy_image(self, signal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Scale relative ``signal`` (X, Y, Z) to image units and add Rician noise; int16 (X, Y, Z)."""
        appearance = self.params.appearance
        sigma = appearance.noise * appearance.scale
        real = signal * appearance.scale + sigma * rng.standard_normal(signal.shape, dtype=np.float32)
        imaginary = sigma * rng.standard_normal(signal.shape, dtype=np.float32)
        return np.clip(np.rint(np.hypot(real, imaginary)), 0, 32767).astype(np.int16)


def displacement_field(target_world: np.ndarray, grid_world: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """(X, Y, Z, 3) float32 world displacement (mm) ``target - grid``, rounded to DDF_QUANTUM."""
    ddf = (target_world - grid_world).reshape(*shape, 3)
    return (np.round(ddf / DDF_QUANTUM) * DDF_QUANTUM).astype(np.float32)
