"""Specifications of the MemWarp network family (scripts/networks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.networks.blocks import DVF2DDF, Warp

from scripts.losses import MemWarpLoss
from scripts.networks import (
    MEMORY_LEVELS,
    AnatomicalMemory,
    DisplacementFieldNetwork,
    LaplacianWarpingDecoder,
    MemoryFlowHead,
    MemWarp,
    VoxelMorphComparator,
    bundle_network,
    memwarp_network,
    upsample_field_in_plane,
)
from scripts.networks.blocks import per_level

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

# State-dict keys and shapes of bundle_network(architecture, "compact") when the CPU pass was split off the
# architecture (commit 9421c62): the checkpoints of training runs since then must keep loading.
STATE_DICT_SNAPSHOT = Path(__file__).parent / "snapshots" / "compact_state_dicts.json"


def _pair(
    batch: int = 1, shape: tuple[int, int, int] = (32, 32, 4), seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, *shape, generator=generator), torch.rand(batch, 1, *shape, generator=generator)


@pytest.mark.parametrize("shape", [(32, 32, 4), (48, 64, 5), (16, 80, 3)])
@pytest.mark.parametrize("variant", ["memwarp", "lapwarp", "lkunet", "memwarp_no_pyramid"])
def test_output_shapes_at_several_sizes(variant: str, shape: tuple[int, int, int]) -> None:
    net = memwarp_network("tiny", variant).eval()
    moving, fixed = _pair(2, shape)
    with torch.no_grad():
        out = net(moving, fixed)
    assert out["ddf"].shape == (2, 3, *shape)
    assert out["warped"].shape == (2, 1, *shape)
    levels = 1 if variant in ("lkunet", "memwarp_no_pyramid") else 5
    assert len(out["level_ddfs"]) == len(out["residuals"]) == levels
    for level, field in enumerate(out["level_ddfs"]):
        assert field.shape == (2, 3, shape[0] // 2**level, shape[1] // 2**level, shape[2])
    assert len(out["anatomical_logits"]) == {"memwarp": MEMORY_LEVELS, "memwarp_no_pyramid": 1}.get(variant, 0)
    for level, logits in enumerate(out["anatomical_logits"]):
        assert logits.shape == (2, 4, shape[0] // 2**level, shape[1] // 2**level, shape[2])
    assert out["ddf"] is out["level_ddfs"][0]


@pytest.mark.parametrize("preset", ["tiny", "compact"])
def test_field_is_near_zero_at_initialisation(preset: str) -> None:
    torch.manual_seed(0)
    net = memwarp_network(preset).eval()
    moving, fixed = _pair(1, (64, 64, 8))
    with torch.no_grad():
        out = net(moving, fixed)
    assert out["ddf"].abs().max().item() < 0.05  # voxels
    assert torch.allclose(out["warped"][..., 2:-2, 2:-2, 1:-1], moving[..., 2:-2, 2:-2, 1:-1], atol=0.05)


def test_anatomical_probabilities_sum_to_one_and_filters_are_convex_combinations_of_slots() -> None:
    torch.manual_seed(0)
    memory = AnatomicalMemory(num_slots=4, flow_feature_channels=5, hidden_features=(16, 32))
    query = torch.randn(2, memory.slot_length, 6, 6, 3)
    features = torch.randn(2, 5, 6, 6, 3)
    flow, logits, confidence = memory(query, features)
    probabilities = torch.softmax(logits, dim=1)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(2, 6, 6, 3), atol=1e-6)
    slots = memory.slots()
    assert torch.allclose(slots.norm(dim=1), torch.ones(4), atol=1e-6)
    filters = memory.dynamic_filters(probabilities)  # (B, 3, C, ...)
    # Every voxel's filter is sum_k J_k m_k: compare with an explicit loop over slots.
    expected = sum(probabilities[:, k, None, None] * slots[k].view(1, 3, 5, 1, 1, 1) for k in range(4))
    assert torch.allclose(filters, expected, atol=1e-6)
    # The memory's flow is the per-voxel filter applied to the flow features.
    assert torch.allclose(flow, torch.einsum("bdc...,bc...->bd...", filters, features), atol=1e-5)
    # Logits are the slot similarities over the temperature 0.1.
    assert torch.allclose(logits, torch.einsum("bk...,nk->bn...", query, slots) / 0.1, atol=1e-4)
    assert confidence.min() >= -1e-6 and confidence.max() <= 1 + 1e-6


def test_confidence_is_one_for_a_certain_addressing_and_zero_for_a_uniform_one() -> None:
    memory = AnatomicalMemory(4, 2, (8,))
    slots = memory.slots().detach()
    certain = 100.0 * slots[1].view(1, -1, 1, 1, 1).expand(1, -1, 2, 2, 1)
    _, _, confidence = memory(certain, torch.zeros(1, 2, 2, 2, 1))
    assert confidence.min().item() > 0.99
    _, _, confidence = memory(torch.zeros(1, memory.slot_length, 2, 2, 1), torch.zeros(1, 2, 2, 2, 1))
    assert confidence.abs().max().item() < 1e-6


def test_queries_come_from_the_fixed_features_only() -> None:
    torch.manual_seed(0)
    memory = AnatomicalMemory(4, 4, (8,))
    head = MemoryFlowHead(4, 4, memory).eval()
    fixed = torch.randn(1, 4, 8, 8, 2)
    _, logits_a = head(fixed, torch.randn(1, 4, 8, 8, 2))
    _, logits_b = head(fixed, torch.randn(1, 4, 8, 8, 2))
    assert torch.equal(logits_a, logits_b)


def test_one_memory_is_shared_by_the_three_finest_levels() -> None:
    net = memwarp_network("tiny", "memwarp")
    heads = net.decoder.heads
    assert all(isinstance(heads[level], MemoryFlowHead) for level in range(MEMORY_LEVELS))
    assert not any(isinstance(heads[level], MemoryFlowHead) for level in range(MEMORY_LEVELS, len(heads)))
    assert all(heads[level].memory is net.memory for level in range(MEMORY_LEVELS))
    # The shared memory's parameters are counted once.
    names = [name for name, _ in net.named_parameters() if "generator" in name]
    assert names == [name for name in names if name.startswith("memory.")]


def test_ablation_switch_changes_what_is_built() -> None:
    memwarp, lapwarp, lkunet = (memwarp_network("tiny", v) for v in ("memwarp", "lapwarp", "lkunet"))
    assert memwarp.memory is not None and lapwarp.memory is None and lkunet.memory is None
    assert len(lapwarp.decoder.heads) == 5 and len(lkunet.decoder.heads) == 1
    assert lapwarp.decoder.pyramid and not lkunet.decoder.pyramid
    counts = [sum(p.numel() for p in net.parameters()) for net in (memwarp, lapwarp, lkunet)]
    assert counts[0] > counts[1] > counts[2]
    # Table 2 #5: LKU-Net's single full-resolution head, filtered by the memory
    no_pyramid = memwarp_network("tiny", "memwarp_no_pyramid")
    assert not no_pyramid.decoder.pyramid and len(no_pyramid.decoder.heads) == 1
    assert isinstance(no_pyramid.decoder.heads[0], MemoryFlowHead)
    assert no_pyramid.decoder.heads[0].memory is no_pyramid.memory
    with pytest.raises(ValueError, match="unknown variant 'unet'"):
        MemWarp("unet")


def test_memory_without_pyramid_trains_every_parameter_with_the_memwarp_loss() -> None:
    net = memwarp_network("tiny", "memwarp_no_pyramid").train()
    moving, fixed = _pair(2)
    labels = torch.randint(0, 4, (2, 1, 32, 32, 4)).float()
    targets = {"moving": moving, "fixed": fixed, "moving_label": labels, "fixed_label": labels}
    loss = MemWarpLoss()(net(moving, fixed), targets)
    loss.backward()
    assert torch.isfinite(loss)
    assert [name for name, p in net.named_parameters() if p.grad is None] == []


def test_paper_preset_has_the_papers_parameter_count_plus_the_upsampling_convolutions() -> None:
    # The paper reports 47.78 M. Its decoder upsamples with (2, 2, 1) transposed convolutions, ours with (3, 3, 1)
    # convolutions (UpsampleInPlane): 5 more weights per channel pair, 0.54 M more over the four levels.
    count = sum(p.numel() for p in memwarp_network("paper").parameters())
    assert count == 48_498_573
    assert abs(count - 47.78e6) / 47.78e6 < 0.02


def test_compact_preset_has_the_documented_widths_and_parameter_count() -> None:
    network = memwarp_network("compact")
    assert network.encoder.channels == (2, 8, 16, 32, 32)
    assert sum(p.numel() for p in network.parameters()) == 459_433


@pytest.mark.parametrize("architecture", ["memwarp", "lapwarp", "lkunet"])
def test_compact_checkpoints_keep_their_state_dict_keys_and_shapes(architecture: str) -> None:
    expected = json.loads(STATE_DICT_SNAPSHOT.read_text())[architecture]
    state = bundle_network(architecture, "compact").state_dict()
    assert list(state) == list(expected)
    assert {key: list(value.shape) for key, value in state.items()} == expected


def test_network_warps_the_moving_image_by_its_field_in_voxel_units(monkeypatch) -> None:
    # Voxel-unit convention: warped(x) = moving(x + ddf(x)), channel i along spatial axis i.
    net = memwarp_network("tiny").eval()
    shift = torch.tensor([2.0, -3.0, 1.0]).view(1, 3, 1, 1, 1)
    fields = [shift.expand(1, 3, 32 // 2**level, 32 // 2**level, 4).contiguous() for level in range(5)]
    monkeypatch.setattr(
        net.decoder, "forward", lambda features: {"level_ddfs": fields, "residuals": fields, "anatomical_logits": []}
    )
    moving = torch.zeros(1, 1, 32, 32, 4)
    moving[0, 0, 9, 5, 2] = 1.0
    with torch.no_grad():
        warped = net(moving, torch.rand(1, 1, 32, 32, 4))["warped"]
    assert warped[0, 0, 7, 8, 1].item() == pytest.approx(1.0)
    assert warped.sum().item() == pytest.approx(1.0)


def test_network_output_warps_the_moving_image_with_its_own_ddf() -> None:
    torch.manual_seed(0)
    net = memwarp_network("tiny").eval()
    moving, fixed = _pair(1, (32, 32, 4))
    with torch.no_grad():
        out = net(moving, fixed)
        expected = Warp(mode="bilinear", padding_mode="zeros")(moving, out["ddf"])
    assert torch.allclose(out["warped"], expected, atol=1e-6)


def test_in_plane_upsampling_doubles_in_plane_displacements_only() -> None:
    field = torch.ones(1, 3, 4, 4, 3)
    up = upsample_field_in_plane(field)
    assert up.shape == (1, 3, 8, 8, 3)
    assert torch.allclose(up[:, 0], torch.full_like(up[:, 0], 2.0))
    assert torch.allclose(up[:, 2], torch.ones_like(up[:, 2]))


def test_residuals_are_integrated_at_coarse_levels_but_not_at_level_zero() -> None:
    torch.manual_seed(0)
    net = memwarp_network("tiny", "lapwarp").eval()
    # Make every head predict a sizeable constant-free residual so integration is visible.
    for head in net.decoder.heads:
        torch.nn.init.normal_(head.to_flow.weight, std=0.5)
    with torch.no_grad():
        out = net(*_pair(1, (32, 32, 4)))
    integrate = DVF2DDF(num_steps=7, mode="bilinear", padding_mode="zeros")
    coarsest = out["residuals"][4]
    assert torch.allclose(out["level_ddfs"][4], integrate(coarsest), atol=1e-5)
    expected_level0 = out["residuals"][0] + upsample_field_in_plane(out["level_ddfs"][1])
    assert torch.allclose(out["level_ddfs"][0], expected_level0, atol=1e-5)


def test_a_bad_size_gets_a_clear_error() -> None:
    net = memwarp_network("tiny")
    with pytest.raises(ValueError, match=r"divisible by 16.*\(40, 32, 4\)"):
        net(*_pair(1, (40, 32, 4)))
    with pytest.raises(ValueError, match="same shape"):
        net(torch.rand(1, 1, 32, 32, 4), torch.rand(1, 1, 32, 32, 5))
    with pytest.raises(ValueError, match="cat\\(moving, fixed\\)"):
        DisplacementFieldNetwork(net)(torch.rand(1, 3, 32, 32, 4))


def test_per_level_kernel_specification() -> None:
    assert per_level(3, 2) == [(3, 3, 3), (3, 3, 3)]
    assert per_level((5, 5, 3), 2) == [(5, 5, 3), (5, 5, 3)]
    assert per_level([(3, 3, 1), 3], 2) == [(3, 3, 1), (3, 3, 3)]
    with pytest.raises(ValueError, match="one kernel per level"):
        per_level([(3, 3, 1), 3], 5)


def test_wrapper_returns_the_ddf_for_a_pair_and_the_dict_for_two_images() -> None:
    torch.manual_seed(0)
    net = bundle_network("memwarp", "tiny").eval()
    moving, fixed = _pair(1)
    with torch.no_grad():
        full = net(moving, fixed)
        ddf = net(torch.cat([moving, fixed], dim=1))
    assert torch.equal(ddf, full["ddf"])


def test_trace_export_round_trips(tmp_path) -> None:
    torch.manual_seed(0)
    net = bundle_network("memwarp", "tiny").eval()
    pair = torch.rand(1, 2, 32, 32, 4)
    with torch.no_grad():
        traced = torch.jit.trace(net, pair, check_trace=False)
    path = tmp_path / "model.ts"
    torch.jit.save(traced, str(path))
    loaded = torch.jit.load(str(path))
    other = torch.rand(1, 2, 32, 32, 4)
    with torch.no_grad():
        assert torch.allclose(loaded(other), net(other), atol=1e-5)


def test_voxelmorph_comparator_has_the_same_output_keys() -> None:
    net = VoxelMorphComparator().eval()
    with torch.no_grad():
        out = net(*_pair(1, (32, 32, 16)))
    assert set(out) == {"ddf", "warped", "level_ddfs", "residuals", "anatomical_logits"}
    assert out["ddf"].shape == (1, 3, 32, 32, 16) and out["anatomical_logits"] == []


def test_decoder_needs_one_head_per_level() -> None:
    with pytest.raises(ValueError, match="one head per level"):
        LaplacianWarpingDecoder((4, 8), heads=[torch.nn.Identity()])


def test_network_follows_the_input_dtype() -> None:
    net = memwarp_network("tiny").double().eval()
    with torch.no_grad():
        out = net(*(x.double() for x in _pair(1)))
    assert out["ddf"].dtype == torch.float64 and out["anatomical_logits"][0].dtype == torch.float64
