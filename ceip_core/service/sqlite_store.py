"""SQLite storage: the embedded default, zero setup (``sqlite:///absolute/path.db`` or ``sqlite:relative.db``).

WAL mode with ``synchronous=FULL``, so a commit is on disk when ``write`` returns (the service acknowledges
nothing earlier). Uses SQLite's JSON functions (built in since 3.38). SQLite calls block, so each
connection lives on its own thread: one writer (writes and rollups, in the order they are asked for) and
one reader (queries, which WAL lets run while a write is in progress). Several ``ceip serve`` processes
may share a file; SQLite's lock serialises them.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import orjson

from ceip_core.private_files import private_file, private_folder
from ceip_core.service import aging, reach, rollups, withdrawal
from ceip_core.service.storage import (
    COUNT_SQL,
    DELETE_QUARANTINED,
    END_SESSIONS_SQL,
    EXPIRED,
    HELD_SINCE,
    QUARANTINE_DDL,
    REPORTS_DAY_INDEX,
    SCHEMA_VERSION,
    SESSION_EPOCH,
    TOMBSTONE_SQL,
    TOMBSTONED,
    TOMBSTONES_DDL,
    Deletion,
    Held,
    NewReport,
    StorageError,
    StorageUnavailable,
    Write,
    decode_bodies,
    describe,
    refused,
    totals_removal,
)
from ceip_core.service.withdrawal import Withdrawal

log = logging.getLogger(__name__)

_R = TypeVar("_R")
#: The interpreter's thread switch interval while a SQLite store is open (see ``SQLiteStorage.open``).
SWITCH_INTERVAL_S = 0.0005
#: SQLite result codes that mean "not now" (busy, locked, I/O, full, cannot open, read-only), not a bug.
_UNAVAILABLE = {5, 6, 8, 10, 13, 14, 15}

_DDL = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS reports (
        seq INTEGER PRIMARY KEY, report_id TEXT NOT NULL UNIQUE, guid TEXT NOT NULL, product TEXT NOT NULL,
        version TEXT NOT NULL, day BIGINT NOT NULL, received DOUBLE PRECISION NOT NULL, body TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS reports_guid_product ON reports (guid, product)",
    "CREATE TABLE IF NOT EXISTS rollup_queue (seq BIGINT PRIMARY KEY)",
    """CREATE TABLE IF NOT EXISTS deletions (
        request_id TEXT PRIMARY KEY, product TEXT NOT NULL, day BIGINT NOT NULL, received DOUBLE PRECISION NOT NULL)""",
    *(statement for table in rollups.TABLES for statement in table.ddl()),
    rollups.MACHINE_INDEX,
    rollups.GROUPS_DDL.format("INTEGER"),
    QUARANTINE_DDL,
    TOMBSTONES_DDL,
    REPORTS_DAY_INDEX,
    withdrawal.WITHDRAWALS_DDL,
    withdrawal.CATEGORY_TOMBSTONES_DDL,
]


_EXISTING = "SELECT report_id FROM reports WHERE report_id IN (SELECT value FROM json_each(?))"
_INSERT_REPORT = (
    "INSERT INTO reports (report_id, guid, product, version, day, received, body) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (report_id) DO NOTHING"
)
# One row, one step: SQLite releases the GIL around every step, and under load each step then waits for
# the event loop to hand the GIL back, so a result of many rows is fetched as one JSON array.
_QUEUED = (
    "SELECT json_group_array(json_array(seq, report_id)) FROM "
    "(SELECT q.seq, r.report_id FROM rollup_queue q JOIN reports r ON r.seq = q.seq ORDER BY q.seq LIMIT ?)"
)
_BODIES = "SELECT json_group_array(json_array(seq, body)) FROM reports WHERE seq IN (SELECT value FROM json_each(?))"
_UNQUEUE = (
    "DELETE FROM rollup_queue WHERE seq IN (SELECT seq FROM reports WHERE guid = ? AND product = ?) RETURNING seq"
)
_NEW_SEQS = "SELECT json_group_array(json_array(seq, report_id)) FROM reports WHERE seq > ?"
_STATES = "SELECT guid, runs FROM reach_state WHERE product = ? AND guid IN (SELECT value FROM json_each(?))"
_GROUPS_BY_ID = f"SELECT id, {rollups.GROUP_COLUMNS} FROM reach_groups WHERE id IN (SELECT value FROM json_each(?))"
_NEW_GROUP = f"INSERT INTO reach_groups ({rollups.GROUP_COLUMNS}) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
_GROUPS_BY_KEY = (
    f"SELECT g.id, {', '.join('g.' + c for c in rollups.GROUP_FIELDS)} FROM json_each(?) AS k "
    "JOIN reach_groups AS g ON "
    + " AND ".join(f"g.{c} = json_extract(k.value, '$[{i}]')" for i, c in enumerate(rollups.GROUP_FIELDS))
)
#: Both kinds of tombstone of the batch's machines: whole (category '') and by category (``withdrawal``).
_TOMBSTONES = (
    "SELECT guid, product, requested, '' FROM tombstones WHERE guid IN (SELECT value FROM json_each(?1)) UNION ALL "
    "SELECT guid, product, requested, category FROM category_tombstones WHERE guid IN (SELECT value FROM json_each(?1))"
)
#: The bodies of a pair's folded reports: neither just taken out of the queue (the JSON array) nor quarantined.
_FOLDED_BODIES = (
    "SELECT json_group_array(body) FROM reports WHERE guid = ? AND product = ? "
    "AND seq NOT IN (SELECT value FROM json_each(?)) AND seq NOT IN (SELECT seq FROM quarantine)"
)
_COUNT = COUNT_SQL.format("?", "?")
_DELETE_ROLLUP = {t.name: t.delete(":guid", ":product") for t in rollups.PER_MACHINE}
_UPSERTS = {t.name: t.upsert(f"VALUES ({', '.join('?' * len(t.columns))})") for t in rollups.TABLES}


def path_of(url: str) -> Path:
    """The file a ``sqlite:`` URL names."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc or not parts.path:
        raise StorageError(f"not a SQLite URL: {url!r} (use sqlite:///absolute/path.db or sqlite:relative.db)")
    return Path(unquote(parts.path))


