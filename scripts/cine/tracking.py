"""Tracking: the displacement from ED to every frame of a cine, with the registration network, frames batched.

All fields here live on the network grid (H, W, D), in voxels of that grid, in the bundle's convention
(:mod:`scripts.warping`): the field of frame t has moving = ED and fixed = frame t, so the point x of frame t is
the point x + d_t(x) of ED, and ``warp(ED image, d_t)`` resembles frame t. The ED frame's own field is zero.

Three ways to get ``d_t`` (``mode``), each with about one network call per frame except ``blend`` (two):

- ``"direct"``: register ED to frame t for every t (independent pairs; errors do not accumulate, but the
  network must bridge the whole motion up to end-systole);
- ``"sequential"``: register each frame to the next, going round the cycle from ED, and compose:
  ``d_t(x) = e_t(x) + d_{t-1}(x + e_t(x))`` with ``e_t`` the field of the pair (frame t-1 -> frame t), as
  frame-to-frame trackers do (small motions per pair, but errors add up along the cycle);
- ``"blend"``: both, mixed at every step, ``d_t = w * direct_t + (1 - w) * compose(e_t, d_{t-1})``, so the
  composition is pulled back toward the direct field at each frame (drift cannot build up; ``w`` =
  ``blend_weight``). In the spirit of ukbb_cardiac's combination of forward and backward composition, not a copy.

Which one is better on the phantom is measured by ``python -m scripts.benchmark cine --tracking ...`` (see
docs/README.md, "Cine function").

Every frame goes through the network's encoder once, however many pairs it takes part in (the ED frame of ``direct``
is in every pair; each frame of ``sequential`` is the fixed image of one pair and the moving image of the next;
``blend`` registers both kinds of pair in one pass): a MemWarp network (:class:`scripts.networks.MemWarp`, in
evaluation mode) registers from encoded frames (:class:`EncodedFrames`), and only its decoder runs per pair. The
fields equal the network's ``forward`` on the same pairs up to float rounding (``tests/test_cine_workflow.py``);
other networks are called pair by pair.

With ``refine_steps > 0`` every network field is refined on its own pair before it is used (instance optimisation,
:func:`scripts.inference.refinement.refine_displacement` with its default settings): each pair costs
``refine_steps`` extra gradient steps.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
from torch import nn

from scripts.inference.refinement import refine_displacement
from scripts.label_maps import label_map_from_scores
from scripts.networks import DisplacementFieldNetwork, MemWarp
from scripts.warping import warp_image

__all__ = [
    "TRACKING_MODES",
    "EncodedFrames",
    "compose_fields",
    "cycle_order",
    "encodable",
    "register_pairs",
    "segment_frame",
    "track_cine",
]

TRACKING_MODES = ("direct", "sequential", "blend")


def cycle_order(n_frames: int, ed_index: int) -> list[int]:
    """Frame indices going round the cycle from ED: ``ed, ed + 1, ..., T - 1, 0, ..., ed - 1``."""
    return [(ed_index + step) % n_frames for step in range(n_frames)]


def encodable(network: nn.Module | None) -> MemWarp | None:
    """The MemWarp network of ``network`` (itself, or inside the bundle's ``network_def`` wrapper) when it can
    register from encoded frames (evaluation mode, where an image's features do not depend on its batch), else None.
    """
    inner = network.registration if isinstance(network, DisplacementFieldNetwork) else network
    return inner if isinstance(inner, MemWarp) and not inner.training else None


class EncodedFrames:
    """The encoder features of a cine's frames, each frame encoded once and kept only while a later pair needs it.

    Args:
        network: a MemWarp network in evaluation mode (:func:`encodable`).
        frames: (T, 1, H, W, D) network-grid frames in [0, 1].
        uses: every frame index of every pair that will be registered (a frame's features are dropped after its
            last use).
    """

    def __init__(self, network: MemWarp, frames: torch.Tensor, uses: Sequence[int]) -> None:
        self.network, self.frames = network, frames
        self.remaining_uses = Counter(int(index) for index in uses)
        self.features: dict[int, list[torch.Tensor]] = {}

    def _side(self, indices: Sequence[int]) -> list[torch.Tensor]:
        """Per level (N, C_l, ...) features of the frames ``indices``; (1, C_l, ...) when they are all one frame."""
        if len(set(indices)) == 1:
            return self.features[indices[0]]
        levels = range(len(self.features[indices[0]]))
        return [torch.cat([self.features[index][level] for index in indices]) for level in levels]

    def paired_features(self, moving_indices: Sequence[int], fixed_indices: Sequence[int]) -> list[torch.Tensor]:
        """The decoder's input for the pairs (moving frame, fixed frame): per level (2N, C_l, ...)
        (:meth:`scripts.networks.MemWarp.pair_features`); frames not encoded yet are encoded in one batch."""
        new = [index for index in dict.fromkeys([*moving_indices, *fixed_indices]) if index not in self.features]
        if new:
            encoded = self.network.encode(self.frames[new])
            for position, index in enumerate(new):
                self.features[index] = [level[position : position + 1] for level in encoded]
        paired = self.network.pair_features(self._side(moving_indices), self._side(fixed_indices))
        for index in [*moving_indices, *fixed_indices]:
            self.remaining_uses[index] -= 1
            if self.remaining_uses[index] <= 0:
                self.features.pop(index, None)
        return paired


@torch.inference_mode()
def register_pairs(
    network: nn.Module,
    frames: torch.Tensor,
    moving_indices: Sequence[int],
    fixed_indices: Sequence[int],
    batch_size: int = 4,
    refine_steps: int = 0,
) -> torch.Tensor:
    """Register pairs of frames in batches (``network(moving, fixed)["ddf"]``), refined on each pair if
    ``refine_steps > 0``; each frame is encoded once when the network allows it (:func:`encodable`).

    Args:
        network: the bundle's ``network_def`` (called as ``network(moving, fixed)``), in eval mode.
        frames: (T, 1, H, W, D) images in [0, 1] on the network's device.
        moving_indices, fixed_indices: the frames of each pair (N pairs).
        batch_size: pairs per network call (and per refinement).
        refine_steps: instance-optimisation steps per pair (0: the network's fields as they are).

    Returns:
        (N, 3, H, W, D) fields in voxels, fixed -> moving.
    """
    moving_indices, fixed_indices = [int(i) for i in moving_indices], [int(i) for i in fixed_indices]
    memwarp = encodable(network)
    encoded = None if memwarp is None else EncodedFrames(memwarp, frames, [*moving_indices, *fixed_indices])
    step = max(1, int(batch_size))
    fields = []
    for start in range(0, len(moving_indices), step):
        moving, fixed = moving_indices[start : start + step], fixed_indices[start : start + step]
        if encoded is not None:
            field = memwarp.decode(encoded.paired_features(moving, fixed))["ddf"]  # no warped image: not used here
        else:
            field = network(frames[moving].contiguous(), frames[fixed].contiguous())["ddf"]
        field = field.float()
        if refine_steps > 0:
            field, _ = refine_displacement(
                frames[moving].contiguous(), frames[fixed].contiguous(), field, steps=int(refine_steps)
            )
        fields.append(field)
    return torch.cat(fields)


@torch.inference_mode()
def segment_frame(network: nn.Module, frame: torch.Tensor) -> torch.Tensor:
    """The anatomical memory's segmentation of one frame (registered to itself; the field is not used).

    Args:
        frame: (1, 1, H, W, D) image in [0, 1].

    Returns:
        (1, H, W, D) labels 0-3 (float), the argmax of the level-0 logits of the fixed image.

    Raises:
        ValueError: the network has no anatomical memory.
    """
    memwarp = encodable(network)
    if memwarp is not None:  # the frame encoded once, as moving and fixed image
        features = memwarp.encode(frame)
        output = memwarp.decode(memwarp.pair_features(features, features))
    else:
        output = network(frame, frame)
    logits = output.get("anatomical_logits") or []
    if not len(logits):
        raise ValueError("this network has no anatomical memory to segment the ED frame: give an ED label map")
    return label_map_from_scores(logits[0][0], dim=0, keepdim=True).float()


def compose_fields(step: torch.Tensor, accumulated: torch.Tensor) -> torch.Tensor:
    """The field of following ``step`` then ``accumulated``: ``step(x) + accumulated(x + step(x))``.

    Args:
        step: (B, 3, H, W, D) field of frame t into frame t-1 (voxels).
        accumulated: (B, 3, H, W, D) field of frame t-1 into ED (voxels).

    Returns:
        (B, 3, H, W, D) field of frame t into ED; where ``x + step(x)`` leaves the grid the accumulated part is 0.
    """
    return step + warp_image(accumulated, step)


@torch.inference_mode()
def track_cine(
    network: nn.Module,
    frames: torch.Tensor,
    ed_index: int,
    mode: str = "direct",
    batch_size: int = 4,
    blend_weight: float = 0.5,
    field_provider=None,
    refine_steps: int = 0,
) -> torch.Tensor:
    """ED -> frame fields of every frame on the network grid.

    Args:
        network: the registration network (eval mode), or None with ``field_provider``.
        frames: (T, 1, H, W, D) network-grid frames in [0, 1], on the network's device.
        ed_index: 0-based ED frame.
        mode: one of :data:`TRACKING_MODES` (see the module docstring).
        batch_size: pairs per network call.
        blend_weight: ``w`` of ``"blend"``: the weight of the direct field at each step.
        field_provider: optional ``(moving_indices, fixed_indices) -> (N, 3, H, W, D)`` used instead of the network
            (tests, and the benchmark's true-motion reference).
        refine_steps: instance-optimisation steps per network field (0: none; see the module docstring).

    Returns:
        (T, 3, H, W, D) fields in voxels; the ED frame's is zero.
    """
    if mode not in TRACKING_MODES:
        raise ValueError(f"tracking mode {mode!r}: expected one of {list(TRACKING_MODES)}")
    n_frames = frames.shape[0]
    order = cycle_order(n_frames, ed_index)

    def register(moving_indices: Sequence[int], fixed_indices: Sequence[int]) -> torch.Tensor:
        if field_provider is not None:
            return field_provider(list(moving_indices), list(fixed_indices))
        return register_pairs(network, frames, moving_indices, fixed_indices, batch_size, refine_steps)

    fields = torch.zeros(n_frames, 3, *frames.shape[2:], dtype=torch.float32, device=frames.device)
    if mode == "direct":
        fields[order[1:]] = register([ed_index] * (n_frames - 1), order[1:])
        return fields
    direct = None
    if mode == "blend":
        # one call for both kinds of pair, (ED, frame t) beside (frame t-1, frame t): every frame is encoded once
        # and its features are freed soon after
        moving = [index for position in range(1, n_frames) for index in (ed_index, order[position - 1])]
        fixed = [order[position] for position in range(1, n_frames) for _ in range(2)]
        both = register(moving, fixed)
        direct, steps = both[0::2], both[1::2]
    else:
        steps = register(order[:-1], order[1:])
    for position in range(1, n_frames):
        composed = compose_fields(steps[position - 1 : position], fields[order[position - 1]][None])[0]
        if direct is not None:
            composed = blend_weight * direct[position - 1] + (1.0 - blend_weight) * composed
        fields[order[position]] = composed
    return fields
