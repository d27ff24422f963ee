"""A DataLoader that reads the next batch on a background thread while the current one is being processed.

For loaders without worker processes (``num_workers=0``; inference uses none: a worker process would wrap an input
error's one-line message in its own traceback text and costs a start-up per run). Reading NIfTI files (zlib) and
most of the preprocessing (torch, numpy) release the GIL, so on a 2-core CPU the next pair is read while the network
runs on the current one.

Why not MONAI's ``ThreadDataLoader``/``ThreadBuffer``: in MONAI 1.6.1 an exception in its thread ends the thread
and the iteration stops early and silently, as if the data had ended; here the exception is raised, unchanged (same
object, same traceback), where the batch it belongs to would have been returned, so nothing after it is processed
and the run ends exactly as without prefetching.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader

__all__ = ["PrefetchingDataLoader"]

_END = object()


class PrefetchingDataLoader(DataLoader):
    """``torch.utils.data.DataLoader`` (same arguments) whose single-process iteration runs one batch ahead on a
    background thread. With ``num_workers > 0`` it is a plain DataLoader (the workers already read ahead)."""

    def __iter__(self) -> Iterator[Any]:
        batches = super().__iter__()
        if self.num_workers > 0:
            return batches
        return _read_ahead(batches)


def _read_ahead(batches: Iterator[Any]) -> Iterator[Any]:
    """Yield ``batches``' items, each fetched on a thread while the previous one is in use; re-raise its errors."""
    ready: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def fetch() -> None:
        try:
            for batch in batches:
                ready.put((batch, None))  # once the consumer has stopped, its draining below frees the slot
                if stop.is_set():
                    return
            ready.put((_END, None))
        except BaseException as error:  # handed to the consumer, raised there
            ready.put((None, error))

    reader = threading.Thread(target=fetch, name="batch-prefetch", daemon=True)
    reader.start()
    try:
        while True:
            batch, error = ready.get()
            if error is not None:
                raise error
            if batch is _END:
                return
            yield batch
    finally:
        stop.set()  # the consumer stopped early (an error downstream, or a break): let the reader end
        while reader.is_alive():
            try:
                ready.get_nowait()
            except queue.Empty:
                pass
            reader.join(timeout=0.1)
