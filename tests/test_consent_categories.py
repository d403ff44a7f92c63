"""Consent by category (#14): a person takes part with some categories of a product only; sealing (in the
product's process, in the detached sealer, in the agent) keeps nothing of the others; narrowing behaves as
an opt-out of what it withdrew, in one transaction; the choice survives a lost database without widening."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner
from helpers import epoch, wait_for

import ceip_core
from ceip_core import identity, wire
from ceip_core.agent import _report
from ceip_core.cli import cli
from ceip_core.consent import ALL_CATEGORIES, Consent, State
from ceip_core.records import (
    Category,
    CounterValue,
    DeletionRequest,
    Histogram,
    Period,
    Problem,
    ProcessSession,
    Report,
    SystemInfo,
)
from ceip_core.sealing import spool_report
from ceip_core.spool import Spool
from ceip_core.spool_rows import read_partials, save_partial
from ceip_core.statedb import StateDB

USE, PERF, CONF = Category.PROGRAM_USE, Category.PERFORMANCE, Category.CONFIGURATION


def spool_of(home: Path) -> Spool:
    return Spool(StateDB(home))


def reports(spool: Spool) -> list[Report]:
    return [r for r in (wire.decode_item(i.data) for i in spool.items()) if isinstance(r, Report)]


def deletions(spool: Spool) -> list[DeletionRequest]:
    return [r for r in (wire.decode_item(i.data) for i in spool.items()) if isinstance(r, DeletionRequest)]


def record_everything(version: str = "1.0", *, detach: bool = False) -> bool:
    """A session with something of every category the sample product declares."""
    rec = ceip_core.recorder("sample", version)
    rec.feature("open_file")  # program use
    rec.observe("render_ms", 12.0)  # performance and reliability
    rec.problem("ValueError@x.py:1")  # performance and reliability
    rec.config("theme", "dark")  # configuration
    return rec.close(detach=detach)


def test_the_consent_module_spells_every_category_as_the_records_do() -> None:
    assert tuple(c.value for c in Category) == ALL_CATEGORIES


def test_a_recorder_keeps_nothing_of_a_category_not_consented(sample, ceip_home: Path) -> None:
    Consent(StateDB(ceip_home)).opt_in("sample", [USE, CONF])
    assert record_everything()
    [report] = reports(spool_of(ceip_home))
    assert [c.name for c in report.counters] == ["open_file"] and report.config == {"theme": "dark"}
    assert report.histograms == () and report.problems == ()
    assert report.categories == (CONF, USE)
    assert report.diagnostics["scrub.declared.not_consented"] == 2
    assert b"render_ms" not in spool_of(ceip_home).items()[0].data


def test_the_detached_sealer_keeps_nothing_of_a_category_not_consented(sample, ceip_home: Path) -> None:
    Consent(StateDB(ceip_home)).opt_in("sample", [PERF])
    assert record_everything(detach=True)
    spool = spool_of(ceip_home)
    wait_for(lambda: reports(spool), timeout=30)
    [report] = reports(spool)
    assert report.counters == () and report.config == {} and report.problems and report.histograms
    assert report.categories == (PERF,)


def test_a_session_of_only_withdrawn_categories_queues_nothing_and_says_why(sample, ceip_home: Path) -> None:
    Consent(StateDB(ceip_home)).opt_in("sample", [CONF])
    rec = ceip_core.recorder("sample", "1.0")
    rec.feature("open_file")
    assert rec.close() is False
    spool = spool_of(ceip_home)
    assert spool.items() == [] and spool.stats().drops["not-consented:sample"] == 1


def agent_report(guid: str) -> Report:
    """What the agent seals for a product: machine facts, a session, a product collector's counter."""
    from ceip_core.session_data import SessionData

    now = datetime.now(UTC)
    started = now - timedelta(minutes=5)
    metrics = SessionData("sample", "unknown", 0, 0, counters={("open_file", None): 2})
    session = ProcessSession("sample-app", started, 300.0, cpu_s=1.0, peak_rss_bytes=1 << 20)
    return _report(guid, "sample", started.timestamp(), now.timestamp(), metrics, [session], SystemInfo(os="Linux"))


def test_the_agents_reports_honour_the_categories(sample, ceip_home: Path) -> None:
    spool = spool_of(ceip_home)
    spool.consent.opt_in("sample", [CONF])
    guid = spool.consent.guid()
    assert guid is not None
    assert spool_report(agent_report(guid), spool, consent_epoch=epoch(spool, "sample"), plugins=sample)
    [report] = reports(spool)
    assert report.system is not None and report.system.os == "Linux"  # machine facts: configuration
    assert report.sessions == () and report.counters == ()  # sessions and features: program use
    spool.consent.opt_in("sample", [PERF])
    assert not spool_report(agent_report(guid), spool, consent_epoch=epoch(spool, "sample"), plugins=sample)
    assert spool.stats().drops["not-consented:sample"] == 1


