"""PrefetchingDataLoader: the same batches in order, errors raised unchanged where they belong, no thread left."""

import threading

import pytest
from torch.utils.data import Dataset

from scripts.data import InvalidInputError, PrefetchingDataLoader


class _Items(Dataset):
    """Items 0..n-1; item ``bad`` raises an input error naming its (pretend) file; records what was read."""

    def __init__(self, n: int, bad: int | None = None) -> None:
        self.n, self.bad, self.read = n, bad, []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        self.read.append(index)
        if index == self.bad:
            raise InvalidInputError(f"case{index}.nii.gz: not a NIfTI file")
        return index


def _prefetch_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "batch-prefetch"]


def test_same_batches_in_order() -> None:
    loader = PrefetchingDataLoader(_Items(7), batch_size=2, collate_fn=list)
    assert list(loader) == [[0, 1], [2, 3], [4, 5], [6]]
    assert list(loader) == [[0, 1], [2, 3], [4, 5], [6]]  # iterable again
    assert not _prefetch_threads()


def test_error_raised_unchanged_after_the_batches_before_it() -> None:
    dataset = _Items(6, bad=3)
    seen = []
    with pytest.raises(InvalidInputError, match=r"^case3.nii.gz: not a NIfTI file$"):
        for batch in PrefetchingDataLoader(dataset, batch_size=1, collate_fn=list):
            seen.append(batch[0])
    assert seen == [0, 1, 2]  # every batch before the bad one was processed, none after it
    assert max(dataset.read) == 3  # nothing read beyond the error
    assert not _prefetch_threads()


def test_consumer_stopping_early_ends_the_reader() -> None:
    dataset = _Items(50)
    for batch in PrefetchingDataLoader(dataset, batch_size=1, collate_fn=list):
        if batch[0] == 2:
            break
    assert not _prefetch_threads()
    assert max(dataset.read) <= 4  # at most one batch read ahead (plus the one being handed over)


def test_reads_ahead_while_the_current_batch_is_in_use() -> None:
    dataset = _Items(3)
    loader = iter(PrefetchingDataLoader(dataset, batch_size=1, collate_fn=list))
    assert next(loader) == [0]
    for _ in range(100):  # the reader fetches item 1 on its own while the consumer holds item 0
        if 1 in dataset.read:
            break
        threading.Event().wait(0.01)
    assert 1 in dataset.read
    assert list(loader) == [[1], [2]]
