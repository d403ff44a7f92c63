"""The agent as a real process: stand-in products start, stop and crash; consent is withdrawn while it runs;
it is killed with SIGKILL and restarted. Reports are read back from the spool and the drop folder."""

from __future__ import annotations

import gzip
import importlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers import native_executable, shebang_executable, unique_name, wait_for

from ceip_core.agent_status import read_status as status
from ceip_core.allowlist import Allowlist, default_path
from ceip_core.consent import Consent
from ceip_core.default_plugins.file_transport import SUFFIX
from ceip_core.spool import Spool
from ceip_core.spool_rows import read_partials
from ceip_core.statedb import StateDB

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the agent observes Linux processes")

FIXTURE_APP = Path(__file__).parent / "scripts" / "fixture_app.py"
CLI = [sys.executable, "-m", "ceip_core"]
AGENT = [*CLI, "agent", "--interval", "0.1"]

Item = dict[str, Any]

PLUGIN = '''"""The products of one agent test, their executables named for that test only."""

from ceip_core.hookspecs import hookimpl
from ceip_core.records import Category, MetricKind, MetricSpec, ProductSpec

USE, PERF = Category.PROGRAM_USE, Category.PERFORMANCE


@hookimpl
def ceip_register_products(register):
    open_file = MetricSpec("open_file", MetricKind.COUNTER, "uses", USE, "Files opened.")
    crash = MetricSpec("crash", MetricKind.PROBLEM, "occurrences", PERF, "Crashes, by signature.")
    register(ProductSpec("sample", "Sample", [{sample!r}], [open_file, crash]))
    register(ProductSpec("other", "Other", [{other!r}], [MetricSpec("used", MetricKind.COUNTER, "uses", USE, "Uses.")]))
'''


@pytest.fixture
def apps(ceip_home: Path, tmp_path: Path, ceip_plugins, ceip_allow, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The products ``sample`` and ``other``, allowlisted and opted in, in this process and the agent's; their
    executables are named for this test only, since the agent watches every process on the machine and
    another test run may be playing the same product. Returns each product's executable name."""
    names = {"sample": unique_name("sample"), "other": unique_name("other")}
    module = "ceip_agent_test_" + names["sample"].split("-")[1]
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / f"{module}.py").write_text(PLUGIN.format(**names))
    monkeypatch.syspath_prepend(tmp_path / "plugins")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "plugins"))
    monkeypatch.setenv("CEIP_PLUGIN_MODULES", module)
    monkeypatch.setenv("CEIP_LOAD_PLUGINS", "")
    ceip_plugins(importlib.import_module(module))
    ceip_allow("sample", "other")
    consent = Consent(StateDB(ceip_home))
    consent.opt_in("sample")
    consent.opt_in("other")
    return names


@pytest.fixture
def home(apps: dict[str, str], ceip_home: Path) -> Path:
    """The state folder of the agents the test starts."""
    return ceip_home


@pytest.fixture
def processes() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start real processes, killed and collected at the end. The test is their parent and does not
    collect them before that (unless it says so): the agent can then read how they ended. Returns once
    the process runs under its executable's name."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*command: str | Path) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([str(c) for c in command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(proc)
        comm = Path(f"/proc/{proc.pid}/comm")
        wait_for(lambda: comm.read_text().strip() == Path(command[0]).name[:15], timeout=10)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.fixture
