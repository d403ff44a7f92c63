"""The Hub Server plugin: registered through its entry point, and its stand-in, run as a real process."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ceip_hub_server import plugin
from ceip_hub_server.collector import HubStatusCollector
from ceip_hub_server.status import STATUS_ENV, write_status

from ceip_core.collectors import CollectContext, MetricsObserved
from ceip_core.plugins import Plugins
from ceip_core.spool import Spool
from ceip_core.testing import queued_reports, wait_for_process_name

STANDIN = [sys.executable, "-m", "ceip_hub_server.standin"]


@pytest.fixture
def opted_in(ceip_participating) -> Spool:
    return ceip_participating(plugin, "hub-server")


def test_the_plugin_is_found_through_its_entry_point(ceip_home: Path) -> None:
    assert Plugins.load().product("hub-server") == plugin.SPEC
    assert "hub-server" in plugin.SPEC.executables


def test_the_stand_in_runs_under_the_product_name_and_records_only_declared_use(opted_in: Spool) -> None:
    proc = subprocess.Popen([*STANDIN, "--seconds", "0.6", "--seed", "7"])
    assert wait_for_process_name(proc.pid, "hub-server")  # what the process observer matches
    assert proc.wait(timeout=60) == 0
    [report] = queued_reports(opted_in)
    assert "server_starts" in {c["name"] for c in report["counters"]}
    assert not [k for k in report["diagnostics"] if k.startswith(("scrub.declared.", "recorder."))], report


@pytest.mark.parametrize(("crash", "status", "sealed"), [("exception", 1, True), ("abort", -signal.SIGABRT, False)])
def test_the_stand_in_crashes_on_request(opted_in: Spool, crash: str, status: int, sealed: bool) -> None:
    proc = subprocess.run([*STANDIN, "--seconds", "0.2", "--crash", crash], capture_output=True, timeout=60)
    assert proc.returncode == status
    crashes = [p for r in queued_reports(opted_in) for p in r["problems"] if p["kind"] == "crash"]
    assert len(crashes) == (1 if sealed else 0)


@pytest.fixture(autouse=True)  # every stand-in of these tests writes its status file here, not in the home folder
def status_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "hub" / "status.json"
    monkeypatch.setenv(STATUS_ENV, str(path))
    return path


def collect(collector: HubStatusCollector) -> list[MetricsObserved]:
    observed = asyncio.run(collector.collect(CollectContext(products=(plugin.SPEC,))))
    assert all(isinstance(o, MetricsObserved) for o in observed)
    return list(observed)  # type: ignore[arg-type]


def test_the_collector_takes_what_is_new_since_its_last_pass(status_file: Path) -> None:
    collector = HubStatusCollector()
    assert collect(collector) == []  # no server has run here
    status = {
        "version": "2.4.0",
        "hosted_repositories": 12,
        "connected_clients": 3,
        "requests": {"api": 5, "web": 1, "sync": 0},
        "errors": {"Timeout@sync.py:1": 2},
        "recent_response_ms": [[1, "api", 10.0], [2, "web", 20.0]],
    }
    write_status(status_file, status)
    [first] = collect(collector)
    assert first.counters == {("requests_served", "api"): 5, ("requests_served", "web"): 1}
    assert first.problems == {("error", "Timeout@sync.py:1"): 2}
    assert sorted(first.values) == [
        ("connected_clients", 3.0, None),
        ("hosted_repositories", 12.0, None),
        ("response_time_ms", 10.0, "api"),
        ("response_time_ms", 20.0, "web"),
    ]
    assert first.version == "2.4.0"
    status["requests"]["api"] = 7
    status["recent_response_ms"].append([3, "api", 30.0])
    write_status(status_file, status)
    [second] = collect(collector)
    assert second.counters == {("requests_served", "api"): 2} and second.problems == {}
    assert [v for v in second.values if v[0] == "response_time_ms"] == [("response_time_ms", 30.0, "api")]
    # The server restarted: its totals start again, and all of them are new.
    write_status(status_file, {**status, "requests": {"api": 1}, "recent_response_ms": [[1, "sync", 5.0]]})
    [third] = collect(collector)
    assert third.counters == {("requests_served", "api"): 1}
    assert ("response_time_ms", 5.0, "sync") in third.values


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"requests": "many", "recent_response_ms": [[1]]}'])
def test_a_bad_status_file_gives_nothing_or_only_what_is_valid(status_file: Path, text: str) -> None:
    status_file.parent.mkdir(parents=True)
    status_file.write_text(text)
    observed = collect(HubStatusCollector())
    assert all(not o.counters and not [v for v in o.values if v[0] == "response_time_ms"] for o in observed)


def test_the_agent_reports_what_the_collector_read_from_the_running_stand_in(
    opted_in: Spool, status_file: Path, ceip_agent_once: Any
) -> None:
    assert subprocess.run([*STANDIN, "--seconds", "0.6", "--seed", "7"], timeout=60).returncode == 0
    assert status_file.exists()
    in_process = queued_reports(opted_in)
    reports = [r for r in ceip_agent_once() if r not in in_process]
    [report] = [r for r in reports if r["product"] == "hub-server"]
    served = sum(c["value"] for c in report["counters"] if c["name"] == "requests_served")
    assert served == sum(json.loads(status_file.read_text())["requests"].values()) > 0
    assert {h["name"] for h in report["histograms"]} >= {"response_time_ms", "hosted_repositories"}
    assert report["product_version"] == "2.4.0"
    assert not [k for k in report["diagnostics"] if k.startswith("scrub.declared.")], report
