"""Every ``ceip`` view of data that came from elsewhere shows control characters escaped (issue 16,
item 3): a label or problem signature that carries an escape sequence or ``\\r\\n`` cannot set the
terminal's title or forge the rows of a table. ``ceip report`` is tested in tests/service/test_report_view.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner
from helpers import epoch

from ceip_core import settings, wire
from ceip_core.cli import cli
from ceip_core.records import CounterValue, Period, Problem, Report
from ceip_core.spool import Spool
from ceip_core.statedb import StateDB

#: Sets the terminal's title, then starts a forged line.
HOSTILE = "\x1b]0;pwned\x07\r\nreport 0000  forged"


def ceip(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def queue_hostile_report(home: Path) -> bytes:
    """Queue a report whose label and problem signature carry control characters, as stored (past any
    scrubber: what the view must survive is whatever the spool holds)."""
    ceip("consent", "in", "sample")
    spool = Spool(StateDB(home))
    guid = spool.consent.guid()
    assert guid is not None
    now = datetime.now(UTC)
    report = Report(
        report_id="9b2f5d0e-0d6b-4a43-9a51-6c3a3c8f0c11",
        guid=guid,
        product="sample",
        product_version="1.0\x1b[2J",
        period=Period(now - timedelta(hours=1), now),
        counters=[CounterValue("export", 1, HOSTILE)],
        problems=[Problem("error", HOSTILE, 2)],
        config={"theme": HOSTILE},
    )
    data = wire.encode_item(report)
    assert spool.put_report(report.report_id, "sample", guid, data, consent_epoch=epoch(spool, "sample"))
    return data


def test_review_escapes_control_characters(sample, ceip_home: Path) -> None:
    data = queue_hostile_report(ceip_home)
    text = ceip("review")
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text
    assert "  count     export [\\x1b]0;pwned\\x07\\r\\nreport 0000  forged] = 1" in text
    assert "  problem   error: \\x1b]0;pwned\\x07\\r\\nreport 0000  forged x2" in text
    assert "sample 1.0\\x1b[2J" in text
    # No line was forged: each line is one of the view's own.
    assert not [line for line in text.splitlines() if line.startswith("report 0000")]
    # --json: the stored bytes, one item per line, in which JSON escapes every control character.
    assert ceip("review", "--json").encode() == data + b"\n"


def test_status_and_consent_status_escape_what_came_from_elsewhere(sample, ceip_home: Path) -> None:
    queue_hostile_report(ceip_home)
    spool = Spool(StateDB(ceip_home))
    spool.count_drop(f"rejected:{HOSTILE}", "sample")  # a receiver's reason, as a transport passes it on
    spool.note_retry(HOSTILE)
    lease = spool.lease()
    spool.settle(lease, retry={lease.items[0].item_id: 3600})
    text = ceip("status")
    assert "\x1b" not in text and "\r" not in text
    assert "rejected:\\x1b]0;pwned\\x07\\r\\nreport 0000  forged 1" in text
    assert "last error: \\x1b]0;pwned" in text
    assert "\x1b" not in ceip("consent", "status")


def test_config_show_escapes_a_stored_value(sample, ceip_home: Path) -> None:
    StateDB(ceip_home).write(lambda conn: settings.put(conn, "upload-url", HOSTILE))  # past `config set`'s check
    text = ceip("config", "show")
    assert "\x1b" not in text and "upload-url   \\x1b]0;pwned\\x07\\r\\nreport 0000  forged    # " in text
