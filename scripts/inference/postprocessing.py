"""Postprocessing of one registered pair: network-grid products, their inverse to the fixed space, metrics.

Runs per pair on the engine's merged dict (the sample of :mod:`scripts.inference.preprocessing` + ``"pred"`` from
:class:`~scripts.inference.network_io.RegistrationInferer`), computes in memory from what the sample carries (no file
is read again), writes nothing. First, on the network's own answer: the out-of-distribution check
(:class:`OutOfDistributionCheckd`: ``"out_of_distribution"`` statistics and thresholds, ``"warnings"`` sentences, one
WARNING log line when there are any), then the instance optimisation (:class:`RefineDisplacementd`, ``"refinement"``),
which replaces the network's field by the refined one BEFORE anything below uses it. Keys added:

Network grid (128 x 128 x 16 at 1.8 x 1.8 x 10 mm, RAS, affine = ``sample["fixed"].affine``):
    ``"ddf"`` (3, H, W, D) voxels; ``"warped"`` (1, H, W, D) in [0, 1]; ``"fixed_segmentation"`` (1, H, W, D) labels
    0..3 (argmax of the memory's level-0 logits; absent for networks without memory); ``"jacobian"`` (1, H, W, D),
    det(I + grad ddf) by central differences.
Fixed image's original space (shape and affine of the fixed file):
    ``"ddf_fixed_space"`` (3, X, Y, Z) mm, world RAS, fixed -> moving (see :mod:`scripts.geometry.displacement_nifti`);
    ``"jacobian_fixed_space"`` (1, X, Y, Z) and ``"fixed_segmentation_fixed_space"`` (1, X, Y, Z): the network-grid
    maps inverted (linear resp. nearest neighbour) with ``Invertd``;
    ``"fixed_affine"`` (4, 4) float64; ``"warped_moving_fixed_space"`` (X, Y, Z) float32 in the input intensity
    units;
    ``"warped_moving_label_fixed_space"`` (X, Y, Z) uint8, when the record has a moving label.
Moving image's original space (:class:`InverseDisplacementd`):
    ``"ddf_moving_space"`` (3, X_m, Y_m, Z_m) mm, world RAS, moving -> fixed (the inverse field);
    ``"inverse_consistency"``: how well the inverse undoes the field (median and 95th percentile, mm).
Metrics: ``"metrics"``, a dict of floats (see :class:`RegistrationMetricsd`).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd, MapTransform, Transform
from monai.utils import CommonKeys

from scripts.data.transforms import source_name
from scripts.geometry import voxel_to_world_displacement
from scripts.inference.batching import PAIRS_KEY, RESULTS_KEY
from scripts.inference.inverse_field import inverse_consistency_error, invert_displacement
from scripts.inference.network_io import plain_tensor
from scripts.inference.ood_warning import (
    SUGGESTED_REFINE_STEPS,
    WARNING_SIMILARITY,
    WARNING_THRESHOLDS,
    WarningThresholds,
    ood_warnings,
    warning_statistics,
)
from scripts.inference.preprocessing import InferencePreprocessing
from scripts.inference.refinement import RefinementSettings, refine_displacement
from scripts.inference.resampling import WorldPointSampler
from scripts.label_maps import label_map_from_scores
from scripts.labels import NETWORK_PIXDIM_MM
from scripts.metrics import (
    crop_border,
    dice_per_structure,
    folding_percent,
    jacobian_determinant,
    registration_metrics,
    sdlogj_plus3,
    segmentation_dice,
    std_log_jacobian_positive,
)
from scripts.warping import warp_image

__all__ = [
    "FIXED_SPACE_KEYS",
    "InverseDisplacementd",
    "InvertToFixedSpaced",
    "OutOfDistributionCheckd",
    "RefineDisplacementd",
    "RegistrationMetricsd",
    "RegistrationPostprocessing",
    "SplitFieldAndJacobiand",
    "UnpackRegistrationOutputd",
    "WarpOriginalMovingd",
    "WorldDisplacementd",
    "registration_postprocessing",
]

# network-grid key -> its copy inverted to the fixed image's original grid, and whether to use nearest neighbour
FIXED_SPACE_KEYS: dict[str, tuple[str, bool]] = {
    "ddf_and_jacobian": ("ddf_and_jacobian_fixed_space", False),
    "fixed_segmentation": ("fixed_segmentation_fixed_space", True),
}
"""Network-grid results -> their copy inverted to the fixed image's original grid, and whether nearest neighbour
is used. The field (3 channels) and J - 1 travel as ONE 4-channel image: one inverse resampling instead of two,
channel by channel the same."""


logger = logging.getLogger(__name__)


def _to_python(value: torch.Tensor) -> float:
    return float(value.reshape(-1)[0])


NETWORK_JACOBIAN_KEY = "network_field_jacobian"
"""Sample key of ``(field, J)``: the inferer's ``pred["ddf"]`` tensor and its uncropped Jacobian determinant
``jacobian_determinant(field)`` (B, H, W, D), computed once by :class:`OutOfDistributionCheckd` and reused by
:class:`UnpackRegistrationOutputd` (and through ``"jacobian"`` by :class:`RegistrationMetricsd`) while the field is
that very tensor, i.e. unless refinement replaced it."""


def _field_jacobian(cached: tuple[torch.Tensor, torch.Tensor] | None, field: torch.Tensor) -> torch.Tensor:
    """``jacobian_determinant(field)`` (B, H, W, D), no border crop: the cached one if it belongs to ``field``."""
    if cached is not None and cached[0] is field:
        return cached[1]
    return jacobian_determinant(field.float())


def _network_inputs(data: Mapping[Hashable, Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The pair's network-grid images as the network saw them: (1, 1, H, W, D) plain tensors on ``device``."""
    return tuple(plain_tensor(data[key])[None].to(device=device, dtype=torch.float32) for key in ("moving", "fixed"))


