"""Config-facing builders of the training and evaluation inputs: pair lists and the training transform."""

from __future__ import annotations

import logging
import os

from monai.transforms import Compose

from scripts.data import chain_transforms, load_datalist
from scripts.data.datalist import dataset_split
from scripts.errors import InvalidInputError

__all__ = ["SECTIONS", "pair_datalist", "training_transform"]

SECTIONS = ("training", "validation", "test")

logger = logging.getLogger(__name__)


def _patient_count(records: list[dict]) -> int:
    return len({record.get("patient", record["fixed"]) for record in records})


def pair_datalist(dataset_dir: str | os.PathLike, datalist: str | os.PathLike | None, section: str) -> list[dict]:
    """The pair records of one section ("training", "validation" or "test"), and a log line saying where from.

    Args:
        dataset_dir: ACDC-like ``database`` folder, split by :func:`scripts.data.datalist.dataset_split` when
            ``datalist`` is empty: the reference split when its validation patients are there, otherwise a validation
            set drawn from the patients outside the test set, stratified by group. Evaluation reads only the test
            section, so it needs only the test patients (101-150).
        datalist: path of an explicit datalist JSON (``{"training": [...], "validation": [...], "test": [...]}``),
            or ``""``/None to split ``dataset_dir``.
        section: which section to return.

    Returns:
        the section's pair records (never empty).

    Raises:
        InvalidInputError: the section is empty (the message names the data set or the datalist and says why), the
            datalist is not valid JSON, ...; MissingInputError: the data set or datalist does not exist. See
            :func:`scripts.data.load_datalist` and :func:`scripts.data.datalist.dataset_split`.
    """
    if section not in SECTIONS:
        raise ValueError(f"unknown section {section!r}, expected one of {SECTIONS}")
    if datalist:
        records = load_datalist(datalist, section)
        if not records:
            raise InvalidInputError(f"{datalist}: the {section!r} section is empty; it needs at least one pair record")
        logger.info(
            f"{section}: {len(records)} pairs of {_patient_count(records)} patients from the datalist {datalist}"
        )
        return records
    split = dataset_split(dataset_dir)
    records = split.sections[section]
    if not records:
        raise InvalidInputError(
            f"{dataset_dir}: no {section} pairs ({split.how[section]}); add patients or pass --datalist with a "
            f"{section!r} section"
        )
    logger.info(f"{section}: {len(records)} pairs from {dataset_dir}: {split.how[section]}")
    return records


def training_transform(preprocessing: Compose, augmentation: Compose) -> Compose:
    """``chain_transforms(preprocessing, augmentation)``: ONE flat Compose, so CacheDataset caches the preprocessing.

    A nested ``Compose([preprocessing, augmentation])`` counts as random in MONAI 1.6.1 and would cache nothing.
    (A function, not an expression in the config, because configs only import ``scripts`` lazily via ``_target_``.)
    """
    return chain_transforms(preprocessing, augmentation)
