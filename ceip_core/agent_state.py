"""The agent's two files in the state folder: its lock (one agent per folder) and the name of
``agent.json``, what it last said about itself (read and written by ``ceip_core.agent_status``). Apart from
the agent so that ``ceip status``, and a product's exit (is an agent serving this folder?), read them
without loading the agent (asyncio, the plugins, the records): standard library only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from ceip_core import filelock

LOCK_FILE = "agent.lock"
STATUS_FILE = "agent.json"


class AgentError(Exception):
    """The agent cannot start; the message says why."""


# -- one agent per state folder --------------------------------------------------------------------------


@contextlib.contextmanager
def agent_lock(folder: Path) -> Iterator[None]:
    """Hold the agent lock of ``folder`` (released by the OS when the holder dies, however it dies)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_FILE, "a+") as handle:
        # `ceip status` may be probing the lock for an instant
        if not filelock.lock(handle, timeout=0.5):
            handle.seek(0)
            pid = handle.read().strip() or "?"
            raise AgentError(f"another ceip agent (pid {pid}) is already running for {folder}")
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            filelock.unlock(handle)


def running_agent(folder: Path) -> int | None:
    """The pid of the agent that holds ``folder``'s lock, or None if no agent runs."""
    try:
        handle = open(folder / LOCK_FILE)  # noqa: SIM115 - closed below, after the lock is probed
    except OSError:
        return None
    with handle:
        if not filelock.is_held(handle):
            return None
        text = handle.read().strip()
        return int(text) if text.isdigit() else -1


__all__ = ["LOCK_FILE", "STATUS_FILE", "AgentError", "agent_lock", "running_agent"]
