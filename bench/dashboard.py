"""Benchmark of the dashboard: how long ``ceip serve`` takes to answer a product page and each query on 5M
reports of 100,000 machines (the sizes are options), beside baselines measured in the same run.

    python bench/dashboard.py                     # SQLite; the first run seeds (long at 5M), later runs reuse it
    python bench/dashboard.py --reports 1000000 --machines 20000          # a size that seeds in minutes
    python bench/dashboard.py --postgres postgresql://postgres@127.0.0.1:5432/postgres   # and PostgreSQL

How the reports get in, honestly: sending them through HTTP would take hours here, so the benchmark
generates them with the simulated fleet of ``ceip demo`` (``ceip_core.service.fleet``: ``--machines`` machines with
distinct GUIDs, the three product plugins' metrics, about 45 days up to today) and folds them into the
rollups with ``rollups.fold`` and ``Fold.rows``, **the very functions the service's rollup step runs** on
every queued report (the same rows in ``machine_days``, ``problem_days``, the totals,
``histogram_buckets``, ``reach`` and ``reach_state``), in chunks of 5,000, but bulk-loaded: the machines'
states and the summed tables stay in memory and are written once, by plain inserts (PostgreSQL: COPY).
Only the raw ``reports`` table is left empty: no query reads it. The seeded database is kept under
``bench/results/`` (git-ignored) and reused; the seeding time is printed.

Measured: the time from sending ``GET /dashboard?product=analyst&since=...&until=...`` (logged in) to
having read the whole page, on loopback, with an aiohttp client in the same process as the service (so
it is server time plus under a millisecond of client). The first request after opening the database is
reported apart ("cold": the database's own cache is empty). Baselines: (a) the same page on an empty SQLite store
(rendering and HTTP, no data); (b) the eight JSON queries the page makes, through the query API; (c) the
page's problem and active-machine numbers computed the way they were before ``reach`` existed, by
``COUNT(DISTINCT guid)`` over the per-machine, per-day rows (feature machines are left out of it since
schema 4 keeps no per-machine feature rows). Targets: the page in at most 300 ms, each JSON
query on its own in at most 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ceip_core.service.storage import SCHEMA_VERSION

LOOPBACK = "127.0.0.1"  # the only address this benchmark ever talks to
RESULTS = Path(__file__).parent / "results"
TOKEN = "bench-token"
CHUNK = 5000
TARGET_MS = 300.0
QUERY_TARGET_MS = 100.0
META = "CREATE TABLE bench_meta (reports BIGINT, seconds DOUBLE PRECISION, day BIGINT, schema BIGINT)"
QUERIES = ("versions", "problems", "trends", "problem_versions", "features", "config", "timings", "participation")


# -- seeding ----------------------------------------------------------------------------------------------


def _reports(count: int, machines: int, days: int) -> Any:
    """Simulated reports as records: the fold reads the fields that validation's structs share with them."""
    from ceip_core.plugins import get_plugins
    from ceip_core.service import fleet

    specs = [get_plugins().product(p) for p in ("analyst", "packager", "hub-server")]
    for i, report in enumerate(fleet.simulate(specs, machines_count=machines, days=days, seed=7)):
        if i == count:
            return
        yield report


def _chunks(count: int, machines: int, days: int) -> Any:
    chunk: list[Any] = []
    for report in _reports(count, machines, days):
        chunk.append(report)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _progress(done: int, count: int, began: float) -> None:
    print(f"\r  seeded {done:,} of {count:,} reports ({time.monotonic() - began:.0f} s)", end="", file=sys.stderr)


