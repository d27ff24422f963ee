"""Domain randomisation of training pairs: new geometry and a new scanner for every pair, from the labels up.

The shipped weights can only be trained on the bundle's phantom, yet they meet images of other scanners,
protocols and patients. Following SynthMorph and SynthSeg (Hoffmann et al., IEEE TMI 2022; Billot et al.,
MedIA 2023), every training pair is re-drawn before the network sees it:

1. :class:`RandPairGeometryd`: one random in-plane rotation, heart scale, in-plane anisotropy, through-plane
   scale and shift for the whole pair (both images and both label maps), so the motion between the frames is
   unchanged and its labels stay exact;
2. :class:`RandTissueIntensityd`: label-driven re-rendering. A random intensity lookup table (monotone,
   inverted or non-monotone) gives every tissue band of the image a new brightness, and each labelled heart
   structure (RV, LV myocardium, LV blood pool) may get an intensity of its own, with its texture kept;
   one draw for both frames, as one scanner acquires both;
3. MONAI's scanner effects, drawn per pair: bias field, gamma, histogram shift, in-plane blur, lower
   resolution, Rician noise (independent noise in each frame), then min-max back to [0, 1] as preprocessing
   does.

:func:`domain_randomisation` builds the chain; ``registration_augmentation(domain_randomisation=True)`` puts
it, behind a :class:`DomainRandomisationSwitch`, after the ED/ES swap and the flips. The switch lets training
start without it (a curriculum: from scratch, with domain randomisation on from the first step, the network never
started to register in our runs) and turn it on at a chosen epoch (``scripts.engine.DomainRandomisationSchedule``).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import (
    Compose,
    EnsureTyped,
    MapTransform,
    RandAdjustContrastd,
    RandBiasFieldd,
    RandGaussianSmoothd,
    RandHistogramShiftd,
    Randomizable,
    RandomizableTransform,
    RandRicianNoised,
    RandSimulateLowResolutiond,
    ScaleIntensityd,
    Transform,
)
from monai.utils import convert_to_dst_type, convert_to_tensor
from torch.nn import functional as F

from scripts.labels import IMAGE_KEYS, LABEL_KEYS, NUM_CLASSES

__all__ = [
    "DomainRandomisationSwitch",
    "RandPairGeometryd",
    "RandTissueIntensityd",
    "domain_randomisation",
    "piecewise_linear",
]


class RandPairGeometryd(RandomizableTransform, MapTransform):
    """One random similarity-like transform of the whole pair: images bilinear, labels nearest, zeros outside.

    Drawn per call: in-plane rotation ``U(-max_rotation, max_rotation)`` radians about the slice normal, heart
    scale ``s`` log-uniform in ``heart_scale`` (the content grows by ``s``), in-plane anisotropy ``a``
    log-uniform in ``anisotropy`` (axis 0 by ``s * a``, axis 1 by ``s / a``), through-plane scale log-uniform in
    ``through_plane_scale`` and an in-plane shift ``U(-max_shift, max_shift)`` voxels per axis. In-plane voxels
    are square on the network grid, so a rotation in voxel space is a rotation in millimetres.

    Args:
        keys: images then labels; ``label_keys`` among them are resampled with nearest neighbour.
        prob: probability of transforming a pair.
    """

    def __init__(
        self,
        keys: Sequence[str] = IMAGE_KEYS + LABEL_KEYS,
        label_keys: Sequence[str] = LABEL_KEYS,
        prob: float = 0.8,
        max_rotation: float = math.pi,
        heart_scale: tuple[float, float] = (0.7, 1.4),
        anisotropy: tuple[float, float] = (0.9, 1.1),
        through_plane_scale: tuple[float, float] = (0.8, 1.25),
        max_shift: float = 10.0,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, keys, allow_missing_keys=True)
        self.label_keys = set(label_keys)
        self.max_rotation = float(max_rotation)
        self.heart_scale = heart_scale
        self.anisotropy = anisotropy
        self.through_plane_scale = through_plane_scale
        self.max_shift = float(max_shift)
        self.parameters: dict[str, Any] = {}

    def _log_uniform(self, bounds: tuple[float, float]) -> float:
        return float(math.exp(self.R.uniform(math.log(bounds[0]), math.log(bounds[1]))))

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if not self._do_transform:
            return
        scale, aspect = self._log_uniform(self.heart_scale), self._log_uniform(self.anisotropy)
        self.parameters = {
            "rotation": float(self.R.uniform(-self.max_rotation, self.max_rotation)),
            "content_scale": (scale * aspect, scale / aspect, self._log_uniform(self.through_plane_scale)),
            "shift": (
                float(self.R.uniform(-self.max_shift, self.max_shift)),
                float(self.R.uniform(-self.max_shift, self.max_shift)),
                0.0,
            ),
        }

    def output_to_input(self, spatial_size: Sequence[int]) -> torch.Tensor:
        """(4, 4) voxel-index affine mapping an output voxel to the input position it samples (drawn parameters).

        About the grid centre ``c``: ``input = c + S^-1 R^-1 (output - c) - shift``, with R the in-plane rotation
        and S the content scale, so the content turns by the rotation and grows by the scale.
        """
        rotation = self.parameters["rotation"]
        cos, sin = math.cos(rotation), math.sin(rotation)
        inverse_rotation = torch.tensor([[cos, sin, 0.0], [-sin, cos, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
        inverse_scale = torch.diag(
            torch.tensor([1.0 / s for s in self.parameters["content_scale"]], dtype=torch.float64)
        )
        linear = inverse_scale @ inverse_rotation
        centre = (torch.tensor([float(n) for n in spatial_size], dtype=torch.float64) - 1.0) / 2.0
        matrix = torch.eye(4, dtype=torch.float64)
        matrix[:3, :3] = linear
        matrix[:3, 3] = centre - linear @ centre - torch.tensor(self.parameters["shift"], dtype=torch.float64)
        return matrix

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        keys = list(self.key_iterator(d))
        if not keys:
            return d
        spatial_size = tuple(d[keys[0]].shape[1:])
        grid = _sampling_grid(self.output_to_input(spatial_size), spatial_size)
        for key in keys:
            volume = convert_to_tensor(d[key], track_meta=False)
            mode = "nearest" if key in self.label_keys else "bilinear"
            resampled = F.grid_sample(
                volume[None].float(), grid.to(volume.device), mode=mode, padding_mode="zeros", align_corners=True
            )[0]
            d[key] = convert_to_dst_type(resampled.to(volume.dtype), d[key])[0]
        return d


def _sampling_grid(output_to_input: torch.Tensor, spatial_size: Sequence[int]) -> torch.Tensor:
    """(1, X, Y, Z, 3) ``grid_sample`` grid (``align_corners=True``) sampling the input at ``output_to_input``.

    ``affine_grid`` works in [-1, 1] coordinates with the axes in reversed order (Z, Y, X): with
    ``D = diag((size - 1) / 2)``, voxel ``p = D (n + 1)``, so the normalised map is
    ``D^-1 A D n + D^-1 (A D 1 + t) - 1``.
    """
    half = torch.tensor([max(n - 1, 1) / 2.0 for n in spatial_size], dtype=torch.float64)
    linear = output_to_input[:3, :3] * half[None, :] / half[:, None]
    offset = (output_to_input[:3, :3] @ half + output_to_input[:3, 3]) / half - 1.0
    theta = torch.cat([linear.flip(0, 1), offset.flip(0)[:, None]], dim=1)
    size = (1, 1, *spatial_size)
    return F.affine_grid(theta[None].to(torch.float32), list(size), align_corners=True)


def piecewise_linear(values: torch.Tensor, knots_y: torch.Tensor) -> torch.Tensor:
    """Map ``values`` in [0, 1] through the piecewise-linear curve through (k / (K - 1), knots_y[k]), k < K.

    Args:
        values: any shape, clamped to [0, 1].
        knots_y: (K,), K >= 2, the curve's values at K equally spaced knots.

    Example:
        >>> piecewise_linear(torch.tensor([0.0, 0.25, 1.0]), torch.tensor([1.0, 0.0]))
        tensor([1.0000, 0.7500, 0.0000])
    """
    segments = knots_y.numel() - 1
    position = values.clamp(0.0, 1.0) * segments
    index = position.floor().clamp(max=segments - 1).long()
    fraction = position - index
    return knots_y[index] * (1.0 - fraction) + knots_y[index + 1] * fraction


class RandTissueIntensityd(RandomizableTransform, MapTransform):
    """Label-driven re-rendering: random tissue intensities, one draw for both frames of a pair.

    1. A lookup table with ``knots`` random values maps the [0, 1] intensities of both images: sorted
       (monotone contrast change) with probability ``monotone_prob``, sorted in reverse (inverted contrast)
       with ``inverted_prob``, otherwise unsorted (tissue bands change brightness order).
    2. Each heart structure of the label maps, with probability ``structure_prob``, gets a random level
       ``v ~ U(0, 1)``: inside it (mask blurred in-plane by ``edge_sigma`` voxels, for partial volume) the image
       becomes ``v + gain * (image - mean over the structure)``, keeping its texture (papillary muscles,
       trabeculations). The same ``v`` and gain apply to the structure in both frames.

    Images must be in [0, 1] (after preprocessing). Without label keys only step 1 happens.
    """

    def __init__(
        self,
        image_keys: Sequence[str] = IMAGE_KEYS,
        label_keys: Sequence[str] = LABEL_KEYS,
        prob: float = 0.8,
        knots: int = 6,
        monotone_prob: float = 0.5,
        inverted_prob: float = 0.2,
        structure_prob: float = 0.4,
        gain: tuple[float, float] = (0.5, 1.5),
        edge_sigma: float = 0.6,
        num_classes: int = NUM_CLASSES,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, tuple(image_keys) + tuple(label_keys), allow_missing_keys=True)
        if knots < 2:
            raise ValueError(f"the lookup table needs at least 2 knots, got {knots}")
        self.image_keys, self.label_keys = tuple(image_keys), tuple(label_keys)
        self.knots = knots
        self.monotone_prob, self.inverted_prob = monotone_prob, inverted_prob
        self.structure_prob = structure_prob
        self.gain = gain
        self.edge_sigma = edge_sigma
        self.num_classes = num_classes
        self.lookup = np.linspace(0.0, 1.0, knots)
        self.structure_levels: dict[int, tuple[float, float]] = {}

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if not self._do_transform:
            return
        values = self.R.uniform(0.0, 1.0, self.knots)
        kind = self.R.uniform()
        if kind < self.monotone_prob:
            values = np.sort(values)
        elif kind < self.monotone_prob + self.inverted_prob:
            values = np.sort(values)[::-1]
        self.lookup = values.copy()
        self.structure_levels = {
            label: (float(self.R.uniform(0.0, 1.0)), float(self.R.uniform(*self.gain)))
            for label in range(1, self.num_classes)
            if self.R.uniform() < self.structure_prob
        }

    def _soft_mask(self, label: torch.Tensor, value: int) -> torch.Tensor:
        """(1, H, W, D) mask of ``label == value`` blurred in-plane by a Gaussian of ``edge_sigma`` voxels."""
        mask = (label == value).to(torch.float32)
        if self.edge_sigma <= 0:
            return mask
        radius = max(1, math.ceil(3 * self.edge_sigma))
        offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-0.5 * (offsets / self.edge_sigma) ** 2)
        kernel = kernel / kernel.sum()
        volume = mask.permute(0, 3, 1, 2)  # (1, D, H, W): slices as channels of a 2-D image
        depth = volume.shape[1]
        rows = kernel.view(1, 1, -1, 1).repeat(depth, 1, 1, 1)
        columns = kernel.view(1, 1, 1, -1).repeat(depth, 1, 1, 1)
        volume = F.conv2d(volume, rows, padding=(radius, 0), groups=depth)
        volume = F.conv2d(volume, columns, padding=(0, radius), groups=depth)
        return volume.permute(0, 2, 3, 1)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for image_key, label_key in zip(self.image_keys, self.label_keys):
            if image_key not in d:
                continue
            image = d[image_key]
            plain = convert_to_tensor(image, track_meta=False)
            knots_y = torch.as_tensor(self.lookup, dtype=plain.dtype, device=plain.device)
            rendered = piecewise_linear(plain, knots_y)
            label = d.get(label_key)
            if label is not None:
                label = convert_to_tensor(label, track_meta=False)
                for value, (level, gain) in self.structure_levels.items():
                    inside = label == value
                    if not bool(inside.any()):
                        continue
                    mean = rendered[inside].mean()
                    mask = self._soft_mask(label, value).to(rendered.dtype)
                    rendered = rendered * (1.0 - mask) + (level + gain * (rendered - mean)) * mask
            d[image_key] = convert_to_dst_type(rendered, image)[0]
        return d


def domain_randomisation(
    image_keys: Sequence[str] = IMAGE_KEYS, label_keys: Sequence[str] = LABEL_KEYS
) -> list[MapTransform]:
    """The domain-randomisation chain (see the module docstring), for images in [0, 1] on the network grid.

    Returns a list of dictionary transforms; the output images are float32 in [0, 1] again.
    """
    image_keys, label_keys = tuple(image_keys), tuple(label_keys)
    return [
        RandPairGeometryd(image_keys + label_keys, label_keys),
        RandTissueIntensityd(image_keys, label_keys),
        RandBiasFieldd(image_keys, degree=3, coeff_range=(-0.2, 0.2), prob=0.5),
        RandAdjustContrastd(image_keys, prob=0.5, gamma=(0.4, 2.5)),
        RandHistogramShiftd(image_keys, num_control_points=(5, 10), prob=0.2),
        RandGaussianSmoothd(image_keys, sigma_x=(0.0, 1.5), sigma_y=(0.0, 1.5), sigma_z=(0.0, 0.5), prob=0.3),
        RandSimulateLowResolutiond(image_keys, zoom_range=(0.6, 1.0), prob=0.2),
        RandRicianNoised(image_keys, prob=0.5, std=0.08, sample_std=True),
        ScaleIntensityd(image_keys, minv=0.0, maxv=1.0),
        EnsureTyped(image_keys + label_keys, dtype=torch.float32, track_meta=True, allow_missing_keys=True),
    ]


class DomainRandomisationSwitch(Randomizable, Transform):
    """A transform chain that can be switched off and on while DataLoader worker processes are running.

    The flag lives in shared memory, so a change made in the training process (e.g. by
    ``scripts.engine.DomainRandomisationSchedule`` at the start of an epoch) reaches worker processes forked
    before it. Switched off, the chain is skipped and the sample is returned unchanged (a shallow copy).

    Args:
        transforms: the chain (e.g. :func:`domain_randomisation`'s list), applied in order when on.
        active: the initial state.
    """

    def __init__(self, transforms: Sequence[Any], active: bool = True) -> None:
        self.chain = Compose(list(transforms))
        self._flag = torch.tensor([int(bool(active))], dtype=torch.uint8).share_memory_()

    @property
    def active(self) -> bool:
        """Whether the chain is applied."""
        return bool(self._flag[0])

    @active.setter
    def active(self, value: bool) -> None:
        self._flag[0] = int(bool(value))

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        """Seed the chain's random transforms (MONAI's worker seeding reaches them through this)."""
        super().set_random_state(seed, state)
        self.chain.set_random_state(seed, state)
        return self

    def randomize(self, data: Any) -> None:
        """Each transform of the chain draws its own parameters."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        return self.chain(data) if self.active else dict(data)
