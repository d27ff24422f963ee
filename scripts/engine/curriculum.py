"""A training curriculum: domain randomisation switched on at a chosen epoch.

From scratch, with domain randomisation on from the first step, the compact MemWarp never started to register in
our runs (its flow heads stayed below 0.1 voxel and the validation Dice at the identity's for 258 steps), while a
network that has first learnt to register the plain phantom takes domain randomisation in its stride (0.6.0 was
made so, in two runs). :class:`DomainRandomisationSchedule` makes that one run: the augmentation's
:class:`~scripts.data.domain_randomisation.DomainRandomisationSwitch` is off before ``from_epoch`` and on from it.
"""

from __future__ import annotations

import logging
from typing import Any

from ignite.engine import Engine, Events

from scripts.data.domain_randomisation import DomainRandomisationSwitch

__all__ = ["DomainRandomisationSchedule"]

logger = logging.getLogger(__name__)


class DomainRandomisationSchedule:
    """Turn the augmentation's domain randomisation off before epoch ``from_epoch`` and on from it (1-based).

    Set at every epoch start from the epoch number alone, so a resumed run gets the state its epoch calls for.
    An augmentation without domain randomisation is left alone.

    Args:
        augmentation: the training augmentation (a ``Compose``, e.g. ``registration_augmentation(...)``), whose
            :class:`DomainRandomisationSwitch` members are switched; the same objects the training dataset runs.
        from_epoch: first epoch with domain randomisation (1: from the start).
    """

    def __init__(self, augmentation: Any, from_epoch: int = 1) -> None:
        from_epoch = int(from_epoch)
        if from_epoch < 1:
            raise ValueError(f"domain_randomisation_from_epoch must be >= 1, got {from_epoch}.")
        self.from_epoch = from_epoch
        self.switches = [t for t in getattr(augmentation, "transforms", ()) if isinstance(t, DomainRandomisationSwitch)]
        self._logged_state: bool | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        active = engine.state.epoch >= self.from_epoch
        if self.switches and active != self._logged_state:
            state = "on" if active else "off"
            logger.info(f"epoch {engine.state.epoch}: domain randomisation {state} (on from epoch {self.from_epoch})")
            self._logged_state = active
        for switch in self.switches:
            switch.active = active
