"""Training augmentation: the ED/ES swap and in-plane flips move images and labels together."""

from __future__ import annotations

import itertools

import torch
from monai.data import MetaTensor
from monai.transforms import RandomizableTrait

from scripts.data import RandSwapMovingFixedd, registration_augmentation

KEYS = ("moving", "fixed", "moving_label", "fixed_label")


def make_sample(seed: int = 0) -> dict:
    """A small preprocessed-like sample; each label map is derived from its own image, so they must travel together."""
    generator = torch.Generator().manual_seed(seed)
    moving, fixed = (torch.rand((1, 12, 10, 4), generator=generator) for _ in range(2))
    return {
        "moving": MetaTensor(moving),
        "fixed": MetaTensor(fixed),
        "moving_label": MetaTensor(torch.bucketize(moving, torch.tensor([0.25, 0.5, 0.75])).float()),
        "fixed_label": MetaTensor(torch.bucketize(fixed, torch.tensor([0.25, 0.5, 0.75])).float()),
        "moving_frame": 0,
        "patient": "patient001",
        "group": "NOR",
        "direction": "ED_to_ES",
    }


def flipped(tensor: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
    """Flip spatial axes (0-based, after the channel axis)."""
    tensor = torch.as_tensor(tensor)
    return torch.flip(tensor, [a + 1 for a in axes]) if axes else tensor


def test_swap_exchanges_images_labels_frames_and_reverses_the_direction():
    sample = make_sample()
    out = RandSwapMovingFixedd(prob=1.0)(sample)
    for first, second in (("moving", "fixed"), ("moving_label", "fixed_label")):
        assert out[first] is sample[second] and out[second] is sample[first]
    assert out["fixed_frame"] == 0 and "moving_frame" not in out  # a cine index follows its image
    assert out["direction"] == "ES_to_ED"
    assert (out["patient"], out["group"]) == ("patient001", "NOR")


def test_no_augmentation_with_zero_probabilities():
    sample = make_sample()
    out = registration_augmentation(swap_prob=0.0, flip_prob=0.0)(dict(sample))
    for key in KEYS:
        assert torch.equal(torch.as_tensor(out[key]), torch.as_tensor(sample[key]))
    assert out["direction"] == "ED_to_ES"


def test_random_swaps_and_flips_move_all_four_keys_consistently():
    augmentation = registration_augmentation(swap_prob=0.5, flip_prob=0.5)
    combinations = set()
    for seed in range(40):
        sample = make_sample(seed)
        out = augmentation.set_random_state(seed)(dict(sample))
        matches = []
        for swap, axes in itertools.product((False, True), ((), (0,), (1,), (0, 1))):
            order = ("fixed", "moving") if swap else ("moving", "fixed")
            expected = {
                "moving": flipped(sample[order[0]], axes),
                "fixed": flipped(sample[order[1]], axes),
                "moving_label": flipped(sample[f"{order[0]}_label"], axes),
                "fixed_label": flipped(sample[f"{order[1]}_label"], axes),
            }
            if all(torch.equal(torch.as_tensor(out[k]), expected[k]) for k in KEYS):
                matches.append((swap, axes))
        assert len(matches) == 1, seed  # exactly one swap/flip combination explains all four outputs
        swap, axes = matches[0]
        assert out["direction"] == ("ES_to_ED" if swap else "ED_to_ES")
        combinations.add(matches[0])
    assert len(combinations) == 8  # every combination occurs: the draws are random, yet shared by the four keys


def test_flips_do_not_touch_the_through_plane_axis():
    out = registration_augmentation(swap_prob=0.0, flip_prob=1.0)(make_sample())
    expected = flipped(make_sample()["moving"], (0, 1))
    assert torch.equal(torch.as_tensor(out["moving"]), expected)


def test_augmentation_starts_with_a_random_transform_so_it_stays_off_the_cache():
    # CacheDataset caches up to the first random transform: the augmentation must start with one.
    for switch in (False, True):
        transforms = registration_augmentation(domain_randomisation=switch).transforms
        assert isinstance(transforms[0], RandomizableTrait)
