"""Fixtures for the receiving-service tests: real SQLite files, a real PostgreSQL server, real HTTP servers.

PostgreSQL: ``CEIP_TEST_POSTGRES_URL`` names a server to use; otherwise a throw-away cluster is made with
Debian's ``initdb``/``pg_ctl`` in a temporary folder, listening on a free loopback port, owned by the
``postgres`` system user when the tests run as root (PostgreSQL refuses to run as root), and stopped at the
end. Each test gets its own schema in it, so tests stay independent without a database per test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from service.factory import TOKEN, config
from service.postgres import Cluster

from ceip_core.service.app import make_app
from ceip_core.service.config import ServiceConfig


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of a PostgreSQL server for this test session."""
    given = os.environ.get("CEIP_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    cluster = Cluster()
    cluster.start()
    try:
        yield cluster.url
    finally:
        cluster.stop()
        cluster.remove()


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database URL for an empty database: the same tests run on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path / 'reports.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        yield f"{server}?search_path={schema}"
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await conn.close()


@pytest.fixture
def make_client(aiohttp_client: Callable[..., Any], database: str) -> Callable[..., Any]:
    """``await make_client(config)``: a client of a real service on loopback, on the test's database."""

    async def make(service_config: ServiceConfig | None = None) -> TestClient[Any, Any]:
        return await aiohttp_client(make_app(service_config or config(), database, TOKEN))

    return make


@pytest.fixture
async def client(make_client: Callable[..., Any]) -> TestClient[Any, Any]:
    """A client of a service with the default test configuration."""
    return await make_client()
