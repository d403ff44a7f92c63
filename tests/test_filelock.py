"""The lock files of the agent, the uploader and the state folder: one holder, released when it dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from helpers import wait_for

from ceip_core import filelock

_HOLD = """
import signal, sys
from ceip_core import filelock
handle = open(sys.argv[1], "a+b")
filelock.lock(handle)
print("held", flush=True)
signal.pause()  # holds the lock until the test kills it
"""


def _holder(path: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_held_lock_is_seen_and_refused_and_freed_when_its_holder_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    proc = _holder(path)
    try:
        with open(path, "a+b") as handle:
            assert filelock.is_held(handle)
            assert not filelock.try_lock(handle)
            assert not filelock.lock(handle, timeout=0.2)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            wait_for(lambda: not filelock.is_held(handle))
            assert filelock.try_lock(handle)
            filelock.unlock(handle)
    finally:
        proc.kill()
        proc.wait()


def test_a_free_lock_is_taken_and_released(tmp_path: Path) -> None:
    path = tmp_path / "y.lock"
    with filelock.holding(path), open(path, "a+b") as other:
        # flock locks belong to the open file: a second open of the same file is refused, as another
        # process would be
        assert not filelock.try_lock(other)
    with open(path, "a+b") as handle:
        assert not filelock.is_held(handle)
        assert filelock.lock(handle, timeout=0)
        filelock.unlock(handle)
