"""The rollups can be rebuilt from the raw reports, on both stores: which is why their commits need not wait for
the disk. After the last folds are lost (what a power cut may do under ``synchronous=NORMAL`` or
``synchronous_commit=off``), ``ceip rebuild-rollups`` gives exactly the answers of before."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import attrs
from click.testing import CliRunner
from service.factory import body, config, deletion, report

from ceip_core.cli import cli
from ceip_core.service import queries
from ceip_core.service.commands import import_files
from ceip_core.service.stores import open_storage

SERVICE = attrs.evolve(config(), k=1)


def fleet() -> list[dict[str, Any]]:
    """Reports of 12 machines over 5 days: features, problems, timings, configuration, two versions."""
    now = datetime.now(UTC).replace(microsecond=0)
    items = []
    for m in range(12):
        guid = str(uuid.UUID(int=m + 1))
        for day in range(5 - m % 3):
            items.append(
                report(
                    guid,
                    version=f"1.{m % 2}",
                    counters={"open_file": m + day, "export": 1} if m % 2 else {"open_file": 1},
                    problems={f"KeyError@a.py:{m % 4}": day + 1} if m % 3 == 0 else None,
                    timings={"render_ms": [m, day, 1]},
                    config={"theme": "dark" if m % 2 else "light"},
                    end=now - timedelta(days=day, minutes=m + 1),
                )
            )
    return items


async def answers(database: str) -> dict[str, Any]:
    storage = open_storage(database)
    await storage.open()
    try:
        filters = queries.Filters.parse({})
        return {name: await run(storage, filters, 1) for name, run in queries.QUERIES.items()}
    finally:
        await storage.close()


async def lose_the_last_folds(database: str) -> None:
    """Empty the rollups, as if folds had not reached the disk, but keep the raw reports (they were durable)."""
    tables = ("reach", "reach_state", "counter_totals", "histogram_buckets", "problem_totals", "machine_days")
    if database.startswith("sqlite"):
        with sqlite3.connect(database.removeprefix("sqlite://")) as db:
            for table in tables:
                db.execute(f"DELETE FROM {table}")
        return
    conn = await asyncpg.connect(database)
    try:
        for table in tables:
            await conn.execute(f"DELETE FROM {table}")
    finally:
        await conn.close()


async def test_a_rebuild_from_the_raw_reports_gives_the_same_answers(tmp_path: Any, database: str) -> None:
    items = fleet()
    batch = tmp_path / "fleet.ceipbatch"
    batch.write_bytes(body(*items, deletion(items[0]["guid"])))
    outcomes, failed = await import_files([batch], database, SERVICE)
    assert not failed and outcomes["accepted"] == len(items) + 1
    before = await answers(database)
    assert before["timings"]["timings"] and before["problems"]["problems"] and before["features"]["features"]

    await lose_the_last_folds(database)
    assert await answers(database) != before  # what was lost shows

    command = ["rebuild-rollups", "--db", database]
    result = await asyncio.to_thread(CliRunner().invoke, cli, command, catch_exceptions=False)  # it runs a loop
    assert result.exit_code == 0, result.output
    assert f"from {len(items) - 5} stored report(s)" in result.output  # the deleted machine's 5 are gone
    assert json.dumps(await answers(database), sort_keys=True) == json.dumps(before, sort_keys=True)
