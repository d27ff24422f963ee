"""The validation key metric: mean Dice of the nearest-neighbour-warped moving labels."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce

from scripts.metrics import dice_per_structure
from scripts.warping import warp_labels_nearest

__all__ = ["WarpedLabelDice", "registration_output"]


def registration_output(output: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(ddf, moving_label, fixed_label)`` from a MONAI engine's output built by ``RegistrationPrepareBatch``."""
    targets = output["label"]
    return output["pred"]["ddf"], targets["moving_label"], targets["fixed_label"]


class WarpedLabelDice(Metric):
    """Mean Dice over pairs, each pair's Dice the mean over the scored structures (background excluded).

    The moving labels are warped nearest-neighbour with the evaluation convention (``warped(x) = moving(x + ddf(x))``,
    ``scripts.warping``); a structure absent from both maps is skipped in that pair's mean, a pair with no
    structure at all is skipped. Sums are all-reduced across processes, so the value is the same on every rank
    when the validation set is sharded.

    Args:
        labels: label values scored (1 RV, 2 LVM, 3 LVBP).
        output_transform: maps the engine output to ``(ddf, moving_label, fixed_label)``.
        device: where the running sums live (the process's device under NCCL).
    """

    def __init__(
        self,
        labels: Sequence[int] = (1, 2, 3),
        output_transform: Callable = registration_output,
        device: str | torch.device = "cpu",
    ) -> None:
        self.labels = tuple(labels)
        super().__init__(output_transform=output_transform, device=device, skip_unrolling=True)

    @reinit__is_reduced
    def reset(self) -> None:
        self._sum = torch.zeros((), dtype=torch.float64, device=self._device)
        self._count = torch.zeros((), dtype=torch.float64, device=self._device)

    @reinit__is_reduced
    def update(self, output: Sequence[torch.Tensor]) -> None:
        ddf, moving_label, fixed_label = output
        warped = warp_labels_nearest(moving_label.to(device=ddf.device), ddf.detach())
        scores = dice_per_structure(warped, fixed_label, self.labels)
        present = ~torch.isnan(scores)
        scored = present.any(dim=1)
        per_pair = torch.where(present, scores, 0.0).sum(dim=1)[scored] / present.sum(dim=1)[scored]
        self._sum += per_pair.sum().to(self._device)
        self._count += float(scored.sum())

    @sync_all_reduce("_sum", "_count")
    def compute(self) -> float:
        if self._count.item() == 0:
            return float("nan")
        return (self._sum / self._count).item()
