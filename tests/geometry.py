"""Geometry helpers shared by the tests that write oblique, scanner-like NIfTI files."""

from __future__ import annotations

import numpy as np


def rotation(axis: int, degrees: float) -> np.ndarray:
    """3x3 rotation about one coordinate axis."""
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    i, j = [a for a in range(3) if a != axis]
    matrix = np.eye(3)
    matrix[i, i], matrix[i, j], matrix[j, i], matrix[j, j] = c, -s, s, c
    return matrix