def agent(home: Path, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """``agent(*args)`` starts ``ceip agent --interval 0.1 *args`` and returns once it has run its first
    collection; its log goes to ``tmp_path/agent-N.log``. Agents still running at the end are killed."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> subprocess.Popen[bytes]:
        log = tmp_path / f"agent-{len(started)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([*AGENT, *args], stdout=out, stderr=out)
        started.append(proc)
        wait_for(lambda: proc.poll() is not None or running(proc), 30)
        assert proc.poll() is None, log.read_text()
        return proc

    def running(proc: subprocess.Popen[bytes]) -> bool:
        saved = status(home)
        return saved.pid == proc.pid and saved.state == "running"

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def queued(home: Path) -> list[Item]:
    return [orjson.loads(i.data) for i in Spool(StateDB(home)).items() if i.kind == "report"]


def delivered(folder: Path) -> list[Item]:
    return [
        item
        for batch in sorted(folder.glob(f"*{SUFFIX}"))
        for item in json.loads(gzip.decompress(batch.read_bytes()))["items"]
        if item["type"] == "report"
    ]


def ended(reports: list[Item], product: str) -> list[Item]:
    """The ended process sessions of ``product`` in the agent's reports."""
    return [s for r in reports if r["product"] == product for s in r["sessions"] if s["ended"] != "running"]


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_a_second_agent_refuses_to_start(agent, home: Path) -> None:
    first = agent()
    proc = subprocess.run([*AGENT, "--once"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert f"Error: another ceip agent (pid {first.pid}) is already running for {home}" in proc.stderr
    assert "Traceback" not in proc.stderr
    stop(first)
    assert status(home).state == "stopped"


def test_once_collects_seals_and_uploads_once_for_active_products_only(
    home: Path, apps: dict[str, str], tmp_path: Path, processes
) -> None:
    Allowlist.read(default_path()).remove("other").write(default_path())  # other is inert now
    processes(native_executable(tmp_path / "bin", apps["sample"]), "30")
    processes(native_executable(tmp_path / "bin", apps["other"]), "30")
    drop = tmp_path / "drop"
    proc = subprocess.run(
        [*AGENT, "--once", "--upload-to", f"file://{drop}"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    [report] = delivered(drop)
    assert report["product"] == "sample" and report["product_version"] == "unknown"
    assert report["system"]["cpu_logical"] >= 1 and report["system"]["os"]
    assert [(s["executable"], s["ended"]) for s in report["sessions"]] == [(apps["sample"], "running")]
    assert queued(home) == [] and status(home).state == "stopped"


def test_without_upload_to_the_agent_uses_the_upload_url_setting(home: Path, tmp_path: Path) -> None:
    drop = tmp_path / "configured-drop"
    subprocess.run([*CLI, "config", "set", "upload-url", f"file://{drop}"], check=True, timeout=60)
    proc = subprocess.run([*AGENT, "--once"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert sorted(r["product"] for r in delivered(drop)) == ["other", "sample"]  # both opted in and allowlisted
    assert queued(home) == []


def test_once_from_cron_seals_when_a_session_ends_or_the_period_is_over_not_on_every_run(
    home: Path, apps: dict[str, str], tmp_path: Path, processes
) -> None:
    """Regression: every ``ceip agent --once`` sealed a near-empty report per product (288 a day from a
    5-minute cron). What a run does not seal is kept in the state database for the next run."""

    def once(seal_every: str = "3600") -> None:
        proc = subprocess.run(
            [*AGENT, "--once", "--seal-every", seal_every], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr

    app = processes(native_executable(tmp_path / "bin", apps["sample"]), "60")
    once()  # never sealed before: the period is over
    first = queued(home)
    assert sorted(r["product"] for r in first) == ["other", "sample"]
    for _ in range(3):
        once()
    assert queued(home) == first  # nothing ended, the period is not over: nothing new

    app.terminate()
    app.wait()  # gone: the next run sees it no longer running
    once()
    [ended_report] = [r for r in queued(home) if r not in first]
    [session] = ended_report["sessions"]
    [snapshot] = next(r for r in first if r["product"] == "sample")["sessions"]
    assert ended_report["product"] == "sample" and session["ended"] == "unknown"
    assert session["started"] == snapshot["started"] and session["duration_s"] >= snapshot["duration_s"]
    once()
    assert len(queued(home)) == 3  # a session is reported ended once

    once(seal_every="0.1")  # the period is over: one report per product, covering every run since
    periodic = queued(home)[3:]
    assert sorted(r["product"] for r in periodic) == ["other", "sample"]
    assert all(r["sessions"] == [] for r in periodic)
    other = [r for r in queued(home) if r["product"] == "other"]
    assert other[1]["period"]["start"] == other[0]["period"]["end"]  # one period, however many runs


def test_an_opt_out_deletes_what_once_kept_for_the_next_run(home: Path, apps: dict[str, str], tmp_path: Path) -> None:
    proc = subprocess.run([*AGENT, "--once"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    db = StateDB(home)
    assert sorted(db.read(read_partials)) == ["other", "sample"]
    Consent(db).opt_out("sample")
    assert sorted(db.read(read_partials)) == ["other"]


def test_upload_to_none_keeps_the_queue_even_with_an_upload_url_set(home: Path, tmp_path: Path) -> None:
    """Regression: ``--upload-to none`` (documented as "keep it") moved the queue into a folder ./none."""
    drop = tmp_path / "configured-drop"
    subprocess.run([*CLI, "config", "set", "upload-url", f"file://{drop}"], check=True, timeout=60)
    proc = subprocess.run(
        [*AGENT, "--once", "--upload-to", "none"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "none").exists() and not drop.exists()
    assert sorted(r["product"] for r in queued(home)) == ["other", "sample"]


def test_stand_ins_that_stop_and_crash_become_session_reports(
    agent, home: Path, apps: dict[str, str], tmp_path: Path, processes
) -> None:
    running = agent()
    exe = shebang_executable(tmp_path / "bin", apps["sample"], FIXTURE_APP)
    began = time.monotonic()
    normal = processes(exe, "--seconds", "0.5")
    exception = processes(exe, "--seconds", "0.5", "--crash")
    abort = processes(exe, "--seconds", "0.5", "--crash", "abort")
    processes(exe, "--seconds", "60")
    wait_for(lambda: len(ended(queued(home), "sample")) == 3, timeout=30)
    lifetime = time.monotonic() - began
    stop(running)  # seals what it holds: the session still running

    reports = queued(home)
    sessions = ended(reports, "sample")
    assert sorted(s["ended"] for s in sessions) == ["crashed", "crashed", "normal"]
    # A start time is as exact as the kernel's clock ticks (10 ms), so a duration may exceed the lifetime
    # measured here by up to one tick.
    tick = 0.011
    assert all(0.5 <= s["duration_s"] <= lifetime + tick and s["executable"] == apps["sample"] for s in sessions), (
        [s["duration_s"] for s in sessions],
        lifetime,
    )
    assert all(s["peak_rss_bytes"] > 1_000_000 and s["cpu_s"] > 0 for s in sessions), sessions
    still = [s for r in reports for s in r["sessions"] if s["ended"] == "running"]
    assert len(still) == 1 and 0 < still[0]["duration_s"] <= lifetime + 5
    # What the stand-ins recorded themselves: an abort seals nothing, an uncaught exception is a crash.
    recorded = [r for r in reports if r["product_version"] == "1.0"]
    assert len(recorded) == 2 and all(r["counters"][0]["name"] == "open_file" for r in recorded)
    assert [p["kind"] for r in recorded for p in r["problems"]] == ["crash"]
    assert (normal.wait(), exception.wait(), abort.wait()) == (0, 1, -signal.SIGABRT)


def test_an_opt_out_while_the_agent_runs_stops_that_product_within_a_second(
    agent, home: Path, apps: dict[str, str], tmp_path: Path, processes
) -> None:
    processes(native_executable(tmp_path / "bin", apps["sample"]), "60")
    processes(native_executable(tmp_path / "bin", apps["other"]), "60")
    agent("--seal-every", "0.2")
    spool = Spool(StateDB(home))
    wait_for(lambda: {r["product"] for r in queued(home)} == {"sample", "other"}, timeout=15)

    def attempts() -> int:  # reports for sample that reached the spool's door after the opt-out
        drops = spool.stats().drops
        return drops.get("not-opted-in:sample", 0) + drops.get("stale-consent:sample", 0)

    Consent(StateDB(home)).opt_out("sample")
    withdrawn = time.monotonic()
    assert [r["product"] for r in queued(home)].count("sample") == 0  # the queue was purged by the opt-out
    wait_for(lambda: "sample" not in status(home).observing, timeout=1.0)
    assert time.monotonic() - withdrawn <= 1.0
    tried, others = attempts(), len(queued(home))
    wait_for(lambda: len(queued(home)) >= others + 4, timeout=10)  # the agent goes on for the other product
    assert attempts() == tried, "the agent still seals reports for an opted-out product"
    assert {r["product"] for r in queued(home)} == {"other"}
    assert status(home).observing == {"other": [apps["other"]]}


def test_sigkill_and_restart_lose_nothing_spooled_and_report_no_session_twice(
    agent, home: Path, apps: dict[str, str], tmp_path: Path, processes
) -> None:
    drop = tmp_path / "drop"
    args = ("--seal-every", "0.2", "--upload-to", f"file://{drop}")
    sample_app = native_executable(tmp_path / "bin", apps["sample"])
    other_app = native_executable(tmp_path / "bin", apps["other"])

    def everything() -> list[Item]:
        return delivered(drop) + queued(home)

    first = agent(*args)
    processes(sample_app, "0.3")
    wait_for(lambda: len(ended(everything(), "sample")) == 1, timeout=15)
    long_sample, long_other = processes(sample_app, "60"), processes(other_app, "60")
    wait_for(lambda: {s["executable"] for r in everything() for s in r["sessions"]} == set(apps.values()))
    first.send_signal(signal.SIGKILL)  # while it seals and uploads every 0.2 s
    first.wait()
    spooled = {r["report_id"] for r in queued(home)}

    second = agent(*args)
    long_sample.terminate()
    long_other.terminate()
    wait_for(lambda: len(ended(everything(), "sample")) == 2 and len(ended(everything(), "other")) == 1, timeout=15)
    processes(sample_app, "0.3")
    wait_for(lambda: len(ended(everything(), "sample")) == 3, timeout=15)
    stop(second)

    by_id: dict[str, Item] = {}
    for report in everything():  # a batch sent again after the kill carries the same ids: the receiver dedupes
        assert by_id.setdefault(report["report_id"], report) == report
    assert spooled <= set(by_id), "a report that was spooled before the kill is lost"
    reports = list(by_id.values())
    assert [s["ended"] for s in ended(reports, "sample")] == ["normal"] * 3
    assert [s["ended"] for s in ended(reports, "other")] == ["normal"]
