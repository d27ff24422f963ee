"""The robustness benchmark's perturbations: what a scanner or a patient changes, applied to the stored files.

Each perturbation takes one patient's two frames as stored (:class:`Frame`: image, label map and their affine,
before any preprocessing) and returns them changed, so every method meets the change through the bundle's real
preprocessing. Geometry changes are the same for both frames and move each label map with its image (images
linear, labels nearest neighbour); intensity changes touch the images only. Everything random is drawn from the
generator passed in (:func:`perturbation_rng`: one stream per seed, perturbation and patient), so a run is
reproducible.

Array axes 0 and 1 are in-plane and axis 2 is the slice axis (the ACDC layout); voxel sizes are the norms of the
affine's columns.

>>> frames = [Frame(np.arange(8.0).reshape(2, 2, 2), np.zeros((2, 2, 2), np.uint8), np.eye(4))]
>>> float(invert_contrast(frames, np.random.default_rng(0))[0].image[0, 0, 0])
7.0
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
from scipy import ndimage

__all__ = [
    "PERTURBATIONS",
    "Frame",
    "Perturbation",
    "add_rician_noise",
    "adjust_gamma",
    "background_noise_sigma",
    "blur_in_plane",
    "invert_contrast",
    "multiply_bias_field",
    "perturbation_rng",
    "resample_in_plane",
    "resample_through_plane",
    "rotate_in_plane",
    "scale_voxel_size",
    "unperturbed",
    "voxel_sizes",
]

# 1.5 voxels of the network grid's 1.8 mm in-plane spacing, applied in mm whatever the stored spacing.
BLUR_SIGMA_MM = 2.7
# A Gaussian of this FWHM/sigma ratio has its FWHM equal to the voxel size it models (anti-aliasing).
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


@dataclass(frozen=True)
class Frame:
    """One cardiac phase of one patient as stored.

    Attributes:
        image: (X, Y, Z) float32 intensities.
        label: (X, Y, Z) uint8 label map (0 background, 1 RV, 2 LV myocardium, 3 LV blood pool).
        affine: (4, 4) voxel-to-world (mm) matrix shared by image and label.
    """

    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray


# frames of one patient, random generator -> changed frames (same order)
PerturbationFunction = Callable[[Sequence[Frame], np.random.Generator], list[Frame]]


@dataclass(frozen=True)
class Perturbation:
    """A named perturbation of the benchmark: its table name, a one-line description, its function, and whether it
    changes the geometry (voxel data or affine, labels alike) rather than the image intensities only."""

    name: str
    description: str
    apply: PerturbationFunction
    changes_geometry: bool = False


def perturbation_rng(seed: int, name: str, patient: str) -> np.random.Generator:
    """The random stream of one perturbation of one patient: the same (seed, name, patient), the same draws."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode()), zlib.crc32(patient.encode())])


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """(3,) voxel size in mm along the array axes: the norms of the affine's first three columns."""
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def _with_images(frames: Sequence[Frame], change: Callable[[np.ndarray], np.ndarray]) -> list[Frame]:
    return [replace(frame, image=np.asarray(change(frame.image), dtype=np.float32)) for frame in frames]


def unperturbed(frames: Sequence[Frame], rng: np.random.Generator) -> list[Frame]:
    """The frames as stored (the reference row)."""
    return list(frames)


def adjust_gamma(frames: Sequence[Frame], rng: np.random.Generator, gamma: float) -> list[Frame]:
    """Each image min-max rescaled to [0, 1], raised to ``gamma``, and scaled back to its own range.

    ``gamma`` < 1 brightens the dark tissues (myocardium against blood loses contrast), > 1 darkens them.
    """

    def change(image: np.ndarray) -> np.ndarray:
        low, high = float(image.min()), float(image.max())
        if high <= low:
            return image
        return ((image - low) / (high - low)) ** gamma * (high - low) + low

    return _with_images(frames, change)


