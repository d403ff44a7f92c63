"""Many workers on many hosts: two ``ceip serve`` processes on different ports (stand-ins for hosts) against one
PostgreSQL database, fed concurrently, give exactly the rollups and answers of one process fed the same reports:
no lost update, no double count, no deleted machine coming back.

The feed is made to collide: each machine's reports of several days go to both workers at once (their folds
meet on its reach state), every tenth report is sent to both (the database de-duplicates), and deletion
requests race the reports of their machines.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from service.factory import GZIP, TOKEN, body, deletion, free_port, report, specs_file

from ceip_core.service import reach
from ceip_core.service.postgres_store import PostgresStorage

ALLOWLIST_TOML = '[products.sample]\nexecutables = ["sample-app"]\n'
QUERY_NAMES = ("problems", "trends", "features", "config", "timings", "participation", "versions")
#: Rollup tables compared row for row; rows whose value summed to zero (deleted again) do not count.
TABLES = {
    "counter_totals": "uses",
    "problem_totals": "occurrences",
    "histogram_buckets": "count",
    "reach": "machines",
    "machine_days": None,
    "problem_days": None,
}


def fleet() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Reports of 40 machines over 6 days, and deletion requests for 5 of the machines."""
    rng = random.Random(12)
    now = datetime.now(UTC).replace(microsecond=0)
    guids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(40)]
    reports = []
    for m, guid in enumerate(guids):
        for day in rng.sample(range(6), rng.randint(2, 6)):
            for hour in range(rng.randint(1, 3)):
                reports.append(
                    report(
                        guid,
                        version=rng.choice(["1.0", "1.1"]),
                        counters={"open_file": rng.randint(1, 9), "export": rng.randint(0, 2)},
                        problems={f"KeyError@a.py:{rng.randint(1, 3)}": 1} if rng.random() < 0.3 else None,
                        timings={"render_ms": [rng.randint(0, 5) for _ in range(4)]},
                        config={"theme": rng.choice(["dark", "light"])},
                        end=now - timedelta(days=day, hours=hour, minutes=m),
                    )
                )
    return reports, [deletion(guid) for guid in guids[::8]]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """``serve(database)``: a ``ceip serve`` process on its own port; returns its base URL."""
    started: list[subprocess.Popen[bytes]] = []
    (tmp_path / "allowlist.toml").write_text(ALLOWLIST_TOML)

    def run(database: str) -> str:
        port = free_port()
        command = [sys.executable, "-m", "ceip_core", "serve", "--port", str(port), "--data", str(tmp_path)]
        command += ["--allowlist", str(tmp_path / "allowlist.toml"), "--specs", str(specs_file(tmp_path))]
        command += ["--db", database, "--token", TOKEN, "--k", "1"]
        started.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        return f"http://127.0.0.1:{port}"

    yield run
    for proc in started:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        assert b"Traceback" not in err, err.decode()


