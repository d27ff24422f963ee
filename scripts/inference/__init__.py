"""Inference of the bundle: register end-diastole/end-systole pairs and write outputs viewers can open.

Run by ``python -m monai.bundle run inference --config_file configs/inference.json`` (see docs/README.md). Data flows
one way, one module per step:

- :mod:`.pairs`: which pairs (``--moving``/``--fixed`` files, a JSON ``datalist`` or an ACDC-layout ``dataset_dir``),
  each with a ``pair_name``;
- :mod:`.input_checks`, :mod:`.checkpoint` (run at the evaluator's start by :mod:`.handlers`): every file's header,
  the output directory and the weights are checked before anything is computed or written;
- :mod:`.preprocessing`: each file read once -> originals kept + (1, 128, 128, 16) network inputs (the bundle's
  ``scripts.data.registration_preprocessing``), inverse kept; the sample carries the pair record to the writer;
- :mod:`.network_io`: ``prepare_batch`` and inferer, ``network(moving, fixed)``;
- :mod:`.postprocessing`: the out-of-distribution check (:mod:`.ood_warning`) and the optional instance
  optimisation (:mod:`.refinement`) of the network's field, then network-grid products, inverted to the fixed
  image's original space, the inverse field on the moving image's grid (:mod:`.inverse_field`)
  (:mod:`scripts.geometry` for the voxel -> world mm conversion, :mod:`.resampling` for warping the original moving
  image), metrics;
- :mod:`.writer` (with :mod:`.nifti_io` and :func:`scripts.geometry.write_displacement_nifti`, :mod:`.qc_figure`,
  :mod:`.summary`): one folder per pair, renamed into place when complete;
- ``scripts.errors``: input errors end a command-line run with one line naming the file.
"""

from scripts.inference.batching import pair_batch_collate
from scripts.inference.checkpoint import CheckpointRecord, file_sha256, load_network_weights
from scripts.inference.handlers import InputChecks, PairProgressBar, PairTimer
from scripts.inference.input_checks import check_output_dir, check_pair_files, read_nifti_header, world_overlap
from scripts.inference.network_io import RegistrationInferer, RegistrationPairBatch
from scripts.inference.pairs import inference_pairs, pair_name, records_from_json, single_pair_record
from scripts.inference.postprocessing import registration_postprocessing
from scripts.inference.preprocessing import InferencePreprocessing
from scripts.inference.refinement import RefinementSettings
from scripts.inference.resampling import resample_at_world_points, resample_through_displacement
from scripts.inference.writer import PairOutputWriter

__all__ = [
    "CheckpointRecord",
    "InferencePreprocessing",
    "InputChecks",
    "PairOutputWriter",
    "PairProgressBar",
    "PairTimer",
    "RegistrationInferer",
    "RefinementSettings",
    "RegistrationPairBatch",
    "check_output_dir",
    "check_pair_files",
    "file_sha256",
    "inference_pairs",
    "load_network_weights",
    "pair_batch_collate",
    "pair_name",
    "read_nifti_header",
    "records_from_json",
    "registration_postprocessing",
    "resample_at_world_points",
    "resample_through_displacement",
    "single_pair_record",
    "world_overlap",
]
