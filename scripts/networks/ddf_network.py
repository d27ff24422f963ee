"""The bundle's ``network_def``: one registration network behind the two call forms MONAI tooling needs."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DisplacementFieldNetwork"]


class DisplacementFieldNetwork(nn.Module):
    """Wraps a registration network for the bundle.

    - ``net(pair)`` with ``pair = cat(moving, fixed)`` of shape (B, 2, H, W, D) returns the displacement
      field (B, 3, H, W, D) only: the one-tensor-in, one-tensor-out form that ``monai.bundle
      verify_net_in_out`` and ``ckpt_export --use_trace True`` require.
    - ``net(moving, fixed)`` returns the wrapped network's full output dict, which training,
      evaluation and inference use. Going through ``forward`` (not a side method) keeps
      DistributedDataParallel's gradient synchronisation intact.

    The same wrapper is the ``network_def`` of every config, so checkpoints (state dicts with the
    ``registration.`` prefix) load in training, evaluation and inference alike.

    Args:
        registration: a network called as ``registration(moving, fixed)`` returning a dict with "ddf".

    Example:
        >>> from scripts.networks import memwarp_network
        >>> net = DisplacementFieldNetwork(memwarp_network("tiny"))
        >>> net(torch.rand(1, 2, 32, 32, 4)).shape
        torch.Size([1, 3, 32, 32, 4])
    """

    def __init__(self, registration: nn.Module) -> None:
        super().__init__()
        self.registration = registration

    def forward(self, images: torch.Tensor, fixed: torch.Tensor | None = None):
        """Return the ddf for ``images = cat(moving, fixed)``, or the full dict for ``(moving, fixed)``."""
        if fixed is not None:
            return self.registration(images, fixed)
        if images.dim() != 5 or images.shape[1] != 2:
            raise ValueError(f"expected (batch, 2, H, W, D) = cat(moving, fixed), got {tuple(images.shape)}")
        return self.registration(images[:, :1], images[:, 1:])["ddf"]
