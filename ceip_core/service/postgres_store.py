"""PostgreSQL storage (``postgresql://user:password@host:port/database``), through asyncpg.

For more than one machine's worth of load: any number of ``ceip serve`` workers, on any number of hosts,
share one database. The database does what must hold across them: the report id's UNIQUE constraint
de-duplicates, schema creation runs under an advisory lock, and rollups are claimed with
``FOR UPDATE SKIP LOCKED`` so workers fold disjoint sets of queued reports. Rows go in as arrays through
``unnest`` (one statement per table, not one per row). Extra URL query parameters are server settings
(e.g. ``?search_path=ceip``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from functools import cache
from typing import Any, TypeVar

import asyncpg

from ceip_core.service import aging, rollups, withdrawal
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
    redact,
    refused,
    totals_removal,
)
from ceip_core.service.withdrawal import Withdrawal

log = logging.getLogger(__name__)

_R = TypeVar("_R")

_ARRAY = {"TEXT": "text[]", "BIGINT": "int8[]", "DOUBLE PRECISION": "float8[]"}
_DDL = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS reports (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, report_id TEXT NOT NULL UNIQUE,
        guid TEXT NOT NULL, product TEXT NOT NULL, version TEXT NOT NULL, day BIGINT NOT NULL,
        received DOUBLE PRECISION NOT NULL, body TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS reports_guid_product ON reports (guid, product)",
    "CREATE TABLE IF NOT EXISTS rollup_queue (seq BIGINT PRIMARY KEY)",
    """CREATE TABLE IF NOT EXISTS deletions (
        request_id TEXT PRIMARY KEY, product TEXT NOT NULL, day BIGINT NOT NULL, received DOUBLE PRECISION NOT NULL)""",
    *(statement for table in rollups.TABLES for statement in table.ddl()),
    rollups.MACHINE_INDEX,
    QUARANTINE_DDL,
    TOMBSTONES_DDL,
    REPORTS_DAY_INDEX,
    withdrawal.WITHDRAWALS_DDL,
    withdrawal.CATEGORY_TOMBSTONES_DDL,
]
_COUNT = COUNT_SQL.format("$1::text", "$2::bigint")
#: Both kinds of tombstone of the batch's machines: whole (category '') and by category (``withdrawal``).
_TOMBSTONES = (
    "SELECT guid, product, requested, '' FROM tombstones WHERE guid = ANY($1::text[]) UNION ALL "
    "SELECT guid, product, requested, category FROM category_tombstones WHERE guid = ANY($1::text[])"
)
_INSERT_REPORTS = (
    "INSERT INTO reports (report_id, guid, product, version, day, received, body) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::float8[], $7::text[]) "
    "ON CONFLICT (report_id) DO NOTHING RETURNING seq, report_id"
)
_UPSERTS = {
    t.name: t.upsert(
        "SELECT * FROM unnest(" + ", ".join(f"${i + 1}::{_ARRAY[kind]}" for i, kind in enumerate(t.types)) + ")"
    )
    for t in rollups.TABLES
}
_NEW_STATES = (
    "INSERT INTO reach_state (product, guid, runs) SELECT p, g, '' FROM unnest($1::text[], $2::text[]) AS n (p, g) "
    "ON CONFLICT (product, guid) DO NOTHING"
)
_LOCK_STATES = (
    "SELECT product, guid, runs FROM reach_state "
    "WHERE (product, guid) IN (SELECT * FROM unnest($1::text[], $2::text[])) ORDER BY product, guid FOR UPDATE"
)
#: Errors that mean "the database is not there now", as opposed to a bug.
_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InsufficientResourcesError,
    asyncpg.OperatorInterventionError,
)
#: Errors that a retry of the same transaction resolves.
_CONFLICT = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
_PARAM = re.compile(r"(?<!:):([a-z_]+)")


@cache
def _positional(sql: str) -> tuple[str, tuple[str, ...]]:
    """``:name`` parameters rewritten as ``$1``..., and the names in that order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return _PARAM.sub(number, sql), tuple(names)


