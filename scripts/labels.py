"""The bundle's fixed vocabulary: the label classes, the sample keys and the network grid, in one place.

Every module that needs a structure name, the class count, the record keys or the default network grid
imports it from here, so a change (e.g. another grid) is made once.
"""

from __future__ import annotations

__all__ = [
    "FRAME_KEYS",
    "IMAGE_KEYS",
    "LABEL_KEYS",
    "NETWORK_PIXDIM_MM",
    "NETWORK_SPATIAL_SIZE",
    "NUM_CLASSES",
    "STRUCTURE_LONG_NAMES",
    "STRUCTURE_NAMES",
]

# ACDC's label values: 0 background, 1 right ventricle, 2 left-ventricular myocardium, 3 left-ventricular blood pool.
NUM_CLASSES = 4
STRUCTURE_NAMES: dict[int, str] = {1: "rv", 2: "lvm", 3: "lvbp"}
STRUCTURE_LONG_NAMES: dict[int, str] = {1: "RV", 2: "LV myocardium", 3: "LV blood pool"}

# Keys of a pair record / sample.
IMAGE_KEYS = ("moving", "fixed")
LABEL_KEYS = ("moving_label", "fixed_label")
FRAME_KEYS = ("moving_frame", "fixed_frame")

# The network grid of the paper's protocol: 128 x 128 x 16 voxels of 1.8 x 1.8 x 10 mm.
NETWORK_SPATIAL_SIZE = (128, 128, 16)
NETWORK_PIXDIM_MM = (1.8, 1.8, 10.0)
