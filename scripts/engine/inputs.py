"""Config-facing builders of the training and evaluation inputs: pair lists and the training transform."""

from __future__ import annotations

import os

from monai.transforms import Compose

from scripts.data import chain_transforms, load_datalist, reference_split

__all__ = ["pair_datalist", "training_transform"]


def pair_datalist(dataset_dir: str | os.PathLike, datalist: str | os.PathLike | None, section: str) -> list[dict]:
    """The pair records of one section ("training", "validation" or "test").

    Args:
        dataset_dir: ACDC-like ``database`` folder; used for the reference patient split when ``datalist`` is empty.
        datalist: path of an explicit datalist JSON (``{"training": [...], "validation": [...], "test": [...]}``),
            or ``""``/None for the reference split of ``dataset_dir``.
        section: which section to return.

    Raises:
        InvalidInputError, MissingInputError: see :func:`scripts.data.load_datalist` and
            :func:`scripts.data.reference_split`.
    """
    if datalist:
        return load_datalist(datalist, section)
    split = reference_split(dataset_dir)
    if section not in split:
        raise ValueError(f"unknown section {section!r}; the reference split has {sorted(split)}")
    return split[section]


def training_transform(preprocessing: Compose, augmentation: Compose) -> Compose:
    """``chain_transforms(preprocessing, augmentation)``: ONE flat Compose, so CacheDataset caches the preprocessing.

    A nested ``Compose([preprocessing, augmentation])`` counts as random in MONAI 1.6.1 and would cache nothing.
    (A function, not an expression in the config, because configs only import ``scripts`` lazily via ``_target_``.)
    """
    return chain_transforms(preprocessing, augmentation)
