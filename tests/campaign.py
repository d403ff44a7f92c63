"""The fault campaign's scenarios, shared by ``bench/faults.py`` (full size, one table) and
``tests/test_faults.py`` (a few trials each, asserting that nothing is lost or duplicated).

Everything is real: ``ceip upload``, ``ceip agent`` and ``ceip serve`` run as processes, spools and the
service's database are SQLite files, traffic goes over loopback through :class:`faultproxy.FaultProxy`
(which also counts every status the service answered, so a 5xx of the service is seen even where no fault
is injected). Every loop is bounded in count and in time.

What the columns mean:

- **created**: reports committed to a machine's spool, i.e. acknowledged to whoever made them. A trigger
  added to each test spool copies every inserted item id into a table of its own in the same transaction,
  so the count includes reports the uploader has since sent and deleted;
- **stored**: those of them the service's database holds; **duplicated**: report ids the service answered
  ``accepted`` more than once (each acceptance is folded into the rollups: counted twice), or holds twice;
- **lost**: created, no longer queued, and not stored; **queued**: still waiting when the scenario ended
  (not lost, but not delivered within its time bound either);
- **5xx**: answers of the service with a status >= 500; **peak RSS**: the largest resident set (VmHWM) of a
  ``ceip serve`` process, and of a killed client, seen just before it was stopped or killed.

After a kill -9 the harness ages the dead client's leases and retry delays (``Machine.age``) instead of
waiting them out (a lease lasts 120 s): what is measured is whether anything is lost, not the backoff.
The outage scenario is the exception: it measures the drain time with the client's real backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from faultproxy import FaultProxy, weighted

from ceip_core.consent import Consent, read_epochs
from ceip_core.sealing import build_report, spool_report
from ceip_core.session_data import SessionData
from ceip_core.spool import Spool
from ceip_core.statedb import DB_NAME, StateDB

CLI = [sys.executable, "-m", "ceip_core"]
TOKEN = "campaign-token-0001"
#: How long a process may take to start, a drain to finish, an upload to exit: the campaign's time bounds.
START_S = 60.0
PROCESS_S = 120.0

_AUDIT = """
CREATE TABLE IF NOT EXISTS campaign_created (item_id TEXT PRIMARY KEY);
CREATE TRIGGER IF NOT EXISTS campaign_created AFTER INSERT ON spool WHEN NEW.kind = 'report'
BEGIN INSERT OR IGNORE INTO campaign_created VALUES (NEW.item_id); END;
"""


def peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM) in bytes; 0 if it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"^VmHWM:\s+(\d+) kB", text, re.M)
    return int(found.group(1)) * 1024 if found else 0


def wait_until(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.02) -> object:
    """Poll ``condition`` until it is truthy; raise at the deadline (never sleep-and-hope)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(interval)


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


# -- a machine: a state folder with a spool ---------------------------------------------------------


