"""Helpers for tests that wait on real processes: poll a condition with a deadline, never sleep-and-hope."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pytest


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


def shebang_executable(folder: Path, name: str, script: Path) -> Path:
    """``folder/name``: the Python script ``script`` made executable for this interpreter. The kernel
    names the process ``name``, as it does a console script, so the process observer sees ``name``."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / name
    exe.write_text(f"#!{sys.executable}\n{script.read_text()}")
    exe.chmod(0o755)
    return exe


def native_executable(folder: Path, name: str) -> Path:
    """``folder/name``: a copy of the system's ``sleep`` (a native program, so that the OS reports
    ``folder/name`` as the process's executable, for tests of path patterns and hashes)."""
    found = shutil.which("sleep")
    if found is None:
        unavailable("no sleep executable to copy")
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / name
    shutil.copy2(os.path.realpath(found), exe)
    if subprocess.run([exe, "0"], capture_output=True).returncode != 0:
        unavailable("this system's sleep does not run under another name (busybox?)")
    return exe


def unique_name(product: str) -> str:
    """An executable name for ``product`` that no other test run on this machine uses, within the 15
    characters the kernel keeps: observers watch every process on the machine, including those of other
    test runs (``sample-1f2e3d4c``)."""
    return f"{product[:6]}-{secrets.token_hex(4)}"


def unavailable(reason: str) -> NoReturn:
    """A prerequisite this machine lacks: the test fails, naming it. Every test runs, here and in CI
    (``.ci/test`` installs what the tests drive); a skipped one would prove nothing unseen."""
    pytest.fail(f"this test cannot run: {reason}")


def as_unprivileged(command: list[str]) -> list[str]:
    """``command`` run so that file permissions apply to it: as root, without the capabilities that let
    root write anywhere."""
    if os.geteuid() != 0:
        return command
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        unavailable("setpriv (util-linux) is needed to run a command as root with permission checks")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", *command]
