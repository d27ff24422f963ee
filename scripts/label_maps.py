"""Label maps from per-class scores: the class of the highest score at every voxel, fast on CPU.

``torch.argmax`` over a dimension that is not the innermost one is slow on CPU in torch 2.13: for the memory's
(1, 4, 128, 128, 16) logits, 49 ms over the class axis against 2.6 ms for ``torch.max(...).indices`` (2 threads,
an idle machine), and the same answer: both return the first of equal maxima. Every label map made from scores
(inference, evaluation metrics, the out-of-distribution warning, cine tracking) goes through
:func:`label_map_from_scores`.
"""

from __future__ import annotations

import torch

__all__ = ["label_map_from_scores"]


def label_map_from_scores(scores: torch.Tensor, dim: int = 1, keepdim: bool = False) -> torch.Tensor:
    """The index of the highest score along ``dim`` (``torch.argmax(scores, dim, keepdim)``, first one on ties).

    Args:
        scores: per-class scores (logits or probabilities), e.g. (B, C, H, W, D) with ``dim=1``.
        dim: the class dimension.
        keepdim: keep ``dim`` as a dimension of size 1.

    Returns:
        int64 tensor of class indices, ``scores``' shape without ``dim`` (or with size 1 there).
    """
    return torch.max(scores, dim=dim, keepdim=keepdim).indices
