"""Sealing and uploading in the background, so that a product's exit waits on neither.

At interpreter exit a recorder hands its session to :func:`seal_detached`: a detached process of this
interpreter reads the session from a pipe, re-checks consent, and seals, scrubs and spools it (the
imports of attrs, cattrs, pluggy and the plugins are its to pay). The session travels in memory only;
nothing unscrubbed is ever written to disk.

Once the sealer has spooled the session it calls :func:`spawn_uploader` (unless an agent serves the
machine), so a product sends after it closes without calling anything; ``ceip upload --detach`` does the
same from a shell. If something is queued, an upload URL is known and no uploader is running, it starts
``ceip upload`` as a detached process (a new session, stdio on the null device) and returns at once.
Every ``ceip upload`` takes the state folder's upload lock first and quits if another process holds it,
so that products exiting together start at most one upload between them.

Standard library only, and cheap to import (no typing, logging or shutil): one small SQLite read and, at
most, one process start.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import sys
import time
from pathlib import Path

from ceip_core import filelock, settings
from ceip_core.lazylog import LazyLogger
from ceip_core.session_data import SessionData
from ceip_core.statedb import StateDB, state_dir

TYPE_CHECKING = False  # typing, logging and shutil would cost a product's exit more than the rest
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

log = LazyLogger(__name__)

#: The lock file, in the state folder, that one uploader at a time holds.
LOCK_NAME = "upload.lock"

_DETACH: dict[str, Any]
if sys.platform == "win32":
    import subprocess

    _DETACH = {"creationflags": subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP}
else:
    _DETACH = {"start_new_session": True}  # out of the product's session: its terminal closing does not stop it


@contextlib.contextmanager
def uploader_lock(folder: Path) -> Iterator[bool]:
    """Hold the upload lock of ``folder`` for the block: yields True, or False at once if another process
    holds it. The operating system releases it when the holder dies, however it dies."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_NAME, "a+b") as handle:
        if not filelock.try_lock(handle):
            yield False
            return
        try:
            yield True
        finally:
            filelock.unlock(handle)


#: The shape of a session on the pipe; a sealer refuses any other (it comes from the same installation).
_SESSION_FORMAT = 2


def seal_detached(data: SessionData, folder: Path, process: tuple[str, str]) -> bool:
    """Start a detached process that seals ``data`` into the spool of ``folder``, and return at once.

    The session is written to the process's stdin (``marshal``: standard library, and both ends are the
    same interpreter), never to a file, with ``process``, the recording process's name and executable
    (``executables.this_process``). The sealer checks that this process may record for the product (the
    allowlist, as an in-process seal does) and consent and the GUID again, in the spool's own transaction.
    Returns False, without raising, if no sealer could be started (a frozen executable has no interpreter
    to start): the caller then seals in its own process."""
    if not sys.executable or getattr(sys, "frozen", False):
        return False
    fields = {name: getattr(data, name) for name in type(data).__slots__}
    payload = marshal.dumps((_SESSION_FORMAT, fields, tuple(process)))
    argv = [sys.executable, "-m", "ceip_core.detached", "seal", str(folder)]
    # The product's import path, so that the sealer finds this ceip_core and the product's plugins even
    # where the product set its path up at run time.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    try:
        pipe = _spawn_with_stdin(argv, env)
    except OSError:
        log.warning("ceip: could not start a sealing process; sealing here", exc_info=True)
        return False
    try:
        with pipe:
            pipe.write(payload)  # a pipe holds 64 KiB: a larger session waits for the sealer to read it
    except OSError:  # the sealer died at once: nothing reached it, so nothing was spooled
        log.warning("ceip: the sealing process did not take the session; sealing here", exc_info=True)
        return False
    return True


def _spawn_with_stdin(argv: list[str], env: dict[str, str]) -> Any:
    """Start ``argv`` detached (its own session, stdout and stderr on the null device) and return a
    writable file on its stdin. It is never waited for: it runs on after this process exits.

    ``os.posix_spawn`` where there is one: it needs no import of ``subprocess`` and no copy of the
    product's memory, which is most of what handing over a session costs."""
    if sys.platform == "win32" or not hasattr(os, "posix_spawn"):
        import subprocess

        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, **_DETACH
        )
        proc.returncode = 0  # not to be waited for, and no warning about it
        return proc.stdin
    read_end, write_end = os.pipe()  # both close-on-exec; only the copy on fd 0 reaches the sealer
    try:
        os.posix_spawn(
            argv[0],
            argv,
            env,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, read_end, 0),
                (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
            ],
            setsid=True,
        )
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    return open(write_end, "wb")


def _seal_from_stdin(folder: Path) -> int:
    """The sealer's side of :func:`seal_detached`: read the session first (the product is exiting),
    then pay for the imports and seal it."""
    form, fields, process = marshal.loads(sys.stdin.buffer.read())
    if form != _SESSION_FORMAT:
        log.error("ceip: a session in an unknown format %r was handed over; dropped", form)
        return 1
    from ceip_core import executables
    from ceip_core.sealing import seal_session

    try:
        refused = executables.refusal(fields["product"], folder, process)
    except Exception:
        log.exception("ceip: cannot check the recording process of %s; not recording", fields["product"])
        refused = "process-check-failed"
    if refused is not None:
        executables.count_refusal(folder, fields["product"], refused)
        return 1

    if not seal_session(SessionData(**fields), folder):
        return 1
    upload_after_exit(folder)
    return 0


def upload_after_exit(folder: Path) -> bool:
    """After a product closed a session: start a detached upload of the queue, unless an agent serves this
    state folder (it sends on its own schedule). This is what makes "sent in the background after the
    product closes" the default: the product itself calls nothing. Returns True if an upload started."""
    from ceip_core.agent_state import running_agent  # here: the product's exit path loads no typing

    try:
        if not folder.is_dir() or running_agent(folder) is not None:
            return False
    except OSError:
        return False
    return spawn_uploader(home=folder)


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
        import subprocess

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
    import shutil

    script = shutil.which("ceip")
    return [script] if script else None


if __name__ == "__main__" and sys.argv[1:2] == ["seal"] and len(sys.argv) == 3:
    if hasattr(os, "nice"):
        os.nice(10)  # background work: on a busy machine the product's own exit goes first
    sys.exit(_seal_from_stdin(Path(sys.argv[2])))