class Machine:
    """A state folder (``CEIP_HOME``) opted in to ``product``, whose spool records every report created."""

    def __init__(self, folder: Path, product: str) -> None:
        self.folder = folder
        self.product = product
        folder.mkdir(parents=True, exist_ok=True)
        db = StateDB(folder)
        try:
            Consent(db).opt_in(product)
        finally:
            db.close()
        with self._connect() as conn:
            conn.executescript(_AUDIT)
        self.env = {**os.environ, "CEIP_HOME": str(folder)}

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.folder / DB_NAME, timeout=30)

    def _ids(self, sql: str) -> set[str]:
        conn = self._connect()
        try:
            return {row[0] for row in conn.execute(sql)}
        finally:
            conn.close()

    def seed(self, n: int) -> None:
        """Queue ``n`` reports, as ``n`` sessions of the product would on closing."""
        db = StateDB(self.folder)
        spool = Spool(db)
        try:
            guid = spool.consent.guid()
            epoch = db.read(read_epochs)[self.product]
            assert guid is not None
            now = time.time()
            for i in range(n):
                data = SessionData(self.product, "1.0", now - 120 - i, now - 60 - i)
                assert spool_report(build_report(data, guid), spool, consent_epoch=epoch), "seeding was refused"
        finally:
            db.close()

    def created(self) -> set[str]:
        return self._ids("SELECT item_id FROM campaign_created")

    def queued(self) -> set[str]:
        return self._ids("SELECT item_id FROM spool WHERE kind = 'report'")

    def age(self) -> None:
        """End every lease and retry delay, as the passing of time would (see the module docstring)."""
        conn = self._connect()
        try:
            with conn:
                conn.execute("UPDATE spool SET lease_until = 0, not_before = 0")
        finally:
            conn.close()

    def upload(self, url: str) -> subprocess.Popen[bytes]:
        """Start ``ceip upload --to url`` for this machine."""
        command = [*CLI, "upload", "--to", url]
        return subprocess.Popen(command, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def deliver(self, url: str, runs: int = 3) -> None:
        """Age the spool and run ``ceip upload`` until the queue is empty (at most ``runs`` times)."""
        for _ in range(runs):
            if not self.queued():
                return
            self.age()
            self.upload(url).wait(PROCESS_S)


# -- the service ------------------------------------------------------------------------------------


class Service:
    """``ceip serve`` on loopback with a SQLite database in ``folder``; restarts on the same port."""

    def __init__(self, folder: Path, *args: str) -> None:
        """:param args: more ``ceip serve`` options, e.g. ``--allowlist FILE``."""
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.args = args
        self.db = folder / "reports.db"
        self.log = folder / "serve.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.peak = 0
        self.starts = 0

    def start(self) -> Service:
        command = [*CLI, "serve", "--port", str(self.port), "--db", f"sqlite://{self.db}"]
        command += ["--data", str(self.folder / "data"), "--token", TOKEN, *self.args]
        with open(self.log, "a") as out:
            out.write(f"--- start {self.starts}\n")
            out.flush()
            offset = out.tell()
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        self.starts += 1

        def announced() -> re.Match[str] | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"ceip serve exited with {self.proc.returncode}: see {self.log}")
            with open(self.log) as log:
                log.seek(offset)
                return re.search(r"on http://127\.0\.0\.1:(\d+)", log.read())

        found = wait_until(announced, START_S, "ceip serve announces its port")
        self.port = int(found.group(1))  # type: ignore[attr-defined]
        wait_until(lambda: listening(self.port), START_S, "ceip serve listens")
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _note_peak(self) -> None:
        if self.proc is not None:
            self.peak = max(self.peak, peak_rss(self.proc.pid))

    def kill9(self) -> None:
        assert self.proc is not None
        self._note_peak()
        self.proc.kill()
        self.proc.wait(PROCESS_S)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self._note_peak()
        self.proc.terminate()
        self.proc.wait(PROCESS_S)

    def stored(self, ids: set[str]) -> tuple[int, int]:
        """(how many of ``ids`` the database holds, how many of those it holds more than once)."""
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            rows = conn.execute("SELECT report_id, COUNT(*) FROM reports GROUP BY report_id").fetchall()
        finally:
            conn.close()
        held = {rid: n for rid, n in rows if rid in ids}
        return len(held), sum(1 for n in held.values() if n > 1)

    def crashes(self) -> int:
        """Requests the service logged as its own failure (the guard's ``... failed`` with a traceback)."""
        return len(re.findall(r" failed\nTraceback", self.log.read_text())) if self.log.exists() else 0


# -- one scenario's outcome -------------------------------------------------------------------------


@dataclass
class Outcome:
    scenario: str
    trials: int = 0
    created: int = 0
    stored: int = 0
    acknowledged: int = 0
    """Created reports the service answered ``accepted`` for, as the proxy saw (a kill may eat an answer)."""
    lost: int = 0
    duplicated: int = 0
    queued: int = 0
    server_errors: int = 0
    crashes: int = 0
    peak_service: int = 0
    peak_client: int = 0
    seconds: float = 0.0
    seeding_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def tally(self, machines: Iterable[Machine], service: Service, proxy: FaultProxy) -> Outcome:
        created: set[str] = set()
        queued: set[str] = set()
        for machine in machines:
            created |= machine.created()
            queued |= machine.queued()
        self.created = len(created)
        self.stored, twice = service.stored(created)
        self.acknowledged = sum(1 for item_id in proxy.accepted if item_id in created)
        self.duplicated = twice + sum(1 for item_id, n in proxy.accepted.items() if n > 1 and item_id in created)
        stored_ids = created - queued  # what should be stored by now
        held, _ = service.stored(stored_ids)
        self.queued = len(queued)
        self.lost = len(stored_ids) - held
        self.server_errors = proxy.server_errors
        self.crashes = service.crashes()
        self.peak_service = max(self.peak_service, service.peak)
        return self