class OutOfDistributionCheckd(Transform):
    """Judge the NETWORK's answer (before any refinement) by the rules of :mod:`scripts.inference.ood_warning`.

    Adds ``"out_of_distribution"`` (the pair's statistics and the thresholds they were held against) and
    ``"warnings"`` (sentences, empty when nothing looks wrong), and logs ONE WARNING line naming the pair and every
    reason when there is one. The image-similarity improvement (in-plane LNCC: ``similarity_improvement``,
    ``similarity_identity``, ``similarity_network``) is computed only when ``thresholds`` judge it
    (``min_similarity_improvement`` not None); otherwise those statistics are absent and ``"similarity"`` is None.
    The calibrated rule does not judge it; the MSE improvement is always there.

    Args:
        thresholds: the limits (default: the calibrated :data:`~scripts.inference.ood_warning.WARNING_THRESHOLDS`).
        refine_steps: the run's ``refine_steps``: a warning suggests refining when it is 0, and says the field was
            refined otherwise.
        pred_key: key of the inferer's output dict (batch of one pair).
    """

    def __init__(
        self, thresholds: WarningThresholds = WARNING_THRESHOLDS, refine_steps: int = 0, pred_key: str = CommonKeys.PRED
    ) -> None:
        self.thresholds, self.refine_steps, self.pred_key = thresholds, int(refine_steps), pred_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        pred = d[self.pred_key]
        ddf = pred["ddf"].float()
        jacobian = _field_jacobian(None, ddf)
        d[NETWORK_JACOBIAN_KEY] = (pred["ddf"], jacobian)
        moving, fixed = _network_inputs(d, ddf.device)
        logits = pred.get("fixed_logits")
        # the image-similarity improvement only when a rule judges it: its LNCC costs more than the rest together
        similarity = WARNING_SIMILARITY if self.thresholds.min_similarity_improvement is not None else None
        statistics = warning_statistics(moving, fixed, ddf, logits, similarity=similarity, jacobian=jacobian)[0]
        advice = (
            f"the field was refined with {self.refine_steps} steps: check the result" if self.refine_steps > 0 else None
        )
        warnings = ood_warnings(statistics, self.thresholds, SUGGESTED_REFINE_STEPS, advice=advice)
        d["out_of_distribution"] = {
            "statistics": statistics,
            "similarity": similarity,
            "thresholds": asdict(self.thresholds),
            "judged": "the network's own field, before any refinement",
        }
        d["warnings"] = warnings
        if warnings:
            logger.warning(f"{d['pair']['pair_name']}: possibly out of distribution: " + "; ".join(warnings))
        return d