def queue(spool: Spool, report: Report) -> None:
    assert spool.put_report(
        report.report_id, report.product, report.guid, wire.encode_item(report), consent_epoch=epoch(spool, "sample")
    )


def mixed(guid: str, report_id: str, **parts: object) -> Report:
    now = datetime.now(UTC)
    return Report(report_id, guid, "sample", "1.0", Period(now - timedelta(hours=1), now), **parts)  # type: ignore[arg-type]


def test_narrowing_rewrites_the_queued_reports_in_its_own_transaction(sample, ceip_home: Path) -> None:
    spool = spool_of(ceip_home)
    spool.consent.opt_in("sample")
    guid = spool.consent.guid()
    assert guid is not None
    both = mixed(
        guid,
        "2d0c8e0a-0000-4000-8000-000000000001",
        counters=[CounterValue("open_file", 4)],
        histograms=[Histogram("render_ms", 1, 5.0, 5.0, 5.0, {9: 1})],
        problems=[Problem("error", "E@x.py:1", 1)],
        config={"theme": "dark"},
    )
    only_perf = mixed(guid, "2d0c8e0a-0000-4000-8000-000000000002", problems=[Problem("crash", "C@y.py:2", 1)])
    queue(spool, both)
    queue(spool, only_perf)
    with spool.db.connect() as conn:  # what `ceip agent --once` keeps between runs, under this epoch
        save_partial(conn, "sample", epoch(spool, "sample"), wire.encode_item(only_perf))
    recorded = epoch(spool, "sample")

    change = spool.consent.opt_out("sample", [PERF], spec=sample.product("sample"))

    assert change.after is State.IN and change.removed == ("performance and reliability",)
    assert (change.reports_rewritten, change.reports_deleted, change.deletion_queued) == (1, 1, True)
    [rewritten] = reports(spool)
    assert rewritten.report_id == both.report_id  # same id: delivery stays idempotent
    assert rewritten.counters == both.counters and rewritten.config == both.config
    assert rewritten.histograms == () and rewritten.problems == ()
    assert rewritten.categories == (CONF, USE) and rewritten.diagnostics["consent.narrowed"] == 2
    [request] = deletions(spool)
    assert (request.guid, request.product, request.categories) == (guid, "sample", (PERF,))
    stats = spool.stats()
    assert stats.drops["consent-narrowed:sample"] == 1
    assert stats.bytes == sum(len(i.data) for i in spool.items())  # the running totals follow the rewrite
    assert spool.db.read(read_partials) == {}
    assert spool.consent.categories("sample") == {CONF, USE}
    # A seal that read the consent before the narrowing is refused when it writes, as after an opt-out.
    late = mixed(guid, "2d0c8e0a-0000-4000-8000-000000000003", problems=[Problem("error", "E@x.py:1", 1)])
    data = wire.encode_item(late)
    assert not spool.put_report(late.report_id, "sample", guid, data, consent_epoch=recorded)
    assert spool.stats().drops["stale-consent:sample"] == 1


def test_narrowing_without_the_declaration_deletes_the_queued_reports_whole(sample, ceip_home: Path) -> None:
    spool = spool_of(ceip_home)
    spool.consent.opt_in("sample")
    guid = spool.consent.guid()
    assert guid is not None
    queue(spool, mixed(guid, "2d0c8e0a-0000-4000-8000-000000000004", counters=[CounterValue("open_file", 1)]))
    change = spool.consent.opt_out("sample", [CONF])
    assert change.reports_deleted == 1 and reports(spool) == []


def test_widening_and_narrowing_to_nothing(sample, ceip_home: Path) -> None:
    consent = Consent(StateDB(ceip_home))
    consent.opt_in("sample", [CONF])
    first = epoch(consent, "sample")
    widened = consent.opt_in("sample")
    assert widened.categories is None and not widened.deletion_queued and widened.removed == ()
    assert consent.categories("sample") == set(Category) and epoch(consent, "sample") > first
    consent.opt_in("sample", [CONF, USE])
    out = consent.opt_out("sample", [CONF, USE])  # nothing left: an opt-out
    assert out.after is State.OUT and consent.state("sample") is State.OUT and consent.categories("sample") == set()
    assert consent.guid() is None
    # Narrowing from all to two categories asked for the third's deletion; the opt-out, for everything.
    assert [r.categories for r in deletions(spool_of(ceip_home))] == [(PERF,), None]
    assert consent.opt_in("sample", []).after is State.OUT  # consent to nothing is no consent