def _plain(value: Any) -> Any:
    """PostgreSQL sums integers as NUMERIC; the queries want ints (and floats), as SQLite gives them."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


async def _execute(conn: asyncpg.Connection, sql: str, params: Mapping[str, Any]) -> None:
    text, names = _positional(sql)
    await conn.execute(text, *(params[n] for n in names))


async def _fetch(conn: asyncpg.Connection, sql: str, params: Mapping[str, Any]) -> list[asyncpg.Record]:
    text, names = _positional(sql)
    return list(await conn.fetch(text, *(params[n] for n in names)))


async def _status(conn: asyncpg.Connection, sql: str, **params: Any) -> str:
    text, names = _positional(sql)
    return str(await conn.execute(text, *(params[n] for n in names)))


def _count(status: str) -> int:
    """The row count of a command status (``DELETE 12``)."""
    return int(status.rsplit(" ", 1)[-1])


async def _upsert(conn: asyncpg.Connection, table: str, rows: list[tuple[Any, ...]]) -> None:
    if rows:
        await conn.execute(_UPSERTS[table], *(list(column) for column in zip(*rows, strict=True)))


async def _take_out(conn: asyncpg.Connection, product: str, rows: Mapping[str, list[Any]]) -> None:
    """Add the negative counts of ``storage.totals_removal`` into the totals; timing buckets left at zero go."""
    for table, found in rows.items():
        await _upsert(conn, table, found)
    await conn.execute("DELETE FROM histogram_buckets WHERE product = $1 AND count = 0", product)


async def fold_reports(conn: asyncpg.Connection, reports: list[Any]) -> None:
    """Fold reports, as validation decoded them, into the rollups, inside the caller's transaction.

    The machines' reach states are locked first, in key order (created empty if new): two workers folding
    reports of one machine take turns, so each sees the days the other filed.
    """
    plan = rollups.fold(reports)
    products, guids = [p for p, _ in plan.machines], [g for _, g in plan.machines]
    await conn.execute(_NEW_STATES, products, guids)
    states = {(r["product"], r["guid"]): r["runs"] for r in await conn.fetch(_LOCK_STATES, products, guids)}
    for table, rows in plan.rows(states).items():
        await _upsert(conn, table, rows)


async def _fold_or_isolate(conn: asyncpg.Connection, reports: dict[int, Any]) -> dict[int, str]:
    """Fold ``reports`` (by seq); if that fails, fold them one by one. Why each one that failed did.

    Savepoints (nested transactions) undo a failed attempt inside the caller's transaction; an unavailable
    database, or a conflict with another worker that the caller retries, is raised, never blamed on a report.
    """
    try:
        async with conn.transaction():
            await fold_reports(conn, list(reports.values()))
    except (*_UNAVAILABLE, *_CONFLICT):
        raise
    except Exception:
        return await _one_by_one(conn, reports)
    return {}


async def _one_by_one(conn: asyncpg.Connection, reports: dict[int, Any]) -> dict[int, str]:
    failed: dict[int, str] = {}
    for seq, report in reports.items():
        try:
            async with conn.transaction():
                await fold_reports(conn, [report])
        except (*_UNAVAILABLE, *_CONFLICT):
            raise
        except Exception as exc:
            failed[seq] = describe(exc)
    return failed


#: Advisory lock keys that machines' (guid, product) pairs hash into (see :func:`_lock_pairs`).
PAIR_LOCKS = 64


async def _lock_pairs(conn: asyncpg.Connection, writes: Sequence[Write]) -> None:
    """Serialise a deletion with every transaction storing a report of its pair, across workers.

    Without it a worker could store a report (no tombstone yet) while another deletes the pair (not seeing
    the uncommitted report), and the report would outlive its deletion. Reports take their pairs' locks
    shared, deletions exclusive (each in key order, two statements); pairs hash into :data:`PAIR_LOCKS` keys,
    so a batch of thousands takes a few dozen locks. A deadlock (two writes with deletions, rare) is retried.
    """
    exclusive = {hash_pair(w.guid, w.product) for w in writes if isinstance(w, Deletion)}
    shared = {hash_pair(w.guid, w.product) for w in writes if isinstance(w, NewReport)} - exclusive
    for lock, keys in (("pg_advisory_xact_lock", exclusive), ("pg_advisory_xact_lock_shared", shared)):
        if keys:
            await conn.execute(
                f"SELECT {lock}($1, k) FROM (SELECT unnest($2::int4[]) AS k ORDER BY 1) AS keys",
                _PAIR_LOCK_SPACE,
                sorted(keys),
            )


#: The first key of the pair locks: keeps them apart from any other advisory lock in the database.
_PAIR_LOCK_SPACE = 0x0CE1


def hash_pair(guid: str, product: str) -> int:
    """The pair lock a (guid, product) takes: stable across processes (unlike ``hash``)."""
    return zlib.crc32(f"{product}\0{guid}".encode()) % PAIR_LOCKS


class PostgresStorage:
    """The :class:`~ceip_core.service.storage.Storage` on a PostgreSQL database."""

    def __init__(self, url: str, pool_size: int = 4) -> None:
        self.dsn = url
        self.url = redact(url)
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._held = Held()
        self._silent_after: dict[str, str] = {}
        """Aging's cursor over machines, per product."""

    async def _run(self, fn: Callable[[asyncpg.Connection], Awaitable[_R]]) -> _R:
        """``fn`` on a pooled connection; a deadlock between workers is retried, an outage is reported."""
        if self._pool is None:
            raise StorageUnavailable(f"{self.url}: not connected")
        for attempt in range(5):
            try:
                async with self._pool.acquire(timeout=10) as conn:
                    return await fn(conn)
            except _CONFLICT:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.01 * 2**attempt)
            except _UNAVAILABLE as exc:
                raise StorageUnavailable(f"{self.url}: {exc}") from exc
        raise AssertionError("unreachable")

    # -- lifecycle ----------------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=self.pool_size)
        except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
            raise StorageError(f"cannot connect to {self.url}: {exc}") from None
        await self._run(self._migrate)

    @staticmethod
    async def _migrate(conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('ceip-service-schema'))")
            found = None
            if await conn.fetchval("SELECT to_regclass('meta') IS NOT NULL"):
                found = await conn.fetchval("SELECT value FROM meta WHERE key = 'schema'")
                if found is not None and int(found) > SCHEMA_VERSION:
                    raise StorageError(f"the database has schema {found}, newer than this ceip ({SCHEMA_VERSION})")
            for statement in _DDL:
                await conn.execute(statement)
            if found is not None and int(found) < SCHEMA_VERSION:
                held = await conn.fetchval("SELECT value FROM meta WHERE key = $1", HELD_SINCE)
                for statement in rollups.upgrade(int(found), int(held) if held else 0):
                    await conn.execute(statement)
            await conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema', $1) ON CONFLICT (key) DO UPDATE SET value = $1",
                str(SCHEMA_VERSION),
            )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def ping(self) -> None:
        await self.query("SELECT 1", {})

    # -- writing ------------------------------------------------------------------------------------

    @staticmethod
    async def _insert(conn: asyncpg.Connection, reports: list[NewReport], stored: list[tuple[int, Any]]) -> list[bool]:
        """Insert and queue ``reports``; per report, whether it is new. Adds ``(seq, item)`` of each to ``stored``."""
        tombstones: dict[tuple[str, str], float] = {}
        withdrawn: dict[tuple[str, str], list[tuple[str, float]]] = {}
        for guid, product, requested, category in await conn.fetch(_TOMBSTONES, sorted({r.guid for r in reports})):
            if category:
                withdrawn.setdefault((guid, product), []).append((category, requested))
            else:
                tombstones[guid, product] = requested
        dead = refused(reports, tombstones) if tombstones else set()
        if withdrawn:
            dead |= withdrawal.stale(reports, withdrawn)
        if dead:
            await conn.execute(_COUNT, TOMBSTONED, len(dead))
        # In id order (stable: the first of a repeated id stays first): two workers inserting the same reports
        # (a retry sent to both) then wait for each other in one order, rather than deadlocking.
        every = reports
        reports = sorted((r for r in reports if r.report_id not in dead), key=lambda r: r.report_id)
        columns = [
            [r.report_id for r in reports],
            [r.guid for r in reports],
            [r.product for r in reports],
            [r.version for r in reports],
            [r.day for r in reports],
            [r.received for r in reports],
            [r.body for r in reports],
        ]
        inserted = {row["report_id"]: row["seq"] for row in await conn.fetch(_INSERT_REPORTS, *columns)}
        await conn.execute("INSERT INTO rollup_queue (seq) SELECT unnest($1::int8[])", list(inserted.values()))
        # The same id twice in one statement is inserted once: the first occurrence is the new one.
        results = []
        for r in every:
            seq = inserted.pop(r.report_id, None)
            results.append(seq is not None)
            if seq is not None:
                stored.append((seq, r.item))
        return results

    @staticmethod
    async def _delete(conn: asyncpg.Connection, d: Deletion, unqueued: list[int]) -> bool:
        """Apply a deletion request; adds the seqs it took out of the rollup queue to ``unqueued``."""
        if d.withdrawal is not None:
            return await PostgresStorage._withdraw(conn, d, d.withdrawal, unqueued)
        # Queued rollups go first: this waits for a worker folding them right now, so its rows are deleted too.
        taken = await conn.fetch(
            "DELETE FROM rollup_queue WHERE seq IN (SELECT seq FROM reports WHERE guid = $1 AND product = $2) "
            "RETURNING seq",
            d.guid,
            d.product,
        )
        unqueued += [row["seq"] for row in taken]
        # Read after the queue rows were taken: a fold of these reports by another worker has committed.
        bodies = await conn.fetch(
            "SELECT body FROM reports WHERE guid = $1 AND product = $2 AND NOT (seq = ANY($3::int8[])) "
            "AND seq NOT IN (SELECT seq FROM quarantine)",
            d.guid,
            d.product,
            [row["seq"] for row in taken],
        )
        await _take_out(conn, d.product, totals_removal(row["body"] for row in bodies))
        await conn.execute(TOMBSTONE_SQL.format("$1", "$2", "$3"), d.guid, d.product, d.requested)
        await conn.execute(DELETE_QUARANTINED.format("$1", "$2"), d.guid, d.product)
        await conn.execute("DELETE FROM reports WHERE guid = $1 AND product = $2", d.guid, d.product)
        mine = {"guid": d.guid, "product": d.product}
        # Locked: a worker folding this machine's reports right now finishes first, so its days are taken out too.
        state = await _fetch(conn, rollups.MY_STATE + " FOR UPDATE", mine)
        await _upsert(conn, "reach", rollups.removal(d.product, state[0]["runs"] if state else None))
        problems = await _fetch(conn, rollups.MY_PROBLEMS, mine)
        for table in rollups.PER_MACHINE:
            await conn.execute(table.delete("$1", "$2"), d.guid, d.product)
        for day, kind, signature, version in problems:
            key = {**mine, "day": day, "kind": kind, "signature": signature, "version": version}
            for statement in rollups.RECOMPUTE_PROBLEM:
                await _execute(conn, statement, key)
        status = await conn.execute(
            "INSERT INTO deletions (request_id, product, day, received) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (request_id) DO NOTHING",
            d.request_id,
            d.product,
            d.day,
            d.received,
        )
        return bool(status == "INSERT 0 1")

    @staticmethod
    async def _withdraw(conn: asyncpg.Connection, d: Deletion, w: Withdrawal, unqueued: list[int]) -> bool:
        """Apply a deletion request for some categories (``ceip_core.service.withdrawal``), as SQLite does:
        the pair's queued reports leave the queue while their bodies are rewritten and join it again."""
        mine = {"guid": d.guid, "product": d.product}
        if await conn.fetchval("SELECT 1 FROM withdrawals WHERE request_id = $1", d.request_id):
            return False  # applied already: what it withdrew is gone, and the pair's newer data is not its
        # Queued rollups go first: this waits for a worker folding them right now, so their timings are seen.
        taken = await conn.fetch(
            "DELETE FROM rollup_queue WHERE seq IN (SELECT seq FROM reports WHERE guid = $1 AND product = $2) "
            "RETURNING seq",
            d.guid,
            d.product,
        )
        seqs = [row["seq"] for row in taken]
        unqueued += seqs
        bodies = await conn.fetch(
            "SELECT body FROM reports WHERE guid = $1 AND product = $2 AND NOT (seq = ANY($3::int8[])) "
            "AND seq NOT IN (SELECT seq FROM quarantine)",
            d.guid,
            d.product,
            seqs,
        )
        await _take_out(conn, d.product, totals_removal((row["body"] for row in bodies), w.withdrawn))
        broken = [row["seq"] for row in await _fetch(conn, withdrawal.MY_QUARANTINED, mine)]
        await conn.execute("DELETE FROM quarantine WHERE seq = ANY($1::int8[])", broken)
        await conn.execute("DELETE FROM reports WHERE seq = ANY($1::int8[])", broken)
        for row in await _fetch(conn, withdrawal.MY_REPORTS, mine):
            new = w.rewritten(row["body"])
            if new is None:
                await conn.execute("DELETE FROM reports WHERE seq = $1", row["seq"])
            elif new != row["body"]:
                await _execute(conn, withdrawal.REWRITE, {"seq": row["seq"], "body": new})
        await conn.execute("INSERT INTO rollup_queue (seq) SELECT seq FROM reports WHERE seq = ANY($1::int8[])", seqs)
        # Locked: a worker folding this machine's reports right now finishes first, so its days are seen.
        state = await _fetch(conn, rollups.MY_STATE + " FOR UPDATE", mine)
        if state:
            removal, runs = w.reach_removal(state[0]["runs"], d.product)
            await _upsert(conn, "reach", removal)
            await _execute(conn, withdrawal.UPDATE_STATE, {**mine, "runs": runs})
        for day, kind, signature, version in await _fetch(conn, withdrawal.MY_PROBLEMS, mine):
            if w.withdrawn(kind):
                key = {**mine, "day": day, "kind": kind, "signature": signature, "version": version}
                await _execute(conn, withdrawal.DELETE_PROBLEM, key)
                for statement in rollups.RECOMPUTE_PROBLEM:
                    await _execute(conn, statement, key)
        for category in w.categories:
            await _execute(
                conn, withdrawal.CATEGORY_TOMBSTONE_SQL, {**mine, "category": category.value, "requested": d.requested}
            )
        await conn.execute(
            "INSERT INTO withdrawals (request_id, product, day, received) VALUES ($1, $2, $3, $4)",
            d.request_id,
            d.product,
            d.day,
            d.received,
        )
        return True

    async def write(self, writes: Sequence[Write]) -> list[bool]:
        async def run(conn: asyncpg.Connection) -> list[bool]:
            results: list[bool] = []
            stored: list[tuple[int, Any]] = []
            unqueued: list[int] = []
            async with conn.transaction():
                await _lock_pairs(conn, writes)
                run_of_reports: list[NewReport] = []
                for w in [*writes, None]:
                    if isinstance(w, NewReport):
                        run_of_reports.append(w)
                        continue
                    if run_of_reports:
                        results += await self._insert(conn, run_of_reports, stored)
                        run_of_reports = []
                    if isinstance(w, Deletion):
                        results.append(await self._delete(conn, w, unqueued))
            self._held.keep(stored)  # committed: the fold may take them now ...
            self._held.forget(unqueued)  # ... and never those a deletion took out
            return results

        return await self._run(run)

    async def roll_up(self, limit: int = 5000, *, wait: bool = False) -> int:
        lock = "FOR UPDATE OF q" if wait else "FOR UPDATE OF q SKIP LOCKED"

        async def run(conn: asyncpg.Connection) -> int:
            async with conn.transaction():
                # Rollups can be rebuilt from the raw reports, so this commit does not wait for the WAL flush
                # (a crash loses at most the last folds, never a report; see ``rebuild``).
                await conn.execute("SET LOCAL synchronous_commit = off")
                queued = await conn.fetch(
                    "SELECT q.seq, r.report_id FROM rollup_queue q JOIN reports r ON r.seq = q.seq "
                    f"ORDER BY q.seq LIMIT $1 {lock}",
                    limit,
                )
                if not queued:
                    self._held.clear()
                    return 0
                reports, missing = self._held.take(queued)
                failed: dict[int, str] = {}
                if missing:
                    bodies = await conn.fetch("SELECT seq, body FROM reports WHERE seq = ANY($1::int8[])", missing)
                    decoded, failed = decode_bodies(bodies)
                    reports.update(decoded)
                failed.update(await _fold_or_isolate(conn, reports))
                await conn.executemany(
                    "INSERT INTO quarantine (seq, reason, quarantined) VALUES ($1, $2, $3) "
                    "ON CONFLICT (seq) DO UPDATE SET reason = excluded.reason",
                    [(seq, why, time.time()) for seq, why in failed.items()],
                )
                await conn.execute("DELETE FROM rollup_queue WHERE seq = ANY($1::int8[])", [r["seq"] for r in queued])
            for seq, why in failed.items():
                log.warning("report seq %d quarantined: %s", seq, why)
            return len(queued)

        return await self._run(run)

    async def rebuild(self) -> int:
        async def run(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                found = await conn.fetchval("SELECT value FROM meta WHERE key = $1", HELD_SINCE)
                for statement in rollups.rebuild(int(found) if found else 0):
                    await conn.execute(statement)

        await self._run(run)
        self._held.clear()
        folded = 0
        while step := await self.roll_up(wait=True):
            folded += step
        return folded

    async def expire(self, before_day: int, limit: int) -> int:
        async def run(conn: asyncpg.Connection) -> int:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = "
                    "CAST(GREATEST(CAST(meta.value AS BIGINT), CAST(excluded.value AS BIGINT)) AS TEXT)",
                    HELD_SINCE,
                    str(before_day),
                )
                done = deleted = _count(await _status(conn, aging.OLD_REPORTS_SQL, before=before_day, limit=limit))
                if deleted:
                    await conn.execute(aging.ORPHANED_QUARANTINE_SQL)
                products = [row[0] for row in await conn.fetch(aging.PRODUCTS_SQL)]
                for table in aging.AGED_TABLES:
                    for product in products:
                        if done < limit:
                            sql = aging.delete_old(table, "ctid")
                            n = _count(await _status(conn, sql, product=product, before=before_day, limit=limit - done))
                            done, deleted = done + n, deleted + n
                for product in products:  # silent machines, from a cursor: each step examines a bounded slice
                    if done >= limit:
                        break
                    mine = {"product": product, "after": self._silent_after.get(product, ""), "limit": limit - done}
                    guids = [row[0] for row in await _fetch(conn, aging.MACHINES_SQL, mine)]
                    if not guids:
                        continue
                    self._silent_after[product] = guids[-1]
                    gone = await conn.fetch(
                        "DELETE FROM reach_state s WHERE product = $1 AND guid = ANY($2::text[]) AND NOT EXISTS "
                        "(SELECT 1 FROM machine_days m WHERE m.product = s.product AND m.guid = s.guid "
                        "AND m.day >= $3) "
                        "RETURNING guid",
                        product,
                        guids,
                        before_day,
                    )
                    done, deleted = done + len(guids), deleted + len(gone)
                if deleted:
                    await conn.execute(_COUNT, EXPIRED, deleted)
            if done < limit:
                self._silent_after.clear()  # the pass is over; the next starts from the first machine
            return done

        return await self._run(run)

    async def stats(self) -> dict[str, Any]:
        async def run(conn: asyncpg.Connection) -> dict[str, Any]:
            tables = [
                row[0]
                for row in await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename"
                )
            ]
            rows = {t: int(await conn.fetchval(f'SELECT COUNT(*) FROM "{t}"')) for t in tables}
            size = await conn.fetchval(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r'"
            )
            oldest = await conn.fetchval("SELECT MIN(r.received) FROM rollup_queue q JOIN reports r ON r.seq = q.seq")
            counters = await conn.fetch(
                "SELECT key, value FROM meta WHERE key = ANY($1::text[])", [TOMBSTONED, EXPIRED]
            )
            return {
                "bytes": int(size),
                "rows": rows,
                "queued": rows.get("rollup_queue", 0),
                "oldest_queued": oldest,
                "counters": {row[0]: int(row[1]) for row in counters},
            }

        return await self._run(run)

    async def end_sessions(self) -> None:
        async def run(conn: asyncpg.Connection) -> None:
            await conn.execute(END_SESSIONS_SQL.replace("?", "$1"), SESSION_EPOCH)

        await self._run(run)

    async def quarantined(self) -> int:
        (count,) = (await self.query("SELECT COUNT(*) FROM quarantine", {}))[0]
        return int(count)

    # -- reading ------------------------------------------------------------------------------------

    async def query(self, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        async def run(conn: asyncpg.Connection) -> list[tuple[Any, ...]]:
            return [tuple(_plain(v) for v in row) for row in await _fetch(conn, sql, params)]

        return await self._run(run)
