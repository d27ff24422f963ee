"""The per-pair summary JSON: what went in, what came out, how good it looks, and the conventions to read it by."""

from __future__ import annotations

import math
import platform
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import monai
import torch

from scripts.geometry import DISPLACEMENT_CONVENTION
from scripts.inference.checkpoint import CheckpointRecord
from scripts.inference.inverse_field import INVERSE_DISPLACEMENT_CONVENTION

__all__ = ["CONVENTIONS", "OUTPUT_DESCRIPTIONS", "pair_summary"]

OUTPUT_DESCRIPTIONS: dict[str, str] = {
    "warped_moving.nii.gz": "original moving image resampled through the displacement (trilinear) into the fixed "
    "image's original space: same shape and affine as the fixed file, float32, moving intensity units",
    "warped_moving_label.nii.gz": "moving label map warped the same way with nearest neighbour, uint8 0..3",
    "displacement_fixed_to_moving_mm.nii.gz": "displacement field, see conventions.displacement",
    "displacement_moving_to_fixed_mm.nii.gz": "its inverse on the moving image's original grid, see "
    "conventions.inverse_displacement",
    "fixed_segmentation_predicted.nii.gz": "segmentation of the fixed image by the anatomical memory (argmax of the "
    "level-0 probabilities on the network grid, inverted with nearest neighbour), uint8 0..3",
    "jacobian_determinant.nii.gz": "Jacobian determinant det(I + grad u) of the network-grid field (central "
    "differences), resampled (linear) to the fixed image's original space; <= 0 means folding",
    "quality_control.png": "slices of fixed, moving, warped, differences before/after, deformed grid, Jacobian",
    "network_grid/": "optional: the same on the 128 x 128 x 16 network grid (1.8 x 1.8 x 10 mm, RAS), plus the raw "
    "voxel-unit displacement ddf_voxels.nii.gz (X, Y, Z, 3): channel i along array axis i, warped(x) = moving(x + u)",
}

CONVENTIONS: dict[str, str] = {
    "displacement": DISPLACEMENT_CONVENTION,
    "inverse_displacement": INVERSE_DISPLACEMENT_CONVENTION,
    "labels": "0 background, 1 right ventricle (RV), 2 left ventricular myocardium (LVM), 3 LV blood pool (LVBP)",
    "space": "files at the top of the pair folder are on the fixed image's original grid (same shape and affine)",
    "metrics": "computed on the network grid (128 x 128 x 16, 1.8 x 1.8 x 10 mm) as in evaluation; Jacobian "
    "statistics with a 2-voxel border crop: folding_percent = % voxels with J <= 0, sdlogj_plus3 = "
    "std(log(clip(J + 3))) (the paper's SDlogJ), std_log_j_positive = std(log J) over J > 0; Dice and HD95 (mm, "
    "95th percentile) per structure with the moving labels warped by nearest neighbour, when both label maps are given",
    "refinement": "instance optimisation of the network's field on the network grid before every output is made "
    "(refine_steps > 0); dissimilarity: lower is better, under the network's field (before) and the refined one "
    "(after)",
    "warnings": "signs that the pair is unlike the training data, judged on the network's own field (statistics and "
    "thresholds under out_of_distribution); empty when none",
    "inverse_consistency": "|u(x) + v(x + u(x))| in mm on the network grid for the field u and its inverse v, median "
    "and 95th percentile over the voxels whose image lies in the grid (overall) and inside the heart",
}


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf become None (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def pair_summary(
    record: Mapping[str, Any],
    metrics: Mapping[str, float],
    timings: Mapping[str, float],
    checkpoint: CheckpointRecord | None,
    files: list[str],
    network: Mapping[str, Any],
    refinement: Mapping[str, Any] | None = None,
    warnings: Sequence[str] = (),
    out_of_distribution: Mapping[str, Any] | None = None,
    inverse_consistency: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The summary dict of one pair (JSON-safe).

    Args:
        record: the file-level pair record (paths, frames, patient, direction, pair_name).
        metrics: floats from :class:`~scripts.inference.postprocessing.RegistrationMetricsd`.
        timings: seconds per stage.
        checkpoint: the loaded weights' path and sha256.
        files: output files written for this pair (relative to the pair folder).
        network: architecture, preset, device and grid description.
        refinement: what the instance optimisation did (steps 0: says so).
        warnings: the out-of-distribution warnings of the pair (sentences).
        out_of_distribution: the statistics the warnings judged and their thresholds.
        inverse_consistency: the inverse field's consistency with the forward one (mm).
    """
    inputs = {k: record[k] for k in ("moving", "fixed", "moving_label", "fixed_label") if k in record}
    inputs.update({k: record[k] for k in ("moving_frame", "fixed_frame") if k in record})
    return _clean(
        {
            "pair": record.get("pair_name"),
            "patient": record.get("patient"),
            "direction": record.get("direction"),
            "inputs": inputs,
            "checkpoint": None if checkpoint is None else {"path": checkpoint.path, "sha256": checkpoint.sha256},
            "network": dict(network),
            "metrics": dict(metrics),
            "refinement": None if refinement is None else dict(refinement),
            "warnings": list(warnings),
            "out_of_distribution": None if out_of_distribution is None else dict(out_of_distribution),
            "inverse_consistency": None if inverse_consistency is None else dict(inverse_consistency),
            "timings_seconds": {k: round(float(v), 4) for k, v in timings.items()},
            "outputs": {
                name: OUTPUT_DESCRIPTIONS.get(name, OUTPUT_DESCRIPTIONS.get(name.split("/")[0] + "/", ""))
                for name in files
            },
            "conventions": CONVENTIONS,
            "software": {
                "monai": monai.__version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    )
