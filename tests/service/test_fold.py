"""The rollup fold reads what validation produced, and a report it still cannot take is quarantined, never retried
forever: the reports behind it are folded, queries answer, and the count shows in ``/readyz``, on both stores."""

from __future__ import annotations

import sqlite3
import time
import uuid
from typing import Any

import asyncpg
import attrs
import orjson
from service.factory import GZIP, TOKEN, auth, body, config, deletion, report

from ceip_core.service.app import make_app
from ceip_core.service.storage import NewReport
from ceip_core.service.stores import open_storage
from ceip_core.service.validation import decode_stored

SERVICE = attrs.evolve(config(), k=1)


async def post(client: Any, *items: dict[str, Any], path: str = "/v1/reports") -> list[str]:
    response = await client.post(path, data=body(*items), headers=GZIP)
    assert response.status == 200, await response.text()
    return [r["status"] for r in (await response.json())["results"]]


async def active_machines(client: Any) -> int:
    response = await client.get("/v1/query/versions", headers=auth())
    assert response.status == 200, await response.text()
    rows = (await response.json())["versions"]
    return sum(r["machines"] for r in rows if r["version"] is None)


async def quarantined(client: Any) -> int:
    response = await client.get("/readyz")
    assert response.status == 200
    answer = await response.json()
    assert answer["status"] == "ready"
    count: int = answer["quarantined"]
    return count


def lower_case(item: dict[str, Any]) -> dict[str, Any]:
    """The spelling that once stopped every query: ``2026-12-03t06:56:01z``."""
    for key in ("start", "end"):
        item["period"][key] = item["period"][key].replace("T", "t").replace("+00:00", "z")
    for session in item["sessions"]:
        session["started"] = session["started"].replace("T", "t").replace("+00:00", "z")
    return item


async def test_a_lower_case_timestamp_is_read_by_the_fold_as_validation_read_it(make_client: Any) -> None:
    client = await make_client(SERVICE)
    odd = lower_case(report())
    assert odd["period"]["end"].endswith("z") and "t" in odd["period"]["end"]
    assert await post(client, odd, *(report() for _ in range(3))) == ["accepted"] * 4
    assert await active_machines(client) == 4
    assert await quarantined(client) == 0


