"""The database goes away while the service runs: 503 with Retry-After, nothing acknowledged, then recovery."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from service.factory import GZIP, TOKEN, body, config, report
from service.postgres import Cluster

from ceip_core.service.app import make_app


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A PostgreSQL server of this test's own, so that stopping it disturbs no other test."""
    own = Cluster()
    own.start()
    try:
        yield own
    finally:
        own.stop()
        own.remove()


async def test_an_unavailable_database_gets_503_and_the_service_recovers(aiohttp_client: Any, cluster: Cluster) -> None:
    client = await aiohttp_client(make_app(config(), cluster.url, TOKEN))
    assert (await client.post("/v1/reports", data=body(report()), headers=GZIP)).status == 200

    cluster.stop()
    item = report()
    response = await client.post("/v1/reports", data=body(item), headers=GZIP)
    assert response.status == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert (await response.json())["error"] == "storage-unavailable"
    assert (await client.get("/readyz")).status == 503
    assert (await client.get("/healthz")).status == 200

    cluster.start()
    response = await client.post("/v1/reports", data=body(item), headers=GZIP)
    assert response.status == 200
    assert (await response.json())["results"][0]["status"] == "accepted"  # it was never acknowledged before
    assert (await client.get("/readyz")).status == 200


@pytest.fixture
def durable_cluster() -> Iterator[Cluster]:
    """A PostgreSQL server of this test's own that flushes every commit to disk, as in production."""
    own = Cluster(fsync=True)
    own.start()
    try:
        yield own
    finally:
        own.stop()
        own.remove()


async def test_every_acknowledged_report_survives_a_crash_of_postgresql(
    aiohttp_client: Any, durable_cluster: Cluster
) -> None:
    """Acknowledged means committed: after the server is killed (no shutdown) and restarted, each is there."""
    client = await aiohttp_client(make_app(config(), durable_cluster.url, TOKEN))
    acknowledged = []
    for _ in range(20):
        items = [report() for _ in range(5)]
        response = await client.post("/v1/reports", data=body(*items), headers=GZIP)
        assert response.status == 200
        results = (await response.json())["results"]
        acknowledged += [item["report_id"] for item, r in zip(items, results, strict=True) if r["status"] == "accepted"]
    assert len(acknowledged) == 100
    durable_cluster.crash()
    durable_cluster.start()
    conn = await asyncpg.connect(durable_cluster.url)
    try:
        stored = {row[0] for row in await conn.fetch("SELECT report_id FROM reports")}
    finally:
        await conn.close()
    assert stored == set(acknowledged)
