"""Build the zip the model zoo distributes: ``python -m scripts.package [--output PATH]``.

The zip holds one top folder, ``memwarp_cardiac_mri_registration/``, with the bundle's files only (configs, the
``scripts`` package, the weights, the user documentation, the licences and the sample pair that inference reads by
default), which is the layout ``python -m monai.bundle download --url`` extracts. Entries are sorted and stamped
with a fixed time and fixed permissions, so the same tree always gives the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from scripts.atomic_files import write_atomically

__all__ = ["BUNDLE_NAME", "bundle_files", "default_output", "write_bundle_zip", "main"]

BUNDLE_NAME = "memwarp_cardiac_mri_registration"
# Folders shipped whole (less caches and hidden files) and single files shipped as they are.
INCLUDED_FOLDERS = ("configs", "scripts", "docs", "sample_data")
INCLUDED_FILES = ("LICENSE", "large_files.yml", "models/model.pt", "models/model.json", "models/model.ts")
# Without any of these the downloaded bundle cannot run inference or pass the zoo's checks.
REQUIRED_FILES = INCLUDED_FILES + (
    "configs/metadata.json",
    "configs/inference.json",
    "configs/logging.conf",
    "scripts/__init__.py",
    "docs/README.md",
    "docs/data_license.txt",
)
# 1980-01-01 is the earliest time a zip entry can hold.
FIXED_TIMESTAMP = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o644


def _is_shipped(relative: Path) -> bool:
    """False for caches, compiled Python and hidden files (editor leftovers, atomic-write temporaries)."""
    if relative.suffix in (".pyc", ".pyo"):
        return False
    return not any(part == "__pycache__" or part.startswith(".") for part in relative.parts)


def bundle_files(root: str | Path) -> list[str]:
    """The bundle-relative POSIX paths that go into the zip, sorted.

    Raises:
        FileNotFoundError: a required file (e.g. ``models/model.pt``) is missing; the message names it.
    """
    root = Path(root)
    missing = [name for name in REQUIRED_FILES if not (root / name).is_file()]
    if missing:
        raise FileNotFoundError(f"required bundle file missing: {', '.join(str(root / name) for name in missing)}")
    files = set(INCLUDED_FILES)
    for folder in INCLUDED_FOLDERS:
        for path in (root / folder).rglob("*"):
            relative = path.relative_to(root)
            if path.is_file() and _is_shipped(relative):
                files.add(relative.as_posix())
    return sorted(files)


def default_output(root: str | Path) -> Path:
    """``<root>/dist/memwarp_cardiac_mri_registration_v<version>.zip``, the version read from metadata.json."""
    root = Path(root)
    version = json.loads((root / "configs" / "metadata.json").read_text())["version"]
    return root / "dist" / f"{BUNDLE_NAME}_v{version}.zip"


def _check_output(root: Path, output: Path) -> None:
    """Refuse an output that would land among the files being packed (it would pack itself next time)."""
    output, root = output.resolve(), root.resolve()
    for included in INCLUDED_FOLDERS + INCLUDED_FILES:
        if output == root / included or (root / included) in output.parents:
            raise ValueError(f"output {output} is inside the bundle's {included}; choose a path outside it, e.g. dist/")


def write_bundle_zip(root: str | Path, output: str | Path) -> Path:
    """Write the zoo zip of the bundle at ``root`` to ``output`` atomically and return ``output``.

    Raises:
        FileNotFoundError: a required bundle file is missing.
        ValueError: ``output`` is inside a folder (or is a file) that goes into the zip.
    """
    root, output = Path(root), Path(output)
    _check_output(root, output)
    names = bundle_files(root)

    def write(stream: IO[bytes]) -> None:
        with zipfile.ZipFile(stream, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
            for name in names:
                entry = zipfile.ZipInfo(f"{BUNDLE_NAME}/{name}", date_time=FIXED_TIMESTAMP)
                entry.create_system = 3  # Unix, so the permission bits below are read everywhere
                entry.external_attr = (0o100000 | FILE_MODE) << 16
                entry.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(entry, (root / name).read_bytes(), compresslevel=9)

    return write_atomically(output, write, binary=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: build the zip, then print its path, size and sha256."""
    parser = argparse.ArgumentParser(prog="python -m scripts.package", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, help="zip to write (default: dist/<bundle>_v<version>.zip)")
    parser.add_argument(
        "--bundle_root", type=Path, default=Path(__file__).resolve().parents[1], help="bundle to pack (default: this)"
    )
    arguments = parser.parse_args(argv)
    try:
        output = write_bundle_zip(arguments.bundle_root, arguments.output or default_output(arguments.bundle_root))
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"package: {error}")
    data = output.read_bytes()
    print(f"wrote {output}")
    print(f"size: {len(data)} bytes ({len(data) / 2**20:.2f} MB)")
    print(f"sha256: {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()
