"""Helpers for tests that wait on real processes: poll a condition with a deadline, never sleep-and-hope."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable


def wait_for(condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.01) -> object:
    """Poll ``condition`` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {condition}")
        time.sleep(interval)


def run_python(code: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with the test's environment; fail with its stderr."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, **kwargs)  # type: ignore[call-overload]
    assert proc.returncode == 0, proc.stderr
    return proc


def epoch(spool: object, product: str) -> int:
    """The consent epoch a recorder would have captured for ``product`` now (0 if it is not opted in)."""
    from ceip_core.consent import read_epochs

    return spool.db.read(read_epochs).get(product, 0)  # type: ignore[attr-defined]
