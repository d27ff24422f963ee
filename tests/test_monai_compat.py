"""scripts/monai_compat.py: each MONAI 1.6.1 workaround does its job, and a canary per trap.

A canary asserts that MONAI still has the trap. When an upgrade fixes one, its canary fails: remove the
workaround from scripts/monai_compat.py (and the canary) instead of carrying it on.
"""

from __future__ import annotations

import inspect
import re
import warnings
from pathlib import Path

import monai.data.meta_tensor
import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor, PersistentDataset
from monai.handlers import CheckpointLoader, CheckpointSaver
from monai.metrics import compute_hausdorff_distance
from monai.networks.blocks import DVF2DDF, Warp
from monai.transforms import Compose, RandomizableTrait, Spacingd, Transform
from torch import nn

from scripts.errors import InvalidInputError
from scripts.monai_compat import (
    GridCachingWarp,
    RecordSafeSpacingd,
    RegistrationCompose,
    WeightsOnlyMetad,
    hausdorff_distance_without_deprecation_warning,
    scaling_and_squaring,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# 1. Warp rebuilds its reference grid on every call ----------------------------------------------------------------


def test_canary_monai_warp_builds_a_new_grid_on_every_call() -> None:
    warp = Warp(mode="bilinear", padding_mode="zeros")
    image, ddf = torch.rand(1, 1, 8, 8, 4), torch.zeros(1, 3, 8, 8, 4)
    warp(image, ddf)
    first = warp.ref_grid
    warp(image, ddf)
    assert warp.ref_grid is not first, "MONAI's Warp now reuses its grid: GridCachingWarp can go"


def test_grid_caching_warp_equals_monai_warp_and_builds_each_grid_once() -> None:
    torch.manual_seed(0)
    caching, plain = GridCachingWarp(), Warp(mode="bilinear", padding_mode="zeros")
    for shape in [(2, 3, 8, 8, 4), (1, 3, 16, 8, 4), (2, 3, 8, 8, 4)]:
        image, ddf = torch.rand(shape[0], 2, *shape[2:]), torch.randn(shape) * 2
        torch.testing.assert_close(caching(image, ddf), plain(image, ddf), atol=1e-6, rtol=1e-6)
    assert len(caching._grids) == 2
    first = caching.get_reference_grid(torch.zeros(2, 3, 8, 8, 4))
    assert first is caching.get_reference_grid(torch.zeros(2, 3, 8, 8, 4))
    assert first.shape == (2, 3, 8, 8, 4) and first[0, 0, 5, 0, 0].item() == 5.0


def test_grid_made_under_inference_mode_is_not_reused_for_training() -> None:
    warp = GridCachingWarp()
    image, ddf = torch.rand(1, 1, 8, 8, 4), torch.zeros(1, 3, 8, 8, 4)
    with torch.inference_mode():
        warp(image, ddf)
    trainable = ddf.clone().requires_grad_()
    warp(image, trainable).sum().backward()
    assert trainable.grad is not None and len(warp._grids) == 2


def test_scaling_and_squaring_is_monai_dvf2ddf_through_the_caching_warp() -> None:
    torch.manual_seed(0)
    velocity = torch.randn(1, 3, 8, 8, 4)
    ours = scaling_and_squaring(7)
    assert isinstance(ours, DVF2DDF) and isinstance(ours.warp_layer, GridCachingWarp)
    reference = DVF2DDF(num_steps=7, mode="bilinear", padding_mode="zeros")
    torch.testing.assert_close(ours(velocity), reference(velocity), atol=1e-5, rtol=1e-5)


# 2. Spacingd updates every "<key>_..." record entry as a legacy metadata dict --------------------------------------


def _pair_record() -> dict:
    affine = torch.diag(torch.tensor([1.5, 1.5, 5.0, 1.0], dtype=torch.float64))
    meta = {"filename_or_obj": "moving.nii.gz"}
    image = MetaTensor(torch.rand(1, 12, 12, 4), affine=affine, meta=dict(meta))
    label = MetaTensor(torch.zeros(1, 12, 12, 4), affine=affine, meta={"filename_or_obj": "moving_gt.nii.gz"})
    return {"moving": image, "moving_label": label, "moving_frame": 0}


def test_canary_monai_spacingd_fails_on_a_pair_record() -> None:
    with pytest.raises(AttributeError):
        Spacingd("moving", pixdim=(3.0, 3.0, 5.0))(_pair_record())


def test_record_safe_spacingd_resamples_like_spacingd_and_leaves_the_other_keys_alone() -> None:
    record = _pair_record()
    result = RecordSafeSpacingd("moving", pixdim=(3.0, 3.0, 5.0))(record)
    expected = Spacingd("moving", pixdim=(3.0, 3.0, 5.0))({"moving": record["moving"]})["moving"]
    assert result["moving"].shape == (1, 6, 6, 4)
    torch.testing.assert_close(result["moving"].as_tensor(), expected.as_tensor())
    assert result["moving_label"] is record["moving_label"] and result["moving_frame"] == 0


# 3. PersistentDataset's weights_only cache and MetaTensor metadata ---------------------------------------------------


class _CountingLoad(Transform):
    """A deterministic transform that makes a MetaTensor with numpy metadata, as NIfTI loading does."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, record: dict) -> dict:
        self.calls += 1
        image = MetaTensor(torch.ones(1, 4, 4, 2), meta={"original_affine": np.eye(4), "dim": np.arange(8)})
        return {"image": image}


def _transform_calls_over_two_reads(tmp_path: Path, with_safe_metadata: bool) -> int:
    load = _CountingLoad()
    transform = Compose([load, WeightsOnlyMetad("image")] if with_safe_metadata else [load])
    # track_meta=True as the bundle's PersistentDataset (scripts.data.preprocessing): MetaTensors are cached.
    dataset = PersistentDataset([{"name": "a"}], transform=transform, cache_dir=tmp_path, track_meta=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns "Corrupt cache file" when the cache does not load
        dataset[0], dataset[0]
    return load.calls


def test_canary_monai_persistent_cache_of_numpy_metadata_never_loads(tmp_path: Path) -> None:
    assert _transform_calls_over_two_reads(tmp_path, with_safe_metadata=False) == 2


def test_weights_only_metadata_makes_the_persistent_cache_hit(tmp_path: Path) -> None:
    assert _transform_calls_over_two_reads(tmp_path, with_safe_metadata=True) == 1


def test_canary_monai_does_not_allowlist_trace_keys_for_weights_only_loading() -> None:
    # Read from MONAI's source: importing scripts.monai_compat (as this module does) allowlists them in this process.
    source = inspect.getsource(monai.data.meta_tensor)
    allowlists = re.findall(r"add_safe_globals\(\[([^\]]*)\]\)", source)
    assert allowlists and not any("TraceKeys" in names for names in allowlists), allowlists


# 4. Compose wraps errors and counts as a random transform ----------------------------------------------------------


def _refuse(record: dict) -> dict:
    raise InvalidInputError("patient001_ES.nii.gz: not a 3-D image")


def test_canary_monai_compose_wraps_errors_in_runtime_error() -> None:
    with pytest.raises(RuntimeError, match="applying transform"):
        Compose([_refuse])({})


def test_canary_monai_compose_counts_as_a_random_transform() -> None:
    # So CacheDataset stops caching at a nested Compose.
    assert isinstance(Compose([]), RandomizableTrait)


def test_registration_compose_raises_input_errors_as_themselves_through_nesting() -> None:
    with pytest.raises(InvalidInputError, match="^patient001_ES.nii.gz: not a 3-D image$"):
        RegistrationCompose([Compose([_refuse])])({})
    with pytest.raises(RuntimeError, match="applying transform"):
        RegistrationCompose([lambda record: record["absent"]])({})


def test_flatten_inlines_nested_compose_and_keeps_the_class() -> None:
    first, second, third = (lambda d: d), (lambda d: d), (lambda d: d)
    flat = RegistrationCompose([Compose([first, Compose([second])]), third]).flatten()
    assert type(flat) is RegistrationCompose and list(flat.transforms) == [first, second, third]


# 5. compute_hausdorff_distance warns about its own internal argument ------------------------------------------------


def _two_squares() -> tuple[torch.Tensor, torch.Tensor]:
    a, b = torch.zeros(1, 1, 16, 16, 4), torch.zeros(1, 1, 16, 16, 4)
    a[..., 4:10, 4:10, 1:3] = 1
    b[..., 5:12, 4:10, 1:3] = 1
    return a, b


def test_canary_monai_hausdorff_distance_warns_about_its_own_argument() -> None:
    with pytest.warns(FutureWarning, match="always_return_as_numpy"):
        compute_hausdorff_distance(*_two_squares(), include_background=True, percentile=95)


def test_quiet_hausdorff_distance_gives_monai_value_without_that_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        ours = hausdorff_distance_without_deprecation_warning(*_two_squares(), include_background=True, percentile=95)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        reference = compute_hausdorff_distance(*_two_squares(), include_background=True, percentile=95)
    assert ours.item() == reference.item() == 2.0


# Traps avoided by design elsewhere ----------------------------------------------------------------------------------


def test_canary_monai_checkpoint_loader_loads_plain_tensors_only(tmp_path: Path) -> None:
    # Every checkpoint the bundle writes holds plain tensors and numbers (scripts/engine/checkpoints.py).
    path = tmp_path / "model.pt"
    torch.save({"model": {"weight": torch.zeros(1, 1), "bias": np.zeros(1)}}, path)
    loader = CheckpointLoader(str(path), {"model": nn.Linear(1, 1)})
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        loader(Engine(lambda engine, batch: None))


def test_canary_monai_checkpoint_saver_writes_non_atomically(tmp_path: Path) -> None:
    # So the bundle saves through scripts/engine/checkpoints.py (temporary file, then os.replace).
    saver = CheckpointSaver(str(tmp_path), {"model": nn.Linear(1, 1)}, save_final=True)
    assert saver._final_checkpoint.save_handler._atomic is False
