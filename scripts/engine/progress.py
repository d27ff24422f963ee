"""A console progress bar per training epoch (ignite's tqdm ProgressBar), attachable from a config."""

from __future__ import annotations

from typing import Any

import torch
from ignite.engine import Engine
from ignite.handlers import ProgressBar

__all__ = ["EpochProgressBar"]


def _loss_of(output: Any) -> dict[str, float]:
    if isinstance(output, dict) and isinstance(output.get("loss"), torch.Tensor):
        return {"loss": output["loss"].item()}
    return {}


class EpochProgressBar:
    """One tqdm bar per epoch showing the running batch loss; closed at the end of each epoch.

    MONAI engines attach handlers with ``handler.attach(engine)``; ignite's ``ProgressBar.attach`` needs the
    output transform as an argument, which this wrapper supplies. Use on the main process only.

    Args:
        persist: keep each finished epoch's bar on screen.
        kwargs: more ``ignite.handlers.ProgressBar`` arguments (e.g. ``ncols``).
    """

    def __init__(self, persist: bool = False, **kwargs: Any) -> None:
        self.bar = ProgressBar(persist=persist, **kwargs)

    def attach(self, engine: Engine) -> None:
        self.bar.attach(engine, output_transform=_loss_of)
