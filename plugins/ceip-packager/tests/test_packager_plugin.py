"""The Packager plugin: registered through its entry point, and its stand-in, run as a real process."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ceip_packager import plugin
from ceip_packager.runlog import LOG_ENV, RunLogCollector, append_run

from ceip_core.collectors import CollectContext, MetricsObserved
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


@pytest.fixture(autouse=True)  # every stand-in of these tests writes its run log here, not in the home folder
def run_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "packager" / "runs.jsonl"
    monkeypatch.setenv(LOG_ENV, str(path))
    return path


def collect(collector: RunLogCollector) -> list[MetricsObserved]:
    observed = asyncio.run(collector.collect(CollectContext(products=(plugin.SPEC,))))
    assert all(isinstance(o, MetricsObserved) for o in observed)
    return list(observed)  # type: ignore[arg-type]


def test_the_collector_reads_each_run_once_and_follows_a_rotated_log(run_log: Path) -> None:
    collector = RunLogCollector()
    assert collect(collector) == []
    append_run(run_log, {"package_sizes": [100, 200], "duration_ms": 50.0, "failure": None})
    append_run(run_log, {"package_sizes": [], "duration_ms": 10.0, "failure": "disk-full"})
    with open(run_log, "a") as handle:
        handle.write('{"package_sizes": [7]')  # still being written: waits for the next pass
    [first] = collect(collector)
    assert first.counters == {("packages_built", None): 2}
    assert sorted(first.values) == [
        ("package_size_bytes", 100.0, None),
        ("package_size_bytes", 200.0, None),
        ("run_duration_ms", 10.0, None),
        ("run_duration_ms", 50.0, None),
    ]
    assert first.problems == {("failure", "disk-full"): 1}
    with open(run_log, "a") as handle:
        handle.write(', "failure": "my-home-dir"}\nnot json\n')
    [second] = collect(collector)  # the finished line, once; an undeclared failure kind is not reported
    assert second.counters == {("packages_built", None): 1} and second.problems == {}
    assert collect(collector) == []
    run_log.unlink()
    append_run(run_log, {"package_sizes": [5]})  # rotated: a new file, read from its start
    [third] = collect(collector)
    assert third.counters == {("packages_built", None): 1}


def test_the_agent_reports_the_runs_the_stand_in_logged(opted_in: Spool, run_log: Path, ceip_agent_once: Any) -> None:
    for seed in ("1", "2"):
        assert subprocess.run([*STANDIN, "--seconds", "0.5", "--seed", seed], timeout=60).returncode == 0
    in_process = queued_reports(opted_in)
    [report] = [r for r in ceip_agent_once() if r not in in_process and r["product"] == "packager"]
    runs = [json.loads(line) for line in run_log.read_text().splitlines()]
    built = sum(c["value"] for c in report["counters"] if c["name"] == "packages_built")
    assert built == sum(len(r["package_sizes"]) for r in runs) > 0
    durations = [h for h in report["histograms"] if h["name"] == "run_duration_ms"]
    assert [h["count"] for h in durations] == [2]
    assert not [k for k in report["diagnostics"] if k.startswith("scrub.declared.")], report
