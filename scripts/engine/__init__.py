"""Engine pieces the bundle's training and evaluation configs wire into MONAI's ignite workflows.

- batches: ``RegistrationPrepareBatch`` (moving -> network(moving, fixed), targets dict -> loss).
- inputs: the pair datalist of a section (reference split or explicit JSON), the cached training transform.
- schedules: "poly" (authors' code) and "cosine" (paper) learning-rate schedules.
- validation: ``WarpedLabelDice``, the validation key metric.
- checkpoints: atomic best-model and training-state checkpoints, resuming.
- recorders: loss terms per epoch, JSON-lines history, per-process data shards.
- progress: a per-epoch console progress bar.
- figures: a mid-slice registration figure for TensorBoard.
"""

from .batches import RegistrationPrepareBatch
from .checkpoints import BestModelSaver, TrainingStateLoader, TrainingStateSaver, atomic_torch_save, unwrap_module
from .figures import RegistrationFigureHandler, registration_figure
from .inputs import pair_datalist, training_transform
from .progress import EpochProgressBar
from .recorders import HistoryWriter, LossTermsRecorder, ShardRecorder
from .schedules import LR_SCHEDULES, lr_scheduler
from .validation import WarpedLabelDice, registration_output

__all__ = [
    "BestModelSaver",
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
    "atomic_torch_save",
    "lr_scheduler",
    "pair_datalist",
    "registration_figure",
    "registration_output",
    "training_transform",
    "unwrap_module",
]
