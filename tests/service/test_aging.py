"""Data ages out by itself inside the service, on both stores: raw reports and per-machine rows older than the
window go, in bounded steps that ingest runs between; rollups stay; a machine silent for longer than the
window is no longer tracked. The clock is injected: the service is moved 88 days on, nothing waits."""

from __future__ import annotations

import asyncio
import gzip
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
from aiohttp.test_utils import TestClient
from service.factory import GZIP, TOKEN, auth, body, config, report

from ceip_core.service.aging import Aging
from ceip_core.service.app import STORAGE, make_app
from ceip_core.service.ingest import _to_write
from ceip_core.service.rollups import DAY_S
from ceip_core.service.storage import EXPIRED, Storage
from ceip_core.service.stores import open_storage
from ceip_core.service.validation import Bounds, check_items, decode_batch

SERVICE = attrs.evolve(config(), k=1, retention_days=90)
# A report's newest moment, and a day well inside the one five days before: reports minutes around
# OLD stay on its day whatever the hour the tests run at (a day boundary a few minutes away moved some).
NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
OLD = (NOW - timedelta(days=5)).replace(hour=12, minute=0, second=0)  # outside the window 88 days later
DAY = 86400.0


def fleet() -> tuple[list[dict[str, Any]], str, str]:  # (items, the silent machine, the active one)
    """A machine seen only 5 days ago (silent), one seen then and now (active), and 10 old reports of others."""
    silent, active = str(uuid.uuid4()), str(uuid.uuid4())
    items = [report(silent, end=OLD), report(active, end=OLD), report(active, end=NOW)]
    items += [report(end=OLD - timedelta(minutes=i)) for i in range(10)]
    return items, silent, active


async def post(client: TestClient[Any, Any], *items: dict[str, Any]) -> None:
    response = await client.post("/v1/reports", data=body(*items), headers=GZIP)
    assert response.status == 200, await response.text()


async def rows(storage: Storage) -> dict[str, int]:
    found: dict[str, int] = (await storage.stats())["rows"]
    return found


async def machines(client: TestClient[Any, Any], since: datetime, until: datetime) -> int:
    params = {"since": since.date().isoformat(), "until": until.date().isoformat()}
    response = await client.get("/v1/query/versions", params=params, headers=auth())
    assert response.status == 200, await response.text()
    return sum(r["machines"] for r in (await response.json())["versions"] if r["version"] is None)


async def test_the_service_ages_data_out_by_itself_and_keeps_the_rollups(aiohttp_client: Any, database: str) -> None:
    clock = [time.time()]
    client = await aiohttp_client(make_app(SERVICE, database, TOKEN, clock=lambda: clock[0]))
    items, _, active = fleet()
    await post(client, *items)
    assert await machines(client, OLD, OLD) == 12
    storage = client.app[STORAGE]
    assert (await rows(storage))["reports"] == 13

    clock[0] += 88 * DAY  # the window now starts 2 days ago: the reports of 5 days ago are out of it
    await post(client, report(active))  # any request wakes the committer; aging runs when it is quiet again
    deadline = time.monotonic() + 30
    while (await rows(storage))["reports"] != 2:
        assert time.monotonic() < deadline, await rows(storage)
        await asyncio.sleep(0.05)

    found = await rows(storage)
    assert found["reach_state"] == 1  # only the machine active inside the window is still tracked
    assert found["machine_days"] == 1  # its day inside the window (today); days that aged out are gone
    assert await machines(client, OLD, OLD) == 12  # the rollups of the old day are kept
    assert await machines(client, NOW, NOW) == 1
    response = await client.get("/metrics", headers=auth())
    # 12 raw reports, 12 rows of machine_days, the state of 11 silent machines
    assert f"ceip_expired_rows_total {12 + 12 + 11}" in await response.text()


async def stored_and_folded(storage: Storage) -> tuple[float, list[Any]]:
    """The :func:`fleet` validated, stored and folded, as ingest would; when it was received, and the verdicts."""
    items, _, _ = fleet()
    raws = decode_batch(gzip.decompress(body(*items)))
    received = time.time()
    verdicts = check_items(raws, "report", Bounds.at(received, SERVICE.limits), SERVICE.allowlist)
    await storage.write([_to_write(v, received) for v in verdicts])  # type: ignore[arg-type]
    while await storage.roll_up():
        pass
    return received, verdicts


async def test_aging_takes_bounded_steps_and_ingest_runs_between_them(database: str) -> None:
    storage = open_storage(database)
    await storage.open()
    try:
        received, verdicts = await stored_and_folded(storage)
        clock = [received + 88 * DAY]
        aging = Aging(storage, 90, clock=lambda: clock[0], batch=4)
        steps = []
        while aging.due():
            steps.append(await aging.step())
            await storage.write([_to_write(verdicts[2], received)])  # a write between steps: nothing waits
        assert max(steps) <= 4 and len(steps) >= 10 and steps[-1] < 4
        assert (await rows(storage))["reports"] == 1
        assert (await storage.stats())["counters"][EXPIRED] == 12 + 12 + 11
        assert aging.cutoff_day == int(clock[0] // DAY_S) - 89
    finally:
        await storage.close()


async def test_a_clock_that_moves_on_during_a_pass_makes_the_next_pass_due(database: str) -> None:
    """The pass that started before the clock moved deleted up to the old cutoff; the new time must not wait
    an hour behind it (a pass running when a test, or a resumed machine, moves the clock 88 days on)."""
    storage = open_storage(database)
    await storage.open()
    try:
        received, _ = await stored_and_folded(storage)
        clock = [received]
        aging = Aging(storage, 90, clock=lambda: clock[0])
        expire = storage.expire

        async def expire_while_the_clock_moves(cutoff_day: int, batch: int) -> int:
            deleted = await expire(cutoff_day, batch)
            clock[0] += 88 * DAY
            return deleted

        storage.expire = expire_while_the_clock_moves  # type: ignore[method-assign]
        await aging.step()  # deletes what was old when it started, and the clock moves on meanwhile
        storage.expire = expire  # type: ignore[method-assign]
        assert aging.due()
        while aging.due():
            await aging.step()
        assert (await rows(storage))["reports"] == 1
    finally:
        await storage.close()
