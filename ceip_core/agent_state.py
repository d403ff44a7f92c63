"""The agent's two files in the state folder: its lock (one agent per folder) and ``agent.json``, what it
last said about itself. Apart from the agent so that ``ceip status`` reads them without loading the
agent (asyncio, the plugins, the records): standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOCK_FILE = "agent.lock"
STATUS_FILE = "agent.json"


class AgentError(Exception):
    """The agent cannot start; the message says why."""


# -- one agent per state folder --------------------------------------------------------------------------


@contextlib.contextmanager
def agent_lock(folder: Path) -> Iterator[None]:
    """Hold the agent lock of ``folder`` (an ``flock``, which the OS releases when the holder dies)."""
    try:
        import fcntl
    except ImportError:
        raise AgentError("ceip agent needs a POSIX system: it locks its state folder with flock") from None
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_FILE, "a+") as handle:
        deadline = time.monotonic() + 0.5  # `ceip status` may be probing the lock for an instant
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    handle.seek(0)
                    pid = handle.read().strip() or "?"
                    raise AgentError(f"another ceip agent (pid {pid}) is already running for {folder}") from None
                time.sleep(0.05)
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def running_agent(folder: Path) -> int | None:
    """The pid of the agent that holds ``folder``'s lock, or None if no agent runs."""
    try:
        import fcntl

        handle = open(folder / LOCK_FILE)  # noqa: SIM115 - closed below, after the lock is probed
    except (ImportError, OSError):
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = handle.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def read_status(folder: Path) -> dict[str, Any]:
    """What the agent of ``folder`` last said about itself, with ``state`` checked against the lock:
    ``starting`` (its first collection is under way), ``running``, ``stopped``, ``stopped unexpectedly``
    (it died without stopping) or ``never run``."""
    try:
        saved = json.loads((folder / STATUS_FILE).read_text())
    except (OSError, ValueError):
        saved = None
    status: dict[str, Any] = saved if isinstance(saved, dict) else {}
    pid = running_agent(folder)
    if pid is not None:
        return {**status, "state": "running" if status.get("state") == "running" else "starting", "pid": pid}
    if status.get("state") == "running":
        return {**status, "state": "stopped unexpectedly"}
    return {**status, "state": status.get("state", "never run")}


__all__ = ["LOCK_FILE", "STATUS_FILE", "AgentError", "agent_lock", "read_status", "running_agent"]