def _connect(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_s)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA secure_delete=ON")  # deleted reports leave no bytes behind in the file
    return db


def fold_reports(db: sqlite3.Connection, reports: list[Any], groups: reach.Groups) -> None:
    """Fold reports, as validation decoded them, into the rollups, inside the caller's write transaction."""
    groups.trim()
    plan = rollups.fold(reports)
    texts: dict[reach.Machine, str] = {}
    for product in sorted({product for product, _ in plan.machines}):
        guids = orjson.dumps([guid for p, guid in plan.machines if p == product])
        for guid, runs in db.execute(_STATES, (product, guids)):
            texts[product, guid] = runs
    tables, unnamed = plan.rows(read_states(db, texts, groups), groups)
    if unnamed:
        name_groups(db, unnamed.values(), groups)
        tables["reach_state"] += [(*machine, reach.encode(state, groups)) for machine, state in unnamed.items()]
    for table, rows in tables.items():
        db.executemany(_UPSERTS[table], rows)


def read_states(
    db: sqlite3.Connection, texts: Mapping[reach.Machine, str | None], groups: reach.Groups
) -> dict[reach.Machine, reach.Stored]:
    """Stored states (``runs``, None for a machine without one), parsed, every id they name known to
    ``groups`` (read here if it was not)."""
    stored = {machine: reach.parse(text) for machine, text in texts.items()}
    unknown = groups.unknown_ids(stored.values())
    if unknown:
        groups.learn(db.execute(_GROUPS_BY_ID, (orjson.dumps(unknown),)))
    return stored


def name_groups(db: sqlite3.Connection, states: Iterable[reach.State], groups: reach.Groups) -> None:
    """Give every group of ``states`` an id in ``reach_groups`` (adding those it has none), known to ``groups``."""
    unknown = groups.unknown_keys(states)
    if unknown:
        db.executemany(_NEW_GROUP, unknown)
        groups.learn(db.execute(_GROUPS_BY_KEY, (orjson.dumps(unknown),)))


