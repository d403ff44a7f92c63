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
import logging
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import attrs

from ceip_core import wire
from ceip_core.agent_state import STATUS_FILE, AgentError, agent_lock
from ceip_core.agent_status import AgentStatus, LastUpload, Written, read_status, write_status
from ceip_core.allowlist import Allowlist
from ceip_core.collectors import (
    PRODUCT_COLLECTOR_TIMEOUT_S,
    CollectContext,
    Collector,
    MetricsObserved,
    Observation,
    SessionObserved,
)
from ceip_core.consent import ConsentWatcher, read_categories, read_epochs
from ceip_core.plugins import Plugins
from ceip_core.records import Category, EndKind, ProcessSession, Report, SystemInfo, only_categories
from ceip_core.sealing import build_report, spool_report
from ceip_core.session_data import SessionData, add_value, valid_value
from ceip_core.spool import Spool
from ceip_core.spool_rows import drop_partial, read_partials, save_partial
from ceip_core.statedb import StateDB
from ceip_core.transport import Transport
from ceip_core.upload import drain

log = logging.getLogger(__name__)

#: The product version on the agent's reports: it sees a product's executables, not its version.
UNKNOWN_VERSION = "unknown"
#: How often the agent tries to upload what is queued, besides right after each seal.
UPLOAD_EVERY_S = 60.0


