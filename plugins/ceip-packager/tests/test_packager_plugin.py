"""The Packager plugin: registered through its entry point, and its stand-in, run as a real process."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from ceip_packager import plugin

from ceip_core.plugins import Plugins
from ceip_core.spool import Spool
from ceip_core.testing import queued_reports, wait_for_process_name

STANDIN = [sys.executable, "-m", "ceip_packager.standin"]


@pytest.fixture
def opted_in(ceip_participating) -> Spool:
    return ceip_participating(plugin, "packager")


def test_the_plugin_is_found_through_its_entry_point(ceip_home: Path) -> None:
    assert Plugins.load().product("packager") == plugin.SPEC
    assert "packager" in plugin.SPEC.executables


def test_the_stand_in_runs_under_the_product_name_and_records_only_declared_use(opted_in: Spool) -> None:
    proc = subprocess.Popen([*STANDIN, "--seconds", "0.6", "--seed", "7"])
    assert wait_for_process_name(proc.pid, "packager")  # what the process observer matches
    assert proc.wait(timeout=60) == 0
    [report] = queued_reports(opted_in)
    assert "runs" in {c["name"] for c in report["counters"]}
    assert not [k for k in report["diagnostics"] if k.startswith(("scrub.declared.", "recorder."))], report


@pytest.mark.parametrize(("crash", "status", "sealed"), [("exception", 1, True), ("abort", -signal.SIGABRT, False)])
def test_the_stand_in_crashes_on_request(opted_in: Spool, crash: str, status: int, sealed: bool) -> None:
    proc = subprocess.run([*STANDIN, "--seconds", "0.2", "--crash", crash], capture_output=True, timeout=60)
    assert proc.returncode == status
    crashes = [p for r in queued_reports(opted_in) for p in r["problems"] if p["kind"] == "crash"]
    assert len(crashes) == (1 if sealed else 0)
