"""The classical registration tools a user would run instead of the network, as rows of the benchmarks.

Every tool registers the same preprocessed network-grid images (128 x 128 x 16 at 1.8 x 1.8 x 10 mm, intensities in
[0, 1]) and returns a displacement field in voxels of that grid with the bundle's convention
``warped(x) = moving(x + ddf(x))`` (channel i along array axis i), so the same metrics score it as the networks:

- ``ants``: ANTs SyN (antspyx), :mod:`scripts.benchmark.ants_syn`;
- ``elastix``: elastix affine then B-spline with its default parameter maps (itk-elastix),
  :mod:`scripts.benchmark.classical.elastix`;
- ``demons``: SimpleITK diffeomorphic demons after histogram matching, :mod:`scripts.benchmark.classical.demons`.

antspyx and itk-elastix are optional (``requirements-benchmark.txt``); each tool's ``version`` raises ImportError
with the install command when its package is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from scripts.benchmark.ants_syn import ANTS_SYN_PARAMETERS, ants_syn_ddf, ants_version
from scripts.benchmark.classical.demons import DEMONS_PARAMETERS, demons_ddf, demons_version
from scripts.benchmark.classical.elastix import ELASTIX_PARAMETERS, elastix_ddf, elastix_version

__all__ = ["CLASSICAL_METHODS", "ClassicalMethod"]

# register(moving (H, W, D), fixed (H, W, D), spacing mm, [parameters], threads=None) -> (3, H, W, D) float32 field
# in voxels; parameters default to the tool's own (the ``parameters`` of its ClassicalMethod).
RegisterFunction = Callable[..., np.ndarray]


@dataclass(frozen=True)
class ClassicalMethod:
    """One classical tool: its table row name, its registration function, its package version and settings."""

    row: str
    register: RegisterFunction
    version: Callable[[], str]
    parameters: Mapping[str, Any]

    def ddf(self, moving: np.ndarray, fixed: np.ndarray, spacing: Sequence[float], threads: int | None) -> np.ndarray:
        """(3, H, W, D) float32 voxel field registering ``moving`` to ``fixed`` (both (H, W, D))."""
        return self.register(moving, fixed, spacing, threads=threads)


CLASSICAL_METHODS: dict[str, ClassicalMethod] = {
    "ants": ClassicalMethod("ANTs SyN", ants_syn_ddf, ants_version, ANTS_SYN_PARAMETERS),
    "elastix": ClassicalMethod("elastix affine+B-spline", elastix_ddf, elastix_version, ELASTIX_PARAMETERS),
    "demons": ClassicalMethod("SimpleITK demons", demons_ddf, demons_version, DEMONS_PARAMETERS),
}
