"""Deletion edges that the mutation run (bench/mutation.sh) found untested, on both stores: a deleted
machine's occurrences leave the problem totals (not only its machine count), and first/last seen are
recomputed from the machines that remain."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
from service.factory import GZIP, auth, body, config, deletion, report


async def post(client: Any, *items: dict[str, Any], path: str = "/v1/reports") -> None:
    response = await client.post(path, data=body(*items), headers=GZIP)
    assert response.status == 200, await response.text()
    assert {r["status"] for r in (await response.json())["results"]} == {"accepted"}


async def problems(client: Any) -> list[dict[str, Any]]:
    response = await client.get("/v1/query/problems", headers=auth())
    assert response.status == 200
    found: list[dict[str, Any]] = (await response.json())["problems"]
    return found


async def test_a_deleted_machines_occurrences_and_times_leave_the_totals(make_client: Any) -> None:
    client = await make_client(attrs.evolve(config(), k=1))
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    gone, kept = str(uuid.uuid4()), str(uuid.uuid4())
    await post(
        client,
        report(gone, problems={"E@x.py:1": 40}, end=now),
        report(kept, problems={"E@x.py:1": 2}, end=now - timedelta(hours=2)),
    )
    await post(client, report(kept, problems={"E@x.py:1": 1}, end=now - timedelta(hours=3)))
    before = await problems(client)
    assert [(p["machines"], p["occurrences"]) for p in before] == [(2, 43)]

    await post(client, deletion(gone), path="/v1/deletions")
    (after,) = await problems(client)
    assert (after["machines"], after["occurrences"]) == (1, 3)
    assert after["first_seen"] == before[0]["first_seen"]  # the kept machine's earlier report
    assert after["last_seen"] < before[0]["last_seen"]  # the deleted machine's later one is gone