class RefineDisplacementd(Transform):
    """Instance optimisation (:func:`~scripts.inference.refinement.refine_displacement`) of the network's field on
    the network grid, replacing ``pred["ddf"]`` and ``pred["warped"]`` so that every later step (Jacobian, inversion
    to the fixed grid, warped images, inverse field, metrics) uses the refined field; the memory's segmentation is
    left as the network made it. Adds ``"refinement"``: steps, similarity, its value before and after (lower is
    better), seconds. Runs on the device of the network's output.

    Args:
        settings: the run's ``refine_*`` values.
        pred_key: key of the inferer's output dict (batch of one pair).
    """

    def __init__(self, settings: RefinementSettings, pred_key: str = CommonKeys.PRED) -> None:
        self.settings, self.pred_key = settings, pred_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        return self.refine_pairs([data])[0]

    def refine_pairs(self, pairs: Sequence[Mapping[Hashable, Any]]) -> list[dict[Hashable, Any]]:
        """Refine several pairs' fields as ONE batch (each pair's loss is its own, see
        :func:`~scripts.inference.refinement.refine_displacement`); returns the pairs' dicts in order, each with
        its own ``"refinement"`` record (``seconds``: the batch's)."""
        dicts = [dict(data) for data in pairs]
        settings = self.settings
        if settings.steps == 0:
            for d in dicts:
                d["refinement"] = {"steps": 0, "note": "refine_steps is 0: the network's field is used as it is"}
            return dicts
        predictions = [dict(d[self.pred_key]) for d in dicts]
        ddf = torch.cat([pred["ddf"].float() for pred in predictions])
        inputs = [_network_inputs(d, ddf.device) for d in dicts]
        moving, fixed = (torch.cat([pair[index] for pair in inputs]) for index in (0, 1))
        refined, record = refine_displacement(
            moving,
            fixed,
            ddf,
            steps=settings.steps,
            similarity=settings.similarity,
            similarity_weight=settings.similarity_weight,
            regularisation_weight=settings.regularisation_weight,
            learning_rate=settings.learning_rate,
            levels=settings.levels,
        )
        warped = warp_image(moving, refined)
        for index, (d, pred) in enumerate(zip(dicts, predictions)):
            pred["ddf"], pred["warped"] = refined[index : index + 1], warped[index : index + 1]
            d[self.pred_key] = pred
            d["refinement"] = {
                "steps": record.steps,
                "similarity": record.similarity,
                "dissimilarity_before": record.similarity_before[index],
                "dissimilarity_after": record.similarity_after[index],
                "seconds": round(record.seconds, 4),
                "pairs_refined_together": len(dicts),
                "similarity_weight": settings.similarity_weight,
                "regularisation_weight": settings.regularisation_weight,
                "learning_rate": settings.learning_rate,
                "schedule": record.schedule,
            }
        return dicts


