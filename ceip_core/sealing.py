"""Sealing: a recorded session becomes a report, the report is scrubbed, the scrubbed report is spooled.

This is the one path by which anything reaches the spool, whether it comes from a product's recorder
or from the agent's collectors: consent and GUID are read, the plugins' scrubbers run, and the spool
re-checks consent and GUID inside its write transaction. What a scrubber drops is counted; a report for
a product no plugin declares is dropped and counted too (fail closed), and so are reports for a product
the maintainers' allowlist does not name (``ceip_core.allowlist``) and reports the vendor's kill switch
or sampling rate turns away (``ceip_core.vendor_policy``), before any work is spent on them.

Consent by category is enforced here too: the report is stamped with the categories the person consented
to under the epoch its data was recorded under (``Report.categories``), and the ``declared`` scrubber drops
every part of any other category (counted under ``scrub.declared.not_consented``). A report left with
nothing is dropped (``not-consented``). Recorders and the agent collect without knowing categories (the
recording path loads no specs); this is the one place, before the disk, where they are applied.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from pathlib import Path

import attrs

from ceip_core import vendor_policy, wire
from ceip_core.allowlist import Allowlist
from ceip_core.consent import read_consented
from ceip_core.plugins import PluginError, Plugins, get_plugins
from ceip_core.records import Category, CounterValue, Histogram, Period, Problem, Report, holds_data
from ceip_core.scrubbing import MachineIdentifiers, ScrubContext, run_pipeline
from ceip_core.session_data import SessionData
from ceip_core.spool import Spool
from ceip_core.statedb import StateDB

log = logging.getLogger(__name__)

_machine: MachineIdentifiers | None = None


def machine_identifiers() -> MachineIdentifiers:
    """This machine's identifiers, looked up once per process."""
    global _machine
    if _machine is None:
        _machine = MachineIdentifiers.of_this_machine()
    return _machine


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def build_report(data: SessionData, guid: str) -> Report:
    """The report for one recorded session, before scrubbing."""
    return Report(
        report_id=str(uuid.uuid4()),
        guid=guid,
        product=data.product,
        product_version=data.version,
        period=Period(_utc(data.start), _utc(data.end)),
        counters=[CounterValue(name, value, label) for (name, label), value in sorted(data.counters.items(), key=_key)],
        histograms=[
            Histogram(name, h[0], float(h[1]), float(h[2]), float(h[3]), dict(sorted(h[4].items())), label)
            for (name, label), h in sorted(data.histograms.items(), key=_key)
        ],
        problems=[Problem(kind, sig, n) for (kind, sig), n in sorted(data.problems.items())],
        config=dict(sorted(data.config.items())),
        diagnostics={f"recorder.{k}": v for k, v in sorted(data.errors.items())},
    )


def _key(item: tuple[tuple[str, str | None], object]) -> tuple[str, str]:
    (name, label), _ = item
    return (name, label or "")


def spool_report(report: Report, spool: Spool, *, consent_epoch: int, plugins: Plugins | None = None) -> bool:
    """Scrub ``report`` with every registered scrubber and queue the result. True if it was queued.

    ``consent_epoch`` is the epoch the report's data was collected under (``Consent.epoch``)."""
    try:
        plugins = plugins or get_plugins()
        spec = plugins.products.get(report.product)
        scrubbers = plugins.scrubbers
    except PluginError as exc:  # fail closed: without every scrubber nothing is queued
        log.warning("ceip: dropping a report for %r: the plugins cannot load (%s)", report.product, exc)
        spool.count_drop("plugins-failed", report.product)
        return False
    if spec is None:
        log.warning("ceip: dropping a report for %r: no installed plugin declares that product", report.product)
        spool.count_drop("unknown-product", report.product)
        return False
    if not Allowlist.current(spool.db.folder).allows(spec):
        spool.count_drop("not-allowlisted", report.product)
        return False
    draw = vendor_policy.machine_draw(report.guid, report.product)
    dropped = spool.db.read(vendor_policy.read).drop_reason(report.product, draw)
    if dropped is not None:
        spool.count_drop(dropped, report.product)
        return False
    consented = spool.db.read(lambda conn: read_consented(conn, report.product))
    if consented is None or consented[0] != consent_epoch:
        spool.count_drop("not-opted-in" if consented is None else "stale-consent", report.product)
        return False
    categories = None if consented[1] is None else tuple(c for c in Category if c.value in consented[1])
    # The digest names the declaration the report is scrubbed against: the service validates it with the same.
    report = attrs.evolve(report, spec_digest=wire.spec_digest(spec), categories=categories)
    ctx = ScrubContext(spec=spec, machine=machine_identifiers())
    outcome = run_pipeline(report, scrubbers, ctx)
    if outcome.report is None:
        spool.count_drop(outcome.dropped_by or "scrubbed", report.product)
        return False
    scrubbed = outcome.report
    if scrubbed.categories != categories:  # only consent says what a report may hold: fail closed
        spool.count_drop("scrubbed:categories-changed", report.product)
        return False
    if categories is not None and holds_data(report) and not holds_data(scrubbed):
        spool.count_drop("not-consented", report.product)
        return False
    data = wire.encode_item(scrubbed)
    if not spool.put_report(scrubbed.report_id, scrubbed.product, scrubbed.guid, data, consent_epoch=consent_epoch):
        return False
    plugins.report_spooled(scrubbed)
    return True


def seal_session(data: SessionData, folder: Path, plugins: Plugins | None = None) -> bool:
    """Seal a recorder's session into the spool of ``folder``. True if a report was queued."""
    spool = Spool(StateDB(folder))
    try:
        guid = spool.consent.guid()
        if guid is None or data.consent_epoch is None:
            return False
        return spool_report(build_report(data, guid), spool, consent_epoch=data.consent_epoch, plugins=plugins)
    finally:
        spool.db.close()
