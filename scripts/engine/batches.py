"""How a registration batch reaches the network and the loss inside MONAI's ignite engines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.engines.utils import PrepareBatch

__all__ = ["RegistrationPrepareBatch"]


def _to_device(
    value: torch.Tensor, device: str | torch.device | None, non_blocking: bool, **kwargs: Any
) -> torch.Tensor:
    # the metadata is not needed past the data loader; plain tensors keep MONAI's MetaTensor bookkeeping out of
    # every convolution and grid_sample of the forward and backward passes
    if isinstance(value, MetaTensor):
        value = value.as_tensor()
    return value.to(device=device, non_blocking=non_blocking, **kwargs)


class RegistrationPrepareBatch(PrepareBatch):
    """Turn a collated pair batch into ``(moving, targets, (fixed,), {})`` for MONAI's trainer and evaluator.

    The engines then call ``inferer(moving, network, fixed)``, i.e. ``network(moving, fixed)`` through ``forward``
    (so DistributedDataParallel synchronises gradients), and ``loss_function(prediction, targets)``.

    Args:
        image_keys: batch keys of the moving and fixed images, in that order.
        label_keys: batch keys of the moving and fixed label maps; copied into ``targets`` when present, so a batch
            without labels (unsupervised training, inference) works too.

    Returns (from ``__call__``):
        ``moving`` (B, 1, H, W, D); ``targets`` dict with "moving", "fixed" and, when present, "moving_label",
        "fixed_label" (B, 1, H, W, D); ``(fixed,)``; ``{}``. All plain tensors on ``device``.
    """

    def __init__(
        self,
        image_keys: Sequence[str] = ("moving", "fixed"),
        label_keys: Sequence[str] = ("moving_label", "fixed_label"),
    ) -> None:
        if len(image_keys) != 2:
            raise ValueError(f"image_keys must name the moving and the fixed image, got {image_keys!r}")
        self.image_keys = tuple(image_keys)
        self.label_keys = tuple(label_keys)

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], tuple[torch.Tensor], dict]:
        moving_key, fixed_key = self.image_keys
        moving = _to_device(batchdata[moving_key], device, non_blocking, **kwargs)
        fixed = _to_device(batchdata[fixed_key], device, non_blocking, **kwargs)
        targets = {"moving": moving, "fixed": fixed}
        for key in self.label_keys:
            if batchdata.get(key) is not None:
                targets[key] = _to_device(batchdata[key], device, non_blocking, **kwargs)
        return moving, targets, (fixed,), {}
