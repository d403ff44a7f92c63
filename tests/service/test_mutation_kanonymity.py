"""k-anonymity edges that the mutation run (bench/mutation.sh) found untested: each puts a group of exactly k
machines beside one of k - 1, so that ``>= k`` cannot be loosened or tightened by one without a test failing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from service.factory import GZIP, auth, body, deletion, report

K = 5


def machines(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


async def send(client: Any, *items: dict[str, Any]) -> None:
    response = await client.post("/v1/reports", data=body(*items), headers=GZIP)
    assert response.status == 200
    assert {r["status"] for r in (await response.json())["results"]} == {"accepted"}


async def ask(client: Any, what: str) -> dict[str, Any]:
    response = await client.get(f"/v1/query/{what}", headers=auth())
    assert response.status == 200, await response.text()
    answer: dict[str, Any] = await response.json()
    assert answer["k"] == K
    return answer


def a_minute_ago(days: int = 0) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1, days=days)


async def test_participation_publishes_a_day_of_exactly_k_machines_and_hides_k_minus_1(client: Any) -> None:
    fleet = machines(K)
    await send(client, *(report(g, end=a_minute_ago()) for g in fleet))  # today: exactly k
    await send(client, *(report(g, end=a_minute_ago(3)) for g in fleet[: K - 1]))  # three days ago: k - 1
    answer = await ask(client, "participation")
    today = a_minute_ago().date().isoformat()
    assert answer["active"] == [{"product": "sample", "day": today, "active_machines": K}]
    assert answer["hidden"] == 1


async def test_features_are_published_once_exactly_k_machines_are_active(client: Any) -> None:
    await send(client, *(report(g, counters={"open_file": 2}) for g in machines(K)))
    answer = await ask(client, "features")
    assert [(f["name"], f["machines"], f["active_machines"]) for f in answer["features"]] == [("open_file", K, K)]
    assert answer["hidden"] == 0


async def test_participation_narrowed_to_a_product_and_days_counts_its_deletion_requests(client: Any) -> None:
    fleet = machines(K)
    await send(client, *(report(g) for g in fleet), report(product="other"))
    request = deletion(fleet[0])
    response = await client.post("/v1/deletions", data=body(request), headers=GZIP)
    assert response.status == 200
    since = a_minute_ago().date().isoformat()  # the reports' day (the day before, just after midnight)
    requested = datetime.fromisoformat(request["requested"]).astimezone(UTC).date().isoformat()
    response = await client.get(f"/v1/query/participation?product=sample&since={since}&version=1.0", headers=auth())
    assert response.status == 200, await response.text()
    answer = await response.json()
    assert answer["deletions"] == [{"product": "sample", "day": requested, "requests": 1}]
