"""Domain randomisation: one geometry for the whole pair, one scanner per pair, labels exact, images in [0, 1]."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset, MetaTensor
from monai.transforms import Lambdad

from scripts.data import registration_augmentation
from scripts.data.domain_randomisation import (
    DomainRandomisationSwitch,
    RandPairGeometryd,
    RandTissueIntensityd,
    piecewise_linear,
)
from scripts.engine import DomainRandomisationSchedule

SIZE = (32, 32, 6)


def disc_sample(centre=(16.0, 16.0), radius: float = 6.0) -> dict:
    """Moving and fixed: the same bright disc (label 3) on a dim background, a darker ring around it (label 2)."""
    x, y = torch.meshgrid(torch.arange(SIZE[0]).float(), torch.arange(SIZE[1]).float(), indexing="ij")
    distance = torch.hypot(x - centre[0], y - centre[1])[..., None].expand(SIZE)
    label = torch.zeros(SIZE)
    label[distance <= radius + 3] = 2.0
    label[distance <= radius] = 3.0
    image = torch.full(SIZE, 0.2)
    image[label == 2] = 0.5
    image[label == 3] = 1.0
    return {
        "moving": MetaTensor(image[None].clone()),
        "fixed": MetaTensor(image[None].clone()),
        "moving_label": MetaTensor(label[None].clone()),
        "fixed_label": MetaTensor(label[None].clone()),
    }


def centroid(mask: torch.Tensor) -> tuple[float, float]:
    """In-plane centre of mass (voxels) of a (1, X, Y, Z) mask."""
    points = torch.nonzero(mask[0] > 0.5).float()
    return float(points[:, 0].mean()), float(points[:, 1].mean())


def geometry(**parameters) -> RandPairGeometryd:
    transform = RandPairGeometryd(prob=1.0)
    transform._do_transform = True
    transform.parameters = {"rotation": 0.0, "content_scale": (1.0, 1.0, 1.0), "shift": (0.0, 0.0, 0.0), **parameters}
    transform.randomize = lambda data=None: None  # keep the parameters set above
    return transform


def test_content_scale_grows_the_structure_by_its_factor():
    out = geometry(content_scale=(1.4, 1.4, 1.0))(disc_sample())
    area_before = float((disc_sample()["fixed_label"] == 3).sum())
    area_after = float((out["fixed_label"] == 3).sum())
    assert area_after / area_before == pytest.approx(1.4**2, rel=0.08)


def test_rotation_turns_the_content_about_the_grid_centre_in_plane():
    centre = ((SIZE[0] - 1) / 2, (SIZE[1] - 1) / 2)
    sample = disc_sample(centre=(centre[0] + 8.0, centre[1]), radius=3.0)
    out = geometry(rotation=math.pi / 2)(sample)
    row, column = centroid(out["moving_label"] == 3)
    # +90 degrees takes the offset (+8, 0) from the centre to (0, +8), whatever the sense convention: check both
    # axes and that the structure kept its size and the slices did not mix.
    assert abs(row - centre[0]) < 0.6 and abs(abs(column - centre[1]) - 8.0) < 0.6
    assert torch.equal(out["moving_label"][..., 0], out["moving_label"][..., 3])


def test_one_geometry_for_both_frames_and_their_labels():
    transform = RandPairGeometryd(prob=1.0)
    for seed in range(5):
        out = transform.set_random_state(seed)(disc_sample())
        assert torch.equal(torch.as_tensor(out["moving"]), torch.as_tensor(out["fixed"]))
        assert torch.equal(torch.as_tensor(out["moving_label"]), torch.as_tensor(out["fixed_label"]))
        labels = torch.as_tensor(out["moving_label"])
        assert set(labels.unique().tolist()) <= {0.0, 2.0, 3.0}  # nearest neighbour: no new label values
        # the image still follows its label: the brightest structure is where label 3 is
        assert float(out["moving"][labels == 3].mean()) > float(out["moving"][labels == 0].mean())


def test_piecewise_linear_lookup_passes_through_its_knots():
    knots = torch.tensor([0.3, 0.9, 0.1])
    values = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    assert torch.allclose(piecewise_linear(values, knots), torch.tensor([0.3, 0.6, 0.9, 0.5, 0.1]))


def test_inverted_lookup_inverts_the_contrast_of_both_frames_alike():
    transform = RandTissueIntensityd(prob=1.0, monotone_prob=0.0, inverted_prob=1.0, structure_prob=0.0)
    out = transform.set_random_state(0)(disc_sample())
    for key in ("moving", "fixed"):
        labels = disc_sample()[f"{key}_label"]
        assert float(out[key][labels == 3].mean()) < float(out[key][labels == 0].mean())  # bright blood became dark
    assert torch.equal(torch.as_tensor(out["moving"]), torch.as_tensor(out["fixed"]))


def test_structure_intensity_is_drawn_once_per_pair_and_keeps_the_texture():
    sample = disc_sample()
    ramp = torch.linspace(0.0, 0.1, SIZE[0])[:, None, None]
    for key in ("moving", "fixed"):
        sample[key] = sample[key] + ramp * (sample[f"{key}_label"] == 3)
    transform = RandTissueIntensityd(prob=1.0, monotone_prob=1.0, structure_prob=1.0, edge_sigma=0.0)
    out = transform.set_random_state(3)(sample)
    inside = disc_sample()["moving_label"] == 3
    assert torch.allclose(out["moving"][inside], out["fixed"][inside])
    assert float(out["moving"][inside].std()) > 0.0  # the texture inside the structure survives


@pytest.mark.parametrize("seed", range(4))
def test_the_full_chain_keeps_images_in_unit_range_labels_exact_and_metadata(seed):
    augmentation = registration_augmentation(swap_prob=0.5, flip_prob=0.5, domain_randomisation=True)
    out = augmentation.set_random_state(seed)(disc_sample())
    for key in ("moving", "fixed"):
        assert isinstance(out[key], MetaTensor) and out[key].dtype == torch.float32
        assert out[key].shape == (1, *SIZE)
        assert float(out[key].min()) >= 0.0 and float(out[key].max()) <= 1.0
    for key in ("moving_label", "fixed_label"):
        assert set(torch.as_tensor(out[key]).unique().tolist()) <= {0.0, 2.0, 3.0}


def test_domain_randomisation_switch_off_leaves_only_swap_and_flips():
    names = [type(t).__name__ for t in registration_augmentation(domain_randomisation=False).transforms]
    assert names == ["RandSwapMovingFixedd", "RandFlipd", "RandFlipd"]
    on = registration_augmentation(domain_randomisation=True).transforms
    assert [type(t).__name__ for t in on] == names + ["DomainRandomisationSwitch"]
    inner = [type(t).__name__ for t in on[-1].chain.transforms]
    assert "RandPairGeometryd" in inner and "RandTissueIntensityd" in inner and "RandBiasFieldd" in inner


def test_a_switched_off_chain_is_skipped_and_running_worker_processes_see_the_switch():
    switch = DomainRandomisationSwitch([Lambdad("moving", lambda image: image + 1.0)])
    data = [{"moving": torch.zeros(2)}]
    loader = DataLoader(Dataset(data, transform=switch), batch_size=1, num_workers=1, persistent_workers=True)
    assert float(next(iter(loader))["moving"].sum()) == 2.0
    switch.active = False  # in this process; the worker started above must follow
    assert float(next(iter(loader))["moving"].sum()) == 0.0
    switch.active = True
    assert float(next(iter(loader))["moving"].sum()) == 2.0


def test_the_schedule_turns_randomisation_on_at_its_epoch_also_after_a_resume(caplog):
    augmentation = registration_augmentation(domain_randomisation=True)
    schedule = DomainRandomisationSchedule(augmentation, from_epoch=3)
    seen: list[bool] = []
    engine = Engine(lambda engine, batch: seen.append(schedule.switches[0].active))
    schedule.attach(engine)
    with caplog.at_level("INFO", logger="scripts.engine.curriculum"):
        engine.run([0], max_epochs=4)
    assert seen == [False, False, True, True]
    assert [r.getMessage() for r in caplog.records] == [
        "epoch 1: domain randomisation off (on from epoch 3)",
        "epoch 3: domain randomisation on (on from epoch 3)",
    ]
    resumed = registration_augmentation(domain_randomisation=True)
    resumed.transforms[-1].active = False
    seen.clear()
    engine = Engine(lambda engine, batch: seen.append(resumed.transforms[-1].active))
    DomainRandomisationSchedule(resumed, from_epoch=3).attach(engine)
    engine.load_state_dict({"iteration": 3, "epoch_length": 1, "max_epochs": 4})
    engine.run([0])
    assert seen == [True]
    with pytest.raises(ValueError, match="domain_randomisation_from_epoch must be >= 1, got 0"):
        DomainRandomisationSchedule(augmentation, from_epoch=0)


def test_train_config_switches_randomisation_on_at_epoch_7_in_the_transform_the_dataset_runs():
    parser = ConfigParser()
    parser.read_config(str(Path(__file__).resolve().parents[1] / "configs" / "train.json"))
    assert parser["domain_randomisation_from_epoch"] == 7
    index = next(i for i, h in enumerate(parser["train"]["handlers"]) if h["_target_"].endswith("Schedule"))
    schedule = parser.get_parsed_content(f"train#handlers#{index}")
    augmentation = parser.get_parsed_content("train#random_transforms")
    assert schedule.from_epoch == 7 and len(schedule.switches) == 1
    assert schedule.switches[0] is augmentation.transforms[-1]


@pytest.mark.parametrize(
    "value, expected", [(None, True), ("false", False), ("False", False), (False, False), ("true", True)]
)
def test_train_config_switch_reads_command_line_strings(value, expected):
    # `--domain_randomisation false` reaches the config as the string "false", which is truthy in Python.
    parser = ConfigParser()
    parser.read_config(str(Path(__file__).resolve().parents[1] / "configs" / "train.json"))
    if value is not None:
        parser["domain_randomisation"] = value
    names = [type(t).__name__ for t in parser.get_parsed_content("train#random_transforms").transforms]
    assert ("DomainRandomisationSwitch" in names) is expected
