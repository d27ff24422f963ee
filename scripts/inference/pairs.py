"""Which pairs to register: one pair given by its files, an explicit datalist or an ACDC-layout folder, each named.

Sources, in order of precedence:

- ``moving`` and ``fixed`` (optionally ``moving_label`` and ``fixed_label``): one pair of NIfTI files;
- ``datalist``: a JSON file, either a plain list of pair records ``[{"moving": ..., "fixed": ...,
  "moving_label": ..., "fixed_label": ...}, ...]`` or a sectioned datalist (``{"test": [...], ...}``, the format of
  :func:`scripts.data.save_datalist`; one section is used). Relative paths are taken from the JSON file's folder.
- ``dataset_dir``: ACDC-layout patient folders (one or many), via :func:`scripts.data.build_pair_datalist`; labels
  are used when present but not required.

Every record gets a ``"pair_name"``: ``patient001_ED_to_ES`` for ACDC records, ``<moving>_to_<fixed>`` from the file
names otherwise, made unique within the run. Outputs of a pair go to ``<output_dir>/<pair_name>/``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from scripts.data import DIRECTIONS, InvalidInputError, build_pair_datalist, load_datalist
from scripts.data.datalist import PATH_KEYS, read_datalist_json, resolve_pair_record

__all__ = ["inference_pairs", "pair_name", "records_from_json", "single_pair_record"]

_NIFTI_SUFFIX = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _stem(path: str, frame: object = None) -> str:
    stem = _NIFTI_SUFFIX.sub("", Path(str(path)).name)
    return stem if frame is None else f"{stem}_f{int(frame):02d}"


def pair_name(record: dict) -> str:
    """A file-system-safe name for a pair record (its ``"pair_name"`` if it has one)."""
    if record.get("pair_name"):
        name = str(record["pair_name"])
    elif record.get("patient") and record.get("direction"):
        name = f"{record['patient']}_{record['direction']}"
    else:
        moving = _stem(record["moving"], record.get("moving_frame"))
        fixed = _stem(record["fixed"], record.get("fixed_frame"))
        name = f"{moving}_to_{fixed}"
    name = _UNSAFE.sub("_", name).strip("._")
    return name or "pair"


def records_from_json(json_path: str | os.PathLike, section: str = "test") -> list[dict]:
    """Pair records of a datalist JSON: a plain list of records, or ``section`` of a sectioned datalist.

    Raises:
        MissingInputError: the file does not exist.
        InvalidInputError: not JSON, or records without "moving"/"fixed" (the message names the file).
    """
    path = Path(json_path)
    content = read_datalist_json(path)
    if isinstance(content, dict):
        return load_datalist(path, section)
    if not isinstance(content, list) or not content:
        raise InvalidInputError(f"{path}: expected a non-empty list of pair records or a sectioned datalist")
    return [resolve_pair_record(item, path.parent, f"{path}: item {index}") for index, item in enumerate(content)]


def _directions(directions: str | Sequence[str]) -> tuple[str, ...]:
    chosen = (directions,) if isinstance(directions, str) else tuple(directions)
    unknown = [d for d in chosen if d not in DIRECTIONS]
    if not chosen or unknown:
        raise InvalidInputError(f"directions {list(chosen)}: each must be one of {list(DIRECTIONS)}")
    return chosen


def single_pair_record(
    moving: str | os.PathLike | None,
    fixed: str | os.PathLike | None,
    moving_label: str | os.PathLike | None = None,
    fixed_label: str | os.PathLike | None = None,
) -> dict | None:
    """The record of one pair given by its files (the ``--moving``/``--fixed`` options), or None when none is given.

    Raises:
        InvalidInputError: only one of ``moving``/``fixed``, or labels without them.
    """
    files = {"moving": moving, "fixed": fixed, "moving_label": moving_label, "fixed_label": fixed_label}
    given = {key: str(value) for key, value in files.items() if value}
    if not given:
        return None
    missing = [key for key in ("moving", "fixed") if key not in given]
    if missing:
        named = ", ".join(f"--{key} {value}" for key, value in given.items())
        raise InvalidInputError(f"{named}: a single pair needs both --moving and --fixed (missing --{missing[0]})")
    return given


def inference_pairs(
    dataset_dir: str | os.PathLike | None = None,
    datalist: str | os.PathLike | None = None,
    directions: str | Sequence[str] = ("ED_to_ES",),
    patients: Sequence[int | str] | None = None,
    datalist_section: str = "test",
    moving: str | os.PathLike | None = None,
    fixed: str | os.PathLike | None = None,
    moving_label: str | os.PathLike | None = None,
    fixed_label: str | os.PathLike | None = None,
) -> list[dict]:
    """The pair records of an inference run, each with a unique ``"pair_name"``.

    Args:
        dataset_dir: ACDC-layout folder (``database``, a folder of patient folders, or one patient folder); used
            when ``datalist`` is empty.
        datalist: JSON datalist (see the module docstring); empty or None to use ``dataset_dir``.
        directions: ``"ED_to_ES"`` (moving ED, fixed ES), ``"ES_to_ED"``, or both (dataset_dir only).
        patients: patient numbers or names to keep (dataset_dir only); None for all.
        datalist_section: section read from a sectioned datalist.
        moving, fixed, moving_label, fixed_label: one pair's files (NIfTI); when given, ``datalist`` and
            ``dataset_dir`` are not used. The pair is named ``<moving>_to_<fixed>`` after the file names.

    Returns:
        list of pair records (see :mod:`scripts.data.datalist`) plus ``"pair_name"``.

    Raises:
        MissingInputError, InvalidInputError: naming the missing or unusable file or folder.
    """
    single = single_pair_record(moving, fixed, moving_label, fixed_label)
    if single is not None:
        records = [single]
    elif datalist:
        records = records_from_json(datalist, datalist_section)
    elif dataset_dir:
        records = build_pair_datalist(dataset_dir, patients, _directions(directions), require_labels=False)
    else:
        raise InvalidInputError("no input: set dataset_dir (ACDC-layout folder) or datalist (JSON of pair records)")
    used: dict[str, int] = {}
    named = []
    for record in records:
        # absolute paths: the summaries must say exactly which files were read, whatever the working directory
        record = {k: os.path.abspath(v) if k in PATH_KEYS else v for k, v in record.items()}
        base = pair_name(record)
        used[base] = used.get(base, 0) + 1
        named.append({**record, "pair_name": base if used[base] == 1 else f"{base}_{used[base]}"})
    return named