@dataclass
class Campaign:
    """Where a run works and what it reports as: the product the machines report for, a seeded random
    source (so a run can be repeated), and a place for every scenario's files."""

    work: Path
    product: str
    seed: int = 1
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def folder(self, name: str) -> Path:
        path = self.work / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def machines(self, scenario: str, n: int, reports: int, outcome: Outcome) -> list[Machine]:
        started = time.perf_counter()
        found = []
        for i in range(n):
            machine = Machine(self.work / scenario / f"machine-{i}", self.product)
            machine.seed(reports)
            found.append(machine)
        outcome.seeding_s += time.perf_counter() - started
        return found

    def service(self, scenario: str) -> tuple[Service, FaultProxy]:
        service = Service(self.folder(scenario) / "service").start()
        return service, FaultProxy(service.port).start_in_thread()


def _kill_at_random(proc: subprocess.Popen[bytes], within: float, rng: random.Random) -> int:
    """Kill -9 ``proc`` at a random moment within ``within`` seconds (if it is still running then);
    returns its peak RSS, read just before the kill (0 if it had already exited)."""
    try:
        proc.wait(rng.uniform(0, within))
        return 0
    except subprocess.TimeoutExpired:
        peak = peak_rss(proc.pid)
        proc.kill()
        proc.wait(PROCESS_S)
        return peak


def _await_first_report(machine: Machine, proc: subprocess.Popen[bytes], timeout: float = PROCESS_S) -> None:
    """Wait until ``proc`` has queued a report on ``machine`` (or exited): on a busy machine an agent's start
    alone can take seconds, and a kill before it had queued anything would test nothing."""
    deadline = time.monotonic() + timeout
    while not machine.created() and proc.poll() is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"the agent queued no report within {timeout} s")
        time.sleep(0.02)


def _timed_upload(machine: Machine, url: str) -> float:
    started = time.monotonic()
    machine.upload(url).wait(PROCESS_S)
    return time.monotonic() - started


# -- the scenarios ----------------------------------------------------------------------------------


def kill_uploader(c: Campaign, trials: int, reports: int) -> Outcome:
    """``ceip upload`` killed with SIGKILL at a random moment of its run, then run again to the end."""
    out = Outcome("kill -9 ceip upload")
    started = time.monotonic()
    service, proxy = c.service("uploader")
    machines: list[Machine] = []
    try:
        [first] = c.machines("uploader/calibrate", 1, reports, out)
        within = _timed_upload(first, proxy.url)  # how long one undisturbed run of this size takes
        machines.append(first)
        killed = 0
        for i in range(trials):
            [machine] = c.machines(f"uploader/{i}", 1, reports, out)
            machines.append(machine)
            peak = _kill_at_random(machine.upload(proxy.url), within, c.rng)
            killed += peak > 0
            out.peak_client = max(out.peak_client, peak)
            machine.deliver(proxy.url)
        out.trials = trials
        out.notes.append(f"{killed} killed mid-run (runs take {within:.1f} s)")
    finally:
        service.stop()
        proxy.stop_thread()
    out.seconds = time.monotonic() - started
    return out.tally(machines, service, proxy)


