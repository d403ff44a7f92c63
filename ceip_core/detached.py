"""Uploading in the background, so that a product never waits on the network.

A product calls :func:`spawn_uploader` at exit (``ceip upload --detach`` does the same from a shell). If
something is queued, an upload URL is known and no uploader is running, it starts ``ceip upload`` as a
detached process (a new session, stdio on the null device) and returns at once; the product exits while
the upload goes on. Every ``ceip upload`` takes the state folder's upload lock first and quits if another
process holds it, so that products exiting together start at most one upload between them.

Standard library only, and cheap: one small SQLite read and, at most, one process start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ceip_core import settings
from ceip_core.statedb import StateDB, state_dir

log = logging.getLogger(__name__)

#: The lock file, in the state folder, that one uploader at a time holds.
LOCK_NAME = "upload.lock"

_DETACH: dict[str, Any]
if sys.platform == "win32":
    _DETACH = {"creationflags": subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP}
else:
    _DETACH = {"start_new_session": True}  # out of the product's session: its terminal closing does not stop it


@contextlib.contextmanager
def uploader_lock(folder: Path) -> Iterator[bool]:
    """Hold the upload lock of ``folder`` for the block: yields True, or False at once if another process
    holds it. The operating system releases it when the holder dies, however it dies."""
    try:
        import fcntl
    except ImportError:  # Windows: concurrent uploaders are still safe (leases), only wasteful
        yield True
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_NAME, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def spawn_uploader(url: str | None = None, *, home: str | os.PathLike[str] | None = None) -> bool:
    """Start a detached ``ceip upload`` of the queue in ``home`` (default: the state folder) to ``url``
    (default: the ``upload-url`` setting). Returns True if one was started; False if there was nothing
    to do (no URL, nothing due, an upload already running) or it could not be started. Never raises."""
    try:
        folder = Path(home) if home is not None else state_dir()
        url, due = _url_and_due(folder, url)
        command = _ceip_command()
        if not url or not due or command is None:
            return False
        with uploader_lock(folder) as free:
            if not free:
                return False
        subprocess.Popen(
            [*command, "--home", str(folder), "upload", "--to", url],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=True,
            **_DETACH,
        )
        return True
    except Exception:
        log.warning("ceip: could not start a background upload", exc_info=True)
        return False


def _url_and_due(folder: Path, url: str | None) -> tuple[str | None, bool]:
    """The upload URL to use, and whether any queued item is due for sending now."""
    db = StateDB(folder)
    try:
        return db.read(
            lambda conn: (
                url or settings.get(conn, "upload-url"),
                conn.execute("SELECT 1 FROM spool WHERE not_before <= ? LIMIT 1", (time.time(),)).fetchone()
                is not None,
            )
        )
    finally:
        db.close()


def _ceip_command() -> list[str] | None:
    """How to run ``ceip``: with this interpreter, unless the product is a frozen executable (whose
    ``sys.executable`` is the product itself), in which case the ``ceip`` script on PATH, if any."""
    if sys.executable and not getattr(sys, "frozen", False):
        return [sys.executable, "-m", "ceip_core"]
    script = shutil.which("ceip")
    return [script] if script else None
