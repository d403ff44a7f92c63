"""The agent: one asyncio service per machine (per state folder) that turns observations into reports.

- It holds the agent lock of the state folder, so a second agent refuses to start; the OS releases the
  lock when the agent dies, even by ``kill -9``, so a restart after a crash just works.
- It runs every registered collector on its schedule, with a context of only the products that are
  installed, allowlisted and opted in right now.
- It keeps what it observed per product, *under the consent epoch in force when it began collecting for
  that product*. The consent watcher tells it of any process's consent change within a fraction of a
  second; a product whose epoch changed (an opt-out, or an opt-out and a new opt-in) has what was held
  for it discarded at once, and the next collection leaves it out. The spool re-checks the epoch when a
  report is written, so nothing collected before a withdrawal can be queued after it.
- It seals a report per product when a session of it ends, at least every ``seal_every`` seconds
  (daily by default; the time of the last such seal survives restarts), and when it is stopped
  (SIGTERM, SIGINT), always through ``ceip_core.sealing.spool_report``, the one path into the spool.
- Run with ``once`` (from cron, say every 5 minutes), it looks once and keeps what it did not seal in
  the state database for the next run, where it also learns which sessions ended in between: it seals
  when a session has ended or the seal interval is over, not on every run.
- With an upload URL it drains the spool through that URL's transport after each seal and every minute.

What is spooled is durable. The agent holds in memory only what it has not sealed yet: sessions that
ended since its last look and snapshots of those still running, so a crash loses at most those, and a
restart seals nothing twice. ``agent.json`` in the state folder says what the agent is doing, for
``ceip status`` (the lock and that file are kept by ``ceip_core.agent_state``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sqlite3
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

from ceip_core import wire
from ceip_core.agent_state import STATUS_FILE, AgentError, agent_lock, read_status, running_agent
from ceip_core.allowlist import Allowlist
from ceip_core.collectors import CollectContext, Collector, SessionObserved
from ceip_core.consent import ConsentWatcher, read_epochs
from ceip_core.plugins import Plugins
from ceip_core.records import EndKind, Period, ProcessSession, Report, SystemInfo
from ceip_core.sealing import spool_report
from ceip_core.spool import Spool, drop_partial, read_partials, save_partial
from ceip_core.statedb import StateDB
from ceip_core.transport import Transport
from ceip_core.upload import drain

log = logging.getLogger(__name__)

#: The product version on the agent's reports: it sees a product's executables, not its version.
UNKNOWN_VERSION = "unknown"
#: How often the agent tries to upload what is queued, besides right after each seal.
UPLOAD_EVERY_S = 60.0


@dataclass(frozen=True)
class AgentConfig:
    """How one agent runs."""

    folder: Path
    intervals: Mapping[str, float] = field(default_factory=dict)
    """Polling intervals by collector name, instead of the collector's own ``interval_s``."""
    seal_every: float = 86400.0
    upload_to: str | None = None
    once: bool = False
    """Run every collector once, seal what is due, keep the rest for the next run, upload, and return."""


# -- the agent -------------------------------------------------------------------------------------------


@dataclass
class _Held:
    """What the agent holds for one product, all of it collected under one consent epoch."""

    epoch: int
    since: float
    ended: list[ProcessSession] = field(default_factory=list)
    running: dict[str, list[ProcessSession]] = field(default_factory=dict)
    """The running sessions each collector saw in its latest pass, by collector name."""

    def has_sessions(self) -> bool:
        return bool(self.ended) or any(self.running.values())