def _take_out(db: sqlite3.Connection, product: str, rows: Mapping[str, list[Any]]) -> None:
    """Add the negative counts of ``storage.totals_removal`` into the totals; timing buckets left at zero go."""
    for table, found in rows.items():
        db.executemany(_UPSERTS[table], found)
    db.execute("DELETE FROM histogram_buckets WHERE product = ? AND count = 0", (product,))


def _unavailable(exc: Exception) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and exc.sqlite_errorcode & 0xFF in _UNAVAILABLE


def _fold_or_isolate(db: sqlite3.Connection, reports: dict[int, Any], groups: reach.Groups) -> dict[int, str]:
    """Fold ``reports`` (by seq); if that fails, fold them one by one. Why each one that failed did.

    Savepoints undo a failed attempt inside the caller's transaction, and ``groups`` forgets the ids it may
    have added; an unavailable database is raised, never blamed on a report.
    """
    db.execute("SAVEPOINT fold")
    try:
        fold_reports(db, list(reports.values()), groups)
    except Exception as exc:
        if _unavailable(exc):
            raise
        db.execute("ROLLBACK TO fold")
        groups.clear()
    else:
        db.execute("RELEASE fold")
        return {}
    failed: dict[int, str] = {}
    for seq, report in reports.items():
        db.execute("SAVEPOINT one")
        try:
            fold_reports(db, [report], groups)
        except Exception as exc:
            if _unavailable(exc):
                raise
            db.execute("ROLLBACK TO one")
            groups.clear()
            failed[seq] = describe(exc)
        db.execute("RELEASE one")
    db.execute("RELEASE fold")
    return failed


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` on any error: take the write lock up front. A
    transaction that may add group ids names its ``groups``, which forget them unless it commits."""

    def __init__(self, db: sqlite3.Connection, groups: reach.Groups | None = None) -> None:
        self.db = db
        self.groups = groups

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind: object, *_: object) -> None:
        committed = False
        try:
            self.db.execute("COMMIT" if kind is None else "ROLLBACK")
            committed = kind is None
        finally:
            if not committed and self.groups is not None:
                self.groups.clear()


class SQLiteStorage:
    """The :class:`~ceip_core.service.storage.Storage` on one SQLite file."""

    skip_scans = True

    def __init__(self, url: str, busy_timeout_s: float = 30) -> None:
        """:param busy_timeout_s: how long a statement waits for a lock another process holds before the
        database counts as unavailable (503 with Retry-After)."""
        self.url = url
        self.path = path_of(url)
        self.busy_timeout_s = busy_timeout_s
        self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="ceip-sqlite-writer")
        self._reader_thread = ThreadPoolExecutor(1, thread_name_prefix="ceip-sqlite-reader")
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._held = Held()
        """Touched on the writer thread only, like the writer connection."""
        self._groups = reach.Groups()
        """The reach group ids this process has read (writer thread only)."""
        self._silent_after: dict[str, str] = {}
        """Aging's cursor over machines, per product (writer thread only)."""

    async def _on(self, thread: ThreadPoolExecutor, fn: Callable[[], _R]) -> _R:
        try:
            return await asyncio.get_running_loop().run_in_executor(thread, fn)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF not in _UNAVAILABLE:
                raise
            raise StorageUnavailable(f"{self.path}: {exc}") from exc

    # -- lifecycle ----------------------------------------------------------------------------------

    def _open_writer(self) -> None:
        warning = private_folder(self.path.parent)
        if warning:
            log.warning("%s", warning)
        private_file(self.path)  # 0600 before SQLite opens it: its -wal and -shm take the file's mode
        self._writer = db = _connect(self.path, self.busy_timeout_s)
        with _Transaction(db):
            found = db.execute("SELECT name FROM sqlite_master WHERE name = 'meta'").fetchone()
            version = found and db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if version and int(version[0]) > SCHEMA_VERSION:
                raise StorageError(f"{self.path} has schema {version[0]}, newer than this ceip ({SCHEMA_VERSION})")
            for statement in _DDL:
                db.execute(statement)
            if version and int(version[0]) < SCHEMA_VERSION:
                held = db.execute("SELECT value FROM meta WHERE key = ?", (HELD_SINCE,)).fetchone()
                for statement in rollups.upgrade(int(version[0]), int(held[0]) if held else 0):
                    db.execute(statement)
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))

    def _open_reader(self) -> None:
        self._reader = _connect(self.path, self.busy_timeout_s)
        self._reader.execute("PRAGMA query_only=ON")

    async def open(self) -> None:
        # The writer and reader threads take the GIL back after every SQLite step. At Python's default
        # switch interval (5 ms) a busy event loop makes each of those steps wait up to 5 ms for it, so a
        # transaction of a few hundred steps takes a second under load with the CPU mostly idle. 0.5 ms
        # lets the threads in promptly (measured with bench/service.py: see docs/operations.md).
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        try:
            await self._on(self._writer_thread, self._open_writer)
            await self._on(self._reader_thread, self._open_reader)
        except StorageUnavailable as exc:
            raise StorageError(f"cannot open {self.path}: {exc}") from None

    async def close(self) -> None:
        for thread, conn in ((self._writer_thread, self._writer), (self._reader_thread, self._reader)):
            if conn is not None:
                await asyncio.get_running_loop().run_in_executor(thread, conn.close)
            thread.shutdown(wait=True)
        self._writer = self._reader = None

    async def ping(self) -> None:
        await self.query("SELECT 1", {})

    # -- writing ------------------------------------------------------------------------------------

    def _write(self, writes: Sequence[Write]) -> list[bool]:
        assert self._writer is not None, "storage is not open"
        results: list[bool] = []
        stored: list[tuple[int, Any]] = []
        unqueued: list[int] = []
        with _Transaction(self._writer, self._groups) as db:
            run: list[NewReport] = []
            for w in [*writes, None]:
                if isinstance(w, NewReport):
                    run.append(w)
                    continue
                if run:
                    results += self._insert(db, run, stored)
                    run = []
                if isinstance(w, Deletion):
                    results.append(self._delete(db, w, unqueued))
        self._held.keep(stored)  # committed: the fold may take them now ...
        self._held.forget(unqueued)  # ... and never those a deletion took out
        if any(isinstance(w, Deletion) for w in writes):
            # Deleted rows may still sit in the write-ahead log: copy it into the file (where secure_delete
            # zeroed them) and truncate it. Best effort: a reader holding a snapshot makes it partial.
            self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return results

    @staticmethod
    def _insert(db: sqlite3.Connection, reports: list[NewReport], stored: list[tuple[int, Any]]) -> list[bool]:
        """Insert and queue ``reports``; per report, whether it is new. Adds ``(seq, item)`` of each to ``stored``."""
        ids = orjson.dumps([r.report_id for r in reports])
        existing = {row[0] for row in db.execute(_EXISTING, (ids,))}
        guids = orjson.dumps(sorted({r.guid for r in reports}))
        tombstones: dict[tuple[str, str], float] = {}
        withdrawn: dict[tuple[str, str], list[tuple[str, float]]] = {}
        for g, p, t, category in db.execute(_TOMBSTONES, (guids,)):
            if category:
                withdrawn.setdefault((g, p), []).append((category, t))
            else:
                tombstones[g, p] = t
        dead = refused(reports, tombstones) if tombstones else set()
        if withdrawn:
            dead |= withdrawal.stale(reports, withdrawn)
        if dead:
            db.execute(_COUNT, (TOMBSTONED, len(dead)))
            existing |= dead
            reports_in = [r for r in reports if r.report_id not in dead]
        else:
            reports_in = reports
        (last,) = db.execute("SELECT COALESCE(MAX(seq), 0) FROM reports").fetchone()
        db.executemany(
            _INSERT_REPORT,
            [(r.report_id, r.guid, r.product, r.version, r.day, r.received, r.body) for r in reports_in],
        )
        # One writer at a time: the rows after the last seq are exactly the ones this statement inserted.
        db.execute("INSERT INTO rollup_queue (seq) SELECT seq FROM reports WHERE seq > ?", (last,))
        seqs = dict((report_id, seq) for seq, report_id in orjson.loads(db.execute(_NEW_SEQS, (last,)).fetchone()[0]))
        results = []
        for r in reports:
            new = r.report_id not in existing
            results.append(new)
            if new:
                stored.append((seqs[r.report_id], r.item))
            existing.add(r.report_id)
        return results

    def _state(self, db: sqlite3.Connection, product: str, guid: str) -> reach.State:
        """A machine's reach state as stored (empty if it has none), its group ids read."""
        found = db.execute(rollups.MY_STATE, {"product": product, "guid": guid}).fetchone()
        stored = read_states(db, {(product, guid): found and found[0]}, self._groups)
        return reach.decode(stored[product, guid], product, self._groups)

    def _delete(self, db: sqlite3.Connection, d: Deletion, unqueued: list[int]) -> bool:
        """Apply a deletion request; adds the seqs it took out of the rollup queue to ``unqueued``."""
        if d.withdrawal is not None:
            return self._withdraw(db, d, d.withdrawal, unqueued)
        pair, mine = (d.guid, d.product), {"guid": d.guid, "product": d.product}
        taken = [seq for (seq,) in db.execute(_UNQUEUE, pair).fetchall()]
        unqueued += taken
        (bodies,) = db.execute(_FOLDED_BODIES, (*pair, orjson.dumps(taken))).fetchone()
        _take_out(db, d.product, totals_removal(orjson.loads(bodies)))
        db.execute(TOMBSTONE_SQL.format("?", "?", "?"), (*pair, d.requested))
        db.execute(DELETE_QUARANTINED.format("?", "?"), pair)
        db.execute("DELETE FROM reports WHERE guid = ? AND product = ?", pair)
        db.executemany(_UPSERTS["reach"], rollups.removal(self._state(db, d.product, d.guid)))
        problems = db.execute(rollups.MY_PROBLEMS, mine).fetchall()
        for table in rollups.PER_MACHINE:
            db.execute(_DELETE_ROLLUP[table.name], mine)
        for day, kind, signature, version in problems:
            key = {**mine, "day": day, "kind": kind, "signature": signature, "version": version}
            for statement in rollups.RECOMPUTE_PROBLEM:
                db.execute(statement, key)
        cur = db.execute(
            "INSERT INTO deletions (request_id, product, day, received) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (request_id) DO NOTHING",
            (d.request_id, d.product, d.day, d.received),
        )
        return cur.rowcount == 1

    def _withdraw(self, db: sqlite3.Connection, d: Deletion, w: Withdrawal, unqueued: list[int]) -> bool:
        """Apply a deletion request for some categories (``ceip_core.service.withdrawal``). The pair's queued
        reports leave the queue while their bodies are rewritten and join it again, so the fold reads the
        rewritten bodies (``unqueued`` makes this process forget what it held of them)."""
        pair, mine = (d.guid, d.product), {"guid": d.guid, "product": d.product}
        if db.execute("SELECT 1 FROM withdrawals WHERE request_id = ?", (d.request_id,)).fetchone():
            return False  # applied already: what it withdrew is gone, and the pair's newer data is not its
        taken = [seq for (seq,) in db.execute(_UNQUEUE, pair).fetchall()]
        unqueued += taken
        (bodies,) = db.execute(_FOLDED_BODIES, (*pair, orjson.dumps(taken))).fetchone()
        _take_out(db, d.product, totals_removal(orjson.loads(bodies), w.withdrawn))
        broken = [seq for (seq,) in db.execute(withdrawal.MY_QUARANTINED, mine)]
        db.executemany("DELETE FROM quarantine WHERE seq = ?", [(seq,) for seq in broken])
        db.executemany("DELETE FROM reports WHERE seq = ?", [(seq,) for seq in broken])
        for seq, body in db.execute(withdrawal.MY_REPORTS, mine).fetchall():
            new = w.rewritten(body)
            if new is None:
                db.execute("DELETE FROM reports WHERE seq = ?", (seq,))
            elif new != body:
                db.execute(withdrawal.REWRITE, {"seq": seq, "body": new})
        db.executemany("INSERT INTO rollup_queue (seq) SELECT seq FROM reports WHERE seq = ?", [(s,) for s in taken])
        removal, kept = w.reach_removal(self._state(db, d.product, d.guid))
        db.executemany(_UPSERTS["reach"], removal)
        name_groups(db, [kept], self._groups)  # a state an older schema wrote names its groups by key
        db.execute(withdrawal.UPDATE_STATE, {**mine, "runs": reach.encode(kept, self._groups)})
        for day, kind, signature, version in db.execute(withdrawal.MY_PROBLEMS, mine).fetchall():
            if w.withdrawn(kind):
                key = {**mine, "day": day, "kind": kind, "signature": signature, "version": version}
                db.execute(withdrawal.DELETE_PROBLEM, key)
                for statement in rollups.RECOMPUTE_PROBLEM:
                    db.execute(statement, key)
        for category in w.categories:
            db.execute(
                withdrawal.CATEGORY_TOMBSTONE_SQL, {**mine, "category": category.value, "requested": d.requested}
            )
        db.execute(
            "INSERT INTO withdrawals (request_id, product, day, received) VALUES (?, ?, ?, ?)",
            (d.request_id, d.product, d.day, d.received),
        )
        return True

    async def write(self, writes: Sequence[Write]) -> list[bool]:
        return await self._on(self._writer_thread, lambda: self._write(writes))

    def _roll_up(self, limit: int) -> int:
        assert self._writer is not None, "storage is not open"
        # Rollups can be rebuilt from the raw reports (``rebuild``), so their commit does not wait for the
        # disk: WAL with synchronous=NORMAL keeps the database consistent, and a power cut loses at most the
        # last folds, whose reports the rebuild folds again. Raw reports keep synchronous=FULL.
        self._writer.execute("PRAGMA synchronous=NORMAL")
        try:
            return self._fold_queued(limit)
        finally:
            self._writer.execute("PRAGMA synchronous=FULL")

    def _fold_queued(self, limit: int) -> int:
        assert self._writer is not None, "storage is not open"
        with _Transaction(self._writer, self._groups) as db:
            (found,) = db.execute(_QUEUED, (limit,)).fetchone()
            queued: list[list[Any]] = orjson.loads(found)
            if not queued:
                self._held.clear()
                return 0
            reports, missing = self._held.take(queued)
            failed: dict[int, str] = {}
            if missing:
                (bodies,) = db.execute(_BODIES, (orjson.dumps(missing),)).fetchone()
                decoded, failed = decode_bodies(orjson.loads(bodies))
                reports.update(decoded)
            failed.update(_fold_or_isolate(db, reports, self._groups))
            db.executemany(
                "INSERT OR REPLACE INTO quarantine (seq, reason, quarantined) VALUES (?, ?, ?)",
                [(seq, why, time.time()) for seq, why in failed.items()],
            )
            db.execute(
                "DELETE FROM rollup_queue WHERE seq IN (SELECT value FROM json_each(?))",
                (orjson.dumps([seq for seq, _ in queued]),),
            )
        for seq, why in failed.items():
            log.warning("report seq %d quarantined: %s", seq, why)
        return len(queued)

    def _end_sessions(self) -> None:
        assert self._writer is not None, "storage is not open"
        with _Transaction(self._writer) as db:
            db.execute(END_SESSIONS_SQL, (SESSION_EPOCH,))

    async def end_sessions(self) -> None:
        await self._on(self._writer_thread, self._end_sessions)

    async def roll_up(self, limit: int = 5000, *, wait: bool = False) -> int:
        # One writer at a time: SQLite's lock already makes every caller wait for a fold in progress.
        return await self._on(self._writer_thread, lambda: self._roll_up(limit))

    async def quarantined(self) -> int:
        (count,) = (await self.query("SELECT COUNT(*) FROM quarantine", {}))[0]
        return int(count)

    def _rebuild(self) -> None:
        assert self._writer is not None, "storage is not open"
        with _Transaction(self._writer) as db:
            found = db.execute("SELECT value FROM meta WHERE key = ?", (HELD_SINCE,)).fetchone()
            for statement in rollups.rebuild(int(found[0]) if found else 0):
                db.execute(statement)
        self._held.clear()

    async def rebuild(self) -> int:
        await self._on(self._writer_thread, self._rebuild)
        folded = 0
        while step := await self.roll_up():
            folded += step
        return folded

    def _expire(self, before: int, limit: int) -> int:
        assert self._writer is not None, "storage is not open"
        with _Transaction(self._writer) as db:
            db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = "
                "CAST(MAX(CAST(meta.value AS INTEGER), CAST(excluded.value AS INTEGER)) AS TEXT)",
                (HELD_SINCE, str(before)),
            )
            done = deleted = db.execute(aging.OLD_REPORTS_SQL, {"before": before, "limit": limit}).rowcount
            if deleted:
                db.execute(aging.ORPHANED_QUARANTINE_SQL)
            products = [p for (p,) in db.execute(aging.PRODUCTS_SQL)]
            for table in aging.AGED_TABLES:
                for product in products:
                    if done < limit:
                        mine = {"product": product, "before": before, "limit": limit - done}
                        n = db.execute(aging.delete_old(table, "rowid"), mine).rowcount
                        done, deleted = done + n, deleted + n
            for product in products:  # silent machines, from a cursor: each step examines a bounded slice
                if done >= limit:
                    break
                after = self._silent_after.get(product, "")
                mine = {"product": product, "after": after, "limit": limit - done}
                guids = [g for (g,) in db.execute(aging.MACHINES_SQL, mine)]
                if not guids:
                    continue
                self._silent_after[product] = guids[-1]
                active = {
                    g
                    for (g,) in db.execute(
                        "SELECT DISTINCT guid FROM machine_days WHERE product = ? AND day >= ? "
                        "AND guid IN (SELECT value FROM json_each(?))",
                        (product, before, orjson.dumps(guids)),
                    )
                }
                silent = [(product, g) for g in guids if g not in active]
                db.executemany("DELETE FROM reach_state WHERE product = ? AND guid = ?", silent)
                done, deleted = done + len(guids), deleted + len(silent)
            if deleted:
                db.execute(_COUNT, (EXPIRED, deleted))
        if done < limit:
            self._silent_after.clear()  # the pass is over; the next starts from the first machine
        return done

    async def expire(self, before_day: int, limit: int) -> int:
        return await self._on(self._writer_thread, lambda: self._expire(before_day, limit))

    def _stats(self) -> dict[str, Any]:
        assert self._reader is not None, "storage is not open"
        db = self._reader
        tables = [n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        rows = {t: db.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}
        (page_count,) = db.execute("PRAGMA page_count").fetchone()
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
        wal = self.path.with_name(self.path.name + "-wal")
        oldest = db.execute("SELECT MIN(r.received) FROM rollup_queue q JOIN reports r ON r.seq = q.seq").fetchone()
        found = db.execute("SELECT key, value FROM meta WHERE key IN (?, ?)", (TOMBSTONED, EXPIRED))
        counters = {key: int(value) for key, value in found}
        return {
            "bytes": page_count * page_size + (wal.stat().st_size if wal.exists() else 0),
            "rows": rows,
            "queued": rows.get("rollup_queue", 0),
            "oldest_queued": oldest[0],
            "counters": counters,
        }

    async def stats(self) -> dict[str, Any]:
        return await self._on(self._reader_thread, self._stats)

    # -- reading ------------------------------------------------------------------------------------

    def _query(self, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        assert self._reader is not None, "storage is not open"
        return self._reader.execute(sql, dict(params)).fetchall()

    async def query(self, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        return await self._on(self._reader_thread, lambda: self._query(sql, params))