def kill_agent(c: Campaign, trials: int, seal_every: float = 0.3, longest: float = 4.0) -> Outcome:
    """``ceip agent`` sealing a report every ``seal_every`` s and uploading it, killed with SIGKILL a random
    time of up to ``longest`` s after it queued its first; what it queued is then delivered by ``ceip upload``."""
    out = Outcome("kill -9 ceip agent")
    started = time.monotonic()
    service, proxy = c.service("agent")
    machines: list[Machine] = []
    try:
        for i in range(trials):
            machine = Machine(c.work / "agent" / f"machine-{i}", c.product)
            machines.append(machine)
            command = [*CLI, "agent", "--interval", "0.2", "--seal-every", str(seal_every), "--upload-to", proxy.url]
            proc = subprocess.Popen(command, env=machine.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _await_first_report(machine, proc)
            peak = _kill_at_random(proc, longest, c.rng)
            if not peak:
                out.notes.append(f"agent {i} exited by itself with {proc.returncode}")
            out.peak_client = max(out.peak_client, peak)
            machine.deliver(proxy.url)
        out.trials = trials
    finally:
        service.stop()
        proxy.stop_thread()
    out.seconds = time.monotonic() - started
    return out.tally(machines, service, proxy)


def kill_serve(c: Campaign, trials: int, reports: int) -> Outcome:
    """``ceip serve`` killed with SIGKILL at a random moment of an upload, restarted on the same port and
    database; the uploader's queue is then delivered."""
    out = Outcome("kill -9 ceip serve")
    started = time.monotonic()
    service, proxy = c.service("serve")
    machines: list[Machine] = []
    try:
        [first] = c.machines("serve/calibrate", 1, reports, out)
        within = _timed_upload(first, proxy.url)
        machines.append(first)
        for i in range(trials):
            [machine] = c.machines(f"serve/{i}", 1, reports, out)
            machines.append(machine)
            upload = machine.upload(proxy.url)
            with contextlib.suppress(subprocess.TimeoutExpired):
                upload.wait(c.rng.uniform(0, within))
            service.kill9()
            upload.wait(PROCESS_S)
            service.start()
            machine.deliver(proxy.url)
        out.trials = trials
        out.notes.append(f"{service.starts} starts of ceip serve")
    finally:
        service.stop()
        proxy.stop_thread()
    out.seconds = time.monotonic() - started
    return out.tally(machines, service, proxy)


async def _drain_loop(machine: Machine, url: str, until: float, poll_s: float, timeout: float, age: bool) -> None:
    """Upload ``machine``'s queue as an agent would: one drain every ``poll_s`` s, with the client's own
    backoff (or, with ``age``, retry delays waived), until the queue is empty or the monotonic ``until``."""
    from ceip_core.default_plugins.http_transport import HttpTransport
    from ceip_core.upload import drain

    db = StateDB(machine.folder)
    spool = Spool(db)
    transport = HttpTransport(url, timeout=timeout)
    try:
        while time.monotonic() < until and spool.stats().reports:
            await drain(spool, transport)
            if age:
                machine.age()
            await asyncio.sleep(poll_s)
    finally:
        await transport.close()
        db.close()


def outage(c: Campaign, machines: int, reports: int, down_s: float, deadline_s: float) -> Outcome:
    """The service is down for ``down_s`` s while machines keep trying (real backoff); then it is up, and
    the drain time is how long until every spool is empty (at most ``deadline_s``)."""
    out = Outcome("outage, then drain")
    started = time.monotonic()
    service, proxy = c.service("outage")
    fleet = c.machines("outage", machines, reports, out)
    service.kill9()
    back: list[float] = []

    async def run() -> None:
        until = time.monotonic() + down_s + deadline_s
        loops = asyncio.gather(*(_drain_loop(m, proxy.url, until, 0.5, 30.0, age=False) for m in fleet))
        await asyncio.sleep(down_s)
        await asyncio.to_thread(service.start)
        back.append(time.monotonic())
        await loops

    try:
        asyncio.run(run())
        drained = time.monotonic() - back[0]
    finally:
        service.stop()
        proxy.stop_thread()
    out.trials = 1
    out.seconds = time.monotonic() - started
    out.tally(fleet, service, proxy)
    out.notes.append(
        f"down {down_s:g} s; drained in {drained:.1f} s"
        if not out.queued
        else f"down {down_s:g} s; NOT drained {deadline_s:g} s after: {out.queued} queued"
    )
    return out


#: The faults of the flaky-proxy scenario and how often each is drawn.
PROXY_FAULTS = {"pass": 4, "503": 1, "429": 1, "reset-request": 1, "reset-response": 1, "garble": 1, "stall": 1}


def flaky_proxy(
    c: Campaign, machines: int, reports: int, client_timeout: float, deadline_s: float, faults: Sequence[str] = ()
) -> Outcome:
    """Machines upload through the fault proxy (503, 429 + Retry-After, resets mid-request and mid-answer,
    garbled answers, stalls past the client's timeout); retry delays are waived so the run stays short.
    ``faults``: apply exactly these to the first POSTs, then pass (the tests); else draw from PROXY_FAULTS."""
    from faultproxy import scripted

    out = Outcome("fault proxy")
    started = time.monotonic()
    service, proxy = c.service("proxy")
    proxy.choose = scripted(list(faults)) if faults else weighted(PROXY_FAULTS, seed=c.seed)
    proxy.stall_s = client_timeout + 1.0
    fleet = c.machines("proxy", machines, reports, out)

    async def run() -> None:
        until = time.monotonic() + deadline_s
        await asyncio.gather(*(_drain_loop(m, proxy.url, until, 0.05, client_timeout, age=True) for m in fleet))

    try:
        asyncio.run(run())
    finally:
        service.stop()
        proxy.stop_thread()
    out.trials = sum(proxy.faults.values())
    out.seconds = time.monotonic() - started
    out.notes.append(", ".join(f"{name} {n}" for name, n in sorted(proxy.faults.items())))
    return out.tally(fleet, service, proxy)