def invert_contrast(frames: Sequence[Frame], rng: np.random.Generator) -> list[Frame]:
    """Each image mirrored within its range: ``max + min - image`` (bright blood becomes dark, air bright)."""
    return _with_images(frames, lambda image: float(image.max()) + float(image.min()) - image)


def background_noise_sigma(image: np.ndarray, air_fraction_of_p99: float = 0.1) -> float:
    """The noise standard deviation of a magnitude image, estimated from its air.

    Air voxels: those whose 5 x 5 in-plane neighbourhood mean is below ``air_fraction_of_p99`` of the image's 99th
    percentile. Air carries no signal, so its magnitude is Rayleigh-distributed with parameter sigma (the noise
    standard deviation of each complex channel), whose median is ``sigma * sqrt(2 ln 2)``: sigma = median / 1.1774.
    On the phantom's test split (every third patient) this overestimates the generator's true sigma by 4-20 %
    (mean 11 %): its lungs are dark but not signal-free.

    Args:
        image: (X, Y, Z) magnitude image.
        air_fraction_of_p99: the air threshold, a fraction of the 99th percentile.

    Returns:
        sigma in the image's units (0 when no voxel qualifies as air).
    """
    image = np.asarray(image, dtype=np.float64)
    neighbourhood_mean = ndimage.uniform_filter(image, size=(5, 5, 1), mode="nearest")
    air = image[neighbourhood_mean < air_fraction_of_p99 * np.percentile(image, 99)]
    if air.size == 0:
        return 0.0
    return float(np.median(air) / math.sqrt(2.0 * math.log(2.0)))


def add_rician_noise(frames: Sequence[Frame], rng: np.random.Generator, factor: float = 3.0) -> list[Frame]:
    """Rician noise that makes each image's noise standard deviation ``factor`` times its own.

    With sigma the image's own noise (:func:`background_noise_sigma`), complex Gaussian noise of
    ``sigma * sqrt(factor**2 - 1)`` per channel is added: ``|image + n_real + i n_imaginary|``. A magnitude image
    hides its phase, but circular complex noise makes the result depend on the magnitude only, so this equals
    adding the noise to the complex signal, and the variances add up to ``(factor * sigma)**2``. Each frame draws
    its own noise.
    """

    def change(image: np.ndarray) -> np.ndarray:
        extra = background_noise_sigma(image) * math.sqrt(factor**2 - 1.0)
        real = image + extra * rng.standard_normal(image.shape)
        return np.hypot(real, extra * rng.standard_normal(image.shape))

    return _with_images(frames, change)


def _normalised_coordinates(shape: Sequence[int]) -> list[np.ndarray]:
    axes = [np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1) for n in shape]
    return list(np.meshgrid(*axes, indexing="ij"))


def multiply_bias_field(frames: Sequence[Frame], rng: np.random.Generator, ratio: float = 4.0) -> list[Frame]:
    """A smooth multiplicative field whose maximum over the field of view is ``ratio`` times its minimum.

    The log of the field is a random quadratic polynomial of the voxel coordinates (each axis mapped to [-1, 1];
    the 9 coefficients of x, y, z, x^2, y^2, z^2, xy, xz, yz drawn once per patient from N(0, 1)), rescaled to
    [-ln(ratio) / 2, ln(ratio) / 2]: the field runs from 1/sqrt(ratio) to sqrt(ratio). Both frames get the same
    field (one coil, one position).
    """
    coefficients = rng.standard_normal(9)

    def field(shape: Sequence[int]) -> np.ndarray:
        x, y, z = _normalised_coordinates(shape)
        terms = (x, y, z, x * x, y * y, z * z, x * y, x * z, y * z)
        log_field = sum(c * t for c, t in zip(coefficients, terms))
        span = float(log_field.max() - log_field.min())
        unit = (log_field - log_field.min()) / span if span > 0 else np.full(shape, 0.5)
        return np.exp((unit - 0.5) * math.log(ratio))

    return [replace(f, image=(f.image * field(f.image.shape)).astype(np.float32)) for f in frames]


