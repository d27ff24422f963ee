"""label_map_from_scores: torch.argmax's answer (first maximum on ties) along any dimension, faster on CPU."""

import pytest
import torch

from scripts.label_maps import label_map_from_scores


@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("keepdim", [False, True])
def test_equals_argmax_including_ties(dim: int, keepdim: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    # few distinct values, so that many voxels have two or more classes tied at their maximum
    scores = torch.randint(0, 3, (4, 5, 6, 7), generator=generator).float()
    expected = torch.argmax(scores, dim=dim, keepdim=keepdim)
    tied = (scores == scores.amax(dim=dim, keepdim=True)).sum(dim=dim) > 1
    assert tied.float().mean() > 0.2  # the tie-breaking is really exercised
    result = label_map_from_scores(scores, dim=dim, keepdim=keepdim)
    assert result.dtype == torch.int64
    assert torch.equal(result, expected)


def test_channels_last_logits() -> None:
    logits = torch.randn(1, 4, 8, 8, 3, generator=torch.Generator().manual_seed(1))
    channels_last = logits.contiguous(memory_format=torch.channels_last_3d)
    assert torch.equal(label_map_from_scores(channels_last, dim=1, keepdim=True), logits.argmax(dim=1, keepdim=True))