def test_a_database_from_before_categories_keeps_every_choice_whole(sample, ceip_home: Path) -> None:
    Consent(StateDB(ceip_home)).opt_in("sample")
    conn = sqlite3.connect(ceip_home / "ceip.db")
    conn.executescript("ALTER TABLE consent DROP COLUMN categories; DROP TRIGGER spool_totals_resize;")
    conn.execute("PRAGMA user_version = 3")
    conn.close()
    consent = Consent(StateDB(ceip_home))
    assert consent.categories("sample") == set(Category)
    consent.opt_in("sample", [USE])
    assert consent.categories("sample") == {USE}


def test_the_backup_keeps_the_categories_and_a_damaged_or_old_one_never_widens(ceip_home: Path) -> None:
    consent = Consent(StateDB(ceip_home))
    consent.opt_in("sample", [CONF, PERF])
    consent.opt_in("other")
    guid = consent.guid()
    assert guid is not None
    backup = json.loads((ceip_home / identity.BACKUP_NAME).read_text())
    assert backup["consent"] == {"sample": "in:configuration,performance and reliability", "other": "in"}

    def restored(states: dict[str, str]) -> Consent:
        consent.db.close()
        for name in ("ceip.db", "ceip.db-wal", "ceip.db-shm"):
            (ceip_home / name).unlink(missing_ok=True)
        identity.write_backup(ceip_home, guid, states)
        return Consent(StateDB(ceip_home))

    again = restored(backup["consent"])
    assert again.categories("sample") == {CONF, PERF} and again.categories("other") == set(Category)
    # Names this version does not know are left out; an entry left with none is not restored at all.
    again = restored({"sample": "in:configuration,telepathy", "other": "in:telepathy"})
    assert again.categories("sample") == {CONF}
    assert again.state("other") is State.UNSET
    # An old backup's "in" was written when consent covered every category.
    again = restored({"sample": "in"})
    assert again.categories("sample") == set(Category)


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == code, result.output
    return result.output


def test_the_cli_takes_short_and_full_names_and_explains_a_wrong_one(sample, ceip_home: Path) -> None:
    wrong = run("consent", "in", "sample", "--only", "configuration,perfomance", code=2)
    assert "unknown category 'perfomance'" in wrong and "configuration, performance, use" in wrong
    assert "Invalid value for '--only'" in wrong
    assert Consent(StateDB(ceip_home)).state("sample") is State.UNSET  # nothing was changed
    said = run("consent", "in", "sample", "--only", "configuration,performance and reliability")
    assert "sample: participating with configuration, performance only." in said
    assert "(configuration, performance only)" in run("consent", "status")
    rows = json.loads(run("consent", "status", "--json"))
    assert next(r for r in rows if r["product"] == "sample")["categories"] == ["configuration", "performance"]
    said = run("consent", "out", "sample", "--only", "performance")
    assert "participating with configuration only" in said and "Withdrawn: performance." in said
    assert "A request to delete what was already sent of it is queued." in said
    [change] = json.loads(run("consent", "in", "sample", "--json"))
    assert change["categories"] == ["configuration", "performance", "use"] and change["removed"] == []
    assert "sample" in run("consent", "status") and "only)" not in run("consent", "status")


def test_recording_stops_for_a_narrowing_as_for_an_opt_out(sample, ceip_home: Path) -> None:
    """The recorder follows epochs: what it held when the categories narrowed is discarded (the docs say so)."""
    consent = Consent(StateDB(ceip_home))
    consent.opt_in("sample")
    rec = ceip_core.recorder("sample", "1.0")
    rec.observe("render_ms", 3.0)
    consent.opt_out("sample", [PERF], spec=sample.product("sample"))
    wait_for(lambda: rec._epoch == epoch(consent, "sample"), timeout=5)
    rec.feature("open_file")
    assert rec.close()
    [report] = reports(spool_of(ceip_home))
    assert report.histograms == () and [c.name for c in report.counters] == ["open_file"]


def test_what_the_agent_keeps_between_runs_holds_only_the_consented_categories(sample, ceip_home: Path) -> None:
    """``ceip agent --once`` keeps what it did not seal in the state database: that is on disk too."""
    from ceip_core.agent import Agent, AgentConfig, _Held
    from ceip_core.session_data import SessionData

    spool = spool_of(ceip_home)
    spool.consent.opt_in("sample", [CONF])
    agent = Agent(AgentConfig(ceip_home, once=True), sample)
    held = _Held(epoch(spool, "sample"), datetime.now(UTC).timestamp() - 60)
    held.metrics = SessionData("sample", "unknown", 0, 0, counters={("open_file", None): 2}, config={"theme": "dark"})
    held.ended = [ProcessSession("sample-app", datetime.now(UTC) - timedelta(seconds=30), 20.0)]
    agent.held["sample"] = held
    agent._keep_partials()
    [(_, data)] = spool.db.read(read_partials).values()
    partial = wire.decode_item(data)
    assert isinstance(partial, Report)
    assert partial.counters == () and partial.sessions == () and partial.config == {"theme": "dark"}
    assert b"open_file" not in data
