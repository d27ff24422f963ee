"""Atomic file writes: a reader (or a crash) never sees a half-written output.

Every writer of the bundle (checkpoints, evaluation tables, datalists, benchmark reports, phantom files)
writes to a temporary file in the destination folder, flushes it to disk, then moves it into place with
``os.replace``, which is atomic on the same file system. On any error the temporary file is removed and
the destination is left as it was.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["write_atomically", "write_text_atomically", "write_bytes_atomically"]


def write_atomically(path: str | os.PathLike, write: Callable[[IO[Any]], None], binary: bool = False) -> Path:
    """Call ``write(stream)`` on a temporary file next to ``path``, then move it to ``path``.

    Args:
        path: destination; its folder is created when missing.
        write: writes the content to the open stream.
        binary: open the temporary file in binary mode (text mode is UTF-8 with no newline translation).

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if binary:
            stream = os.fdopen(handle, "wb")
        else:
            stream = os.fdopen(handle, "w", encoding="utf-8", newline="")
        with stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        # mkstemp creates 0600 files; give the output the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_atomically(path, lambda stream: stream.write(text))


def write_bytes_atomically(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return write_atomically(path, lambda stream: stream.write(data), binary=True)
