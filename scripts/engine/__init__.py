"""Engine pieces the bundle's training and evaluation configs wire into MONAI's ignite workflows.

- batches: ``RegistrationPrepareBatch`` (moving -> network(moving, fixed), targets dict -> loss).
- inputs: the pair datalist of a section (the data set's split or an explicit JSON), the cached training transform.
- schedules: "poly" (authors' code) and "cosine" (paper) learning-rate schedules.
- validation: ``WarpedLabelDice``, the validation key metric.
- checkpoints: atomic best-model (with its card) and training-state checkpoints, resuming, loading weights before a
  run, and the guard that keeps the shipped weights intact.
- recorders: loss terms per epoch, JSON-lines history, per-process data shards.
- curriculum: domain randomisation switched on at a chosen epoch.
- progress: a per-epoch console progress bar.
- figures: a mid-slice registration figure for TensorBoard.
"""

from .batches import RegistrationPrepareBatch
from .checkpoints import (
    BestModelSaver,
    TrainingStateLoader,
    TrainingStateSaver,
    WeightsLoader,
    as_flag,
    atomic_torch_save,
    refuse_shipped_files,
    shipped_files,
    unwrap_module,
)
from .curriculum import DomainRandomisationSchedule
from .figures import RegistrationFigureHandler, registration_figure
from .inputs import pair_datalist, training_transform
from .progress import EpochProgressBar
from .recorders import HistoryWriter, LossTermsRecorder, ShardRecorder
from .schedules import LR_SCHEDULES, lr_scheduler
from .validation import WarpedLabelDice, registration_output

__all__ = [
    "BestModelSaver",
    "DomainRandomisationSchedule",
    "EpochProgressBar",
    "HistoryWriter",
    "LR_SCHEDULES",
    "LossTermsRecorder",
    "RegistrationFigureHandler",
    "RegistrationPrepareBatch",
    "ShardRecorder",
    "TrainingStateLoader",
    "TrainingStateSaver",
    "WarpedLabelDice",
    "WeightsLoader",
    "as_flag",
    "atomic_torch_save",
    "lr_scheduler",
    "pair_datalist",
    "refuse_shipped_files",
    "registration_figure",
    "registration_output",
    "shipped_files",
    "training_transform",
    "unwrap_module",
]
