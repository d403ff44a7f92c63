"""A damaged spool keeps every row that can still be read, counts what it lost by kind, and never forgets a
queued deletion request.

Each damage kind is applied to the same spool, 1,400 reports and three deletion requests queued among
them, closed (so the WAL is checkpointed into the main file) and then damaged on disk as a crash, a full
disk or a bad sector would. The damage is found by the first ordinary use (``ceip status`` reads the
queue); the tests then look at what was saved, what was counted, and that the repaired spool works.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import as_unprivileged, epoch

from ceip_core import deletion_journal, salvage
from ceip_core.cli import cli
from ceip_core.consent import Consent, State
from ceip_core.identity import BACKUP_NAME
from ceip_core.spool import Spool
from ceip_core.statedb import DB_NAME, StateDB

REPORTS = 1400
REPORT_BYTES = 1000
GONE = ("gone1", "gone2", "gone3")


class Queue:
    """What was queued before the damage."""

    def __init__(self, guid: str, reports: set[str], deletions: set[str]) -> None:
        self.guid = guid
        self.reports = reports
        self.deletions = deletions


@pytest.fixture
def queued(ceip_home: Path) -> Queue:
    db = StateDB(ceip_home)
    spool = Spool(db)
    for product in GONE:
        spool.consent.opt_in(product)
    spool.consent.opt_in("sample")
    guid = spool.consent.guid()
    assert guid is not None
    rng = random.Random(7)
    reports = set()
    for n in range(REPORTS):
        if n in (100, 700, 1300):  # deletion requests sit among the reports, not only at one end
            spool.consent.opt_out(GONE[(n // 600)])
        item_id = f"r{n:04d}"
        data = rng.randbytes(REPORT_BYTES)
        assert spool.put_report(item_id, "sample", guid, data, consent_epoch=epoch(spool, "sample"))
        reports.add(item_id)
    deletions = {i.item_id for i in spool.items() if i.kind == "deletion"}
    assert len(deletions) == 3
    db.close()
    assert not (ceip_home / f"{DB_NAME}-wal").exists()
    return Queue(guid, reports, deletions)


# -- the damage ------------------------------------------------------------------------------------------------


def page_size(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA page_size").fetchone()[0])
    finally:
        conn.close()


def middle_leaf_pages(path: Path) -> int:
    """A page number in the middle of the file that holds queued items, and so does the page after it.

    The damage below lands on rows, the readable part salvage is about: a spoilt interior page of the
    table's b-tree hides every row beneath it from SQL, which no row-by-row reading can get back (see
    ``ceip_core/salvage.py``)."""
    conn = sqlite3.connect(path)
    try:
        leaves = [n for (n,) in conn.execute("SELECT pageno FROM dbstat WHERE name = 'spool' AND pagetype = 'leaf'")]
    finally:
        conn.close()
    pairs = [n for n in sorted(leaves) if n + 1 in leaves]
    return pairs[len(pairs) // 2]


def truncated_to_zero(home: Path) -> None:
    os.truncate(home / DB_NAME, 0)


def truncated_mid_file(home: Path) -> None:
    path = home / DB_NAME
    os.truncate(path, path.stat().st_size // 2)


def garbage_in_the_middle(home: Path) -> None:
    path = home / DB_NAME
    start = (middle_leaf_pages(path) - 1) * page_size(path) + 1234  # pages count from 1
    with open(path, "r+b") as handle:
        handle.seek(start)  # not aligned to a page: it spoils two
        handle.write(random.Random(1).randbytes(4096))


def header_smashed(home: Path) -> None:
    with open(home / DB_NAME, "r+b") as handle:
        handle.write(b"\xff" * 100)


def wal_garbage(home: Path) -> None:
    (home / f"{DB_NAME}-wal").write_bytes(random.Random(2).randbytes(64 * 1024))


def page_zeroed(home: Path) -> None:
    path = home / DB_NAME
    size = page_size(path)
    with open(path, "r+b") as handle:
        handle.seek((middle_leaf_pages(path) - 1) * size)
        handle.write(bytes(size))


def replaced_by_a_folder(home: Path) -> None:
    (home / DB_NAME).unlink()
    (home / DB_NAME).mkdir()
    (home / DB_NAME / "something").write_text("not a database")


Damage = Callable[[Path], None]

#: damage -> (least share of the reports saved, whether the loss can be measured)
MATRIX: dict[str, tuple[Damage, float, bool]] = {
    "truncated-to-zero": (truncated_to_zero, 0.0, False),
    "truncated-mid-file": (truncated_mid_file, 0.45, True),
    "4k-garbage-in-the-middle": (garbage_in_the_middle, 0.98, True),
    "header-smashed": (header_smashed, 1.0, True),
    "wal-garbage": (wal_garbage, 1.0, True),
    "page-zeroed": (page_zeroed, 0.98, True),
    "replaced-by-a-folder": (replaced_by_a_folder, 0.0, False),
}


@pytest.mark.parametrize("kind", list(MATRIX))
def test_damaged_spool_keeps_what_is_readable_and_counts_the_rest(ceip_home: Path, queued: Queue, kind: str) -> None:
    damage, least_saved, measurable = MATRIX[kind]
    damage(ceip_home)

    first = CliRunner().invoke(cli, ["review"])  # the first use that reads the queue meets the damage
    assert first.exit_code == 0, first.output
    result = CliRunner().invoke(cli, ["status"])  # (status reads running totals, not the queue itself)
    assert result.exit_code == 0, result.output

    spool = Spool(StateDB(ceip_home))
    items = spool.items()
    saved = {i.item_id for i in items if i.kind == "report"}
    assert saved <= queued.reports
    assert len(saved) >= least_saved * REPORTS, f"{kind}: only {len(saved)} of {REPORTS} reports saved"
    # Every deletion request survives, whatever the damage, exactly once.
    assert sorted(i.item_id for i in items if i.kind == "deletion") == sorted(queued.deletions)
    assert spool.consent.guid() == queued.guid
    assert spool.consent.states() == {"sample": State.IN, **{p: State.OUT for p in GONE}}

    drops = spool.stats().drops
    lost = REPORTS - len(saved)
    if lost == 0:
        assert not {k for k in drops if k.startswith("corrupt-spool-")}, drops
    elif measurable:
        assert drops["corrupt-spool"] == 1
        assert drops["corrupt-spool-reports"] == lost
        assert "corrupt-spool-unmeasured" not in drops
    else:
        assert (drops["corrupt-spool"], drops["corrupt-spool-unmeasured"]) == (1, 1)
    assert "corrupt-spool-deletions" not in drops
    if lost:
        assert "Damaged spool:  repaired 1 time(s);" in result.output, result.output

    # The repaired spool works like any other, and the damaged file is kept for a post-mortem.
    conn = sqlite3.connect(ceip_home / DB_NAME)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    assert spool.put_report("after", "sample", queued.guid, b"{}", consent_epoch=epoch(spool, "sample"))
    if kind != "truncated-to-zero":  # an empty file holds nothing to look at
        assert list(ceip_home.glob(f"{DB_NAME}.corrupt-*")) or lost == 0


def test_an_unreadable_database_is_moved_aside_and_deletion_requests_survive(ceip_home: Path, queued: Queue) -> None:
    (ceip_home / DB_NAME).chmod(0)
    proc = subprocess.run(
        as_unprivileged([sys.executable, "-m", "ceip_core", "status"]), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "an unknown number of reports lost" in proc.stdout
    [aside] = ceip_home.glob(f"{DB_NAME}.corrupt-*")
    assert aside.stat().st_mode & 0o777 == 0  # kept as it was
    spool = Spool(StateDB(ceip_home))
    assert {i.item_id for i in spool.items()} == queued.deletions
    assert spool.consent.guid() == queued.guid
    assert spool.stats().drops == {"corrupt-spool": 1, "corrupt-spool-unmeasured": 1}


def test_reading_row_by_row_gives_up_in_bounded_time_and_says_the_loss_is_unmeasured(
    ceip_home: Path, queued: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(salvage, "MAX_FAILED_ROWS", 100)  # 722 rows are cut off below
    truncated_mid_file(ceip_home)
    spool = Spool(StateDB(ceip_home))
    assert spool.stats().reports >= 0.45 * REPORTS  # everything before the damage is still saved
    drops = spool.stats().drops
    assert drops["corrupt-spool-unmeasured"] == 1 and 100 < drops["corrupt-spool-reports"] < REPORTS
    assert {i.item_id for i in spool.items() if i.kind == "deletion"} == queued.deletions


def test_salvage_never_brings_back_reports_of_a_withdrawn_consent(ceip_home: Path, queued: Queue) -> None:
    """An opt-out writes the backup before it commits; if the damage took the commit, the backup still
    says "out", and the reports the opt-out deleted are not copied into the new database."""
    backup = ceip_home / BACKUP_NAME
    backup.write_text(backup.read_text().replace('"sample": "in"', '"sample": "out"'))
    page_zeroed(ceip_home)
    spool = Spool(StateDB(ceip_home))
    assert [i.kind for i in spool.items()] == ["deletion"] * 3
    assert spool.stats().drops["not-opted-in:sample"] > 0.98 * REPORTS


def test_status_names_what_the_damage_cost(ceip_home: Path, queued: Queue) -> None:
    garbage_in_the_middle(ceip_home)
    CliRunner().invoke(cli, ["review"])  # reads every item, and so finds the damage (status reads totals)
    output = CliRunner().invoke(cli, ["status"]).output
    drops = Spool(StateDB(ceip_home)).stats().drops
    line = f"Damaged spool:  repaired 1 time(s); {drops['corrupt-spool-reports']} queued report(s) lost"
    assert line in output, output


# -- the deletion journal ------------------------------------------------------------------------------------


def test_deletion_requests_survive_a_lost_database(ceip_home: Path, queued: Queue) -> None:
    (ceip_home / DB_NAME).unlink()
    spool = Spool(StateDB(ceip_home))
    assert {i.item_id for i in spool.items()} == queued.deletions
    assert spool.stats().drops == {"corrupt-spool": 1, "corrupt-spool-unmeasured": 1}


def test_journal_forgets_delivered_requests_and_empties_itself(ceip_home: Path, queued: Queue) -> None:
    spool = Spool(StateDB(ceip_home))
    journal = ceip_home / deletion_journal.JOURNAL_NAME
    lease = spool.lease(max_items=REPORTS + 10, max_bytes=1 << 30)
    first, *rest = [i.item_id for i in lease.items if i.kind == "deletion"]
    spool.settle(lease, accepted=[first])
    assert {e.item_id for e in deletion_journal.pending(ceip_home)[0]} == queued.deletions - {first}

    lease = spool.lease(max_items=REPORTS + 10, max_bytes=1 << 30)
    spool.settle(lease, accepted=queued.reports, rejected=dict.fromkeys(rest, "invalid"))
    assert spool.stats().deletions == 0
    assert journal.stat().st_size == 0  # nothing queued, nothing kept: the journal does not grow forever

    # A request delivered is not sent again after damage.
    (ceip_home / DB_NAME).unlink()
    assert Spool(StateDB(ceip_home)).stats().deletions == 0


def test_a_torn_journal_line_is_skipped_and_counted(ceip_home: Path, queued: Queue) -> None:
    with open(ceip_home / deletion_journal.JOURNAL_NAME, "a") as handle:
        handle.write('{"add": "half-writ')
    truncated_to_zero(ceip_home)
    spool = Spool(StateDB(ceip_home))
    assert {i.item_id for i in spool.items()} == queued.deletions
    assert spool.stats().drops["corrupt-spool-deletions"] == 1


def test_an_opt_out_writes_the_journal_before_the_database(ceip_home: Path, queued: Queue) -> None:
    """The journal line is on disk before the transaction that queues the request commits."""
    db = StateDB(ceip_home)
    consent = Consent(db)
    consent.opt_in("late")
    seen: list[int] = []

    def check(conn: sqlite3.Connection) -> None:
        seen.append(len(deletion_journal.pending(ceip_home)[0]))

    db.connect().set_trace_callback(lambda sql: check(db.connect()) if sql == "COMMIT" else None)
    consent.opt_out("late")
    db.connect().set_trace_callback(None)
    assert seen and seen[-1] == 4
    db.close()
