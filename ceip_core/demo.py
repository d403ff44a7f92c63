"""``ceip demo``: the real thing on one machine in a few seconds, in a throw-away state folder.

It opts the installed products in and allowlists their executables, starts ``ceip agent`` as a process of
its own, launches each product's stand-in executable (installed with its plugin under the product's
executable name; it records through the public recording API, see ``ceip_core.standin``) and one that
crashes, waits until the agent has seen every one of them end, and stops the agent, which seals what it
holds. What is left in the spool is what ``ceip review`` then shows.

The demo does not collect the exit status of the stand-ins it started until the agent has seen them end:
that is what lets the agent tell a normal end from a crash (see ``process_observer``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ceip_core.agent import read_status
from ceip_core.allowlist import Allowlist, default_path, make_entry
from ceip_core.consent import Consent
from ceip_core.plugins import Plugins
from ceip_core.records import ProductSpec
from ceip_core.statedb import StateDB

#: How often the demo's agent looks at the processes, in seconds.
POLL_S = 0.2


class DemoError(Exception):
    """The demo cannot go on; the message says why."""


def standin_executable(spec: ProductSpec) -> str | None:
    """The product's stand-in, installed beside this interpreter under one of its executable names."""
    folder = str(Path(sys.executable).parent)
    return next((found for name in spec.executables if (found := shutil.which(name, path=folder))), None)


def run(plugins: Plugins, folder: Path, seconds: float, echo: Callable[[str], None]) -> None:
    """Play the demo in state folder ``folder``, telling what happens through ``echo``."""
    specs = list(plugins.products.values())
    consent = Consent(StateDB(folder))
    for spec in specs:
        consent.opt_in(spec.id)
    path = default_path(folder)
    Allowlist.read(path).add(make_entry(s.id, name) for s in specs for name in s.executables).write(path)
    echo(f"Opted in and allowlisted {', '.join(s.id for s in specs)} (allowlist: {path}).")
    standins = {spec.id: exe for spec in specs if (exe := standin_executable(spec)) is not None}
    if not standins:
        raise DemoError("no stand-in executables are installed: pip install -e plugins/ceip-analyst")
    for spec in specs:
        if spec.id not in standins:
            echo(f"{spec.id}: no stand-in executable is installed; the agent has nothing of it to observe.")

    log_path = folder / "agent.log"
    env = {**os.environ, "CEIP_HOME": str(folder)}
    command = [sys.executable, "-m", "ceip_core", "agent", "--interval", str(POLL_S)]
    with open(log_path, "ab") as log_file:
        agent = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file)
    try:
        _wait(lambda: read_status(folder)["state"] == "running" or agent.poll() is not None, 30)
        if agent.poll() is not None or read_status(folder)["state"] != "running":
            raise DemoError(f"the agent did not start; see {log_path}:\n{_tail(log_path)}")
        echo(f"Started the agent (pid {agent.pid}, looking every {POLL_S} s; its log: {log_path}).")
        before = read_status(folder).get("sessions_ended", 0)
        runs: list[tuple[str, str, list[str]]] = [(product, exe, []) for product, exe in standins.items()]
        first_product, first_exe = next(iter(standins.items()))
        runs.append((first_product, first_exe, ["--crash"]))
        launched = [
            subprocess.Popen(
                [exe, "--seconds", str(seconds), *extra],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,  # the crashing one prints its traceback
            )
            for _, exe, extra in runs
        ]
        names = ", ".join(f"{Path(exe).name}{' ' + ' '.join(extra) if extra else ''}" for _, exe, extra in runs)
        echo(f"Launched the stand-ins for {seconds:g} s: {names}. Waiting for the agent to see them end ...")
        seen = _wait(lambda: read_status(folder).get("sessions_ended", 0) - before >= len(launched), seconds + 20)
        for proc in launched:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if not seen:
            echo("The agent did not see every stand-in end (is this Linux?); what it saw is queued.")
    finally:
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
    ended = read_status(folder)
    echo(f"Stopped the agent: it sealed {ended.get('reports_sealed', 0)} report(s).")


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
