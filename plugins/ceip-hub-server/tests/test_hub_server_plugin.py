"""The Hub Server plugin: registered through its entry point, and its stand-in, run as a real process."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from ceip_hub_server import plugin

from ceip_core.consent import Consent
from ceip_core.plugins import Plugins
from ceip_core.spool import Spool
from ceip_core.statedb import StateDB

STANDIN = [sys.executable, "-m", "ceip_hub_server.standin"]


@pytest.fixture
def opted_in(ceip_home: Path, ceip_plugins, ceip_allow) -> Spool:
    """Hub Server allowlisted and opted in, in a fresh state folder; its spool."""
    ceip_plugins(plugin)
    ceip_allow("hub-server")
    Consent(StateDB(ceip_home)).opt_in("hub-server")
    return Spool(StateDB(ceip_home))


def reports(spool: Spool) -> list[dict]:
    return [orjson.loads(item.data) for item in spool.items()]


def test_the_plugin_is_found_through_its_entry_point(ceip_home: Path) -> None:
    assert Plugins.load().product("hub-server") == plugin.SPEC
    assert "hub-server" in plugin.SPEC.executables


def test_the_stand_in_runs_under_the_product_name_and_records_only_declared_use(opted_in: Spool) -> None:
    proc = subprocess.Popen([*STANDIN, "--seconds", "0.6", "--seed", "7"])
    if sys.platform.startswith("linux"):  # the process observer matches the kernel's name for it
        comm = Path(f"/proc/{proc.pid}/comm")
        deadline = time.monotonic() + 10
        while comm.read_text().strip() != "hub-server" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert comm.read_text().strip() == "hub-server"
    assert proc.wait(timeout=60) == 0
    [report] = reports(opted_in)
    assert "server_starts" in {c["name"] for c in report["counters"]}
    assert not [k for k in report["diagnostics"] if k.startswith(("scrub.declared.", "recorder."))], report


@pytest.mark.parametrize(("crash", "status", "sealed"), [("exception", 1, True), ("abort", -signal.SIGABRT, False)])
def test_the_stand_in_crashes_on_request(opted_in: Spool, crash: str, status: int, sealed: bool) -> None:
    proc = subprocess.run([*STANDIN, "--seconds", "0.2", "--crash", crash], capture_output=True, timeout=60)
    assert proc.returncode == status
    crashes = [p for r in reports(opted_in) for p in r["problems"] if p["kind"] == "crash"]
    assert len(crashes) == (1 if sealed else 0)