class BulkFold:
    """The service's fold, for seeding: the very rows ``rollups.fold`` and ``Fold.rows`` make, with the
    machines' reach states and every summed table kept in memory and written once at the end.

    That is what makes seeding fast (the per-chunk reads of states and the upserts into the same total rows
    go). The per-machine tables are written as they come, by plain inserts: the simulated fleet sends one
    report per machine, product and day, so their keys never repeat across chunks.
    """

    def __init__(self) -> None:
        from ceip_core.service import reach, rollups

        # Reach states change with every chunk a machine is in: they are written once, by totals().
        self.per_machine = tuple(t.name for t in rollups.PER_MACHINE if t.name != "reach_state")
        self.tables = {t.name: t for t in rollups.TABLES}
        self.states: dict[tuple[str, str], str] = {}
        self.groups = reach.Groups()
        """The group ids, given here in order as the service's ``reach_groups`` would."""
        self.sums: dict[str, dict[tuple[Any, ...], list[Any]]] = {
            name: {} for name in self.tables if name not in (*self.per_machine, "reach_state")
        }

    def add(self, chunk: list[Any]) -> dict[str, list[tuple[Any, ...]]]:
        """Fold a chunk; the per-machine rows to insert now."""
        from ceip_core.service import reach, rollups

        plan = rollups.fold(chunk)
        rows, unnamed = plan.rows({m: reach.parse(self.states.get(m)) for m in plan.machines}, self.groups)
        if unnamed:
            known = len(self.groups.id_of)
            new = self.groups.unknown_keys(unnamed.values())
            self.groups.learn([(known + 1 + i, *fields) for i, fields in enumerate(new)])
            rows["reach_state"] += [(*m, reach.encode(state, self.groups)) for m, state in unnamed.items()]
        for product, guid, runs in rows["reach_state"]:
            self.states[product, guid] = runs
        for name, summed in self.sums.items():
            table = self.tables[name]
            width = len(table.keys)
            for row in rows[name]:
                key, values = row[:width], row[width:]
                found = summed.get(key)
                if found is None:
                    summed[key] = list(values)
                    continue
                for i, (_, _, merge) in enumerate(table.values):
                    if merge == "sum":
                        found[i] += values[i]
                    elif merge == "min":
                        found[i] = min(found[i], values[i])
                    else:
                        found[i] = max(found[i], values[i])
        return {name: rows[name] for name in self.per_machine}

    def totals(self) -> dict[str, list[tuple[Any, ...]]]:
        """The summed tables, the reach groups numbered as the service numbers them, and the reach states,
        to insert once."""
        from ceip_core.service import reach

        found = {name: [(*key, *values) for key, values in summed.items()] for name, summed in self.sums.items()}
        found["reach_groups"] = [(i, *reach.fields(key)) for i, key in self.groups.key_of.items()]
        found["reach_state"] = [(product, guid, runs) for (product, guid), runs in self.states.items()]
        return found

    def columns(self, name: str) -> tuple[str, ...]:
        from ceip_core.service import rollups

        if name == "reach_groups":
            return ("id", *rollups.GROUP_FIELDS)
        return self.tables[name].columns

    def insert(self, name: str, marks: Callable[[int], str]) -> str:
        """A plain insert into ``name``, with the dialect's parameter marks (``marks(count)``)."""
        columns = self.columns(name)
        return f"INSERT INTO {name} ({', '.join(columns)}) VALUES ({marks(len(columns))})"


async def seed_sqlite(path: Path, count: int, machines: int, days: int) -> float:
    """Fold ``count`` simulated reports into a new SQLite database; the seconds it took."""
    from ceip_core.service.sqlite_store import SQLiteStorage

    storage = SQLiteStorage(f"sqlite://{path}")
    await storage.open()  # the schema, exactly as the service makes it
    await storage.close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")  # a benchmark's seed: a crash means seeding again
    bulk, began, done = BulkFold(), time.monotonic(), 0

    def marks(n: int) -> str:
        return ", ".join("?" * n)

    db.execute("BEGIN")
    for chunk in _chunks(count, machines, days):
        for name, rows in bulk.add(chunk).items():
            db.executemany(bulk.insert(name, marks), rows)
        done += len(chunk)
        _progress(done, count, began)
    for name, rows in bulk.totals().items():
        db.executemany(bulk.insert(name, marks), rows)
    db.execute("COMMIT")
    db.execute(META)
    db.execute("INSERT INTO bench_meta VALUES (?, ?, ?, ?)", (done, time.monotonic() - began, _today(), SCHEMA_VERSION))
    db.execute("ANALYZE")
    db.close()
    print(file=sys.stderr)
    return time.monotonic() - began


async def seed_postgres(url: str, count: int, machines: int, days: int) -> None:
    import asyncpg

    from ceip_core.service.postgres_store import PostgresStorage

    storage = PostgresStorage(url)
    await storage.open()
    await storage.close()
    conn = await asyncpg.connect(url)
    bulk, began, done = BulkFold(), time.monotonic(), 0
    try:
        schema = await conn.fetchval("SELECT current_schema()")

        async def copy(name: str, rows: list[tuple[Any, ...]]) -> None:
            columns = list(bulk.columns(name))
            await conn.copy_records_to_table(name, records=rows, columns=columns, schema_name=schema)

        for chunk in _chunks(count, machines, days):
            for name, rows in bulk.add(chunk).items():
                await copy(name, rows)
            done += len(chunk)
            _progress(done, count, began)
        for name, rows in bulk.totals().items():
            await copy(name, rows)
        # The ids were given here: the service's next new group takes the one after them.
        await conn.execute("SELECT setval(pg_get_serial_sequence('reach_groups', 'id'), MAX(id)) FROM reach_groups")
        await conn.execute("ANALYZE")
        await conn.execute(META)
        await conn.execute(
            "INSERT INTO bench_meta VALUES ($1, $2, $3, $4)", done, time.monotonic() - began, _today(), SCHEMA_VERSION
        )
    finally:
        await conn.close()
    print(file=sys.stderr)


