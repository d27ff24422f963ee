"""Inference of the bundle: register end-diastole/end-systole pairs and write outputs viewers can open.

Run by ``python -m monai.bundle run inference --config_file configs/inference.json`` (see docs/README.md). Data flows
one way, one module per step:

- :mod:`.pairs`: which pairs (ACDC-layout ``dataset_dir`` or a JSON ``datalist``), each with a ``pair_name``;
- :mod:`.input_checks`, :mod:`.checkpoint` (run at the evaluator's start by :mod:`.handlers`): every file, the output
  directory and the weights are checked before anything is computed or written;
- ``scripts.data.registration_preprocessing``: files -> (1, 128, 128, 16) network inputs, inverse kept;
- :mod:`.network_io`: ``prepare_batch`` and inferer, ``network(moving, fixed)``;
- :mod:`.postprocessing`: network-grid products, inverted to the fixed image's original space
  (:mod:`scripts.geometry` for the voxel -> world mm conversion, :mod:`.resampling` for warping the original moving
  image), metrics;
- :mod:`.writer` (with :mod:`.nifti_io` and :func:`scripts.geometry.write_displacement_nifti`, :mod:`.qc_figure`,
  :mod:`.summary`): one folder per pair, renamed into place when complete;
- :mod:`.errors`: input errors end a command-line run with one line naming the file.
"""

from scripts.inference.checkpoint import CheckpointRecord, file_sha256, load_network_weights
from scripts.inference.errors import (
    CheckpointError,
    MissingCheckpointError,
    OutputCollisionError,
    input_error_in,
    install_error_report,
)
from scripts.inference.handlers import InputChecks, PairProgressBar, PairTimer, RegistrationCheckpointLoader
from scripts.inference.input_checks import check_output_dir, check_pair_inputs, world_overlap
from scripts.inference.network_io import RegistrationInferer, RegistrationPairBatch
from scripts.inference.pairs import inference_pairs, pair_name, records_from_json, source_record
from scripts.inference.postprocessing import registration_postprocessing
from scripts.inference.resampling import resample_at_world_points, resample_through_displacement
from scripts.inference.writer import PairOutputWriter

__all__ = [
    "CheckpointError",
    "CheckpointRecord",
    "InputChecks",
    "MissingCheckpointError",
    "OutputCollisionError",
    "PairOutputWriter",
    "PairProgressBar",
    "PairTimer",
    "RegistrationCheckpointLoader",
    "RegistrationInferer",
    "RegistrationPairBatch",
    "check_output_dir",
    "check_pair_inputs",
    "file_sha256",
    "inference_pairs",
    "input_error_in",
    "install_error_report",
    "load_network_weights",
    "pair_name",
    "records_from_json",
    "registration_postprocessing",
    "resample_at_world_points",
    "resample_through_displacement",
    "source_record",
    "world_overlap",
]
