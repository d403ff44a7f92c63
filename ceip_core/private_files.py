"""Folders and files that only their owner may read: the client's state folder and database, the service's
data folder, database and token (docs/security.md, "Files").

Modes are set explicitly, never left to the umask: a folder is made 0700 and a file 0600 whatever the
umask of the process that makes it. SQLite gives its ``-wal`` and ``-shm`` files the mode of the database
file, so a database file made 0600 before SQLite opens it keeps its logs private too.

What existed before is treated by kind. ceip's own files (the databases and their logs) lose every bit
beyond 0600 whenever they are opened: nobody but their owner has a reason to read raw reports or a
machine's GUID. A folder that exists already is not changed here, because it may be one the operator
chose and shares on purpose (``--data /srv/shared``, ``CEIP_HOME=/tmp/x``); :func:`private_folder` says
when it is open to other users, and the caller decides (the service warns; the client tightens its
platform default folder only).

No ceip imports: both the client and the receiving service use this module. On Windows the modes mean
little (the folders are in the user's profile, which is private already) and nothing here fails there.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

FOLDER_MODE = 0o700
FILE_MODE = 0o600
#: What SQLite writes beside a database file.
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def private_folder(path: Path) -> str | None:
    """Make ``path`` (and missing parents) exist; a folder made here is 0700. Returns a warning if the
    folder existed already and other users may enter it, else None."""
    try:
        path.mkdir(parents=True, mode=FOLDER_MODE)
    except FileExistsError:
        return open_to_others(path)
    os.chmod(path, FOLDER_MODE)  # mkdir's mode is filtered by the umask
    return None


def open_to_others(folder: Path) -> str | None:
    """A warning naming ``folder`` and the fix if its group or others may read or enter it, else None."""
    if os.name != "posix":
        return None
    try:
        mode = stat.S_IMODE(folder.stat().st_mode)
    except OSError:
        return None
    if not mode & 0o077:
        return None
    return (
        f"{folder} is open to other users (mode {mode:04o}): its files are private (0600), but their names "
        f"are not; run `chmod 700 {folder}` unless it is shared on purpose"
    )


def private_file(path: Path) -> None:
    """Make the file ``path`` exist with mode 0600 if it does not, and take every bit beyond 0600 away
    from it and from SQLite's side files beside it (regular files of ours).

    An existing file is never opened here: closing a descriptor of a database file drops every POSIX lock
    this process holds on it, also those of SQLite connections open on it (SQLite's documentation, "How
    To Corrupt An SQLite Database File"). What cannot be changed (another user's file, a folder where the
    file should be) is left for opening it to report."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        pass
    except OSError:
        return
    else:
        os.close(fd)
    for each in (path, *(path.with_name(path.name + suffix) for suffix in SQLITE_SIDE_FILES)):
        try:
            found = each.stat()
            mode = stat.S_IMODE(found.st_mode)
            if stat.S_ISREG(found.st_mode) and mode & ~FILE_MODE:
                os.chmod(each, mode & FILE_MODE)  # only ever takes bits away: a 0400 file stays 0400
        except OSError:
            continue


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new file ``path`` made 0600 (it must not exist: the caller names a fresh one)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    if hasattr(os, "fchmod"):  # the umask can only take bits away from 0600, but say it outright
        os.fchmod(fd, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