async def seeded(database: str) -> tuple[int, float] | None:
    """(reports, seconds) of a database this benchmark seeded today with this storage schema, or None (then
    it seeds again: the simulated fleet's days end on the day it was seeded, and the pages show the last 30
    days; opening an older schema rebuilt its rollups from raw reports, which the seed leaves out)."""
    from ceip_core.service.stores import open_storage

    storage = open_storage(database)
    await storage.open()
    try:
        found = await storage.query("SELECT reports, seconds, day, schema FROM bench_meta", {})
    except Exception:  # sqlite3 or asyncpg: no bench_meta table, so not seeded yet
        return None
    finally:
        await storage.close()
    fresh = found and found[0][2] == _today() and found[0][3] == SCHEMA_VERSION
    return (int(found[0][0]), float(found[0][1])) if fresh else None


def _today() -> int:
    return int(time.time() // 86400)


# -- measuring --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


async def timed(fetch: Callable[[], Awaitable[Any]], runs: int) -> dict[str, float]:
    """Milliseconds of the first call (cold) and the median and 95th percentile of ``runs`` more."""
    began = time.perf_counter()
    await fetch()
    cold = (time.perf_counter() - began) * 1000
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        await fetch()
        times.append((time.perf_counter() - began) * 1000)
    times.sort()
    return {"cold": cold, "median": statistics.median(times), "p95": times[int(0.95 * (len(times) - 1))]}


async def measure(database: str, views: dict[str, str], runs: int, api: bool) -> dict[str, dict[str, float]]:
    """Time each page view (and, if ``api``, the page's JSON queries) against a service on ``database``."""
    import aiohttp
    from aiohttp import web

    from ceip_core.service import sessions
    from ceip_core.service.app import make_app
    from ceip_core.service.config import ServiceConfig

    allowlist = {p: frozenset([p]) for p in ("analyst", "packager", "hub-server")}
    runner = web.AppRunner(make_app(ServiceConfig(allowlist=allowlist), database, TOKEN), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, LOOPBACK, port).start()
    base = f"http://{LOOPBACK}:{port}"
    results: dict[str, dict[str, float]] = {}
    try:
        jar = aiohttp.CookieJar(unsafe=True)  # unsafe: cookies for an IP address host
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            async with session.post(f"{base}/dashboard/login", data={"token": TOKEN}) as login:
                assert login.status == 200 and sessions.COOKIE in {c.key for c in jar}, login.status

            async def get(path: str) -> str:
                async with session.get(base + path) as response:
                    assert response.status == 200, (path, response.status, await response.text())
                    return await response.text()

            for name, path in views.items():
                results[name] = await timed(lambda path=path: get(path), runs)  # type: ignore[misc]
            if api:
                query = views["analyst, 30 days"].split("?", 1)[1]

                async def all_queries() -> None:
                    for q in QUERIES:
                        await get(f"/v1/query/{q}?{query}")

                results["api"] = await timed(all_queries, runs)
                for q in QUERIES:  # each on its own: every query has its own target
                    results[f"query {q}"] = await timed(
                        lambda q=q: get(f"/v1/query/{q}?{query}"),  # type: ignore[misc]
                        runs,
                    )
    finally:
        await runner.cleanup()
    return results


async def distinct_scan(database: str, since: int, until: int) -> float:
    """Milliseconds to count the page's problem and active machines by scanning per-machine rows."""
    from ceip_core.service.stores import open_storage

    storage = open_storage(database)
    await storage.open()
    params = {"product": "analyst", "since": since, "until": until}
    where = "product = :product AND day >= :since AND day <= :until"
    began = time.perf_counter()
    try:
        await storage.query(
            f"SELECT kind, signature, COUNT(DISTINCT guid) FROM problem_days WHERE {where} GROUP BY kind, signature",
            params,
        )
        await storage.query(f"SELECT COUNT(DISTINCT guid) FROM machine_days WHERE {where}", params)
    finally:
        await storage.close()
    return (time.perf_counter() - began) * 1000


def views_for(today: datetime) -> dict[str, str]:
    day = today.date()
    month, quarter = (day - timedelta(days=29)).isoformat(), (day - timedelta(days=89)).isoformat()
    return {
        "analyst, 30 days": f"/dashboard?product=analyst&since={month}&until={day}",
        "analyst 3.0, 30 days": f"/dashboard?product=analyst&version=3.0&since={month}&until={day}",
        "analyst, 90 days": f"/dashboard?product=analyst&since={quarter}&until={day}",
        "packager, 30 days": f"/dashboard?product=packager&since={month}&until={day}",
        "product list": f"/dashboard?since={month}&until={day}",
    }


def row(
    what: str, found: dict[str, float], baseline: str = "-", target: str = "-", limit: float = TARGET_MS
) -> tuple[str, ...]:
    met = "-"
    if target != "-":
        met = "yes" if found["median"] <= limit and found["p95"] <= limit else "NO"
    return what, f"{found['median']:.0f}", f"{found['p95']:.0f}", f"{found['cold']:.0f}", baseline, target, met


async def run(database: str, label: str, runs: int, rows: list[tuple[str, ...]]) -> None:
    today = datetime.now(UTC)
    views = views_for(today)
    found = await measure(database, views, runs, api=True)
    with tempfile.TemporaryDirectory(prefix="ceip-bench-") as tmp:
        empty = await measure(
            f"sqlite://{Path(tmp) / 'empty.db'}", {"analyst, 30 days": views["analyst, 30 days"]}, runs, False
        )
    main = found.pop("analyst, 30 days")
    rows.append(
        row(
            f"{label}: analyst page, 30 days",
            main,
            f"(a) empty store {empty['analyst, 30 days']['median']:.0f}",
            f"<= {TARGET_MS:.0f}",
        )
    )
    api = found.pop("api")
    rows.append(row(f"{label}: (b) its {len(QUERIES)} JSON queries", api))
    for name, figures in found.items():
        limit = QUERY_TARGET_MS if name.startswith("query ") else TARGET_MS
        rows.append(row(f"{label}: {name}", figures, target=f"<= {limit:.0f}", limit=limit))
    first = int(today.timestamp() // 86400) - 29
    scan = await distinct_scan(database, first, first + 29)
    rows.append((f"{label}: (c) COUNT(DISTINCT) scan, problems+active", f"{scan:.0f}", "-", "-", "-", "-", "-"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=int, default=5_000_000, help="the issue's size; seeding takes a while")
    parser.add_argument("--machines", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=45)
    parser.add_argument("--runs", type=int, default=15, help="timed requests per page, after the cold one")
    parser.add_argument("--postgres", help="also measure on this loopback PostgreSQL (seeds schema ceip_bench)")
    parser.add_argument("--fresh", action="store_true", help="seed again even if a seeded database exists")
    args = parser.parse_args()
    if args.postgres and urlsplit(args.postgres).hostname not in (LOOPBACK, "::1", "localhost"):
        parser.error("--postgres must name a server on loopback (127.0.0.1, ::1 or localhost)")

    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"dashboard-{args.reports}-{args.machines}-{args.days}.db"
    targets = [("SQLite", f"sqlite://{path}")]
    if args.postgres:
        targets.append(("PostgreSQL", f"{args.postgres}{'&' if '?' in args.postgres else '?'}search_path=ceip_bench"))
    rows: list[tuple[str, ...]] = []
    for label, database in targets:
        if label == "PostgreSQL":
            asyncio.run(_schema(args.postgres, "CREATE SCHEMA IF NOT EXISTS ceip_bench"))
        found = None if args.fresh else asyncio.run(seeded(database))
        if found is None:
            print(f"seeding {label} with {args.reports:,} reports (once) ...", file=sys.stderr)
            if label == "SQLite":
                path.unlink(missing_ok=True)
                asyncio.run(seed_sqlite(path, args.reports, args.machines, args.days))
            else:
                asyncio.run(_schema(args.postgres, "DROP SCHEMA ceip_bench CASCADE", "CREATE SCHEMA ceip_bench"))
                asyncio.run(seed_postgres(database, args.reports, args.machines, args.days))
            found = asyncio.run(seeded(database))
        assert found is not None
        print(
            f"{label}: {found[0]:,} reports, seeded in {found[1]:.0f} s ({found[0] / found[1]:.0f} reports/s folded)",
            file=sys.stderr,
        )
        asyncio.run(run(database, label, args.runs, rows))
    header = ("dashboard page (ms, loopback)", "median", "p95", "cold", "baseline (median)", "target", "met")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for line in (header, tuple("-" * w for w in widths), *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
    fleet = f"{args.reports:,} reports of {args.machines:,} simulated machines over {args.days} days"
    print(f"\n{os.cpu_count()} CPUs; {fleet}.")


async def _schema(url: str, *statements: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
