"""Shared fixtures: a small phantom data set in the ACDC layout, generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

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
