"""How the networks execute: evaluation-mode re-parameterisation, memory layouts and the warp's grid cache.

None of these may change what a network computes; every test compares against the plain computation.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F
from monai.networks.blocks import Warp
from torch import nn

from scripts.networks import memwarp_network
from scripts.networks.blocks import (
    BatchNorm3d,
    ConvNormAct,
    LargeKernelBlock,
    UpsampleInPlane,
    as_triple,
    fold_batch_norm,
)
from scripts.networks.warp_layers import GridCachingWarp, scaling_and_squaring

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

CHANNELS_LAST = torch.channels_last_3d


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


def _unfolded_conv_norm_act(block: ConvNormAct, x: torch.Tensor) -> torch.Tensor:
    conv, norm, activation = block
    return activation(nn.BatchNorm3d.forward(norm, conv(x)))


def _unfolded_large_kernel(block: LargeKernelBlock, x: torch.Tensor) -> torch.Tensor:
    out = x
    for conv, norm in block.branches:
        out = out + nn.BatchNorm3d.forward(norm, conv(x))
    return block.activation(out)


def test_folded_conv_norm_act_equals_convolution_then_batch_norm_in_evaluation_mode() -> None:
    torch.manual_seed(0)
    block = ConvNormAct(3, 5, (3, 3, 1), stride=(2, 2, 1))
    _randomise_batch_norms(block)
    block.eval()
    x = torch.randn(2, 3, 16, 12, 4)
    with torch.no_grad():
        expected = _unfolded_conv_norm_act(block, x)
        assert torch.allclose(block(x), expected, atol=1e-5)
        weight, bias = fold_batch_norm(block[0], block[1])
    assert weight.shape == (5, 3, 3, 3, 1) and bias.shape == (5,)


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


def test_folded_in_plane_upsampling_equals_convolution_batch_norm_then_interpolation() -> None:
    torch.manual_seed(0)
    block = UpsampleInPlane(6, 3)
    _randomise_batch_norms(block)
    block.eval()
    x = torch.randn(2, 6, 8, 8, 3)
    with torch.no_grad():
        expected = F.interpolate(
            _unfolded_conv_norm_act(block.conv, x), scale_factor=(2, 2, 1), mode="trilinear", align_corners=False
        )
        assert torch.allclose(block(x), expected, atol=1e-5)


@pytest.mark.parametrize("large, small", [((5, 5, 3), 3), ((3, 3, 1), (1, 1, 1)), ((5, 5, 1), (3, 3, 3))])
def test_large_kernel_block_re_parameterised_into_one_convolution_is_the_same_function(large, small) -> None:
    torch.manual_seed(0)
    block = LargeKernelBlock(6, large, small)
    _randomise_batch_norms(block)
    block.eval()
    x = torch.randn(2, 6, 12, 12, 5)
    with torch.no_grad():
        expected = _unfolded_large_kernel(block, x)
        merged, _ = block.merged_weight_and_bias()
        assert torch.allclose(block(x), expected, atol=1e-5)
    # The merged kernel covers both, e.g. (5, 5, 3) for a (5, 5, 1) large and a (3, 3, 3) small kernel.
    assert merged.shape == (6, 6, *(max(a, b) for a, b in zip(as_triple(large), as_triple(small))))


def test_training_mode_uses_batch_statistics_and_updates_the_running_ones() -> None:
    torch.manual_seed(0)
    block = LargeKernelBlock(4, (3, 3, 1), (1, 1, 1)).train()
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
    ours, reference = BatchNorm3d(4), nn.BatchNorm3d(4)
    x = (torch.randn(2, 4, 8, 8, 3) * 2 + 1).contiguous(memory_format=CHANNELS_LAST)
    x_ours, x_reference = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ours, y_reference = ours(x_ours), reference(x_reference)
    weights = torch.randn_like(y_reference)
    (y_ours * weights).sum().backward()
    (y_reference * weights).sum().backward()
    assert y_ours.is_contiguous(memory_format=CHANNELS_LAST) and not y_ours.is_contiguous()
    assert torch.allclose(y_ours, y_reference, atol=1e-5)
    assert torch.allclose(ours.running_mean, reference.running_mean)
    assert torch.allclose(ours.running_var, reference.running_var)
    assert torch.allclose(x_ours.grad, x_reference.grad, atol=1e-5)
    assert torch.allclose(ours.weight.grad, reference.weight.grad, atol=1e-4)


def test_network_gives_the_same_fields_with_and_without_re_parameterisation() -> None:
    torch.manual_seed(0)
    net = memwarp_network("tiny")
    _randomise_batch_norms(net)
    net.eval()
    moving, fixed = torch.rand(1, 1, 32, 32, 4), torch.rand(1, 1, 32, 32, 4)
    with torch.no_grad():
        folded = net(moving, fixed)
        ConvNormAct.forward, saved_conv = (lambda self, x: _unfolded_conv_norm_act(self, x)), ConvNormAct.forward
        LargeKernelBlock.forward, saved_large = (
            lambda self, x: _unfolded_large_kernel(self, x)
        ), LargeKernelBlock.forward
        try:
            plain = net(moving, fixed)
        finally:
            ConvNormAct.forward, LargeKernelBlock.forward = saved_conv, saved_large
    scale = plain["ddf"].abs().max()
    assert (folded["ddf"] - plain["ddf"]).abs().max() <= 1e-4 * scale
    assert torch.allclose(folded["anatomical_logits"][0], plain["anatomical_logits"][0], atol=1e-3)


def test_channels_last_levels_hold_channels_last_kernels_and_features() -> None:
    net = memwarp_network("tiny", channels_last_levels=2).eval()
    assert net.encoder.levels[0][0][0].weight.is_contiguous(memory_format=CHANNELS_LAST)
    assert net.encoder.levels[2][0][0].weight.is_contiguous()
    assert net.decoder.fuse[1][0][0].weight.is_contiguous(memory_format=CHANNELS_LAST)
    assert net.decoder.fuse[2][0][0].weight.is_contiguous()
    with torch.no_grad():
        features = net.encoder(torch.rand(2, 1, 32, 32, 4))
    # Level 0 starts from one-channel images, whose two layouts coincide: the kernels decide.
    assert features[0].is_contiguous(memory_format=CHANNELS_LAST) and not features[0].is_contiguous()
    assert features[2].is_contiguous()


def test_grid_caching_warp_equals_monai_warp_and_builds_each_grid_once() -> None:
    torch.manual_seed(0)
    caching, plain = GridCachingWarp(), Warp(mode="bilinear", padding_mode="zeros")
    for shape in [(2, 3, 8, 8, 4), (1, 3, 16, 8, 4), (2, 3, 8, 8, 4)]:
        image, ddf = torch.rand(shape[0], 2, *shape[2:]), torch.randn(shape) * 2
        assert torch.allclose(caching(image, ddf), plain(image, ddf), atol=1e-6)
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


def test_scaling_and_squaring_is_monai_dvf2ddf_with_the_caching_warp() -> None:
    from monai.networks.blocks import DVF2DDF

    torch.manual_seed(0)
    velocity = torch.randn(1, 3, 8, 8, 4)
    ours = scaling_and_squaring(7)
    assert isinstance(ours, DVF2DDF) and isinstance(ours.warp_layer, GridCachingWarp)
    reference = DVF2DDF(num_steps=7, mode="bilinear", padding_mode="zeros")
    assert torch.allclose(ours(velocity), reference(velocity), atol=1e-5)