class _StillBusy(Exception):
    """A product's collector's previous pass has not ended yet."""


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
    metrics: SessionData | None = None
    """The product's own metrics its collector observed since the last seal, in the recorder's terms."""

    def has_sessions(self) -> bool:
        return bool(self.ended) or any(self.running.values())

    def add(self, obs: MetricsObserved) -> None:
        """Add what a product's collector observed, as the product's recorder would have recorded it."""
        if self.metrics is None:
            self.metrics = SessionData(obs.product, UNKNOWN_VERSION, self.since, self.since)
        data = self.metrics
        if obs.version is not None:
            data.version = obs.version
        for key, n in obs.counters.items():
            data.counters[key] = data.counters.get(key, 0) + int(n)
        for name, value, label in obs.values:
            if not valid_value(value):
                data.errors["invalid_value"] = data.errors.get("invalid_value", 0) + 1
                continue
            add_value(data.histograms.setdefault((name, label), [0, 0.0, value, value, {}]), value)
        data.config.update(obs.config)
        for key, n in obs.problems.items():
            data.problems[key] = data.problems.get(key, 0) + int(n)


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
        self.status = AgentStatus(
            state="starting",
            pid=os.getpid(),
            started=time.time(),
            last_periodic_seal=read_status(config.folder).last_periodic_seal,
            upload_to=config.upload_to,
        )
        self._passes: dict[str, asyncio.Future[Sequence[Observation]]] = {}
        """A product's collector's pass in its worker thread, by collector name, while it runs."""

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
        while it looked. A product's collector sees its product alone, and only while it is active."""
        ctx, held = self._context_now()
        self._observing(ctx)
        product = getattr(collector, "product", None)
        if product is not None:
            if product not in held:
                return
            ctx = attrs.evolve(
                ctx,
                products=tuple(s for s in ctx.products if s.id == product),
                executables=tuple(e for e in ctx.executables if e.product == product),
            )
            held = {product: held[product]}
        if not ctx.products:
            return
        try:
            if product is None:
                observations = await collector.collect(ctx)
            else:
                observations = await self._collect_in_thread(collector, ctx)
        except TimeoutError:
            log.warning("collector %s took longer than its budget; its pass is ignored", collector.name)
            self._trouble(collector, "timed_out")
            return
        except _StillBusy:
            self._trouble(collector, "skipped_busy")
            return
        except Exception:
            log.exception("collector %s failed", collector.name)
            self._trouble(collector, "failed")
            return
        running: dict[str, list[ProcessSession]] = {product: [] for product in held}
        ended: dict[str, list[ProcessSession]] = {}
        metrics: list[MetricsObserved] = []
        for obs in observations:
            if isinstance(obs, SystemInfo) and getattr(collector, "machine_facts", False):
                self.system = obs if self.held else None
            elif isinstance(obs, SessionObserved) and obs.product in held:
                if obs.session.ended is EndKind.RUNNING:
                    running[obs.product].append(obs.session)
                else:
                    ended.setdefault(obs.product, []).append(obs.session)
            elif isinstance(obs, MetricsObserved) and obs.product in held:
                metrics.append(obs)
            else:  # machine facts from another collector, another product's data, or not an observation
                self._trouble(collector, "dropped")
        for product, h in held.items():
            if self.held.get(product) is not h:
                continue  # consent changed while the collector looked: what it saw is discarded
            h.running[collector.name] = running[product]
            for obs in metrics:
                if obs.product == product:
                    h.add(obs)
            if product in ended:
                h.ended += ended[product]
                self.status.sessions_ended += len(ended[product])
                self._seal(product, with_running=False)

    def _collect_in_thread(self, collector: Collector, ctx: CollectContext) -> Awaitable[Sequence[Observation]]:
        """A product's collector's pass, run on an event loop of its own in a daemon thread, within its time
        budget: a collector that blocks (a hung status endpoint, a huge log) stalls neither the agent's loop
        nor its exit. A pass that overran keeps its thread until it ends; no new pass starts meanwhile."""
        previous = self._passes.get(collector.name)
        if previous is not None and not previous.done():
            raise _StillBusy
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Sequence[Observation]] = loop.create_future()
        self._passes[collector.name] = done

        def settle(result: Sequence[Observation] | None, error: Exception | None) -> None:
            if done.done():
                return
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(result or ())

        def run() -> None:
            try:
                result, error = asyncio.run(collector.collect(ctx)), None
            except Exception as exc:
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # the agent's loop is closed: nobody waits any more
                loop.call_soon_threadsafe(settle, result, error)

        threading.Thread(target=run, name=f"ceip-collector-{collector.name}", daemon=True).start()
        budget = float(getattr(collector, "timeout_s", PRODUCT_COLLECTOR_TIMEOUT_S))
        return asyncio.wait_for(asyncio.shield(done), budget)

    def _trouble(self, collector: Collector, what: str) -> None:
        """Count a collector's failed, overrun, skipped pass or dropped observation, for ``ceip status``."""
        counts = self.status.collector_troubles.setdefault(collector.name, {})
        counts[what] = counts.get(what, 0) + 1
        self._write_status()

    def _observing(self, ctx: CollectContext) -> None:
        observing = {
            spec.id: sorted({e.name for e in ctx.executables if e.product == spec.id}) for spec in ctx.products
        }
        if observing != self.status.observing:
            self.status.observing = observing
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
            held.metrics = _metrics_of(saved)
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
                self.status.sessions_ended += len(gone)
                self._seal(product, with_running=False)

    def _periodic_seal_due(self) -> bool:
        last = self.status.last_periodic_seal
        return last is None or time.time() >= last + self.config.seal_every

    def _keep_partials(self) -> None:
        """Keep what is held and not sealed for the next ``--once`` run, in the state database; an
        opt-out deletes it there, in its own transaction."""
        guid = self.spool.consent.guid()
        now = time.time()

        def work(conn: sqlite3.Connection) -> None:
            _drop_partials(conn)
            epochs, chosen = read_epochs(conn), read_categories(conn)
            for product, held in self.held.items():
                spec = self.plugins.products.get(product)
                if guid is None or epochs.get(product) != held.epoch or spec is None:
                    continue
                sessions = held.ended + [s for group in held.running.values() for s in group]
                partial = _report(guid, product, held.since, max(held.since, now), held.metrics, sessions, None)
                categories = chosen.get(product)
                if categories is not None:  # what consent left out is not kept on disk either
                    keep = [c for c in Category if c.value in categories]
                    partial = only_categories(partial, spec.category_of, keep)[0]
                save_partial(conn, product, held.epoch, wire.encode_item(partial))

        self.spool.db.write(work)

    # -- sealing --------------------------------------------------------------------------------------

    async def _seal_periodically(self) -> None:
        while True:
            last = self.status.last_periodic_seal or 0.0
            await asyncio.sleep(max(0.0, last + self.config.seal_every - time.time()))
            self._seal_all(periodic=True)

    def _seal_all(self, *, periodic: bool) -> None:
        """Seal every product: all of them for a periodic seal (machine configuration at least), else
        those with sessions to report."""
        for product, held in list(self.held.items()):
            if periodic or held.has_sessions():
                self._seal(product, with_running=True)
        if periodic:
            self.status.last_periodic_seal = time.time()
            self._write_status()

    def _seal(self, product: str, *, with_running: bool) -> bool:
        """Seal what is held for ``product`` into a report and spool it. True if it was queued."""
        held = self.held.get(product)
        if held is None:
            return False
        sessions = held.ended + ([s for group in held.running.values() for s in group] if with_running else [])
        since, now = held.since, time.time()
        metrics = held.metrics
        held.ended, held.since, held.metrics = [], now, None
        guid = self.spool.consent.guid()
        if guid is None or (not sessions and self.system is None and metrics is None):
            return False
        report = _report(guid, product, since, now, metrics, sessions, self.system)
        if not spool_report(report, self.spool, consent_epoch=held.epoch, plugins=self.plugins):
            return False
        ends = ", ".join(s.ended.value for s in sessions) or "machine configuration only"
        log.info("sealed a report for %s: %d session(s) (%s)", product, len(sessions), ends)
        self.status.reports_sealed += 1
        self.status.last_seal = now
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
            summary = await drain(self.spool, transport, destination=self.config.upload_to)
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
            self.status.last_upload = LastUpload(time.time(), summary.accepted, summary.retried)
            self._write_status()

    # -- status ---------------------------------------------------------------------------------------

    def _write_status(self, state: Written | None = None) -> None:
        """Write ``agent.json`` (``ceip_core.agent_status``); a failure is logged, never fatal."""
        if state is not None:
            self.status.state = state
        self.status.updated = time.time()
        try:
            write_status(self.config.folder, self.status)
        except OSError as exc:
            log.warning("cannot write %s: %s", self.config.folder / STATUS_FILE, exc)


def _report(
    guid: str,
    product: str,
    since: float,
    now: float,
    metrics: SessionData | None,
    sessions: Sequence[ProcessSession],
    system: SystemInfo | None,
) -> Report:
    """The report of what the agent held for ``product`` from ``since`` to ``now``, before scrubbing."""
    if metrics is None:
        metrics = SessionData(product, UNKNOWN_VERSION, since, now)
    metrics.start, metrics.end = since, now
    return attrs.evolve(build_report(metrics, guid), system=system, sessions=tuple(sessions))


def _metrics_of(report: Report) -> SessionData | None:
    """What a product's collector had observed, back from a partial report an earlier ``--once`` run kept."""
    if not (report.counters or report.histograms or report.problems or report.config):
        return None
    start, end = report.period.start.timestamp(), report.period.end.timestamp()
    return SessionData(
        report.product,
        report.product_version,
        start,
        end,
        counters={(c.name, c.label): c.value for c in report.counters},
        histograms={(h.name, h.label): [h.count, h.sum, h.min, h.max, dict(h.buckets)] for h in report.histograms},
        problems={(p.kind, p.signature): p.count for p in report.problems},
        config=dict(report.config),
    )


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


__all__ = ["Agent", "AgentConfig", "AgentError", "agent_lock", "read_status", "run_agent"]
