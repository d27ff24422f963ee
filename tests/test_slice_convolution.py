"""Small batch-1 in-plane convolutions run as 2-D convolutions of the slices (CPU pass): the numbers of F.conv3d."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from scripts.networks import memwarp_network
from scripts.networks.cpu import optimise_for_cpu
from scripts.networks.cpu import slice_convolution as slice_module
from scripts.networks.cpu.slice_convolution import SMALL_INPUT_ELEMENTS, SliceConv3d, conv3d, runs_as_slice_convolution

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

CHANNELS_LAST = torch.channels_last_3d

# (input shape, weight shape, stride, padding)
SLICE_CASES = [
    ((1, 4, 32, 32, 16), (3, 4, 3, 3, 1), 1, (1, 1, 0)),
    ((1, 4, 32, 32, 16), (6, 4, 3, 3, 1), (2, 2, 1), (1, 1, 0)),
    ((1, 9, 16, 16, 8), (4, 9, 1, 1, 1), 1, 0),
    ((1, 8, 16, 12, 5), (8, 8, 5, 5, 1), 1, (2, 2, 0)),
]
# Left to F.conv3d: a batch of 2, a kernel 3 deep, a large input, depth stride, depth padding, groups.
PLAIN_CASES = [
    ((2, 4, 32, 32, 16), (3, 4, 3, 3, 1), 1, (1, 1, 0), 1),
    ((1, 4, 32, 32, 16), (3, 4, 3, 3, 3), 1, 1, 1),
    ((1, 4, 128, 128, 16), (3, 4, 3, 3, 1), 1, (1, 1, 0), 1),
    ((1, 4, 32, 32, 16), (3, 4, 3, 3, 1), 2, (1, 1, 0), 1),
    ((1, 4, 32, 32, 16), (3, 4, 3, 3, 1), 1, 1, 1),
    ((1, 4, 32, 32, 16), (4, 2, 3, 3, 1), 1, (1, 1, 0), 2),
]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape, weight_shape, stride, padding", SLICE_CASES)
def test_small_batch_one_in_plane_convolution_runs_per_slice_with_the_same_result_and_layout(
    shape, weight_shape, stride, padding, channels_last: bool
) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=generator)
    x = x.contiguous(memory_format=CHANNELS_LAST) if channels_last else x
    weight, bias = torch.randn(weight_shape, generator=generator), torch.randn(weight_shape[0], generator=generator)
    assert runs_as_slice_convolution(x, weight, stride, padding)
    result = conv3d(x, weight, bias, stride, padding)
    expected = F.conv3d(x, weight, bias, stride, padding)
    assert result.shape == expected.shape
    torch.testing.assert_close(result, expected, atol=1e-4, rtol=1e-5)
    if channels_last:
        assert result.is_contiguous(memory_format=CHANNELS_LAST) and not result.is_contiguous()
    else:
        assert result.is_contiguous()


@pytest.mark.parametrize("shape, weight_shape, stride, padding, groups", PLAIN_CASES)
def test_other_convolutions_are_left_to_conv3d(shape, weight_shape, stride, padding, groups: int) -> None:
    x, weight = torch.randn(shape), torch.randn(weight_shape)
    assert not runs_as_slice_convolution(x, weight, stride, padding, groups=groups)
    torch.testing.assert_close(
        conv3d(x, weight, None, stride, padding, groups=groups),
        F.conv3d(x, weight, None, stride, padding, groups=groups),
    )


def test_the_size_limit_is_on_channels_times_the_in_plane_size() -> None:
    weight = torch.zeros(2, 5, 3, 3, 1)
    assert runs_as_slice_convolution(torch.zeros(1, 5, 64, 64, 16), weight)  # 5 * 64 * 64 = 20480
    assert not runs_as_slice_convolution(torch.zeros(1, 5, 64, 65, 16), weight)
    assert SMALL_INPUT_ELEMENTS == 20480


def test_slice_convolution_has_the_gradients_of_conv3d() -> None:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 16, 16, 6, generator=generator).contiguous(memory_format=CHANNELS_LAST)
    weight, bias = torch.randn(3, 4, 3, 3, 1, generator=generator), torch.randn(3, generator=generator)
    upstream = torch.randn(1, 3, 16, 16, 6, generator=generator)
    gradients = []
    for function in (conv3d, F.conv3d):
        leaves = [t.clone().requires_grad_(True) for t in (x, weight, bias)]
        (function(leaves[0], leaves[1], leaves[2], 1, (1, 1, 0)) * upstream).sum().backward()
        gradients.append([leaf.grad for leaf in leaves])
    for ours, reference in zip(*gradients):
        torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-5)


def test_conv3d_module_keeps_the_parameters_and_state_dict_of_nn_conv3d() -> None:
    reference = nn.Conv3d(4, 3, (3, 3, 1), padding=(1, 1, 0))
    ours = SliceConv3d(4, 3, (3, 3, 1), padding=(1, 1, 0))
    assert list(ours.state_dict()) == list(reference.state_dict())
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(1, 4, 16, 16, 8)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x))


def test_network_at_batch_one_runs_its_coarse_in_plane_convolutions_per_slice_with_the_same_fields(monkeypatch) -> None:
    torch.manual_seed(0)
    network = optimise_for_cpu(memwarp_network("compact")).eval()
    moving, fixed = torch.rand(1, 1, 128, 128, 16), torch.rand(1, 1, 128, 128, 16)
    decide = slice_module.runs_as_slice_convolution
    decisions: list[bool] = []

    def recording(*args, **kwargs) -> bool:
        decisions.append(decide(*args, **kwargs))
        return decisions[-1]

    monkeypatch.setattr(slice_module, "runs_as_slice_convolution", recording)
    with torch.no_grad():
        sliced = network(moving, fixed)
        assert sum(decisions) >= 10, decisions
        monkeypatch.setattr(slice_module, "runs_as_slice_convolution", lambda *args, **kwargs: False)
        plain = network(moving, fixed)
    torch.testing.assert_close(sliced["ddf"], plain["ddf"], atol=1e-7, rtol=1e-4)
    for ours, reference in zip(sliced["anatomical_logits"], plain["anatomical_logits"]):
        torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)
