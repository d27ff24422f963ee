"""Cine function: track the whole cardiac cycle, then measure volumes, ejection fraction and strain.

Run by ``python -m monai.bundle run --config_file configs/cine.json ...`` (docs/README.md, "Cine function"). One
module per step, data flowing one way:

- :mod:`.inputs`: which cines (a 4D NIfTI with its ED frame, or ACDC patient folders) and reading one;
- :mod:`.frames`: every frame on the network grid at once (the bundle's preprocessing) and results back on the cine's
  grid;
- :mod:`.tracking`: ED -> frame fields with the registration network (direct, sequential composition, or a blend);
- :mod:`.region`, :mod:`.propagation`: the ED labels carried to every frame (partial volume);
- :mod:`.volumes`, :mod:`.strain`, :mod:`.tracked_strain`, :mod:`.function`: volumes and LV mass, the one strain
  definition and its measurement on tracked motion, EDV/ESV/SV/EF and ES;
- :mod:`.measurements`: those steps from (ED labels, fields) to results, for any source of fields;
- :mod:`.outputs`, :mod:`.figure`: one folder per cine (written atomically) and the run's summary CSV;
- :mod:`.workflow`: the run of ``configs/cine.json``.

The phantom's truth of every frame (:mod:`scripts.phantom.cine_truth`) uses the same volume, function and strain
definitions, and ``python -m scripts.benchmark cine`` scores the workflow against it.
"""

from scripts.cine.frames import cine_preprocessing, network_fields_to_world, to_cine_grid
from scripts.cine.function import STRAIN_DEFINITION, end_systolic_index, function_summary
from scripts.cine.inputs import CineCase, LoadedCine, check_cine_case, cine_cases, read_cine
from scripts.cine.measurements import CineMeasurements, measure_cine
from scripts.cine.outputs import write_cine_folder, write_summary_csv
from scripts.cine.strain import global_strain, green_lagrange
from scripts.cine.tracked_strain import tracked_global_strain
from scripts.cine.tracking import TRACKING_MODES, track_cine
from scripts.cine.volumes import MYOCARDIAL_DENSITY_G_PER_ML, frame_volumes
from scripts.cine.workflow import CineAnalysis, CineWorkflow, analyse_cine

__all__ = [
    "MYOCARDIAL_DENSITY_G_PER_ML",
    "STRAIN_DEFINITION",
    "TRACKING_MODES",
    "CineAnalysis",
    "CineCase",
    "CineMeasurements",
    "CineWorkflow",
    "LoadedCine",
    "analyse_cine",
    "check_cine_case",
    "cine_cases",
    "cine_preprocessing",
    "end_systolic_index",
    "frame_volumes",
    "function_summary",
    "global_strain",
    "green_lagrange",
    "measure_cine",
    "network_fields_to_world",
    "read_cine",
    "to_cine_grid",
    "track_cine",
    "tracked_global_strain",
    "write_cine_folder",
    "write_summary_csv",
]
