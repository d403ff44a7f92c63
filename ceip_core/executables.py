"""Which of a product's declared executables this process is: the allowlist, held in the product's process.

A recorder records only in a process that is one of its product's executables: its name must be one the
maintainers' allowlist names for the product (and the product's ``ProductSpec`` declares), and its
executable file must match the path pattern and the SHA-256 the allowlist gives for that name, if any. So
a plain ``python`` script that calls ``ceip_core.recorder("analyst")`` records nothing. The process is
known the way the process observer knows it from outside (``ceip_core.default_plugins.process_observer``):
on Linux by the kernel's short name (``/proc/self/comm``, at most 15 characters) and the file it executes
(``/proc/self/exe``; for a script, its interpreter); elsewhere by the interpreter or frozen program
(``sys.executable``).

The recorder asks once, at its first seal (where the plugins and the allowlist are loaded anyway), never
per call: the recording path stays free of the allowlist's imports. What it recorded until then is
discarded, so nothing of a refused process reaches the spool.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: The kernel keeps the first 15 bytes of a process's name (TASK_COMM_LEN - 1).
COMM_LEN = 15

#: Why a recorder records nothing, as counted in the spool's drop counts.
NOT_ALLOWLISTED = "not-allowlisted"
"""The allowlist names no declared executable of the product (the product is inert on this machine)."""
WRONG_PROCESS = "process-not-declared"
"""This process's name is not one of the product's allowlisted, declared executables."""
WRONG_PATH = "process-path-mismatch"
"""The name matches, but the executable file is not where the allowlist says."""
WRONG_HASH = "process-hash-mismatch"
"""The name and path match, but the executable file's SHA-256 is not the allowlisted one."""


def process_name() -> str:
    """This process's name as the process observer sees it."""
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/self/comm", "rb") as handle:
                return handle.read().rstrip(b"\n").decode("utf-8", "replace")
        except OSError:
            pass
    return os.path.basename(sys.executable)


def executable_path() -> str:
    """The file this process executes (for a script: its interpreter)."""
    if sys.platform.startswith("linux"):
        try:
            return os.readlink("/proc/self/exe")
        except OSError:
            pass
    return os.path.realpath(sys.executable)


def this_process() -> tuple[str, str]:
    """This process's name and executable file: what :func:`refusal` checks. Cheap (two reads of
    ``/proc``), so a product can hand it to the process that seals its session at exit."""
    return process_name(), executable_path()


def count_refusal(folder: Path | None, product: str, reason: str) -> None:
    """Count, once, why a product's session was not recorded, in the spool's drop counts. Never raises."""
    import logging

    try:
        from ceip_core.spool import Spool
        from ceip_core.statedb import StateDB

        spool = Spool(StateDB(folder))
        try:
            spool.count_drop(reason, product)
        finally:
            spool.db.close()
    except Exception:
        logging.getLogger(__name__).exception("ceip: cannot count why %s is not recorded", product)


def same_name(declared: str, name: str) -> bool:
    """True if a process called ``name`` is the executable ``declared``: equal (ignoring case on Windows),
    or ``declared`` cut to the 15 characters the kernel keeps."""
    if sys.platform == "win32":
        declared, name = declared.lower(), name.lower()
    return declared == name or (len(name) == COMM_LEN and declared[:COMM_LEN] == name)


def refusal(product: str, folder: Path | None = None, process: tuple[str, str] | None = None) -> str | None:
    """None if this process (or ``process``, a recording process's :func:`this_process`, when another
    process seals for it) is an allowlisted executable of ``product`` that its spec declares, else the
    reason (one of the constants above). A product no installed plugin declares is left to sealing, which
    drops and counts its report. Raises only on a bug."""
    import fnmatch
    import hashlib

    from ceip_core.allowlist import Allowlist
    from ceip_core.plugins import PluginError, get_plugins

    try:
        spec = get_plugins().product(product)
    except PluginError:
        return None
    entries = Allowlist.current(folder).executables(spec)
    if not entries:
        return NOT_ALLOWLISTED
    name = process_name() if process is None else process[0]
    named = [e for e in entries if same_name(e.name, name)]
    if not named:
        return WRONG_PROCESS
    if all(e.path is None and e.sha256 is None for e in named):
        return None
    exe = executable_path() if process is None else process[1]
    reason = WRONG_PATH
    digest: str | None = None
    for entry in named:
        if entry.path is not None and not fnmatch.fnmatch(exe, entry.path):
            continue
        if entry.sha256 is not None:
            if digest is None:
                try:
                    with open(exe, "rb") as handle:
                        digest = hashlib.file_digest(handle, "sha256").hexdigest()
                except OSError:
                    digest = ""
            if digest != entry.sha256:
                reason = WRONG_HASH
                continue
        return None
    return reason
