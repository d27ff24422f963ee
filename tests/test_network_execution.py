"""The CPU execution pass (scripts/networks/cpu): the same functions and checkpoints, computed faster on a CPU.

Every test compares the optimised computation with the plain modules of scripts/networks.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from torch import nn

from scripts.networks import ConvNormAct, LargeKernelBlock, UpsampleInPlane, bundle_network, memwarp_network
from scripts.networks.blocks import as_triple
from scripts.networks.cpu import (
    FewChannelBatchNorm3d,
    FoldedConvNormAct,
    MergedLargeKernelBlock,
    SliceConv3d,
    fold_batch_norm,
    merged_large_kernel,
    optimise_for_cpu,
    optimise_for_device,
    optimise_modules,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

CHANNELS_LAST = torch.channels_last_3d
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _randomise_batch_norms(module: nn.Module, seed: int = 0) -> None:
    """Give every batch norm non-trivial running statistics and affine parameters."""
    generator = torch.Generator().manual_seed(seed)
    for norm in module.modules():
        if isinstance(norm, nn.BatchNorm3d):
            channels = norm.num_features
            norm.running_mean.copy_(torch.rand(channels, generator=generator) - 0.5)
            norm.running_var.copy_(torch.rand(channels, generator=generator) * 1.5 + 0.5)
            norm.weight.data.copy_(torch.rand(channels, generator=generator) + 0.5)
            norm.bias.data.copy_(torch.rand(channels, generator=generator) - 0.5)


def _plain_and_optimised(module: nn.Module) -> tuple[nn.Module, nn.Module]:
    return module, optimise_for_cpu(copy.deepcopy(module))


def test_folded_conv_norm_act_equals_convolution_then_batch_norm_in_evaluation_mode() -> None:
    torch.manual_seed(0)
    plain = ConvNormAct(3, 5, (3, 3, 1), stride=(2, 2, 1))
    _randomise_batch_norms(plain)
    folded = optimise_modules(copy.deepcopy(plain)).eval()
    assert isinstance(folded, FoldedConvNormAct)
    x = torch.randn(2, 3, 16, 12, 4)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), plain.eval()(x), atol=1e-5, rtol=1e-5)
        weight, bias = fold_batch_norm(plain[0], plain[1])
    assert weight.shape == (5, 3, 3, 3, 1) and bias.shape == (5,)


@pytest.mark.parametrize("large, small", [((5, 5, 3), 3), ((3, 3, 1), (1, 1, 1)), ((5, 5, 1), (3, 3, 3))])
def test_large_kernel_block_merged_into_one_convolution_is_the_same_function(large, small) -> None:
    torch.manual_seed(0)
    plain = LargeKernelBlock(6, large, small)
    _randomise_batch_norms(plain)
    merged = optimise_modules(copy.deepcopy(plain)).eval()
    assert isinstance(merged, MergedLargeKernelBlock)
    x = torch.randn(2, 6, 12, 12, 5)
    with torch.no_grad():
        torch.testing.assert_close(merged(x), plain.eval()(x), atol=1e-5, rtol=1e-5)
        weight, _ = merged_large_kernel(plain)
    # The merged kernel covers both, e.g. (5, 5, 3) for a (5, 5, 1) large and a (3, 3, 3) small kernel.
    assert weight.shape == (6, 6, *(max(a, b) for a, b in zip(as_triple(large), as_triple(small))))


def test_training_mode_uses_batch_statistics_and_updates_the_running_ones() -> None:
    torch.manual_seed(0)
    block = optimise_modules(LargeKernelBlock(4, (3, 3, 1), (1, 1, 1))).train()
    x = torch.randn(2, 4, 8, 8, 3) * 3 + 1
    before = block.branches[0][1].running_mean.clone()
    out = block(x)
    out.sum().backward()
    assert not torch.equal(block.branches[0][1].running_mean, before)
    assert block.branches[0][0].weight.grad is not None
    # Training-mode output is normalised with the batch's own statistics, not the running ones.
    with torch.no_grad():
        block.eval()
        assert not torch.allclose(block(x), out.detach(), atol=1e-3)


def test_few_channel_channels_last_batch_norm_matches_torch_in_values_statistics_gradients_and_layout() -> None:
    torch.manual_seed(0)
    ours, reference = FewChannelBatchNorm3d(4), nn.BatchNorm3d(4)
    x = (torch.randn(2, 4, 8, 8, 3) * 2 + 1).contiguous(memory_format=CHANNELS_LAST)
    x_ours, x_reference = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ours, y_reference = ours(x_ours), reference(x_reference)
    weights = torch.randn_like(y_reference)
    (y_ours * weights).sum().backward()
    (y_reference * weights).sum().backward()
    assert y_ours.is_contiguous(memory_format=CHANNELS_LAST) and not y_ours.is_contiguous()
    torch.testing.assert_close(y_ours, y_reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.running_mean, reference.running_mean)
    torch.testing.assert_close(ours.running_var, reference.running_var)
    torch.testing.assert_close(x_ours.grad, x_reference.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.weight.grad, reference.weight.grad, atol=1e-4, rtol=1e-4)


def test_in_plane_upsampling_has_no_row_or_column_parity() -> None:
    # A transposed convolution of stride 2 computes even and odd rows with different kernel entries: a constant
    # input comes out striped. 0.4.0's memory segmentation had every other row labelled background for that reason.
    torch.manual_seed(0)
    block = UpsampleInPlane(6, 3)
    _randomise_batch_norms(block)
    for mode in (block.train, block.eval):
        mode()
        with torch.no_grad():
            out = block(torch.full((2, 6, 8, 8, 3), 0.7))
        assert out.shape == (2, 3, 16, 16, 3)
        interior = out[:, :, 4:-4, 4:-4]  # away from the zero padding of the (3, 3, 1) convolution
        assert float((interior[:, :, 0::2] - interior[:, :, 1::2]).abs().max()) < 1e-6
        assert float((interior[:, :, :, 0::2] - interior[:, :, :, 1::2]).abs().max()) < 1e-6


@pytest.mark.parametrize("architecture", ["memwarp", "lapwarp", "lkunet"])
def test_the_pass_keeps_every_state_dict_key_shape_and_value(architecture: str) -> None:
    torch.manual_seed(0)
    plain, optimised = _plain_and_optimised(bundle_network(architecture, "tiny"))
    plain_state, optimised_state = plain.state_dict(), optimised.state_dict()
    assert list(optimised_state) == list(plain_state)
    for key, value in plain_state.items():
        assert torch.equal(optimised_state[key], value), key
    optimised.load_state_dict(plain_state)  # strict: a checkpoint of either loads into the other
    plain.load_state_dict(optimised_state)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_the_pass_gives_the_same_outputs_gradients_and_statistics(mode: str) -> None:
    torch.manual_seed(0)
    plain, optimised = _plain_and_optimised(memwarp_network("tiny"))
    _randomise_batch_norms(plain)
    optimised.load_state_dict(plain.state_dict())
    batch = 1 if mode == "eval" else 2  # batch 1 exercises the slice convolutions
    generator = torch.Generator().manual_seed(1)
    moving, fixed = torch.rand(batch, 1, 32, 32, 4, generator=generator), torch.rand(
        batch, 1, 32, 32, 4, generator=generator
    )
    outputs = []
    for network in (plain, optimised):
        getattr(network, mode)()
        out = network(moving, fixed)
        (out["ddf"].square().mean() + out["anatomical_logits"][0].square().mean()).backward()
        outputs.append(out)
    for name in ("ddf", "warped"):
        torch.testing.assert_close(outputs[1][name], outputs[0][name], atol=1e-5, rtol=1e-4)
        assert outputs[1][name].is_contiguous()  # outputs leave in the standard layout
    for ours, reference in zip(outputs[1]["anatomical_logits"], outputs[0]["anatomical_logits"]):
        torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)
        assert ours.is_contiguous()
    for (name, ours), reference in zip(optimised.named_parameters(), plain.parameters()):
        torch.testing.assert_close(ours.grad, reference.grad, atol=1e-5, rtol=1e-3, msg=name)
    for (name, ours), reference in zip(optimised.named_buffers(), plain.buffers()):
        torch.testing.assert_close(ours, reference, atol=1e-6, rtol=1e-5, msg=name)


def test_the_pass_stores_kernels_and_computes_features_channels_last() -> None:
    network = optimise_for_cpu(memwarp_network("tiny")).eval()
    for module in network.modules():
        if isinstance(module, nn.Conv3d):
            assert isinstance(module, SliceConv3d)
            assert module.weight.is_contiguous(memory_format=CHANNELS_LAST)
            if module.in_channels > 1 and module.kernel_size != (1, 1, 1):  # else both layouts coincide
                assert not module.weight.is_contiguous()
    with torch.no_grad():
        features = network.encoder(torch.rand(2, 1, 32, 32, 4))
    assert all(f.is_contiguous(memory_format=CHANNELS_LAST) and not f.is_contiguous() for f in features)


def test_a_wide_network_keeps_the_standard_layout() -> None:
    # As the paper preset (32-256 channels): oneDNN's wide 3-D convolutions are not faster channels-last.
    network = optimise_for_cpu(memwarp_network("tiny", channels=(4, 4, 8, 8, 64))).eval()
    assert any(isinstance(module, SliceConv3d) for module in network.modules())
    assert all(parameter.is_contiguous() for parameter in network.parameters())
    with torch.no_grad():
        output = network(torch.rand(1, 1, 32, 32, 4), torch.rand(1, 1, 32, 32, 4))
    assert output["ddf"].is_contiguous()


def test_the_pass_is_idempotent_and_leaves_other_networks_alone() -> None:
    network = optimise_for_cpu(memwarp_network("tiny"))
    classes = [type(module) for module in network.modules()]
    assert [type(module) for module in optimise_for_cpu(network).modules()] == classes
    voxelmorph = bundle_network("voxelmorph")
    before = [type(module) for module in voxelmorph.modules()]
    assert [type(module) for module in optimise_for_cpu(voxelmorph).modules()] == before


def test_an_optimiser_built_before_the_pass_keeps_training_the_same_parameters() -> None:
    network = memwarp_network("tiny")
    parameters = list(network.parameters())
    optimise_for_cpu(network)
    assert all(ours is theirs for ours, theirs in zip(network.parameters(), parameters))


def test_nothing_cpu_specific_applies_on_another_device() -> None:
    # The "meta" device stands for CUDA here: no memory, same dispatch of optimise_for_device.
    network = optimise_for_device(bundle_network("memwarp", "tiny"), "meta")
    assert next(network.parameters()).device.type == "meta"
    cpu_classes = (SliceConv3d, FoldedConvNormAct, FewChannelBatchNorm3d)
    assert not any(isinstance(module, cpu_classes) for module in network.modules())
    optimised = optimise_for_device(bundle_network("memwarp", "tiny"), torch.device("cpu"))
    assert any(isinstance(module, SliceConv3d) for module in optimised.modules())


def test_upsampling_then_fusion_matches_the_plain_modules_on_channels_last_and_mixed_inputs() -> None:
    # The decoder concatenates warped (standard) and upsampled (channels-last) features: the first convolution
    # takes them in the kernel's layout and computes the same numbers.
    torch.manual_seed(0)
    plain, optimised = _plain_and_optimised(memwarp_network("tiny"))
    _randomise_batch_norms(plain)
    optimised.load_state_dict(plain.state_dict())
    fuse_plain, fuse_optimised = plain.decoder.fuse[1].eval(), optimised.decoder.fuse[1].eval()
    skip = torch.randn(2, 4, 16, 16, 4)
    upsampled = torch.randn(2, 4, 16, 16, 4).contiguous(memory_format=CHANNELS_LAST)
    mixed = torch.cat([skip, upsampled], dim=1)
    assert mixed.is_contiguous()
    with torch.no_grad():
        expected = fuse_plain(mixed)
        result = fuse_optimised(mixed)
    torch.testing.assert_close(result, expected, atol=1e-5, rtol=1e-5)
    assert result.is_contiguous(memory_format=CHANNELS_LAST) and not result.is_contiguous()


@pytest.mark.parametrize("stack", [["train.json"], ["train.json", "evaluate.json"], ["inference.json"]])
def test_the_configs_build_their_network_through_the_cpu_pass(stack: list[str]) -> None:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / name) for name in stack])
    parser["network_preset"], parser["device"] = "tiny", "$torch.device('cpu')"
    network = parser.get_parsed_content("network")
    assert network is parser.get_parsed_content("network_def")  # optimised in place: checkpoints load into either
    assert any(isinstance(module, SliceConv3d) for module in network.modules())


def test_the_multi_process_training_config_wraps_the_optimised_network() -> None:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json")])
    assert parser["network"]["module"]["_target_"] == "scripts.networks.cpu.optimise_for_device"
    assert parser["network"]["module"]["network"] == "@network_def"