async def healthy(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(f"{url}/healthz") as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def send(session: aiohttp.ClientSession, url: str, path: str, items: list[dict[str, Any]]) -> None:
    async with session.post(f"{url}{path}", data=body(*items), headers=GZIP) as response:
        assert response.status == 200, await response.text()


async def feed(urls: list[str], reports: list[dict[str, Any]], deletions: list[dict[str, Any]]) -> None:
    """Batches of 7 spread round-robin over ``urls``, all at once; every tenth report also goes to the next URL."""
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + 60
        for url in urls:
            while not await healthy(session, url):
                assert time.monotonic() < deadline, f"{url} did not start"
                await asyncio.sleep(0.05)
        jobs = []
        for i in range(0, len(reports), 7):
            chunk = reports[i : i + 7]
            jobs.append(send(session, urls[(i // 7) % len(urls)], "/v1/reports", chunk))
            if len(urls) > 1:
                jobs.append(send(session, urls[(i // 7 + 1) % len(urls)], "/v1/reports", chunk[::10]))
        middle = len(jobs) // 2
        jobs[middle:middle] = [
            send(session, urls[i % len(urls)], "/v1/deletions", [d]) for i, d in enumerate(deletions)
        ]
        await asyncio.gather(*jobs)


async def answers(url: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    found = {}
    async with aiohttp.ClientSession(headers=headers) as session:
        for name in QUERY_NAMES:
            for params in (
                {},
                {"version": "1.1"},
                {"since": (datetime.now(UTC) - timedelta(days=2)).date().isoformat()},
            ):
                async with session.get(f"{url}/v1/query/{name}", params=params) as response:
                    assert response.status == 200, await response.text()
                    found[name, tuple(params.items())] = await response.json()
    return found


async def tables(database: str) -> dict[str, Any]:
    conn = await asyncpg.connect(database)
    try:
        found: dict[str, Any] = {}
        for table, value in TABLES.items():
            where = f" WHERE {value} <> 0" if value else ""
            found[table] = sorted(tuple(row) for row in await conn.fetch(f"SELECT * FROM {table}{where}"))
        states = await conn.fetch("SELECT product, guid, runs FROM reach_state")
        groups = reach.Groups()  # ids differ between databases; the groups they name must not
        groups.learn(await conn.fetch("SELECT id, family, scope, version, name, value FROM reach_groups"))
        found["reach_state"] = {
            (r["product"], r["guid"]): reach.decode(reach.parse(r["runs"]), r["product"], groups) for r in states
        }
        found["reports"] = sorted(r[0] for r in await conn.fetch("SELECT report_id FROM reports"))
        found["queued"] = await conn.fetchval("SELECT COUNT(*) FROM rollup_queue")
        return found
    finally:
        await conn.close()


async def schema(server: str) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(f"CREATE SCHEMA {name}")
    finally:
        await conn.close()
    return f"{server}?search_path={name}"


def test_two_workers_on_one_postgresql_give_the_answers_of_one(serve: Any, postgres_server: str) -> None:
    reports, deletions = fleet()
    one, many = asyncio.run(schema(postgres_server)), asyncio.run(schema(postgres_server))
    single = serve(one)
    workers = [serve(many), serve(many)]  # started together: they also race to create the schema

    asyncio.run(feed([single], reports, deletions))
    asyncio.run(feed(workers, reports, deletions))

    expected = asyncio.run(answers(single))
    assert asyncio.run(answers(workers[0])) == expected  # queries fold what is queued first
    assert asyncio.run(answers(workers[1])) == expected
    found, wanted = asyncio.run(tables(many)), asyncio.run(tables(one))
    assert found["queued"] == wanted["queued"] == 0
    deleted = {d["guid"] for d in deletions}
    assert len(wanted["reports"]) == sum(r["guid"] not in deleted for r in reports)
    for table in (*TABLES, "reach_state", "reports"):
        assert found[table] == wanted[table], table


async def test_a_deadlock_between_two_workers_is_retried_not_waited_out(postgres_server: str) -> None:
    """Two workers' transactions that lock in opposite orders: the database breaks the cycle and the loser
    runs again. (Under libfaketime PostgreSQL never checked for deadlocks, and both waited for the 30 s
    request timeout; ``tests/service/postgres.py`` keeps the server on the real clock.)"""
    database = await schema(postgres_server)
    workers = [PostgresStorage(database), PostgresStorage(database)]
    for worker in workers:
        await worker.open()
    both_hold_one = asyncio.Barrier(2)
    attempts: list[int] = []

    def locking(first: int, second: int) -> Callable[[asyncpg.Connection], Awaitable[int]]:
        async def run(conn: asyncpg.Connection) -> int:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", first)
                attempts.append(first)
                if len(attempts) <= 2:  # the first attempts meet; the retry goes straight through
                    await both_hold_one.wait()
                await conn.execute("SELECT pg_advisory_xact_lock($1)", second)
            return first

        return run

    try:
        async with asyncio.timeout(20):
            done = await asyncio.gather(workers[0]._run(locking(1, 2)), workers[1]._run(locking(2, 1)))
    finally:
        for worker in workers:
            await worker.close()
    assert done == [1, 2]
    assert len(attempts) == 3  # exactly one of them ran twice