def blur_in_plane(frames: Sequence[Frame], rng: np.random.Generator, sigma_mm: float = BLUR_SIGMA_MM) -> list[Frame]:
    """Gaussian blur of each image within its slices, ``sigma_mm`` along both in-plane axes (none through-plane)."""

    def change(frame: Frame) -> np.ndarray:
        spacing = voxel_sizes(frame.affine)
        return ndimage.gaussian_filter(frame.image, (sigma_mm / spacing[0], sigma_mm / spacing[1], 0.0), mode="nearest")

    return [replace(frame, image=change(frame).astype(np.float32)) for frame in frames]


def scale_voxel_size(frames: Sequence[Frame], rng: np.random.Generator, factor: float) -> list[Frame]:
    """Every voxel size multiplied by ``factor`` in the header: the heart becomes ``factor`` times larger in mm.

    The voxel data stay as they are; the affine's columns are scaled about the volume's centre voxel, which keeps
    its world position.
    """
    scaled = []
    for frame in frames:
        affine = np.asarray(frame.affine, dtype=np.float64).copy()
        centre = (np.asarray(frame.image.shape[:3], dtype=np.float64) - 1.0) / 2.0
        affine[:3, 3] += affine[:3, :3] @ centre * (1.0 - factor)
        affine[:3, :3] *= factor
        scaled.append(replace(frame, affine=affine))
    return scaled


def _resample(frame: Frame, new_spacing: Sequence[float | None]) -> Frame:
    """``frame`` on a grid of ``new_spacing`` mm along the axes given (None: axis unchanged), same centre.

    Images: Gaussian anti-aliasing before a coarser grid (an extra sigma of ``sqrt(f**2 - 1) / 2.3548`` voxels for
    a spacing ``f`` times larger: the voxel's FWHM grows from the old spacing to the new), then linear
    interpolation; labels: nearest neighbour.
    """
    old = voxel_sizes(frame.affine)
    shape = np.asarray(frame.image.shape[:3])
    factor = np.array([1.0 if s is None else float(s) / o for s, o in zip(new_spacing, old)])
    new_shape = np.maximum(1, np.rint(shape / factor)).astype(int)
    # new index j -> old index factor * (j - new centre) + old centre (diagonal, so one offset per axis)
    offset = (shape - 1) / 2.0 - factor * (new_shape - 1) / 2.0
    sigma = np.sqrt(np.clip(factor**2 - 1.0, 0.0, None)) / FWHM_PER_SIGMA
    image = ndimage.gaussian_filter(frame.image, sigma, mode="nearest") if np.any(sigma > 0) else frame.image
    image = ndimage.affine_transform(image, factor, offset, tuple(new_shape), order=1, mode="nearest")
    label = ndimage.affine_transform(frame.label, factor, offset, tuple(new_shape), order=0, mode="nearest")
    to_old = np.eye(4)
    to_old[:3, :3] = np.diag(factor)
    to_old[:3, 3] = offset
    return Frame(image.astype(np.float32), label.astype(np.uint8), np.asarray(frame.affine, np.float64) @ to_old)


def resample_in_plane(frames: Sequence[Frame], rng: np.random.Generator, spacing_mm: float) -> list[Frame]:
    """Each frame resampled to ``spacing_mm`` along both in-plane axes (anti-aliased images, nearest labels)."""
    return [_resample(frame, (spacing_mm, spacing_mm, None)) for frame in frames]


def resample_through_plane(frames: Sequence[Frame], rng: np.random.Generator, spacing_mm: float) -> list[Frame]:
    """Each frame resampled to slices ``spacing_mm`` apart (anti-aliased images, nearest labels)."""
    return [_resample(frame, (None, None, spacing_mm)) for frame in frames]


