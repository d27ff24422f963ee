"""Instance optimisation: refine the network's displacement field on the pair being registered.

A network meets images unlike its training data in use; a few gradient steps on the pair itself recover much of
what it misses (uniGradICON's ``--io_iterations``). Starting from the network's field ``u0`` on the network grid, a
residual ``r`` (zero at the start) is optimised with Adam so that ``u = u0 + r`` minimises, for each pair,

``L(r) = lambda_sim S(moving o (id + u), fixed) + lambda_reg R(r)``

- ``moving o (id + u)``: the bundle's warp, ``warped(x) = moving(x + u(x))``, trilinear, ``align_corners=True``,
  zeros outside (:func:`scripts.warping.warp_image`);
- ``S``, the image dissimilarity (:data:`SIMILARITIES`, lower is better):

  - ``"lncc"``: MONAI's ``LocalNormalizedCrossCorrelationLoss`` computed per slice (2-D windows of
    ``lncc_kernel_size`` in-plane voxels; :class:`SliceLocalCorrelation`, the same values twice as fast): with
    10 mm slices a window spanning slices would mix anatomy the slices do not share. It is minus the SQUARED local
    correlation, in [-1, 0], so it ignores local affine intensity changes including a contrast inversion;
  - ``"mi"``: MONAI's ``GlobalMutualInformationLoss`` (minus the mutual information, Parzen windows on [0, 1]);
  - ``"mse"``: mean squared intensity difference, the training loss's similarity;

- ``R``: the diffusion regulariser of training (:func:`scripts.losses.diffusion_regularisation`, the mean squared
  forward difference in voxel units) of the residual only: the network's field keeps the discontinuities it
  predicts at organ boundaries, and the optimisation pays only for how far it bends them.

The optimisation runs coarse to fine over ``levels``, in-plane factors (default :data:`DEFAULT_LEVELS`: 4 then 2,
i.e. 32 x 32 x 16 then 64 x 64 x 16 for the network grid). At each level a fresh residual lives on the grid that
many times coarser in-plane, where the images are blurred and resampled like the training loss's coarser levels
and the current field is resampled (``align_corners=True``: the grids share their corner voxels); the level's
result is the current full-resolution field plus its residual resampled back, and the next level starts from it.
``steps`` are the finest level's steps; each coarser level takes twice the steps of the level below it (a step
there costs about a quarter). On the phantom the coarse residuals gave a higher Dice than optimising on the network
grid itself (they cannot chase noise), and the 4-then-2 schedule a higher Dice than the 2-grid alone at about 1.7x
its CPU time (docs/README.md, "Adaptive inference").

Each pair's loss is its own mean, and the batch loss is their sum: Adam normalises each voxel's update, so a pair
is refined the same whether it comes alone or in a batch. Everything runs on the inputs' device and in their
floating dtype, with gradients enabled even when the caller is inside ``torch.inference_mode`` or ``torch.no_grad``
(the inputs are cloned out of inference mode first).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from monai.losses import GlobalMutualInformationLoss

from scripts.errors import InvalidInputError
from scripts.losses import diffusion_regularisation
from scripts.warping import downsample_in_plane, in_plane_pyramid, warp_image

__all__ = [
    "DEFAULT_LEARNING_RATE",
    "DEFAULT_LEVELS",
    "DEFAULT_LNCC_KERNEL_SIZE",
    "DEFAULT_MI_BINS",
    "DEFAULT_REFINE_STEPS",
    "DEFAULT_REGULARISATION_WEIGHT",
    "DEFAULT_SIMILARITY",
    "DEFAULT_SIMILARITY_WEIGHT",
    "SIMILARITIES",
    "RefinementRecord",
    "RefinementSettings",
    "SliceLocalCorrelation",
    "image_dissimilarity",
    "level_schedule",
    "refine_displacement",
]

SIMILARITIES = ("lncc", "mi", "mse")

# Defaults chosen by measurement on phantom test pairs (docs/README.md, "Adaptive inference").
DEFAULT_SIMILARITY = "lncc"
DEFAULT_SIMILARITY_WEIGHT = 1.0
DEFAULT_REGULARISATION_WEIGHT = 1.0
DEFAULT_LEARNING_RATE = 0.1
DEFAULT_LNCC_KERNEL_SIZE = 9
DEFAULT_LEVELS = (4, 2)
DEFAULT_REFINE_STEPS = 50
DEFAULT_MI_BINS = 23

# in-plane Gaussian blur (voxels) before resampling to the optimisation grid, as for the training loss's levels
_PYRAMID_BLUR_SIGMA = 1.0


@dataclass(frozen=True)
class RefinementRecord:
    """What a refinement did, per pair of the batch (one entry per pair in the lists).

    Attributes:
        steps: Adam steps of the finest level (the ``steps`` asked for).
        similarity: the dissimilarity optimised (one of :data:`SIMILARITIES`).
        similarity_before: the dissimilarity of each pair under the initial field (lower is better).
        similarity_after: the same under the refined field.
        seconds: wall time of the whole refinement of the batch (clock stopped after the device finished).
        schedule: ``[in-plane factor, steps]`` of each level, coarse to fine (empty when no step was taken).
    """

    steps: int
    similarity: str
    similarity_before: list[float]
    similarity_after: list[float]
    seconds: float
    schedule: list[list[int]] = dataclasses.field(default_factory=list)

    def pair(self, index: int) -> dict[str, object]:
        """The record of pair ``index`` of the batch as a JSON-ready dict (``seconds`` is the batch's)."""
        return {
            "steps": self.steps,
            "similarity": self.similarity,
            "similarity_before": self.similarity_before[index],
            "similarity_after": self.similarity_after[index],
            "seconds": self.seconds,
            "schedule": [list(level) for level in self.schedule],
        }

    def as_dict(self) -> dict[str, object]:
        """All fields as a JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class RefinementSettings:
    """The refinement a run asks for: ``configs/inference.json``'s flat ``refine_*`` keys.

    Attributes:
        steps: Adam steps per pair (``refine_steps``); 0 uses the network's field as it is.
        similarity: the dissimilarity optimised (``refine_similarity``), one of :data:`SIMILARITIES`.
        similarity_weight: lambda_sim (``refine_similarity_weight``).
        regularisation_weight: lambda_reg of the diffusion regulariser (``refine_regularisation_weight``).
        learning_rate: Adam's step size in voxels of the optimisation grid (``refine_learning_rate``).
        levels: in-plane factors of the residual grids, coarse to fine (``refine_levels``), each >= 1, decreasing;
            a single number is one level.

    Raises:
        InvalidInputError: a value no refinement can use, named by its config key (a user's override).
    """

    steps: int = 0
    similarity: str = DEFAULT_SIMILARITY
    similarity_weight: float = DEFAULT_SIMILARITY_WEIGHT
    regularisation_weight: float = DEFAULT_REGULARISATION_WEIGHT
    learning_rate: float = DEFAULT_LEARNING_RATE
    levels: tuple[int, ...] = DEFAULT_LEVELS

    def __post_init__(self) -> None:
        where = "configs/inference.json"
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise InvalidInputError(f"{where}: refine_steps must be a whole number >= 0, got {self.steps!r}")
        if self.similarity not in SIMILARITIES:
            raise InvalidInputError(
                f"{where}: refine_similarity must be one of {', '.join(SIMILARITIES)}, got {self.similarity!r}"
            )
        for key, value in (
            ("refine_similarity_weight", self.similarity_weight),
            ("refine_regularisation_weight", self.regularisation_weight),
            ("refine_learning_rate", self.learning_rate),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise InvalidInputError(f"{where}: {key} must be a number >= 0, got {value!r}")
        if self.steps > 0 and not self.learning_rate > 0:
            raise InvalidInputError(f"{where}: refine_learning_rate must be > 0 when refine_steps > 0")
        if isinstance(self.levels, int) and not isinstance(self.levels, bool):
            object.__setattr__(self, "levels", (self.levels,))  # one level: ``--refine_levels 2``
        try:
            _check_levels(self.levels)
        except ValueError as error:
            raise InvalidInputError(f"{where}: refine_levels {error}") from None
        object.__setattr__(self, "levels", tuple(int(level) for level in self.levels))


def _check_levels(levels: Sequence[int]) -> None:
    """Raise ValueError unless ``levels`` is a non-empty strictly decreasing list of whole numbers >= 1."""
    if (
        isinstance(levels, (str, bytes))
        or not isinstance(levels, Sequence)
        or not levels
        or any(isinstance(level, bool) or not isinstance(level, int) or level < 1 for level in levels)
        or any(coarse <= fine for coarse, fine in zip(levels, levels[1:]))
    ):
        raise ValueError(f"must be a non-empty list of whole numbers >= 1, coarse to fine (decreasing), got {levels!r}")


def level_schedule(steps: int, levels: Sequence[int] = DEFAULT_LEVELS) -> list[list[int]]:
    """``[in-plane factor, steps]`` per level, coarse to fine: ``steps`` at the finest level, twice as many at each
    coarser one (``level_schedule(20, (4, 2))`` is ``[[4, 40], [2, 20]]``)."""
    _check_levels(levels)
    return [[int(level), int(steps) * 2 ** (len(levels) - 1 - index)] for index, level in enumerate(levels)]


def _per_pair_mean(values: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B,): the mean over everything but the batch axis."""
    return values.flatten(1).mean(dim=1)


def _slices(image: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W, D) -> (B * D, C, H, W): every slice its own 2-D image."""
    batch, channels, height, width, depth = image.shape
    return image.permute(0, 4, 1, 2, 3).reshape(batch * depth, channels, height, width)


class SliceLocalCorrelation:
    """Minus the squared local normalised cross-correlation of each slice with a fixed image, per pair.

    The value of MONAI's ``LocalNormalizedCrossCorrelationLoss(spatial_dims=2, kernel_type="rectangular")`` (its
    defaults ``smooth_nr=0``, ``smooth_dr=1e-5``) applied to the (B * D) slices and averaged per pair, in [-1, 0],
    computed about twice as fast for repeated calls against the same fixed image: the fixed image's window sums and
    variances are computed once, and the three moving-dependent maps are box-filtered in one depthwise convolution.

    Args:
        fixed: (B, 1, H, W, D) fixed images.
        kernel_size: in-plane window side (voxels, odd).

    Example:
        >>> fixed = torch.rand(2, 1, 16, 16, 3)
        >>> SliceLocalCorrelation(fixed, 5)(fixed).shape
        torch.Size([2])
    """

    variance_floor = 1e-5  # MONAI's smooth_dr

    def __init__(self, fixed: torch.Tensor, kernel_size: int) -> None:
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"lncc_kernel_size must be a positive odd number, got {kernel_size}.")
        self.kernel_size = int(kernel_size)
        self.window_volume = float(kernel_size * kernel_size)
        self.batch = fixed.shape[0]
        self.fixed = _slices(fixed)
        self.fixed_sum = self._box_sum(self.fixed)
        self.fixed_variance = self._variance(self._box_sum(self.fixed * self.fixed), self.fixed_sum)

    def _box_sum(self, maps: torch.Tensor) -> torch.Tensor:
        """Sum over each in-plane window (zeros outside), separably: (N, C, H, W) -> (N, C, H, W)."""
        channels, radius = maps.shape[1], self.kernel_size // 2
        ones = maps.new_ones(channels, 1, self.kernel_size, 1)
        summed = F.conv2d(maps, ones, padding=(radius, 0), groups=channels)
        return F.conv2d(summed, ones.transpose(2, 3), padding=(0, radius), groups=channels)

    def _variance(self, square_sum: torch.Tensor, value_sum: torch.Tensor) -> torch.Tensor:
        return torch.clamp_min(square_sum - value_sum * value_sum / self.window_volume, self.variance_floor)

    def __call__(self, warped: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W, D) warped moving images -> (B,) dissimilarity in [-1, 0] (lower is better)."""
        moving = _slices(warped)
        moving_sum, square_sum, cross_sum = self._box_sum(
            torch.cat([moving, moving * moving, moving * self.fixed], dim=1)
        ).split(1, dim=1)
        cross = cross_sum - moving_sum * self.fixed_sum / self.window_volume
        correlation = cross * cross / (self._variance(square_sum, moving_sum) * self.fixed_variance)
        return -_per_pair_mean(correlation.reshape(self.batch, -1))


def _dissimilarity_function(
    similarity: str, fixed: torch.Tensor, lncc_kernel_size: int, mi_bins: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function (B, 1, H, W, D) warped moving images -> (B,) per-pair dissimilarity to ``fixed``."""
    if similarity == "lncc":
        return SliceLocalCorrelation(fixed, lncc_kernel_size)
    if similarity == "mse":
        return lambda warped: _per_pair_mean((warped - fixed).pow(2))
    if similarity == "mi":
        mutual_information = GlobalMutualInformationLoss(num_bins=mi_bins, reduction="none")
        return lambda warped: mutual_information(warped, fixed).flatten()
    raise ValueError(f"unknown similarity {similarity!r}; choose one of {SIMILARITIES}")


def image_dissimilarity(
    moving: torch.Tensor,
    fixed: torch.Tensor,
    ddf: torch.Tensor | None = None,
    similarity: str = DEFAULT_SIMILARITY,
    lncc_kernel_size: int = DEFAULT_LNCC_KERNEL_SIZE,
    mi_bins: int = DEFAULT_MI_BINS,
) -> torch.Tensor:
    """Per-pair dissimilarity of ``fixed`` and the moving image warped by ``ddf`` (lower is better), no gradients.

    Args:
        moving, fixed: (B, 1, H, W, D) images in [0, 1] on the network grid.
        ddf: (B, 3, H, W, D) displacement in voxel units (``warped(x) = moving(x + ddf(x))``); None: the identity.
        similarity: one of :data:`SIMILARITIES` (see the module docstring).
        lncc_kernel_size: in-plane window (voxels, odd) of ``"lncc"``.
        mi_bins: histogram bins of ``"mi"``.

    Returns:
        (B,) float tensor on the inputs' device.
    """
    with torch.no_grad():
        warped = moving if ddf is None else warp_image(moving.to(ddf.dtype), ddf)
        return _dissimilarity_function(similarity, fixed.float(), lncc_kernel_size, mi_bins)(warped.float())


def _check_shapes(moving: torch.Tensor, fixed: torch.Tensor, initial_ddf: torch.Tensor) -> None:
    if moving.ndim != 5 or moving.shape[1] != 1 or moving.shape != fixed.shape:
        raise ValueError(
            f"moving {tuple(moving.shape)} and fixed {tuple(fixed.shape)} must both be (B, 1, H, W, D) images."
        )
    expected = (moving.shape[0], 3, *moving.shape[2:])
    if tuple(initial_ddf.shape) != expected:
        raise ValueError(f"initial_ddf {tuple(initial_ddf.shape)} must have shape {expected} (B, 3, H, W, D).")


def _coarse_grid(
    moving: torch.Tensor, fixed: torch.Tensor, ddf: torch.Tensor, in_plane_factor: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pair and the field on the grid ``in_plane_factor`` times coarser in-plane.

    Returns (moving, fixed, field, to_coarse): images blurred and resampled like the training loss's pyramid levels,
    the field resampled and expressed in coarse voxels, and the (1, 3, 1, 1, 1) factor that converts full-grid voxel
    units to coarse ones (``(coarse - 1) / (full - 1)`` per axis: the grids share their corner voxels).
    """
    full_shape = tuple(ddf.shape[2:])
    shape = (max(full_shape[0] // in_plane_factor, 2), max(full_shape[1] // in_plane_factor, 2), full_shape[2])
    to_coarse = ddf.new_tensor([(c - 1) / max(f - 1, 1) for c, f in zip(shape, full_shape)]).view(1, 3, 1, 1, 1)
    coarse_moving = in_plane_pyramid(moving, [full_shape, shape], _PYRAMID_BLUR_SIGMA)[-1]
    coarse_fixed = in_plane_pyramid(fixed, [full_shape, shape], _PYRAMID_BLUR_SIGMA)[-1]
    return coarse_moving, coarse_fixed, downsample_in_plane(ddf, shape) * to_coarse, to_coarse


def refine_displacement(
    moving: torch.Tensor,
    fixed: torch.Tensor,
    initial_ddf: torch.Tensor,
    steps: int = DEFAULT_REFINE_STEPS,
    similarity: str = DEFAULT_SIMILARITY,
    similarity_weight: float = DEFAULT_SIMILARITY_WEIGHT,
    regularisation_weight: float = DEFAULT_REGULARISATION_WEIGHT,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    levels: Sequence[int] = DEFAULT_LEVELS,
    lncc_kernel_size: int = DEFAULT_LNCC_KERNEL_SIZE,
    mi_bins: int = DEFAULT_MI_BINS,
    regularise: str = "residual",
) -> tuple[torch.Tensor, RefinementRecord]:
    """Refine a displacement field on one pair (or a batch of pairs) by Adam on residuals, coarse to fine (module
    docstring).

    Args:
        moving: (B, 1, H, W, D) moving images in [0, 1] on the network grid (the network's input).
        fixed: (B, 1, H, W, D) fixed images, same grid.
        initial_ddf: (B, 3, H, W, D) the network's field in voxel units of that grid, channel i along array axis i,
            ``warped(x) = moving(x + ddf(x))``. Not modified.
        steps: Adam steps of the finest level (each coarser level takes twice the steps of the one below it,
            :func:`level_schedule`); 0 returns ``initial_ddf`` itself.
        similarity: the dissimilarity ``S``, one of :data:`SIMILARITIES`.
        similarity_weight: lambda_sim.
        regularisation_weight: lambda_reg, weight of the diffusion regulariser.
        learning_rate: Adam's step size, in voxels of the optimisation grid (the first steps move each voxel by
            about this much).
        levels: in-plane factors of the residual grids, coarse to fine (1: the network grid itself).
        lncc_kernel_size: in-plane window of ``"lncc"`` (voxels of the optimisation grid, odd).
        mi_bins: histogram bins of ``"mi"``.
        regularise: ``"residual"`` (the default) penalises the roughness of each level's residual only; ``"field"``
            that of the whole field.

    Returns:
        ``(ddf, record)``: the refined (B, 3, H, W, D) field on ``initial_ddf``'s device and dtype, detached, and a
        :class:`RefinementRecord` whose similarities are measured on the network grid.

    Example:
        >>> moving, fixed = torch.rand(1, 1, 32, 32, 4), torch.rand(1, 1, 32, 32, 4)
        >>> ddf, record = refine_displacement(moving, fixed, torch.zeros(1, 3, 32, 32, 4), steps=2)
        >>> ddf.shape, record.steps, record.schedule
        (torch.Size([1, 3, 32, 32, 4]), 2, [[4, 4], [2, 2]])
    """
    _check_shapes(moving, fixed, initial_ddf)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}.")
    schedule = level_schedule(steps, levels)
    if regularise not in ("residual", "field"):
        raise ValueError(f"regularise must be 'residual' or 'field', got {regularise!r}.")
    start = time.perf_counter()
    dtype = initial_ddf.dtype if initial_ddf.dtype.is_floating_point else torch.float32
    # inference tensors (made under inference_mode) cannot enter autograd: work on ordinary clones
    with torch.inference_mode(False), torch.enable_grad():
        moving_image = moving.detach().clone().to(dtype)
        fixed_image = fixed.detach().clone().to(dtype)
        refined = initial_ddf.detach().clone().to(dtype)
        with torch.no_grad():
            dissimilarity = _dissimilarity_function(similarity, fixed_image, lncc_kernel_size, mi_bins)
            before = dissimilarity(warp_image(moving_image, refined))
        if steps == 0:
            return initial_ddf, _record(0, similarity, before, before, start, initial_ddf, [])
        for in_plane_factor, level_steps in schedule:
            refined = _refine_level(
                moving_image,
                fixed_image,
                refined,
                in_plane_factor,
                level_steps,
                lambda coarse_fixed: _dissimilarity_function(similarity, coarse_fixed, lncc_kernel_size, mi_bins),
                similarity_weight,
                regularisation_weight,
                learning_rate,
                regularise,
            )
        with torch.no_grad():
            after = dissimilarity(warp_image(moving_image, refined))
    refined = refined.detach().to(initial_ddf.dtype)
    return refined, _record(steps, similarity, before, after, start, refined, schedule)


def _refine_level(
    moving: torch.Tensor,
    fixed: torch.Tensor,
    base: torch.Tensor,
    in_plane_factor: int,
    steps: int,
    dissimilarity_to: Callable[[torch.Tensor], Callable[[torch.Tensor], torch.Tensor]],
    similarity_weight: float,
    regularisation_weight: float,
    learning_rate: float,
    regularise: str,
) -> torch.Tensor:
    """One level: Adam on a fresh residual ``in_plane_factor`` times coarser in-plane; returns the full-grid field
    ``base`` (B, 3, H, W, D) plus the residual resampled back, detached. ``dissimilarity_to(coarse_fixed)`` gives
    the level's per-pair dissimilarity function."""
    with torch.no_grad():
        coarse_moving, coarse_fixed, coarse_base, to_coarse = _coarse_grid(moving, fixed, base, in_plane_factor)
        coarse_dissimilarity = dissimilarity_to(coarse_fixed)
    residual = torch.zeros_like(coarse_base, requires_grad=True)
    optimiser = torch.optim.Adam([residual], lr=learning_rate)
    batch = base.shape[0]
    for _ in range(steps):
        optimiser.zero_grad(set_to_none=True)
        coarse_field = coarse_base + residual
        per_pair = coarse_dissimilarity(warp_image(coarse_moving, coarse_field))
        # diffusion_regularisation averages over the batch; times B it is the sum of the per-pair terms
        roughness = diffusion_regularisation(residual if regularise == "residual" else coarse_field) * batch
        (similarity_weight * per_pair.sum() + regularisation_weight * roughness).backward()
        optimiser.step()
    with torch.no_grad():
        return base + downsample_in_plane(residual, tuple(base.shape[2:])) / to_coarse


def _record(
    steps: int,
    similarity: str,
    before: torch.Tensor,
    after: torch.Tensor,
    start: float,
    like: torch.Tensor,
    schedule: list[list[int]],
) -> RefinementRecord:
    if like.device.type == "cuda":
        torch.cuda.synchronize(like.device)
    return RefinementRecord(
        steps=steps,
        similarity=similarity,
        similarity_before=[float(v) for v in before],
        similarity_after=[float(v) for v in after],
        seconds=time.perf_counter() - start,
        schedule=schedule,
    )
