"""MemWarp training loss: multi-level image similarity, warped-mask Dice, anatomical-region Dice and a
diffusion regulariser on the pre-integration residuals.

Follows the authors' training code (tinymilky/Mem-Warp, ``train_cardiacreg_memwarp.py``) where it is
more specific than the paper:

- the terms are applied at levels 0, 1, 2 (finest first) with weights 1, 1/2, 1/4;
- coarse images are made recursively, level l = trilinear(blur(level l-1)) with a per-slice 2D
  Gaussian blur (sigma 1) and ``align_corners=True``; coarse one-hot masks likewise without blur;
- the regulariser is the mean squared forward difference of the residual field (``Grad3d`` with
  ``penalty="l2"``: mean over voxels and channels per axis, averaged over the three axes), in voxel
  units of each level. This is the diffusion form, not MONAI's ``BendingEnergyLoss``.

One deliberate difference: the Dice terms smooth numerator and denominator (MONAI's ``DiceLoss``
style, 1e-5 each) where the authors smooth only the denominator; a class absent from both masks
then scores Dice 1 (loss 0) instead of adding a constant 1/num_classes to the loss. Gradients are
unchanged for present classes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from scripts.labels import IMAGE_KEYS, LABEL_KEYS, NUM_CLASSES
from scripts.warping import in_plane_pyramid, one_hot_labels, warp_image

__all__ = ["MemWarpLoss", "soft_dice_loss", "diffusion_regularisation"]


def soft_dice_loss(prediction: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """Soft Dice loss, 1 - mean Dice over classes (background included) and batch.

    Args:
        prediction: (B, C, H, W, D) probabilities or warped one-hot maps.
        target: (B, C, H, W, D) one-hot (or soft, for coarse levels) target.
        smooth: added to numerator and denominator.

    Returns:
        scalar tensor.
    """
    reduce_axes = tuple(range(2, prediction.ndim))
    intersection = (prediction * target).sum(dim=reduce_axes)
    denominator = prediction.sum(dim=reduce_axes) + target.sum(dim=reduce_axes)
    dice = (2.0 * intersection + smooth) / (denominator + smooth)
    return 1.0 - dice.mean()


def diffusion_regularisation(field: torch.Tensor) -> torch.Tensor:
    """Mean squared forward-difference gradient of a displacement field (gradient-L2 / diffusion form).

    ``sum_axis mean((u[x + e_axis] - u[x])^2) / n_axes`` over the spatial axes with more than one
    voxel, the mean taken over batch, channels and voxels; e.g. u_0 = a * x_0 gives a^2 / 9 in 3D.

    Args:
        field: (B, 3, H, W, D) displacement in voxel units.

    Returns:
        scalar tensor.
    """
    terms = [torch.diff(field, dim=axis).pow(2).mean() for axis in range(2, field.ndim) if field.shape[axis] > 1]
    if not terms:
        return field.sum() * 0.0
    return torch.stack(terms).sum() / (field.ndim - 2)


class MemWarpLoss(torch.nn.Module):
    """MemWarp loss over the finest levels of the network's pyramid.

    ``L = sum_l w_l [ lambda_sim MSE(m_l o phi_l, f_l) + lambda_mask Dice(s^m_l o phi_l, s^f_l)
    + lambda_region Dice(softmax(logits_l), s^f_l) + lambda_reg Grad(r_l) ]``, l = 0, 1, 2, w = (1, 1/2, 1/4),
    with phi_l = ``level_ddfs[l]``, r_l = ``residuals[l]`` and s one-hot masks (4 channels, background
    included). The warped-mask Dice uses BILINEAR warping of the moving one-hot so it is
    differentiable with respect to the field.

    Args:
        similarity_weight: lambda_sim, weight of the image MSE.
        mask_dice_weight: lambda_mask, weight of the warped-mask Dice (0 for unsupervised variants).
        region_dice_weight: lambda_region, weight of the anatomical (memory) Dice (0 without memory).
        regularisation_weight: lambda_reg, weight of the diffusion regulariser of the residuals.
        level_weights: w_l, finest first; truncated to the number of levels the output has.
        num_classes: number of label classes, background included.
        blur_sigma: in-plane Gaussian sigma (voxels) before each image downsampling.

    Example::

        loss = MemWarpLoss()
        value = loss(network(moving, fixed), {"moving": moving, "fixed": fixed,
                                              "moving_label": moving_label, "fixed_label": fixed_label})
        value.backward()
        loss.last_terms  # keys "similarity", "mask_dice", "region_dice", "regularisation", "total"

    ``last_terms`` holds the weighted contribution of each term to the last total (detached floats;
    they add up to ``"total"``); a skipped term is 0.0.
    """

    def __init__(
        self,
        similarity_weight: float = 1.0,
        mask_dice_weight: float = 1.0,
        region_dice_weight: float = 1.0,
        regularisation_weight: float = 0.01,
        level_weights: Sequence[float] = (1.0, 0.5, 0.25),
        num_classes: int = NUM_CLASSES,
        blur_sigma: float = 1.0,
    ) -> None:
        super().__init__()
        if len(level_weights) == 0:
            raise ValueError("level_weights must name at least one level.")
        self.similarity_weight = float(similarity_weight)
        self.mask_dice_weight = float(mask_dice_weight)
        self.region_dice_weight = float(region_dice_weight)
        self.regularisation_weight = float(regularisation_weight)
        self.level_weights = tuple(float(w) for w in level_weights)
        self.num_classes = int(num_classes)
        self.blur_sigma = float(blur_sigma)
        self.last_terms: dict[str, float] = {}

    def forward(self, output: Mapping[str, object], targets: Mapping[str, torch.Tensor | None]) -> torch.Tensor:
        """Compute the scalar loss.

        Args:
            output: the network's dict: "level_ddfs" (list of (B, 3, H/2^l, W/2^l, D), finest first),
                "residuals" (same shapes), "anatomical_logits" (list of (B, num_classes, H/2^l, W/2^l, D),
                already divided by the temperature; may be empty or absent).
            targets: "moving", "fixed" (B, 1, H, W, D) images; optional "moving_label", "fixed_label"
                (B, 1, H, W, D) integer-valued labels (absent or None when unsupervised).

        Returns:
            scalar tensor.
        """
        level_ddfs: Sequence[torch.Tensor] = output["level_ddfs"]  # type: ignore[assignment]
        residuals: Sequence[torch.Tensor] = output["residuals"]  # type: ignore[assignment]
        logits: Sequence[torch.Tensor] = output.get("anatomical_logits") or []  # type: ignore[assignment]
        moving, fixed = (targets[key] for key in IMAGE_KEYS)
        moving_label, fixed_label = (targets.get(key) for key in LABEL_KEYS)

        num_levels = min(len(self.level_weights), len(level_ddfs))
        if num_levels == 0:
            raise ValueError("output['level_ddfs'] is empty.")
        if len(residuals) < num_levels:
            raise ValueError(f"need {num_levels} residual fields, got {len(residuals)}.")
        weights = self.level_weights[:num_levels]
        shapes = [tuple(level_ddfs[level].shape[2:]) for level in range(num_levels)]
        dtype = level_ddfs[0].dtype

        use_mask_dice = self.mask_dice_weight != 0 and moving_label is not None and fixed_label is not None
        num_region_levels = min(num_levels, len(logits))
        use_region_dice = self.region_dice_weight != 0 and fixed_label is not None and num_region_levels > 0

        zero = level_ddfs[0].new_zeros(())
        similarity, mask_dice, region_dice, regularisation = zero, zero, zero, zero

        # images and masks carry no gradient: building their pyramids outside autograd saves memory
        with torch.no_grad():
            moving_levels = in_plane_pyramid(moving.to(dtype), shapes, self.blur_sigma)
            fixed_levels = in_plane_pyramid(fixed.to(dtype), shapes, self.blur_sigma)
            fixed_one_hot_levels: list[torch.Tensor] = []
            moving_one_hot_levels: list[torch.Tensor] = []
            if use_mask_dice or use_region_dice:
                fixed_one_hot_levels = in_plane_pyramid(one_hot_labels(fixed_label, self.num_classes, dtype), shapes)
            if use_mask_dice:
                moving_one_hot_levels = in_plane_pyramid(one_hot_labels(moving_label, self.num_classes, dtype), shapes)

        for level, weight in enumerate(weights):
            ddf = level_ddfs[level]
            if self.similarity_weight != 0:
                warped = warp_image(moving_levels[level], ddf, mode="bilinear")
                similarity = similarity + weight * F.mse_loss(warped, fixed_levels[level])
            if use_mask_dice:
                warped_one_hot = warp_image(moving_one_hot_levels[level], ddf, mode="bilinear")
                mask_dice = mask_dice + weight * soft_dice_loss(warped_one_hot, fixed_one_hot_levels[level])
            if use_region_dice and level < num_region_levels:
                if tuple(logits[level].shape[2:]) != shapes[level]:
                    raise ValueError(
                        f"anatomical_logits[{level}] {tuple(logits[level].shape)} does not match level {shapes[level]}."
                    )
                probabilities = torch.softmax(logits[level], dim=1)
                region_dice = region_dice + weight * soft_dice_loss(probabilities, fixed_one_hot_levels[level])
            if self.regularisation_weight != 0:
                regularisation = regularisation + weight * diffusion_regularisation(residuals[level])

        terms = {
            "similarity": self.similarity_weight * similarity,
            "mask_dice": self.mask_dice_weight * mask_dice if use_mask_dice else zero,
            "region_dice": self.region_dice_weight * region_dice if use_region_dice else zero,
            "regularisation": self.regularisation_weight * regularisation,
        }
        total = terms["similarity"] + terms["mask_dice"] + terms["region_dice"] + terms["regularisation"]
        self.last_terms = {name: float(value.detach()) for name, value in terms.items()}
        self.last_terms["total"] = float(total.detach())
        return total
