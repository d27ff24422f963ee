"""ACDC data pipeline of the bundle: pair datalists and MONAI dictionary transforms.

Files -> pair records -> preprocessing (cacheable) -> augmentation (random, training only).

Pair record (datalist item), see :mod:`scripts.data.datalist`:
    ``"moving"``, ``"fixed"``: NIfTI paths; ``"moving_label"``, ``"fixed_label"``: optional label-map paths;
    ``"moving_frame"``, ``"fixed_frame"``: 0-based frame index when the image is a 4D cine (absent for 3D files);
    ``"patient"`` (``"patient001"``), ``"group"`` (NOR/MINF/DCM/HCM/RV or ``""``), ``"direction"``
    (``"ED_to_ES"``: moving ED, fixed ES; or ``"ES_to_ED"``).

Preprocessed sample, see :func:`registration_preprocessing`:
    ``"moving"``, ``"fixed"``: float32 MetaTensor (1, 128, 128, 16) in [0, 1], 1.8 x 1.8 x 10 mm, RAS;
    ``"moving_label"``, ``"fixed_label"``: float32 MetaTensor (1, 128, 128, 16), integer values 0 background,
    1 RV, 2 LV myocardium, 3 LV blood pool; other record keys unchanged; affine and applied operations kept for
    ``monai.transforms.Invertd(..., orig_keys="fixed")``.

Public API:
    read_info_cfg(path) -> dict
    find_patient_frames(patient_dir) -> PatientFrames
    build_pair_datalist(dataset_dir, patients=None, directions=("ED_to_ES", "ES_to_ED"), require_labels=True)
        -> list[dict]
    reference_split(dataset_dir, require_labels=True) -> {"training": [...], "validation": [...], "test": [...]}
    load_datalist(json_path, section) -> list[dict]
    save_datalist(datalist, output, relative=False, protected=()) -> Path
    registration_preprocessing(spatial_size=(128, 128, 16), pixdim=(1.8, 1.8, 10.0), with_labels=True)
        -> RegistrationCompose
    registration_augmentation(swap_prob=0.5, flip_prob=0.5, domain_randomisation=False) -> RegistrationCompose
    chain_transforms(*stages) -> RegistrationCompose   (flat, so CacheDataset caches the preprocessing)
    PrefetchingDataLoader(...)   (a DataLoader reading one batch ahead on a thread; errors raised unchanged)
    CLI: python -m scripts.data.write_datalist --dataset_dir D --output datalist.json [--relative] [--no_labels]

Errors: :class:`InvalidInputError` (a ``ValueError``) and :class:`MissingInputError` (a ``FileNotFoundError``),
messages naming the file; raised as themselves through the Compose objects built here.
"""

from scripts.data.acdc import GROUPS, PatientFrames, find_patient_dirs, find_patient_frames, patient_id, read_info_cfg
from scripts.data.datalist import (
    DIRECTIONS,
    REFERENCE_SPLIT_PATIENTS,
    build_pair_datalist,
    load_datalist,
    pair_records,
    reference_split,
    save_datalist,
)
from scripts.data.errors import InvalidInputError, MissingInputError
from scripts.data.prefetching import PrefetchingDataLoader
from scripts.data.preprocessing import (
    FRAME_KEYS,
    IMAGE_KEYS,
    LABEL_KEYS,
    chain_transforms,
    registration_augmentation,
    registration_preprocessing,
)
from scripts.data.transforms import (
    LoadFramed,
    RandSwapMovingFixedd,
    ResampleMovingToFixedd,
    ValidateRegistrationInputd,
)
from scripts.monai_compat import RecordSafeSpacingd, RegistrationCompose

__all__ = [
    "PrefetchingDataLoader",
    "DIRECTIONS",
    "FRAME_KEYS",
    "GROUPS",
    "IMAGE_KEYS",
    "LABEL_KEYS",
    "REFERENCE_SPLIT_PATIENTS",
    "InvalidInputError",
    "LoadFramed",
    "MissingInputError",
    "PatientFrames",
    "RandSwapMovingFixedd",
    "RecordSafeSpacingd",
    "RegistrationCompose",
    "ResampleMovingToFixedd",
    "ValidateRegistrationInputd",
    "build_pair_datalist",
    "chain_transforms",
    "find_patient_dirs",
    "find_patient_frames",
    "load_datalist",
    "pair_records",
    "patient_id",
    "read_info_cfg",
    "reference_split",
    "registration_augmentation",
    "registration_preprocessing",
    "save_datalist",
]
