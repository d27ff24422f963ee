"""Engine pieces used by the configs: prepare-batch, schedules, the validation metric, checkpoints, figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from scripts.engine import (
    RegistrationPrepareBatch,
    WarpedLabelDice,
    atomic_torch_save,
    lr_scheduler,
    pair_datalist,
    registration_figure,
)

SHAPE = (16, 16, 6)


def label_box(x: tuple[int, int]) -> torch.Tensor:
    label = torch.zeros(1, 1, *SHAPE)
    label[0, 0, x[0] : x[1], 4:12, 1:5] = 3
    return label


def test_prepare_batch_feeds_moving_to_the_network_and_fixed_as_extra_argument() -> None:
    batch = {key: MetaTensor(torch.rand(2, 1, *SHAPE)) for key in ("moving", "fixed", "moving_label", "fixed_label")}
    moving, targets, args, kwargs = RegistrationPrepareBatch()(batch, torch.device("cpu"))
    assert moving is targets["moving"] and args == (targets["fixed"],) and kwargs == {}
    assert set(targets) == {"moving", "fixed", "moving_label", "fixed_label"}
    assert type(moving) is torch.Tensor  # metadata dropped before the network


def test_prepare_batch_without_labels_gives_image_only_targets() -> None:
    batch = {"moving": torch.rand(1, 1, *SHAPE), "fixed": torch.rand(1, 1, *SHAPE), "patient": ["patient001"]}
    _, targets, _, _ = RegistrationPrepareBatch()(batch)
    assert set(targets) == {"moving", "fixed"}


def test_poly_schedule_follows_the_authors_formula() -> None:
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=4e-4)
    scheduler = lr_scheduler(optimizer, "poly", epochs=4)
    rates = []
    for _ in range(4):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([4e-4 * (1 - epoch / 5) ** 0.9 for epoch in range(4)])


def test_cosine_schedule_decays_to_zero_and_unknown_names_fail() -> None:
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=4e-4)
    scheduler = lr_scheduler(optimizer, "cosine", epochs=4)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_scheduler(optimizer, "step", epochs=4)


def test_warped_label_dice_of_identity_is_the_overlap_of_the_labels() -> None:
    metric = WarpedLabelDice()
    metric.reset()
    moving, fixed = label_box((6, 14)), label_box((4, 12))
    metric.update((torch.zeros(1, 3, *SHAPE), moving, fixed))
    assert metric.compute() == pytest.approx(2 * 6 / 16)  # 8-voxel boxes overlapping on 6
    shift = torch.zeros(1, 3, *SHAPE)
    shift[:, 0] = 2.0  # warped(x) = moving(x + 2) puts the moving box onto the fixed one
    metric.update((shift, moving, fixed))
    assert metric.compute() == pytest.approx((0.75 + 1.0) / 2)


def test_warped_label_dice_without_any_structure_is_nan() -> None:
    metric = WarpedLabelDice()
    metric.reset()
    empty = torch.zeros(1, 1, *SHAPE)
    metric.update((torch.zeros(1, 3, *SHAPE), empty, empty))
    assert math.isnan(metric.compute())


def test_atomic_save_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "models" / "model.pt"
    atomic_torch_save({"weight": torch.ones(2)}, path)
    atomic_torch_save({"weight": torch.zeros(2)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["weight"], torch.zeros(2))
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]


def test_pair_datalist_reads_the_requested_section_of_an_explicit_datalist(tmp_path: Path) -> None:
    record = {"moving": "a.nii.gz", "fixed": "b.nii.gz", "patient": "patient001", "direction": "ED_to_ES"}
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [record], "validation": [], "test": []}))
    (loaded,) = pair_datalist(tmp_path / "absent", datalist, "training")
    assert loaded["patient"] == "patient001" and Path(loaded["moving"]) == tmp_path / "a.nii.gz"


def test_registration_figure_is_an_rgb_image() -> None:
    image = registration_figure(
        torch.rand(1, *SHAPE), torch.rand(1, *SHAPE), torch.rand(1, *SHAPE), torch.zeros(3, *SHAPE)
    )
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