class Agent:
    """One agent. Use :func:`run_agent`, which takes the lock first."""

    def __init__(self, config: AgentConfig, plugins: Plugins) -> None:
        self.config = config
        self.plugins = plugins
        self.spool = Spool(StateDB(config.folder))
        self.held: dict[str, _Held] = {}
        """Per active product, what was collected and not sealed yet."""
        self.system: SystemInfo | None = None
        self._allowed: Mapping[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._upload_due = asyncio.Event()
        previous = read_status(config.folder)
        self.status: dict[str, Any] = {
            "pid": os.getpid(),
            "state": "starting",
            "started": time.time(),
            "observing": {},
            "sessions_ended": 0,
            "reports_sealed": 0,
            "last_seal": None,
            "last_periodic_seal": previous.get("last_periodic_seal"),
            "upload_to": config.upload_to,
            "last_upload": None,
        }

    async def run(self) -> None:
        """Run until SIGTERM or SIGINT (or one cycle with ``config.once``), then seal what is held."""
        self._loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows' event loop
                self._loop.add_signal_handler(sig, stop.set)
        url = self.config.upload_to
        transport = self.plugins.transport_for(url) if url else None
        collectors = self.plugins.collectors
        log.info("agent %d started for %s", os.getpid(), self.config.folder)
        self._write_status("starting")
        self._apply_consent(ConsentWatcher.shared(self.config.folder).subscribe(self))
        previously_running = self._restore_partials()
        try:
            await asyncio.gather(*(self._collect(c) for c in collectors))
            self._seal_ended_meanwhile(previously_running)
            if self.config.once:
                # One run of many (cron): seal only when the period is over; ended sessions were sealed
                # above; everything else waits in the state database for the next run.
                if self._periodic_seal_due():
                    self._seal_all(periodic=True)
                self._keep_partials()
                if transport is not None:
                    await self._upload(transport)
                return
            self.spool.db.write(_drop_partials)  # held in memory from now on
            self._write_status("running")
            tasks = [asyncio.create_task(self._collect_every(c)) for c in collectors]
            tasks.append(asyncio.create_task(self._seal_periodically()))
            if transport is not None:
                tasks.append(asyncio.create_task(self._upload_when_due(transport)))
            await stop.wait()
            log.info("agent stopping: sealing what it holds")
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._seal_all(periodic=False)
        finally:
            if transport is not None:
                await transport.close()
            self._write_status("stopped")
            self.spool.db.close()
            log.info("agent stopped")

    # -- consent --------------------------------------------------------------------------------------

    def consent_changed(self, allowed: Mapping[str, int]) -> None:
        """Called on the consent watcher's thread; the change is applied on the agent's loop."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: this agent has stopped
                self._loop.call_soon_threadsafe(self._apply_consent, dict(allowed))

    def _apply_consent(self, allowed: Mapping[str, int]) -> None:
        self._allowed = allowed
        for product in [p for p, held in self.held.items() if allowed.get(p) != held.epoch]:
            del self.held[product]
            log.info("consent for %s changed: discarded what was collected for it", product)
        if not self.held:
            self.system = None
        self._observing(self._context_now()[0])

    # -- collecting -----------------------------------------------------------------------------------

    def _context_now(self) -> tuple[CollectContext, dict[str, _Held]]:
        """The products active now (installed, allowlisted, opted in) and what is held for each; what
        a collector is about to gather for a product is held under the epoch in force now."""
        allowlist = Allowlist.current(self.config.folder)
        specs = [
            spec
            for product, spec in self.plugins.products.items()
            if product in self._allowed and allowlist.allows(spec)
        ]
        active = {spec.id for spec in specs}
        for product in set(self.held) - active:  # no longer allowlisted
            del self.held[product]
        for product in active - set(self.held):
            self.held[product] = _Held(self._allowed[product], time.time())
        executables = tuple(entry for spec in specs for entry in allowlist.executables(spec))
        return CollectContext(tuple(specs), executables), {p: self.held[p] for p in active}

    async def _collect_every(self, collector: Collector) -> None:
        interval = self.config.intervals.get(collector.name, collector.interval_s)
        while True:
            await asyncio.sleep(interval)
            await self._collect(collector)

    async def _collect(self, collector: Collector) -> None:
        """One pass of ``collector``; what it saw is kept only for products whose consent did not change
        while it looked."""
        ctx, held = self._context_now()
        self._observing(ctx)
        if not ctx.products:
            return
        try:
            observations = await collector.collect(ctx)
        except Exception:
            log.exception("collector %s failed", collector.name)
            return
        running: dict[str, list[ProcessSession]] = {product: [] for product in held}
        ended: dict[str, list[ProcessSession]] = {}
        for obs in observations:
            if isinstance(obs, SystemInfo):
                self.system = obs if self.held else None
            elif isinstance(obs, SessionObserved) and obs.product in held:
                if obs.session.ended is EndKind.RUNNING:
                    running[obs.product].append(obs.session)
                else:
                    ended.setdefault(obs.product, []).append(obs.session)
        for product, h in held.items():
            if self.held.get(product) is not h:
                continue  # consent changed while the collector looked: what it saw is discarded
            h.running[collector.name] = running[product]
            if product in ended:
                h.ended += ended[product]
                self.status["sessions_ended"] += len(ended[product])
                self._seal(product, with_running=False)

    def _observing(self, ctx: CollectContext) -> None:
        observing = {
            spec.id: sorted({e.name for e in ctx.executables if e.product == spec.id}) for spec in ctx.products
        }
        if observing != self.status["observing"]:
            self.status["observing"] = observing
            log.info("observing: %s", "; ".join(f"{p} ({', '.join(e)})" for p, e in observing.items()) or "nothing")
            self._write_status()

    # -- between two runs of --once -------------------------------------------------------------------

    def _restore_partials(self) -> dict[str, list[ProcessSession]]:
        """Take back what an earlier ``--once`` run collected for each active product and did not seal
        (only under the consent epoch it was collected under); returns the sessions that run saw running."""
        running: dict[str, list[ProcessSession]] = {}
        active = self._context_now()[1]
        for product, (epoch, data) in self.spool.db.read(read_partials).items():
            if product not in active or active[product].epoch != epoch:
                continue  # consent changed, or the product is inert now: what was kept is dropped
            try:
                saved = wire.decode_item(data)
            except wire.WireError as exc:
                log.warning("ignoring what an earlier run kept for %s: %s", product, exc)
                continue
            if not isinstance(saved, Report):
                continue
            held = self.held[product] = _Held(epoch, saved.period.start.timestamp())
            held.ended = [s for s in saved.sessions if s.ended is not EndKind.RUNNING]
            running[product] = [s for s in saved.sessions if s.ended is EndKind.RUNNING]
        return running

    def _seal_ended_meanwhile(self, previously_running: Mapping[str, list[ProcessSession]]) -> None:
        """Sessions an earlier run saw running and this run's first look does not see have ended in
        between; how they ended nobody can tell any more (``unknown``), and they last until that last look."""
        for product, sessions in previously_running.items():
            held = self.held.get(product)
            if held is None:
                continue
            now_running = [s for group in held.running.values() for s in group]
            gone = [
                attrs.evolve(s, ended=EndKind.UNKNOWN)
                for s in sessions
                if not any(_same_session(s, other) for other in now_running)
            ]
            if gone:
                held.ended += gone
                self.status["sessions_ended"] += len(gone)
                self._seal(product, with_running=False)

    def _periodic_seal_due(self) -> bool:
        last = self.status["last_periodic_seal"]
        return last is None or time.time() >= last + self.config.seal_every

    def _keep_partials(self) -> None:
        """Keep what is held and not sealed for the next ``--once`` run, in the state database; an
        opt-out deletes it there, in its own transaction."""
        guid = self.spool.consent.guid()
        now = time.time()

        def work(conn: sqlite3.Connection) -> None:
            _drop_partials(conn)
            epochs = read_epochs(conn)
            for product, held in self.held.items():
                if guid is None or epochs.get(product) != held.epoch:
                    continue
                sessions = held.ended + [s for group in held.running.values() for s in group]
                since = datetime.fromtimestamp(held.since, UTC)
                partial = Report(
                    report_id=str(uuid.uuid4()),
                    guid=guid,
                    product=product,
                    product_version=UNKNOWN_VERSION,
                    period=Period(since, max(since, datetime.fromtimestamp(now, UTC))),
                    sessions=sessions,
                )
                save_partial(conn, product, held.epoch, wire.encode_item(partial))

        self.spool.db.write(work)

    # -- sealing --------------------------------------------------------------------------------------

    async def _seal_periodically(self) -> None:
        while True:
            last = self.status["last_periodic_seal"] or 0.0
            await asyncio.sleep(max(0.0, last + self.config.seal_every - time.time()))
            self._seal_all(periodic=True)

    def _seal_all(self, *, periodic: bool) -> None:
        """Seal every product: all of them for a periodic seal (machine configuration at least), else
        those with sessions to report."""
        for product, held in list(self.held.items()):
            if periodic or held.has_sessions():
                self._seal(product, with_running=True)
        if periodic:
            self.status["last_periodic_seal"] = time.time()
            self._write_status()

    def _seal(self, product: str, *, with_running: bool) -> bool:
        """Seal what is held for ``product`` into a report and spool it. True if it was queued."""
        held = self.held.get(product)
        if held is None:
            return False
        sessions = held.ended + ([s for group in held.running.values() for s in group] if with_running else [])
        since, now = held.since, time.time()
        held.ended, held.since = [], now
        guid = self.spool.consent.guid()
        if guid is None or (not sessions and self.system is None):
            return False
        report = Report(
            report_id=str(uuid.uuid4()),
            guid=guid,
            product=product,
            product_version=UNKNOWN_VERSION,
            period=Period(datetime.fromtimestamp(since, UTC), datetime.fromtimestamp(now, UTC)),
            system=self.system,
            sessions=sessions,
        )
        if not spool_report(report, self.spool, consent_epoch=held.epoch, plugins=self.plugins):
            return False
        ends = ", ".join(s.ended.value for s in sessions) or "machine configuration only"
        log.info("sealed a report for %s: %d session(s) (%s)", product, len(sessions), ends)
        self.status["reports_sealed"] += 1
        self.status["last_seal"] = now
        self._write_status()
        self._upload_due.set()
        return True

    # -- uploading ------------------------------------------------------------------------------------

    async def _upload_when_due(self, transport: Transport) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._upload_due.wait(), UPLOAD_EVERY_S)
            self._upload_due.clear()
            await self._upload(transport)

    async def _upload(self, transport: Transport) -> None:
        try:
            summary = await drain(self.spool, transport)
        except Exception:
            log.exception("uploading to %s failed; the queue is kept", self.config.upload_to)
            return
        if summary.batches:
            log.info(
                "uploaded %d item(s) to %s; %d to retry, %d rejected",
                summary.accepted,
                self.config.upload_to,
                summary.retried,
                sum(summary.rejected.values()),
            )
            self.status["last_upload"] = {"at": time.time(), "accepted": summary.accepted, "retried": summary.retried}
            self._write_status()

    # -- status ---------------------------------------------------------------------------------------

    def _write_status(self, state: str | None = None) -> None:
        """Write ``agent.json`` whole or not at all (a reader never sees half a file)."""
        if state is not None:
            self.status["state"] = state
        self.status["updated"] = time.time()
        path = self.config.folder / STATUS_FILE
        tmp = path.with_name(f".{STATUS_FILE}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self.status, indent=2, sort_keys=True))
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("cannot write %s: %s", path, exc)


def _same_session(a: ProcessSession, b: ProcessSession) -> bool:
    """The same run of an executable, seen by two looks (start times are rounded to the second)."""
    return a.executable == b.executable and abs((a.started - b.started).total_seconds()) <= 2


def _drop_partials(conn: sqlite3.Connection) -> None:
    for product in read_partials(conn):
        drop_partial(conn, product)


def run_agent(config: AgentConfig, plugins: Plugins) -> None:
    """Take the agent lock of ``config.folder`` and run the agent (raises :class:`AgentError`)."""
    with agent_lock(config.folder):
        asyncio.run(Agent(config, plugins).run())


__all__ = ["Agent", "AgentConfig", "AgentError", "agent_lock", "read_status", "run_agent", "running_agent"]
