"""Write a data set's split as a datalist JSON, to inspect or edit it and pass it back with ``--datalist``.

Usage (from the bundle root)::

    python -m scripts.data.write_datalist --dataset_dir /data/ACDC/database --output datalist.json

Writes ``{"training": [...], "validation": [...], "test": [...]}`` of pair records (see
:mod:`scripts.data.datalist`), atomically, and never over one of the dataset's own files. The split is the one
training and evaluation use (:func:`scripts.data.datalist.dataset_split`): the reference split on ACDC, a validation
set drawn stratified by group on smaller data sets; an empty section is written empty and reported.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from scripts.data.acdc import find_patient_dirs
from scripts.data.datalist import dataset_split, save_datalist
from scripts.errors import InvalidInputError, MissingInputError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status (0 on success, 2 on bad input)."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.data.write_datalist", description="Write a data set's split as a datalist JSON."
    )
    parser.add_argument("--dataset_dir", required=True, help="ACDC database folder (with training/ and testing/)")
    parser.add_argument("--output", required=True, help="JSON file to write")
    parser.add_argument(
        "--relative", action="store_true", help="store paths relative to the output's folder (default: absolute)"
    )
    parser.add_argument(
        "--no_labels", action="store_true", help="allow patients without label maps (image-only records)"
    )
    args = parser.parse_args(argv)
    try:
        split = dataset_split(args.dataset_dir, require_labels=not args.no_labels)
        info_files = [folder / "Info.cfg" for folder in find_patient_dirs(args.dataset_dir).values()]
        written = save_datalist(split.sections, args.output, relative=args.relative, protected=info_files)
    except (InvalidInputError, MissingInputError) as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{section} {len(records)}" for section, records in split.sections.items())
    print(f"wrote {written}: {counts} directed pairs")
    for section, how in split.how.items():
        print(f"  {section}: {how}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
