"""The state database on real SQLite files and real processes: concurrent writers, kill -9 in the middle of
writes, and damaged files (garbage, truncation, a damaged identity backup).

Processes are started with ``tests/scripts/spool_writer.py``; the tests wait on them by polling with a
deadline, and every process is killed and reaped in a ``finally``.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from helpers import epoch, wait_for

from ceip_core.consent import Consent, State
from ceip_core.identity import BACKUP_NAME
from ceip_core.spool import Spool
from ceip_core.statedb import DB_NAME, StateDB, is_corruption, state_dir

WRITER = Path(__file__).parent / "scripts" / "spool_writer.py"


# -- helpers -------------------------------------------------------------------------------------------------


class LineReader:
    """Collects a process's output lines on a thread, so that the test can poll them with a deadline."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream: IO[str]) -> None:
        for line in stream:
            if line.endswith("\n"):  # a line cut short by a kill was never acknowledged in full
                self.lines.append(line[:-1])

    def join(self, timeout: float = 10) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the process's output did not end"


def start_writer(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WRITER), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def reap(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def integrity(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [row[0] for row in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()


def corrupt_files(home: Path) -> list[Path]:
    """The damaged database files moved aside (without their -wal/-shm companions)."""
    return sorted(p for p in home.glob(f"{DB_NAME}.corrupt-*") if not p.name.endswith(("-wal", "-shm")))


def remove_wal(home: Path) -> None:
    for suffix in ("-wal", "-shm"):
        (home / f"{DB_NAME}{suffix}").unlink(missing_ok=True)


def run_together(procs: list[subprocess.Popen[str]], timeout: float = 20) -> None:
    """Release writers started with ``--barrier`` at the same moment and wait until all have exited 0."""
    readers = [LineReader(p.stdout) for p in procs]  # type: ignore[arg-type]
    wait_for(lambda: all(r.lines or p.poll() is not None for r, p in zip(readers, procs, strict=True)), timeout)
    for reader, proc in zip(readers, procs, strict=True):
        assert reader.lines == ["ready"], proc.stderr.read() if proc.poll() is not None else reader.lines  # type: ignore[union-attr]
    for proc in procs:
        proc.stdin.write("go\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
    wait_for(lambda: all(p.poll() is not None for p in procs), timeout)
    for proc in procs:
        assert proc.returncode == 0, proc.stderr.read()  # type: ignore[union-attr]


@pytest.fixture
def opted_in(ceip_home: Path) -> Iterator[str]:
    """``sample`` opted in; yields the GUID. No connection stays open."""
    db = StateDB(ceip_home)
    Consent(db).opt_in("sample")
    guid = Consent(db).guid()
    db.close()
    assert guid is not None
    yield guid


# -- the database itself -------------------------------------------------------------------------------------


def test_creates_folder_and_schema_in_wal_mode(ceip_home: Path) -> None:
    assert state_dir() == ceip_home
    db = StateDB(ceip_home / "nested" / "deeper")
    conn = db.connect()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"consent", "identity", "spool", "drops", "meta"} <= tables
    db.close()
    assert StateDB().path == ceip_home / DB_NAME


def test_write_is_all_or_nothing(ceip_home: Path) -> None:
    db = StateDB(ceip_home)

    def half_done(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO meta (key, value) VALUES ('a', '1')")
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        db.write(half_done)
    assert db.read(lambda conn: conn.execute("SELECT COUNT(*) FROM meta").fetchone()[0]) == 0
    db.write(lambda conn: conn.execute("INSERT INTO meta (key, value) VALUES ('b', '2')"))  # still usable
    assert StateDB(ceip_home).read(lambda conn: conn.execute("SELECT key FROM meta").fetchall()) == [("b",)]


def test_a_bug_is_not_mistaken_for_corruption(ceip_home: Path, opted_in: str) -> None:
    spool = Spool(StateDB(ceip_home))
    assert spool.put_report("a", "sample", opted_in, b"{}", consent_epoch=epoch(spool, "sample"))
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        spool.db.read(lambda conn: conn.execute("SELECT * FROM no_such_table").fetchall())
    with pytest.raises(sqlite3.IntegrityError):
        spool.put_report("a", "sample", opted_in, b"{}", consent_epoch=epoch(spool, "sample"))  # the same item id twice
    assert corrupt_files(ceip_home) == []
    assert [i.item_id for i in spool.items()] == ["a"]


def test_is_corruption(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not a database" * 100)
    conn = sqlite3.connect(bad)
    with pytest.raises(sqlite3.DatabaseError) as caught:
        conn.execute("SELECT * FROM sqlite_master").fetchall()
    conn.close()
    assert is_corruption(caught.value)
    assert not is_corruption(sqlite3.OperationalError("database is locked"))
    assert not is_corruption(sqlite3.IntegrityError("UNIQUE constraint failed"))
    assert not is_corruption(ValueError("database disk image is malformed"))


# -- several processes -----------------------------------------------------------------------------------------


def test_concurrent_writers_lose_nothing(ceip_home: Path, opted_in: str) -> None:
    writers, per_writer = 4, 200
    procs = [start_writer(f"w{k}", str(per_writer), "--barrier") for k in range(writers)]
    try:
        run_together(procs)
    finally:
        reap(procs)

    spool = Spool(StateDB(ceip_home))
    items = spool.items()
    assert len(items) == writers * per_writer
    assert {i.item_id for i in items} == {f"w{k}-{n}" for k in range(writers) for n in range(per_writer)}
    for k in range(writers):  # each writer's reports are queued in the order it wrote them
        mine = [int(i.item_id.split("-")[1]) for i in items if i.item_id.startswith(f"w{k}-")]
        assert mine == list(range(per_writer))
    assert spool.stats().drops == {}
    assert integrity(ceip_home / DB_NAME) == ["ok"]


def test_kill_9_during_writes_loses_nothing_acknowledged(ceip_home: Path, opted_in: str) -> None:
    for round_ in range(3):
        proc = start_writer(f"k{round_}", "0", "--ack")
        try:
            reader = LineReader(proc.stdout)  # type: ignore[arg-type]
            wait_for(lambda: len(reader.lines) >= 300 or proc.poll() is not None, timeout=20)  # noqa: B023
            assert proc.poll() is None, proc.stderr.read()  # type: ignore[union-attr]
            os.kill(proc.pid, signal.SIGKILL)  # in the middle of a write, most likely
            proc.wait(timeout=10)
            reader.join()  # ids still in the pipe were acknowledged too
        finally:
            reap([proc])
        assert proc.returncode == -signal.SIGKILL

        assert integrity(ceip_home / DB_NAME) == ["ok"]
        acked = reader.lines
        assert acked == [f"k{round_}-{n}" for n in range(len(acked))]
        db = StateDB(ceip_home)
        queued = [i.item_id for i in Spool(db).items() if i.item_id.startswith(f"k{round_}-")]
        db.close()
        # Everything acknowledged is there; at most the one write that committed just before the kill,
        # and was not yet acknowledged, comes on top; nothing twice, nothing half-written.
        assert queued[: len(acked)] == acked
        assert queued in (acked, [*acked, f"k{round_}-{len(acked)}"])

    spool = Spool(StateDB(ceip_home))
    assert corrupt_files(ceip_home) == []
    assert "corrupt-spool" not in spool.stats().drops
    assert spool.put_report(
        "after", "sample", opted_in, b"{}", consent_epoch=epoch(spool, "sample")
    )  # and the database is still writable


# -- damaged files -----------------------------------------------------------------------------------------------


def damage_garbage(home: Path) -> bytes:
    garbage = b"\x00garbage\xff" * 2000
    (home / DB_NAME).write_bytes(garbage)
    remove_wal(home)
    return garbage


def damage_truncate(home: Path) -> bytes:
    path = home / DB_NAME
    assert not (home / f"{DB_NAME}-wal").exists(), "the WAL should have been checkpointed on close"
    size = path.stat().st_size
    assert size > 1_000_000
    with open(path, "r+b") as handle:
        handle.truncate(size // 2)
    remove_wal(home)
    return path.read_bytes()


@pytest.mark.parametrize("first", ["put", "lease", "stats"])
@pytest.mark.parametrize("damage", [damage_garbage, damage_truncate], ids=["garbage", "truncated"])
def test_damaged_database_is_replaced_and_consent_restored(
    ceip_home: Path, opted_in: str, damage: object, first: str
) -> None:
    db = StateDB(ceip_home)
    spool = Spool(db)
    spool.consent.opt_in("gone")
    spool.consent.opt_out("gone")  # a withdrawn consent must stay withdrawn
    for n in range(300):
        assert spool.put_report(f"old{n}", "sample", opted_in, os.urandom(4000), consent_epoch=epoch(spool, "sample"))
    db.close()
    damaged = damage(ceip_home)  # type: ignore[operator]

    spool = Spool(StateDB(ceip_home))
    if first == "put":
        assert spool.put_report("new", "sample", opted_in, b"{}", consent_epoch=epoch(spool, "sample")) is True
    elif first == "lease":
        spool.settle(spool.lease())
    else:
        # Garbage throughout saves nothing; a file cut in half still holds its first half (tests/test_salvage.py).
        assert (spool.stats().reports > 100) is (damage is damage_truncate)

    moved = corrupt_files(ceip_home)
    assert len(moved) == 1 and moved[0].parent == ceip_home
    assert moved[0].read_bytes() == damaged  # kept as it was, for a post-mortem
    assert integrity(ceip_home / DB_NAME) == ["ok"]
    consent = spool.consent
    assert consent.states() == {"sample": State.IN, "gone": State.OUT}
    assert consent.guid() == opted_in  # no new identity minted
    assert spool.stats().drops["corrupt-spool"] == 1
    assert [(i.kind, i.product) for i in spool.items() if i.kind == "deletion"] == [("deletion", "gone")]

    # The new spool works as any other.
    assert spool.put_report("new2", "sample", opted_in, b"{}", consent_epoch=epoch(spool, "sample")) is True
    lease = spool.lease(max_items=1000, max_bytes=1 << 30)
    assert [i.item_id for i in lease.items][-2:] == (
        ["new", "new2"] if first == "put" else [lease.items[-2].item_id, "new2"]
    )
    spool.settle(lease, accepted=[i.item_id for i in lease.items])
    assert spool.stats().reports == spool.stats().deletions == 0


def test_damaged_database_and_damaged_backup_fail_closed(ceip_home: Path, opted_in: str) -> None:
    (ceip_home / BACKUP_NAME).write_text('{"guid": "' + opted_in + '", "consent": {"sam')
    damage_garbage(ceip_home)

    spool = Spool(StateDB(ceip_home))
    assert spool.put_report("a", "sample", opted_in, b"{}", consent_epoch=epoch(spool, "sample")) is False
    consent = spool.consent
    assert consent.state("sample") is State.UNSET and not consent.allowed("sample")
    assert consent.guid() is None
    drops = spool.stats().drops
    assert (drops["corrupt-spool"], drops["not-opted-in:sample"]) == (1, 1)
    assert len(corrupt_files(ceip_home)) == 1

    assert consent.opt_in("sample").guid_created  # the person can opt in again, under a new identity
    assert consent.guid() not in (None, opted_in)
    assert json.loads((ceip_home / BACKUP_NAME).read_text())["consent"] == {"sample": "in"}  # backup repaired


def test_backup_without_a_valid_guid_restores_no_opt_in(ceip_home: Path, opted_in: str) -> None:
    """Regression: a backup whose GUID was damaged brought ``sample`` back as opted in with no GUID at all
    (allowed, but every report then failed with an IntegrityError). Opt-outs are still restored."""
    (ceip_home / BACKUP_NAME).write_text(json.dumps({"guid": "not-a-uuid", "consent": {"sample": "in", "x": "out"}}))
    damage_garbage(ceip_home)

    spool = Spool(StateDB(ceip_home))
    consent = spool.consent
    assert consent.states() == {"x": State.OUT}
    assert not consent.allowed("sample") and consent.guid() is None
    assert spool.put_report("a", "sample", opted_in, b"{}", consent_epoch=epoch(spool, "sample")) is False


def test_each_repair_keeps_its_own_damaged_file(ceip_home: Path, opted_in: str) -> None:
    """Regression: two repairs within the same second overwrote the first damaged file with the second."""
    for n in range(3):
        (ceip_home / DB_NAME).write_bytes(b"damage %d " % n * 1000)
        remove_wal(ceip_home)
        db = StateDB(ceip_home)
        assert Spool(db).stats().drops["corrupt-spool"] == 1
        db.close()
    moved = corrupt_files(ceip_home)
    assert sorted(p.read_bytes()[:8] for p in moved) == [b"damage 0", b"damage 1", b"damage 2"]
    assert Consent(StateDB(ceip_home)).guid() == opted_in


def test_processes_finding_the_damage_at_once_repair_it_once(ceip_home: Path, opted_in: str) -> None:
    damage_garbage(ceip_home)
    writers, per_writer = 4, 20
    procs = [start_writer(f"w{k}", str(per_writer), "--barrier", f"--guid={opted_in}") for k in range(writers)]
    try:
        run_together(procs)  # each one's first put_report meets the damaged file
    finally:
        reap(procs)

    assert len(corrupt_files(ceip_home)) == 1
    spool = Spool(StateDB(ceip_home))
    # Garbage throughout: nothing could be read, so the loss cannot be measured; it is counted as such.
    assert spool.stats().drops == {"corrupt-spool": 1, "corrupt-spool-unmeasured": 1}
    assert {i.item_id for i in spool.items()} == {f"w{k}-{n}" for k in range(writers) for n in range(per_writer)}
    assert spool.consent.guid() == opted_in
    assert integrity(ceip_home / DB_NAME) == ["ok"]


def test_removed_reports_leave_no_bytes_in_the_file(tmp_path: Path) -> None:
    """An opt-out or an upload deletes a report; its content must not linger in free pages of the file."""
    from ceip_core.consent import Consent
    from ceip_core.spool import Spool

    db = StateDB(tmp_path)
    consent = Consent(db)
    consent.opt_in("sample")
    spool = Spool(db)
    marker = b"unmistakable-report-content-" * 40
    epoch = db.read(lambda c: c.execute("SELECT epoch FROM consent WHERE product = 'sample'").fetchone()[0])
    assert spool.put_report("r1", "sample", consent.guid() or "", marker, consent_epoch=epoch)
    consent.opt_out("sample")
    db.connect().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    db.close()
    for part in tmp_path.glob(f"{DB_NAME}*"):
        assert marker[:28] not in part.read_bytes(), part