class UnpackRegistrationOutputd(Transform):
    """Split the inferer's ``"pred"`` dict into network-grid keys; add the segmentation and the Jacobian map, and
    the copies of them (``FIXED_SPACE_KEYS``) that ``Invertd`` then maps to the fixed image's original space.

    The inferer's tensors carry a batch axis of one pair; the keys added have none.

    Args:
        pred_key: key of the inferer's output dict.
    """

    def __init__(self, pred_key: str = CommonKeys.PRED) -> None:
        self.pred_key = pred_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        batch = d.pop(self.pred_key)
        jacobian = _field_jacobian(d.pop(NETWORK_JACOBIAN_KEY, None), batch["ddf"])  # (1, H, W, D)
        pred = {key: value[0] for key, value in batch.items()}  # the one pair of the batch
        d.pop(CommonKeys.IMAGE, None)  # the moving image again: already under "moving"
        d.pop(CommonKeys.LABEL, None)
        # MetaTensors: Invertd takes the fixed image's transform trace only for MetaTensor keys
        ddf = pred["ddf"].float()
        d["ddf"], d["warped"], d["jacobian"] = ddf, pred["warped"].float(), jacobian
        # copies to invert, as MetaTensors (Invertd takes the fixed image's trace only for those); J - 1 so that
        # the zero padding outside the network's field of view means J = 1 there, as d = 0 does
        d["ddf_and_jacobian_fixed_space"] = MetaTensor(torch.cat([ddf, jacobian - 1.0]))
        if "fixed_logits" in pred:
            # float so that Invertd's nearest resampling keeps exact integers
            segmentation = label_map_from_scores(pred["fixed_logits"], dim=0, keepdim=True).float()
            d["fixed_segmentation"] = segmentation
            d["fixed_segmentation_fixed_space"] = MetaTensor(segmentation.clone())
            d["fixed_logits"] = pred["fixed_logits"]
        return d


class InvertToFixedSpaced(MapTransform):
    """Map network-grid results back to the fixed image's original grid with ``Invertd``.

    ``Invertd`` undoes the transforms recorded on the preprocessed ``"fixed"`` image, and must be given the very
    chain that recorded them: the preprocessing's chain with labels or the one without (see
    :meth:`InferencePreprocessing.chain_for`).

    Args:
        keys: network-grid keys to invert (channel-first MetaTensors).
        preprocessing: the dataset's preprocessing (the same object).
        nearest: per key, nearest-neighbour interpolation (label maps) instead of (tri)linear.
    """

    def __init__(self, keys: Sequence[str], preprocessing: InferencePreprocessing, nearest: Sequence[bool]) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.preprocessing = preprocessing
        self.inverters = {
            id(chain): Invertd(
                list(keys), transform=chain, orig_keys="fixed", nearest_interp=list(nearest), allow_missing_keys=True
            )
            for chain in (preprocessing.images_only, preprocessing.with_labels)
        }

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        return self.inverters[id(self.preprocessing.chain_for(data))](data)


