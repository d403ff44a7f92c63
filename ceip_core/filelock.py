"""Advisory locks on a file, the same on POSIX and Windows.

The agent, the detached uploader and the state folder each keep one lock file. What they need from it is
narrow: one holder at a time, released by the operating system when the holder dies however it dies, and
a way to ask "is someone holding it?" without waiting. POSIX gives that with ``flock``; Windows with
``msvcrt.locking`` on a byte range. Windows locks are mandatory for the bytes they cover, so the lock
covers one byte far past the end of the file, and the holder can still write its pid at the start for
others to read.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

TYPE_CHECKING = False  # typing costs a product's exit more than this whole module (see detached.py)
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import IO

#: Where the Windows lock sits: past any content, so readers of the file are never blocked by it.
_WINDOWS_LOCK_OFFSET = 1 << 30

#: How often a blocking acquire retries on Windows, where there is no waiting lock without a time-out.
_WINDOWS_RETRY = 0.05


if sys.platform == "win32":
    import msvcrt

    def _try_lock(handle: IO[bytes] | IO[str], *, shared: bool) -> bool:
        """Windows has no shared lock: a probe takes the exclusive one for an instant."""
        del shared
        position = handle.tell()
        handle.seek(_WINDOWS_LOCK_OFFSET)
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        finally:
            handle.seek(position)
        return True

    def _unlock(handle: IO[bytes] | IO[str]) -> None:
        position = handle.tell()
        handle.seek(_WINDOWS_LOCK_OFFSET)
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        finally:
            handle.seek(position)

else:
    import fcntl

    def _try_lock(handle: IO[bytes] | IO[str], *, shared: bool) -> bool:
        try:
            fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(handle: IO[bytes] | IO[str]) -> None:
        fcntl.flock(handle, fcntl.LOCK_UN)


def try_lock(handle: IO[bytes] | IO[str]) -> bool:
    """Take the exclusive lock of the open file ``handle`` if nobody holds it; False at once otherwise."""
    return _try_lock(handle, shared=False)


def lock(handle: IO[bytes] | IO[str], *, timeout: float | None = None) -> bool:
    """Take the exclusive lock of ``handle``, waiting up to ``timeout`` seconds (None: as long as it
    takes). False if the time ran out."""
    if sys.platform != "win32" and timeout is None:
        fcntl.flock(handle, fcntl.LOCK_EX)
        return True
    deadline = None if timeout is None else time.monotonic() + timeout
    while not _try_lock(handle, shared=False):
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(_WINDOWS_RETRY)
    return True


def unlock(handle: IO[bytes] | IO[str]) -> None:
    """Release the lock this process holds on ``handle``."""
    _unlock(handle)


def is_held(handle: IO[bytes] | IO[str]) -> bool:
    """Whether another process holds the lock of ``handle``; this process then holds nothing."""
    if not _try_lock(handle, shared=True):
        return True
    _unlock(handle)
    return False


@contextlib.contextmanager
def holding(path: os.PathLike[str] | str) -> Iterator[None]:
    """Hold the exclusive lock of the file at ``path`` (created if missing) for the block, waiting for it."""
    with open(path, "a+b") as handle:
        lock(handle)
        try:
            yield
        finally:
            unlock(handle)
