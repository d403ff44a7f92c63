"""The service's failure paths on SQLite: a locked database is 503 with Retry-After, a bug is a bare 500."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from service.factory import GZIP, TOKEN, auth, body, config, report

from ceip_core.service.app import make_app
from ceip_core.service.sqlite_store import SQLiteStorage


async def test_a_database_locked_by_another_process_is_503_then_recovers(aiohttp_client: Any, tmp_path: Path) -> None:
    storage = SQLiteStorage(f"sqlite://{tmp_path / 'reports.db'}", busy_timeout_s=0.2)
    client = await aiohttp_client(make_app(config(), storage, TOKEN))
    other = sqlite3.connect(tmp_path / "reports.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process holds the write lock (a backup, a stuck tool)
    try:
        response = await client.post("/v1/reports", data=body(report()), headers=GZIP)
        assert response.status == 503 and int(response.headers["Retry-After"]) >= 1
        assert (await response.json())["error"] == "storage-unavailable"
    finally:
        other.execute("ROLLBACK")
        other.close()
    response = await client.post("/v1/reports", data=body(report()), headers=GZIP)
    assert response.status == 200 and (await response.json())["results"][0]["status"] == "accepted"


class BrokenQueries(SQLiteStorage):
    """A real SQLite storage whose reads hit a bug: what the service's last-resort guard is for."""

    async def query(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        raise RuntimeError("a bug in a query")


async def test_a_bug_is_a_500_that_names_no_sender(
    aiohttp_client: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = await aiohttp_client(make_app(config(), BrokenQueries(f"sqlite://{tmp_path / 'r.db'}"), TOKEN))
    with caplog.at_level(logging.DEBUG):
        response = await client.get("/v1/query/problems", headers=auth())
    assert response.status == 500
    assert (await response.json())["error"] == "internal"
    assert "a bug in a query" not in await response.text()  # no internals in the answer ...
    ours = "\n".join(caplog.handler.format(r) for r in caplog.records if r.name.startswith("ceip"))
    assert "a bug in a query" in ours and "/v1/query/problems failed" in ours  # ... but logged
    assert "127.0.0.1" not in ours  # the test server's own access log is aiohttp's, not the service's
    assert (await client.post("/v1/reports", data=body(report()), headers=GZIP)).status == 200  # the rest goes on