class SplitFieldAndJacobiand(Transform):
    """Split the inverted 4-channel image into ``"ddf_fixed_space"`` (3, X, Y, Z), still in network voxels, and
    ``"jacobian_fixed_space"`` (1, X, Y, Z) = J (the inverted J - 1, plus 1)."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        both = plain_tensor(d.pop("ddf_and_jacobian_fixed_space"))
        d["ddf_fixed_space"], d["jacobian_fixed_space"] = both[:3], both[3:] + 1.0
        return d


class WorldDisplacementd(MapTransform):
    """Express an inverted network displacement in world millimetres (RAS).

    ``Invertd`` resamples the field onto the fixed image's grid but leaves its components in voxels of the network
    grid; multiplying by the network grid's affine (linear part) gives millimetres along world axes.

    Args:
        keys: displacement keys, (3, X, Y, Z) in network voxels.
        grid_key: the preprocessed image whose affine is the network grid's (``"fixed"``).
    """

    def __init__(self, keys: str | Sequence[str] = "ddf_fixed_space", grid_key: str = "fixed") -> None:
        super().__init__(keys)
        self.grid_key = grid_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        network_affine = d[self.grid_key].affine
        for key in self.key_iterator(d):
            d[key] = voxel_to_world_displacement(plain_tensor(d[key]), network_affine)
        return d


class WarpOriginalMovingd(Transform):
    """Warp the ORIGINAL moving image (and label) into the fixed image's original space through the world field.

    ``out(p) = moving(p + d(p))`` for every voxel centre ``p`` of the fixed file: trilinear for the image, nearest
    neighbour for the label, 0 outside the moving image (see :mod:`scripts.inference.resampling`). Also resamples
    the moving image without deformation, for before/after pictures. The originals are the images the
    preprocessing read (``"<key>_original"``), not the files again.

    Args:
        displacement_key: (3, X, Y, Z) world mm displacement on the fixed grid.
    """

    def __init__(self, displacement_key: str = "ddf_fixed_space") -> None:
        self.displacement_key = displacement_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        fixed, moving = d["fixed_original"], d["moving_original"]
        displacement = plain_tensor(d[self.displacement_key])
        if tuple(fixed.shape) != tuple(displacement.shape[1:]):
            raise RuntimeError(
                f"{source_name(fixed, 'fixed')}: inverted field shape {tuple(displacement.shape[1:])} differs from "
                f"the fixed image {tuple(fixed.shape)}"
            )
        grid_affine = fixed.affine
        d["fixed_affine"] = grid_affine.double().cpu()
        grid_shape = tuple(displacement.shape[1:])
        warp = WorldPointSampler.on_grid(grid_shape, grid_affine, moving.affine, tuple(moving.shape), displacement)
        d["warped_moving_fixed_space"] = warp(plain_tensor(moving))
        if "moving_label_original" in d:
            label = d["moving_label_original"]
            same_grid = tuple(label.shape) == tuple(moving.shape) and torch.equal(label.affine, moving.affine)
            label_warp = (
                warp
                if same_grid
                else WorldPointSampler.on_grid(grid_shape, grid_affine, label.affine, tuple(label.shape), displacement)
            )
            d["warped_moving_label_fixed_space"] = torch.round(label_warp(plain_tensor(label), "nearest")).to(
                torch.uint8
            )
        return d


class InverseDisplacementd(Transform):
    """The moving -> fixed field on the MOVING image's original grid, and how well it undoes the forward field.

    The network-grid field ``u`` (``"ddf"``, after any refinement) is inverted there by fixed-point iteration
    (:func:`~scripts.inference.inverse_field.invert_displacement`): ``v(y) = -u(y + v(y))``, so the moving point
    ``y`` maps to ``y + v(y)`` in the fixed image. ``v`` is expressed in world mm (RAS) and sampled (trilinear) at
    every voxel centre of the original moving image; ``v = 0`` beyond half a voxel outside the network's field of view
    (the forward file's rule). The same convention as ``displacement_fixed_to_moving_mm.nii.gz`` with the roles
    swapped: resampling the warped image (fixed grid) through it with ITK gives back the moving image.

    Adds ``"ddf_moving_space"`` (3, X_m, Y_m, Z_m) float32 mm and ``"inverse_consistency"``: ``|u(x) + v(x +
    u(x))|`` in mm on the network grid, its median and 95th percentile over the voxels whose image lies inside the
    grid (``overall``) and over those inside the heart (``heart``: the fixed label map > 0 when given, else the
    memory's segmentation > 0; absent for networks without either), plus the inversion's iterations.

    Args:
        max_iterations: fixed-point iterations at most. 4 by default: where the field tears or folds (about 1 % of
            the voxels) the iteration oscillates and never meets its tolerance, while everywhere else it has
            converged after two steps (6 phantom test pairs, 0.6.0 weights, mean over pairs: heart median error
            0.192 mm after 4 iterations, 0.199 after 10, 0.198 after 30; overall 95th percentile 1.51, 1.56, 1.55
            mm); an even count, because the oscillation makes odd counts' 95th percentiles worse (2.18 mm after 3).
    """

    def __init__(self, max_iterations: int = 4) -> None:
        self.max_iterations = max_iterations

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        ddf = plain_tensor(d["ddf"]).float()[None]
        network_affine = d["fixed"].affine
        inverse, record = invert_displacement(ddf, max_iterations=self.max_iterations)
        if "fixed_label" in d:
            heart, heart_from = plain_tensor(d["fixed_label"]) > 0, "fixed label map"
        elif "fixed_segmentation" in d:
            heart, heart_from = plain_tensor(d["fixed_segmentation"]) > 0, "memory's segmentation of the fixed image"
        else:
            heart, heart_from = None, None
        errors = inverse_consistency_error(
            ddf, inverse, affine=network_affine, mask=None if heart is None else heart[None].to(ddf.device)
        )
        consistency: dict[str, Any] = {
            "overall": {"median_mm": float(errors["median_mm"][0]), "p95_mm": float(errors["p95_mm"][0])},
        }
        if heart is not None:
            consistency["heart"] = {
                "median_mm": float(errors["mask_median_mm"][0]),
                "p95_mm": float(errors["mask_p95_mm"][0]),
                "region": heart_from,
            }
        consistency["inversion"] = {"iterations": record.iterations, "converged": record.converged}
        d["inverse_consistency"] = consistency
        world = voxel_to_world_displacement(inverse[0], network_affine).to(torch.float32)
        moving = d["moving_original"]
        sample = WorldPointSampler.on_grid(
            tuple(moving.shape), moving.affine, network_affine, tuple(world.shape[1:]), device=world.device
        )
        d["ddf_moving_space"] = sample(world)
        return d


class RegistrationMetricsd(Transform):
    """Metrics of the pair on the network grid, as evaluation computes them, under ``"metrics"`` (floats).

    Always: ``folding_percent`` (% of voxels with J <= 0), ``sdlogj_plus3`` (std log(J + 3), the paper's SDlogJ),
    ``std_log_j_positive`` (std log J over J > 0), all with a 2-voxel border crop of the sample's ``"jacobian"`` (J of
    ``"ddf"``, computed when absent); ``max_displacement_mm``.
    When the sample has both label maps (preprocessed exactly as in evaluation): ``dice_rv/lvm/lvbp/mean`` and
    ``hd95_*`` (mm) after registration (labels warped with nearest neighbour), ``initial_dice_*`` before it, and
    ``segmentation_dice_*`` of the memory's fixed segmentation.

    Args:
        pixdim: network voxel size in mm (HD95 spacing), as the preprocessing.
        border: Jacobian border crop.
    """

    def __init__(self, pixdim: Sequence[float] = NETWORK_PIXDIM_MM, border: int = 2) -> None:
        self.pixdim = tuple(float(p) for p in pixdim)
        self.border = border

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        ddf = d["ddf"][None]
        # the uncropped J of "ddf" that UnpackRegistrationOutputd made (cropping it equals computing it cropped)
        uncropped = d["jacobian"] if "jacobian" in d else jacobian_determinant(ddf)
        jac = crop_border(uncropped, self.border)
        metrics = {
            "folding_percent": _to_python(folding_percent(jac)),
            "sdlogj_plus3": _to_python(sdlogj_plus3(jac)),
            "std_log_j_positive": _to_python(std_log_jacobian_positive(jac)),
        }
        if "ddf_fixed_space" in d:
            metrics["max_displacement_mm"] = float(torch.linalg.vector_norm(d["ddf_fixed_space"], dim=0).max())
        if "moving_label" in d and "fixed_label" in d:
            moving_label = plain_tensor(d["moving_label"])[None].to(ddf.device)
            fixed_label = plain_tensor(d["fixed_label"])[None].to(ddf.device)
            scores = registration_metrics(
                ddf, moving_label, fixed_label, spacing=self.pixdim, border=self.border, jacobian=uncropped
            )
            metrics.update({k: _to_python(v) for k, v in scores.items() if k.startswith(("dice", "hd95"))})
            initial = dice_per_structure(moving_label, fixed_label, (1, 2, 3))[0]
            for name, value in zip(("rv", "lvm", "lvbp"), initial):
                metrics[f"initial_dice_{name}"] = float(value)
            metrics["initial_dice_mean"] = float(torch.nanmean(initial.double()))
            if "fixed_logits" in d:
                seg = segmentation_dice(d["fixed_logits"][None], fixed_label)
                metrics.update({k.replace("seg_dice", "segmentation_dice"): _to_python(v) for k, v in seg.items()})
        d["metrics"] = metrics
        return d


class RegistrationPostprocessing(Compose):
    """The inference chain (a ``Compose``) that also takes a batch of several pairs (:mod:`scripts.inference.batching`).

    One pair's merged dict goes through the chain as it is. A batch's, ``{"pairs": [sample, ...], "pred": {...}}``
    with the inferer's (B, C, H, W, D) outputs, is split into one dict per pair (its sample and its slice of the
    outputs); each pair goes through the chain on its own, except the instance optimisation
    (:class:`RefineDisplacementd`), which refines the batch's fields together. Returns ``{"pairs": [...], "results":
    [postprocessed dict, ...], "pred": None}`` (the engine keeps ``"results"`` as the iteration's output).

    Args:
        transforms: the chain, as for ``Compose``.
        pred_key: key of the inferer's output dict.
    """

    def __init__(self, transforms: Sequence[Any], pred_key: str = CommonKeys.PRED) -> None:
        super().__init__(list(transforms))
        self.pred_key = pred_key

    def __call__(self, input_: Any, start: int = 0, end: int | None = None, threading: bool = False, lazy=None):
        if not (isinstance(input_, Mapping) and PAIRS_KEY in input_):
            return super().__call__(input_, start=start, end=end, threading=threading, lazy=lazy)
        prediction = input_[self.pred_key]
        dicts = [
            {**sample, self.pred_key: {key: value[index : index + 1] for key, value in prediction.items()}}
            for index, sample in enumerate(input_[PAIRS_KEY])
        ]
        refiners = [
            index for index, transform in enumerate(self.transforms) if isinstance(transform, RefineDisplacementd)
        ]
        split = refiners[0] if refiners else len(self.transforms)
        chain = super().__call__  # each pair on its own through the steps before and after the refinement
        dicts = [chain(d, end=split) for d in dicts]
        if refiners:
            dicts = self.transforms[split].refine_pairs(dicts)
            dicts = [chain(d, start=split + 1) for d in dicts]
        return {PAIRS_KEY: input_[PAIRS_KEY], RESULTS_KEY: dicts, self.pred_key: None}


def registration_postprocessing(
    preprocessing: InferencePreprocessing,
    pixdim: Sequence[float] = NETWORK_PIXDIM_MM,
    refinement: RefinementSettings | None = None,
    warning_thresholds: WarningThresholds = WARNING_THRESHOLDS,
) -> RegistrationPostprocessing:
    """The postprocessing chain of the inference config (see the module docstring for the keys it adds), for one
    pair or a batch of pairs (:class:`RegistrationPostprocessing`).

    Args:
        preprocessing: the dataset's preprocessing (the same object: ``Invertd`` matches transforms by id).
        pixdim: network voxel size in mm.
        refinement: the instance optimisation asked for (None: none).
        warning_thresholds: the out-of-distribution warning's limits.
    """
    refinement = RefinementSettings() if refinement is None else refinement
    fixed_space_keys = [name for name, _ in FIXED_SPACE_KEYS.values()]
    nearest = [flag for _, flag in FIXED_SPACE_KEYS.values()]
    return RegistrationPostprocessing(
        [
            OutOfDistributionCheckd(warning_thresholds, refinement.steps),
            RefineDisplacementd(refinement),
            UnpackRegistrationOutputd(),
            InvertToFixedSpaced(fixed_space_keys, preprocessing, nearest),
            SplitFieldAndJacobiand(),
            WorldDisplacementd("ddf_fixed_space", grid_key="fixed"),
            WarpOriginalMovingd("ddf_fixed_space"),
            InverseDisplacementd(),
            RegistrationMetricsd(pixdim),
        ]
    )
