"""Pair record -> sample: every file of the pair read once, validated, kept in its original space and preprocessed.

The network inputs come from the bundle's own preprocessing (``scripts.data.registration_preprocessing``, the one
training and evaluation use) applied to the images already read, so the network sees exactly what evaluation
feeds it. When the record has both label maps, they go through the same chain (``with_labels=True``) to the
network grid, where the metrics are computed as in evaluation.

Sample keys (one pair; the dataloader does not collate, see :mod:`scripts.inference.batching`):
    ``"pair"``: the pair record as given (paths, frames, patient, direction, ``pair_name``), carried unchanged to
    the writer;
    ``"moving"``, ``"fixed"``: (1, H, W, D) float32 MetaTensors in [0, 1] on the network grid, with the transform
    trace that :func:`InferencePreprocessing.chain_for` and ``Invertd`` undo;
    ``"moving_label"``, ``"fixed_label"``: (1, H, W, D) labels 0..3 on the network grid, only when both are given;
    ``"moving_original"``, ``"fixed_original"``, ``"moving_label_original"`` (when given): the (X, Y, Z) float32
    MetaTensors as read (affine and NIfTI header fields in ``.meta``), for the outputs in the fixed image's
    original space.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from copy import deepcopy
from typing import Any

from monai.data import MetaTensor
from monai.transforms import Transform

from scripts.data import LoadFramed, RegistrationCompose, ValidateRegistrationInputd, registration_preprocessing
from scripts.errors import InvalidInputError
from scripts.labels import FRAME_KEYS, IMAGE_KEYS, LABEL_KEYS, NETWORK_PIXDIM_MM, NETWORK_SPATIAL_SIZE, NUM_CLASSES

__all__ = ["InferencePreprocessing", "ORIGINAL_SUFFIX"]

ORIGINAL_SUFFIX = "_original"
_FRAME_OF = dict(zip(IMAGE_KEYS, FRAME_KEYS))


def _given(value: Any) -> bool:
    """A record entry that names a file (or a loaded image): not absent, None or an empty string."""
    return value is not None and not (isinstance(value, str) and not value)


def _has_both_labels(data: Mapping[Hashable, Any]) -> bool:
    return all(_given(data.get(key)) for key in LABEL_KEYS)


class InferencePreprocessing(Transform):
    """Read a pair's files once and make the sample of the module docstring.

    Args:
        spatial_size: the network grid (X, Y, Z) in voxels.
        pixdim: the network grid's voxel size in mm.

    Raises (from ``__call__``):
        MissingInputError, InvalidInputError: a file that cannot be read or used, named in the message.
    """

    def __init__(
        self, spatial_size: Sequence[int] = NETWORK_SPATIAL_SIZE, pixdim: Sequence[float] = NETWORK_PIXDIM_MM
    ) -> None:
        self.images_only = registration_preprocessing(spatial_size, pixdim, with_labels=False)
        self.with_labels = registration_preprocessing(spatial_size, pixdim, with_labels=True)

    def chain_for(self, data: Mapping[Hashable, Any]) -> RegistrationCompose:
        """The preprocessing chain applied to a record or sample: with labels when both label maps are there."""
        return self.with_labels if _has_both_labels(data) else self.images_only

    @staticmethod
    def _after_loading(chain: RegistrationCompose) -> int:
        """Index of the chain's first transform after its file loading (the files are read here, once)."""
        loaders = [index for index, transform in enumerate(chain.transforms) if isinstance(transform, LoadFramed)]
        if len(loaders) != 1:
            raise RuntimeError("the registration preprocessing is expected to start with one LoadFramed")
        return loaders[0] + 1

    def __call__(self, record: Mapping[Hashable, Any]) -> dict[str, Any]:
        keys = [key for key in IMAGE_KEYS + LABEL_KEYS if _given(record.get(key))]
        if not all(key in keys for key in IMAGE_KEYS):
            where = next((str(record[key]) for key in keys), "the record")
            raise InvalidInputError(f"{where}: a pair record needs both 'moving' and 'fixed'")
        loader = LoadFramed(keys, frame_keys=[_FRAME_OF.get(key) for key in keys])
        loaded = loader({key: record[key] for key in keys} | {k: record[k] for k in FRAME_KEYS if k in record})
        self._validate_lone_label(loaded)
        # the chain's transforms update metadata (e.g. the header's "pixdim") of the tensors they receive in place:
        # the originals keep their own copy
        originals = {
            f"{key}{ORIGINAL_SUFFIX}": MetaTensor(loaded[key].as_tensor(), meta=deepcopy(dict(loaded[key].meta)))
            for key in keys
            if key != "fixed_label"
        }
        chain = self.chain_for(record)
        network_keys = IMAGE_KEYS + (LABEL_KEYS if chain is self.with_labels else ())
        sample = chain({key: loaded[key] for key in network_keys}, start=self._after_loading(chain))
        sample = {key: sample[key] for key in network_keys}
        sample.update(originals)
        sample["pair"] = dict(record)
        return sample

    @staticmethod
    def _validate_lone_label(loaded: Mapping[str, Any]) -> None:
        """A label map without its partner is not preprocessed (no metrics), but it is still warped: check it."""
        for image_key, label_key in zip(IMAGE_KEYS, LABEL_KEYS):
            if label_key in loaded and not _has_both_labels(loaded):
                channel_first = {image_key: loaded[image_key].unsqueeze(0), label_key: loaded[label_key].unsqueeze(0)}
                ValidateRegistrationInputd((image_key,), (label_key,), NUM_CLASSES, require_labels=False)(channel_first)
