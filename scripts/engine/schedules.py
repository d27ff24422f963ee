"""Learning-rate schedules of the MemWarp code ("poly") and paper ("cosine"), stepped once per epoch."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, PolynomialLR

__all__ = ["LR_SCHEDULES", "lr_scheduler"]

LR_SCHEDULES = ("poly", "cosine")


def lr_scheduler(optimizer: torch.optim.Optimizer, schedule: str, epochs: int, power: float = 0.9) -> LRScheduler:
    """An epoch-level learning-rate scheduler.

    - ``"poly"`` (the authors' code): ``lr * (1 - epoch / (epochs + 1)) ** power`` at epoch 0, 1, ...
      (``PolynomialLR`` with ``total_iters = epochs + 1``, so the last epoch keeps a non-zero rate);
    - ``"cosine"`` (the paper): cosine decay from ``lr`` to 0 over ``epochs`` (``CosineAnnealingLR``).

    Both are stock PyTorch schedulers, so their ``state_dict`` holds plain numbers and resumes under
    ``torch.load(weights_only=True)``.

    Args:
        optimizer: the optimizer whose learning rate is scheduled.
        schedule: "poly" or "cosine".
        epochs: number of training epochs.
        power: exponent of the polynomial decay.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if schedule == "poly":
        return PolynomialLR(optimizer, total_iters=epochs + 1, power=power)
    if schedule == "cosine":
        return CosineAnnealingLR(optimizer, T_max=epochs)
    raise ValueError(f"unknown lr_schedule {schedule!r}; choose one of {LR_SCHEDULES}")
