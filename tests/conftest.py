"""Every shared fixture of the test suite: a small phantom data set, its datalists, the analytic field network of
the inference tests and a default network checkpoint.

Shared helper functions (not fixtures) are in tests/inference_helpers.py and tests/geometry.py, imported as
``tests.<module>``: ``tests`` is a package, so each module has that one import path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch

from scripts.data import build_pair_datalist, save_datalist
from scripts.networks import bundle_network
from scripts.phantom import GenerationOptions, generate_dataset
from tests.inference_helpers import FIELD_NETWORKS

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


@pytest.fixture(scope="session")
def field_network_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder holding ``inference_test_networks.py`` (put it on PYTHONPATH), the analytic field network."""
    folder = tmp_path_factory.mktemp("field_network")
    (folder / "inference_test_networks.py").write_text(FIELD_NETWORKS)
    return folder


@pytest.fixture(scope="session")
def compact_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised default (memwarp, compact) network saved as a plain state dict."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("checkpoint") / "model.pt"
    torch.save(bundle_network("memwarp", "compact").state_dict(), path)
    return path
