"""Deletion deletes everything and stays deleted, on both stores: the timing totals lose the machine's counts, a
report of the pair recorded before the deletion (a late upload, an import of an old bundle) is refused and
counted, one recorded after a new opt-in is kept, and SQLite's write-ahead log keeps no deleted bytes."""

from __future__ import annotations

import gzip
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import orjson
from service.factory import GZIP, TOKEN, auth, body, config, jsonable, report

from ceip_core.records import DeletionRequest
from ceip_core.service.app import make_app
from ceip_core.service.commands import import_files
from ceip_core.service.storage import TOMBSTONED
from ceip_core.service.stores import open_storage

SERVICE = attrs.evolve(config(), k=1)


async def post(client: Any, *items: dict[str, Any], path: str = "/v1/reports") -> list[str]:
    response = await client.post(path, data=body(*items), headers=GZIP)
    assert response.status == 200, await response.text()
    return [r["status"] for r in (await response.json())["results"]]


async def timing_count(client: Any) -> int:
    response = await client.get("/v1/query/timings", headers=auth())
    assert response.status == 200, await response.text()
    return sum(row["count"] for row in (await response.json())["timings"])


def deletion_at(guid: str, requested: datetime) -> dict[str, Any]:
    return jsonable(DeletionRequest(request_id=str(uuid.uuid4()), guid=guid, product="sample", requested=requested))


async def tombstoned(database: str) -> int:
    storage = open_storage(database)
    await storage.open()
    try:
        return int((await storage.stats())["counters"].get(TOMBSTONED, 0))
    finally:
        await storage.close()


async def test_a_deleted_machine_loses_its_timing_counts(make_client: Any) -> None:
    client = await make_client(SERVICE)
    leaving, staying = str(uuid.uuid4()), str(uuid.uuid4())
    await post(client, report(leaving, timings={"render_ms": [3, 4]}), report(staying, timings={"render_ms": [0, 5]}))
    assert await timing_count(client) == 12  # folded: the leaving machine's 7 are in the totals
    await post(client, report(leaving, timings={"render_ms": [0, 0, 9]}))  # queued, not yet folded
    assert await post(client, deletion_at(leaving, datetime.now(UTC)), path="/v1/deletions") == ["accepted"]
    assert await timing_count(client) == 5


async def test_a_report_recorded_before_the_deletion_is_refused_and_counted(make_client: Any, database: str) -> None:
    client = await make_client(SERVICE)
    guid, now = str(uuid.uuid4()), datetime.now(UTC).replace(microsecond=0)
    late = report(guid, end=now - timedelta(hours=2))  # recorded before the opt-out, uploaded after it
    assert await post(client, deletion_at(guid, now - timedelta(hours=1)), path="/v1/deletions") == ["accepted"]
    assert await post(client, late) == ["duplicate"]
    assert await post(client, report(guid, end=now - timedelta(minutes=1))) == ["accepted"]  # a new opt-in
    assert await post(client, report(end=now - timedelta(hours=2))) == ["accepted"]  # another machine
    response = await client.get("/v1/query/versions", headers=auth())
    assert sum(r["machines"] for r in (await response.json())["versions"] if r["version"] is None) == 2
    await client.close()
    assert await tombstoned(database) == 1


async def test_an_imported_bundle_from_before_the_opt_out_is_refused(tmp_path: Path, database: str) -> None:
    guid, now = str(uuid.uuid4()), datetime.now(UTC).replace(microsecond=0)
    first = tmp_path / "a.ceipbatch"
    first.write_bytes(gzip.compress(orjson.dumps({"schema": 1, "items": [deletion_at(guid, now)]})))
    outcomes, failed = await import_files([first], database, SERVICE)
    assert not failed and outcomes["accepted"] == 1
    old = tmp_path / "b.ceipbatch"
    old.write_bytes(body(report(guid, end=now - timedelta(days=1)), report(guid, end=now - timedelta(days=2))))
    outcomes, failed = await import_files([old], database, SERVICE)
    assert not failed and outcomes["duplicate"] == 2 and outcomes["accepted"] == 0
    assert await tombstoned(database) == 2


async def test_the_wal_holds_no_deleted_report_after_a_deletion(tmp_path: Path, aiohttp_client: Any) -> None:
    path = tmp_path / "reports.db"
    client = await aiohttp_client(make_app(SERVICE, f"sqlite://{path}", TOKEN))
    guid = str(uuid.uuid4())
    leaving = report(guid)
    marker = leaving["report_id"]  # in the raw report only: the rollups never hold it
    await post(client, leaving, *(report() for _ in range(20)))
    assert await post(client, deletion_at(guid, datetime.now(UTC)), path="/v1/deletions") == ["accepted"]
    wal = path.with_name(path.name + "-wal")
    assert not wal.exists() or marker.encode() not in wal.read_bytes()
    assert marker.encode() not in path.read_bytes()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM reports WHERE guid = ?", (guid,)).fetchone() == (0,)
