"""Shared fixtures: a small phantom data set in the ACDC layout, generated once per test session."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from scripts.data import build_pair_datalist, save_datalist
from scripts.phantom import GenerationOptions, generate_dataset

# Six subjects: patients 001, 021, 041, 061 (training; DCM, HCM, MINF, NOR) and 101, 111 (testing).
PHANTOM_SUBJECTS = 6


@pytest.fixture(scope="session")
def phantom_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a 6-subject phantom (``training/`` and ``testing/`` patient folders, ACDC layout)."""
    root = tmp_path_factory.mktemp("phantom") / "database"
    options = GenerationOptions(n_frames=12, max_matrix=160, n_through=1)
    generate_dataset(root, n_subjects=PHANTOM_SUBJECTS, seed=0, workers=1, options=options, progress=False)
    return root


@pytest.fixture(scope="session")
def phantom_datalist(phantom_dataset: Path) -> Callable[..., Path]:
    """Write ``folder/datalist.json`` for the phantom: the given training patients, validation patient 061,
    and the testing/ patients as the test section. Returns the JSON's path."""

    def write(folder: Path, training: Sequence[int] = (1,)) -> Path:
        sections = {
            "training": build_pair_datalist(phantom_dataset, list(training)),
            "validation": build_pair_datalist(phantom_dataset, [61]),
            "test": build_pair_datalist(phantom_dataset / "testing"),
        }
        return save_datalist(sections, folder / "datalist.json")

    return write
