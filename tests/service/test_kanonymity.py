"""k-anonymity at its edges, on both stores: a group of k - 1 machines is hidden, a group of k is shown.

Every published number about machines passes the same rule, so each test puts a group just under k
beside one at k: comparing 1 machine with 5 cannot tell ``< k`` from ``< 2``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from service.factory import GZIP, auth, body, report

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


async def test_trends_hide_a_day_of_k_minus_1_machines(client: Any) -> None:
    fleet = machines(K + 1)
    today = [report(g, problems={"E@x.py:1": 1}, end=a_minute_ago()) for g in fleet]  # k + 1 machines
    earlier = [report(g, problems={"E@x.py:1": 1}, end=a_minute_ago(2)) for g in fleet[: K - 1]]  # k - 1
    before = [report(g, problems={"E@x.py:1": 1}, end=a_minute_ago(4)) for g in fleet[:K]]  # exactly k
    await send(client, *today, *earlier, *before)
    rows = {r["day"]: r["machines"] for r in (await ask(client, "trends"))["trends"]}
    day = lambda back: a_minute_ago(back).date().isoformat()  # noqa: E731
    assert rows == {day(4): K, day(2): None, day(0): K + 1}


async def test_features_of_k_minus_1_machines_are_hidden_among_many_active(client: Any) -> None:
    fleet = machines(2 * K)
    items = [report(g, counters={"open_file": 1}) for g in fleet]  # every active machine
    items += [report(g, counters={"tag": 1}) for g in fleet[: K - 1]]
    items += [report(g, counters={"export": 1}) for g in fleet[:K]]
    await send(client, *items)
    answer = await ask(client, "features")
    assert {f["name"]: f["machines"] for f in answer["features"]} == {"open_file": 2 * K, "export": K}
    assert answer["hidden"] == 1


async def test_no_feature_is_published_while_fewer_than_k_machines_are_active(client: Any) -> None:
    await send(client, *(report(g, counters={"open_file": 3}) for g in machines(K - 1)))
    answer = await ask(client, "features")
    assert answer["features"] == [] and answer["hidden"] == 1
    participation = await ask(client, "participation")
    assert participation["active"] == []  # the day's k - 1 machines are not published either


async def test_the_other_bucket_of_k_minus_1_machines_is_hidden(client: Any) -> None:
    """Values under k fold into "other"; an "other" of 1 to k - 1 machines is hidden as well."""
    items = [report(g, config={"theme": "dark"}) for g in machines(K)]
    items += [report(g, config={"theme": f"custom-{i}"}) for i, g in enumerate(machines(K - 1))]  # other: k - 1
    await send(client, *items)
    rows = [(r["value"], r["machines"]) for r in (await ask(client, "config"))["config"] if r["key"] == "config.theme"]
    assert rows == [("dark", K)]
    await send(client, report(config={"theme": "custom-last"}))  # now k machines fall under "other"
    rows = [(r["value"], r["machines"]) for r in (await ask(client, "config"))["config"] if r["key"] == "config.theme"]
    assert rows == [("dark", K), ("other", K)]


async def test_a_version_of_k_minus_1_machines_is_hidden(client: Any) -> None:
    items = [report(g, version="1.0") for g in machines(K)]
    items += [report(g, version="2.0") for g in machines(K - 1)]
    await send(client, *items)
    answer = await ask(client, "versions")
    assert [(r["version"], r["machines"]) for r in answer["versions"]] == [(None, 2 * K - 1), ("1.0", K)]
    assert answer["hidden"] == 1