async def plant(database: str, stored: dict[str, Any] | bytes) -> int:
    """Store a report row and queue it, as an earlier ceip would have done, bypassing validation: its seq."""
    text = stored.decode() if isinstance(stored, bytes) else orjson.dumps(stored).decode()
    guid = stored["guid"] if isinstance(stored, dict) else str(uuid.uuid4())
    row = (str(uuid.uuid4()), guid, "sample", "1.0", int(time.time() // 86400), 0.0, text)  # not aged out
    insert = "INSERT INTO reports (report_id, guid, product, version, day, received, body) VALUES "
    if database.startswith("sqlite"):
        with sqlite3.connect(database.removeprefix("sqlite://")) as db:
            seq = db.execute(insert + "(?, ?, ?, ?, ?, ?, ?) RETURNING seq", row).fetchone()[0]
            db.execute("INSERT INTO rollup_queue (seq) VALUES (?)", (seq,))
        return int(seq)
    conn = await asyncpg.connect(database)
    try:
        seq = await conn.fetchval(insert + "($1, $2, $3, $4, $5, $6, $7) RETURNING seq", *row)
        await conn.execute("INSERT INTO rollup_queue (seq) VALUES ($1)", seq)
    finally:
        await conn.close()
    return int(seq)


async def test_a_stored_report_the_fold_cannot_take_is_quarantined_and_blocks_nothing(
    aiohttp_client: Any, database: str
) -> None:
    first = await aiohttp_client(make_app(SERVICE, database, TOKEN))
    assert await post(first, report()) == ["accepted"]
    poison = report()
    poison["period"]["end"] = "yesterday"  # what no decoder takes: stored by a ceip that did not check
    await plant(database, poison)
    await plant(database, b"[" * 5000 + b"]" * 5000)
    assert await post(first, *(report() for _ in range(3))) == ["accepted"] * 3
    assert await active_machines(first) == 4  # the good ones before and after the poison are all folded
    assert await quarantined(first) == 2
    await first.close()

    # Reopened (a restart): the quarantine holds, nothing is retried, queries answer, new reports fold.
    again = await aiohttp_client(make_app(SERVICE, database, TOKEN))
    assert await quarantined(again) == 2
    assert await post(again, report()) == ["accepted"]
    assert await active_machines(again) == 5
    assert await quarantined(again) == 2

    # A deletion request for the poisoned pair takes its quarantine entry too: nothing of the machine stays.
    assert await post(again, deletion(poison["guid"]), path="/v1/deletions") == ["accepted"]
    assert await quarantined(again) == 1


def new_report(item: dict[str, Any], decoded: Any = None) -> NewReport:
    body = orjson.dumps(item)
    decoded = decoded if decoded is not None else decode_stored(body)
    day = int(decoded.period.end.timestamp() // 86400)
    return NewReport(item["report_id"], item["guid"], item["product"], item["product_version"], day, 0.0,
                     body.decode(), decoded)  # fmt: skip


async def test_a_report_whose_fold_fails_is_isolated_from_the_others_of_its_fold(database: str) -> None:
    """The fold of many reports fails because of one: it is quarantined, the others are folded with it."""
    storage = open_storage(database)
    await storage.open()
    try:
        items = [report() for _ in range(5)]
        broken = decode_stored(orjson.dumps(items[2]))
        broken.counters = None  # a struct the fold cannot read, as a bug in a future decoder might make one
        await storage.write([new_report(i) for i in items[:2]] + [new_report(items[2], broken)])
        await storage.write([new_report(i) for i in items[3:]])
        assert await storage.roll_up(100) == 5
        assert await storage.roll_up(100) == 0
        assert await storage.quarantined() == 1
        (reason,) = (await storage.query("SELECT reason FROM quarantine", {}))[0]
        assert reason.startswith("fold failed: TypeError")
        (machines,) = (await storage.query("SELECT COUNT(*) FROM machine_days", {}))[0]
        assert machines == 4
    finally:
        await storage.close()


async def test_reports_queued_before_a_restart_are_folded_from_their_bodies(aiohttp_client: Any, database: str) -> None:
    """What a process held in memory is gone after a restart: the same decoder reads the stored bodies."""
    storage = open_storage(database)
    await storage.open()
    odd = [lower_case(report()) for _ in range(3)]
    await storage.write([new_report(i) for i in odd])
    await storage.close()  # never folded
    client = await aiohttp_client(make_app(SERVICE, database, TOKEN))
    assert await active_machines(client) == 3
    assert await quarantined(client) == 0


def test_held_reports_are_a_bounded_shortcut_that_never_hands_over_the_wrong_report() -> None:
    from ceip_core.service.storage import Held

    items = [decode_stored(orjson.dumps(report())) for _ in range(4)]
    held = Held(limit=3)
    held.keep(enumerate(items))  # seq 3 is over the bound: it will be decoded from its body
    held.forget([0])  # a deletion request took seq 0 out of the queue
    queued = [(0, items[0].report_id), (1, items[1].report_id), (2, "another-report"), (3, items[3].report_id)]
    found, missing = held.take(queued)
    assert found == {1: items[1]}
    assert missing == [0, 2, 3]  # seq 2 was reused for another report (SQLite reuses the highest seq)
    assert held.take([(1, items[1].report_id)]) == ({}, [1])  # taken once


async def test_the_fold_takes_the_struct_validation_made_not_the_stored_body(database: str) -> None:
    """Told apart by a struct that differs from its body: the fold reads the struct while this process holds it."""
    storage = open_storage(database)
    await storage.open()
    try:
        held, restarted = report(), report()
        marked = decode_stored(orjson.dumps(held))
        marked.product_version = "as-validated"
        await storage.write([new_report(held, marked)])
        await storage.roll_up(100)
        await storage.write([new_report(restarted, decode_stored(orjson.dumps(restarted)))])
    finally:
        await storage.close()
    storage = open_storage(database)  # a restart: nothing is held, the body is decoded again
    await storage.open()
    try:
        await storage.roll_up(100)
        rows = await storage.query("SELECT guid, version FROM machine_days ORDER BY version", {})
        assert sorted(rows) == sorted([(held["guid"], "as-validated"), (restarted["guid"], "1.0")])
    finally:
        await storage.close()
