"""Helpers of the inference and bundle tests: running the bundle's inference command, the analytic field network,
scanner-like synthetic images. Their fixtures (``field_network_path``, ``compact_checkpoint``) are in conftest.py.

The networks whose displacement the tests set by hand live in a module written to a temporary folder (tests may
not add code to the bundle's ``scripts`` package); the bundle command imports it through ``PYTHONPATH``: see the
``field_network_path`` fixture and :func:`field_network_overrides`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from tests.geometry import rotation

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/inference.json"
DDF_NAME = "displacement_fixed_to_moving_mm.nii.gz"

FIELD_NETWORKS = textwrap.dedent('''
    """Registration networks with a displacement set by their weights (inference tests only)."""
    import math

    import torch
    from torch import nn

    from scripts.warping import warp_image


    class AnalyticFieldNetwork(nn.Module):
        """ddf_c(x) = offset_c + amplitude_c * sin(2 pi x0 / (H - 1)) * sin(pi x1 / (W - 1)), in voxels."""

        def __init__(self):
            super().__init__()
            self.offset = nn.Parameter(torch.zeros(3))
            self.amplitude = nn.Parameter(torch.zeros(3))

        def field(self, like):
            h, w, d = like.shape[2:]
            x0 = torch.linspace(0, 2 * math.pi, h, device=like.device)[:, None, None]
            x1 = torch.linspace(0, math.pi, w, device=like.device)[None, :, None]
            wave = (torch.sin(x0) * torch.sin(x1)).expand(h, w, d)
            ddf = self.offset[:, None, None, None] + self.amplitude[:, None, None, None] * wave
            return ddf[None].expand(like.shape[0], -1, -1, -1, -1)

        def forward(self, images, fixed=None):
            if fixed is None:
                return self.field(images)
            ddf = self.field(images)
            return {"ddf": ddf, "warped": warp_image(images, ddf), "anatomical_logits": []}
    ''')


def field_network_overrides(folder: Path, offset, amplitude=(0.0, 0.0, 0.0)) -> tuple[list[str], dict]:
    """Command-line overrides and environment running the analytic field network with the given voxel field."""
    sys.path.insert(0, str(folder))
    try:
        from inference_test_networks import AnalyticFieldNetwork
    finally:
        sys.path.remove(str(folder))
    network = AnalyticFieldNetwork()
    with torch.no_grad():
        network.offset.copy_(torch.as_tensor(offset, dtype=torch.float32))
        network.amplitude.copy_(torch.as_tensor(amplitude, dtype=torch.float32))
    checkpoint = folder / f"field_{abs(hash((tuple(offset), tuple(amplitude))))}.pt"
    torch.save(network.state_dict(), checkpoint)
    overrides = [
        "--network_def",
        "{'_target_': 'inference_test_networks.AnalyticFieldNetwork'}",
        "--ckpt_path",
        str(checkpoint),
    ]
    return overrides, {"PYTHONPATH": str(folder)}


# The shipped weights (0.7.0) on the sample pair with the root README's command (docs/README.md, "The shipped
# weights"): mean Dice over RV, LV myocardium and LV blood pool on the network grid (summary.json) 0.858 -> 0.891
# (0.6.0: 0.894), and of warped_moving_label.nii.gz against the ES labels on the fixed file's own grid 0.828 -> 0.872.
# The tests require the measured figure less 0.01 for thread-count and platform differences.
SAMPLE_PAIR_DICE_BEFORE = 0.858
SAMPLE_PAIR_DICE_AFTER_MIN = 0.881
SAMPLE_PAIR_FIXED_GRID_DICE_BEFORE = 0.828
SAMPLE_PAIR_FIXED_GRID_DICE_AFTER_MIN = 0.862


def run_bundle(*overrides: str, env: dict | None = None, cwd: Path = BUNDLE_ROOT) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run inference --config_file configs/inference.json <overrides>`` in the bundle at
    ``cwd``; PYTHONPATH is ``cwd`` (plus ``env["PYTHONPATH"]``), so that bundle's ``scripts`` package is imported."""
    environment = dict(os.environ)
    paths = [str(cwd)] + ([env["PYTHONPATH"]] if env and "PYTHONPATH" in env else [])
    environment.update(env or {})
    environment["PYTHONPATH"] = os.pathsep.join(paths)
    command = [sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file", CONFIG]
    command += ["--meta_file", "configs/metadata.json", "--logging_file", "configs/logging.conf", *overrides]
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=300)


def assert_succeeded(result: subprocess.CompletedProcess) -> None:
    assert (
        result.returncode == 0
    ), f"exit {result.returncode}\nSTDOUT:\n{result.stdout[-3000:]}\nSTDERR:\n{result.stderr[-5000:]}"


def files_under(folder: Path) -> list[Path]:
    """Every file under ``folder`` (hidden ones too); [] when it does not exist."""
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# A scanner-like geometry: rotated about two axes, anisotropic (1.5 x 1.3 x 8 mm), axis 0 pointing left (LPS-like
# storage after the rotation), so RAS reorientation has to flip an axis.
ROTATION = rotation(0, 25.0) @ rotation(2, 200.0)
SPACING = np.array([1.5, 1.3, 8.0])
SHAPE = (120, 140, 14)


def scanner_affine(shape=SHAPE, spacing=SPACING, centre=(12.0, -30.0, 45.0)) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = ROTATION @ np.diag(spacing)
    affine[:3, 3] = np.asarray(centre) - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return affine


def blob_image(affine: np.ndarray, shape=SHAPE, shift_mm=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Smooth world-space 'anatomy' f(p - shift) sampled on a grid: moving(q) = f(q - t) gives d(p) = t."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(np.float64)
    points = index @ affine[:3, :3].T + affine[:3, 3] - np.asarray(shift_mm)
    centre = affine[:3, :3] @ ((np.asarray(shape) - 1) / 2) + affine[:3, 3]
    p = points - centre
    body = np.exp(-((p[..., 0] / 70) ** 2 + (p[..., 1] / 55) ** 2 + (p[..., 2] / 60) ** 2))
    heart = np.exp(-(((p[..., 0] - 12) / 18) ** 2 + ((p[..., 1] + 8) / 14) ** 2 + (p[..., 2] / 25) ** 2))
    ripples = 0.15 * np.sin(p[..., 0] / 6.0) * np.cos(p[..., 1] / 7.0)
    return (400 * body + 600 * heart + 100 * ripples * body).astype(np.float32)


def save_nifti(data: np.ndarray, affine: np.ndarray, path: Path, dtype=np.float32) -> Path:
    image = nib.Nifti1Image(np.asarray(data, dtype=dtype), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, str(path))
    return path