def rotate_in_plane(frames: Sequence[Frame], rng: np.random.Generator, degrees: float) -> list[Frame]:
    """The content of every slice rotated by ``degrees`` about the slice centre, from array axis 0 towards axis 1.

    The voxel data move (images linear, labels nearest, zero outside), the affine stays: preprocessing reorients
    by the affine, so a rotated affine would be undone, a rotated content is not. The rotation is made in mm, so it
    stays rigid for non-square voxels: the content at in-plane offset ``(a, b)`` mm from the centre moves to
    ``(a cos t - b sin t, a sin t + b cos t)``.
    """
    angle = math.radians(degrees)
    rotated = []
    for frame in frames:
        spacing = voxel_sizes(frame.affine)
        # output index o -> input index c + S^-1 R(-angle) S (o - c), in-plane only
        inverse_rotation = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
        in_plane = np.diag(1.0 / spacing[:2]) @ inverse_rotation @ np.diag(spacing[:2])
        matrix = np.eye(3)
        matrix[:2, :2] = in_plane
        centre = (np.asarray(frame.image.shape[:3], dtype=np.float64) - 1.0) / 2.0
        offset = centre - matrix @ centre
        image = ndimage.affine_transform(frame.image, matrix, offset, order=1, mode="constant", cval=0.0)
        label = ndimage.affine_transform(frame.label, matrix, offset, order=0, mode="constant", cval=0)
        rotated.append(replace(frame, image=image.astype(np.float32), label=label.astype(np.uint8)))
    return rotated


PERTURBATIONS: dict[str, Perturbation] = {
    p.name: p
    for p in (
        Perturbation("unperturbed", "the test split as stored", unperturbed),
        Perturbation("gamma_0.5", "intensity gamma 0.5 (on [0, 1], scaled back)", partial(adjust_gamma, gamma=0.5)),
        Perturbation("gamma_2", "intensity gamma 2 (on [0, 1], scaled back)", partial(adjust_gamma, gamma=2.0)),
        Perturbation("inverted", "contrast inverted (max + min - image)", invert_contrast),
        Perturbation("noise_x3", "Rician noise to 3x the image's own noise std", partial(add_rician_noise, factor=3.0)),
        Perturbation("bias_x4", "smooth multiplicative bias field, max/min 4", partial(multiply_bias_field, ratio=4.0)),
        Perturbation(
            f"blur_{BLUR_SIGMA_MM:g}mm",
            f"in-plane Gaussian blur, sigma {BLUR_SIGMA_MM:g} mm (1.5 network voxels)",
            partial(blur_in_plane, sigma_mm=BLUR_SIGMA_MM),
        ),
        Perturbation(
            "heart_x0.75",
            "voxel size x0.75 in the header: a smaller heart",
            partial(scale_voxel_size, factor=0.75),
            changes_geometry=True,
        ),
        Perturbation(
            "heart_x1.3",
            "voxel size x1.3 in the header: a larger heart",
            partial(scale_voxel_size, factor=1.3),
            changes_geometry=True,
        ),
        Perturbation(
            "inplane_1.3mm",
            "resampled in-plane to 1.3 mm",
            partial(resample_in_plane, spacing_mm=1.3),
            changes_geometry=True,
        ),
        Perturbation(
            "inplane_2.2mm",
            "resampled in-plane to 2.2 mm",
            partial(resample_in_plane, spacing_mm=2.2),
            changes_geometry=True,
        ),
        Perturbation(
            "slices_6mm",
            "resampled through-plane to 6 mm slices",
            partial(resample_through_plane, spacing_mm=6.0),
            changes_geometry=True,
        ),
        Perturbation(
            "rotation_30deg",
            "content rotated 30 degrees in-plane",
            partial(rotate_in_plane, degrees=30.0),
            changes_geometry=True,
        ),
    )
}
