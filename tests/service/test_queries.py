"""The query API on real stores: ranking by distinct machines, adoption, distributions, percentiles, k-anonymity."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Mapping
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
from service.factory import GZIP, auth, body, config, report

from ceip_core.service.queries import (
    Filters,
    features,
    participation,
    percentile,
    problem_versions,
    problems,
    timings,
    trends,
    versions,
)
from ceip_core.service.queries import config as config_query
from ceip_core.service.sqlite_store import SQLiteStorage


async def send(client: Any, *items: dict[str, Any]) -> None:
    for start in range(0, len(items), 200):
        response = await client.post("/v1/reports", data=body(*items[start : start + 200]), headers=GZIP)
        assert response.status == 200
        assert {r["status"] for r in (await response.json())["results"]} == {"accepted"}


async def ask(client: Any, what: str, query: str = "") -> dict[str, Any]:
    response = await client.get(f"/v1/query/{what}{query}", headers=auth())
    assert response.status == 200, await response.text()
    answer: dict[str, Any] = await response.json()
    return answer


def machines(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


async def test_problems_rank_by_distinct_machines_then_occurrences(make_client: Any) -> None:
    client = await make_client(attrs.evolve(config(), k=1))
    one_machine = report(problems={"Noisy@one.py:1": 100})
    many = [report(g, problems={"Common@many.py:2": 1}) for g in machines(100)]
    middle = [report(g, problems={"Middle@mid.py:3": 30}, version="2.0") for g in machines(5)]
    await send(client, one_machine, *many, *middle)
    answer = await ask(client, "problems")
    assert [(p["signature"], p["machines"], p["occurrences"]) for p in answer["problems"]] == [
        ("Common@many.py:2", 100, 100),
        ("Middle@mid.py:3", 5, 150),
        ("Noisy@one.py:1", 1, 100),
    ]
    assert answer["problems"][1]["versions"] == ["2.0"]
    assert answer["problems"][0]["first_seen"] <= answer["problems"][0]["last_seen"]
    # Machines first, then occurrences: four more machines once each put it at 5 machines, 104 times.
    await send(client, *(report(g, problems={"Noisy@one.py:1": 1}) for g in machines(4)))
    ranked = [(p["signature"], p["machines"], p["occurrences"]) for p in (await ask(client, "problems"))["problems"]]
    assert ranked == [("Common@many.py:2", 100, 100), ("Middle@mid.py:3", 5, 150), ("Noisy@one.py:1", 5, 104)]


async def test_problems_of_fewer_than_k_machines_are_hidden(client: Any) -> None:
    await send(
        client, report(problems={"Rare@one.py:1": 100}), *(report(problems={"Seen@x.py:1": 1}) for _ in range(5))
    )
    answer = await ask(client, "problems")
    assert [p["signature"] for p in answer["problems"]] == ["Seen@x.py:1"]
    assert answer["hidden"] == 1 and answer["k"] == 5
    assert "Rare@one.py:1" not in str(answer)


async def test_filters_by_product_version_and_days(client: Any) -> None:
    old = datetime.now(UTC) - timedelta(days=10)
    await send(
        client,
        *(report(g, problems={"Old@x.py:1": 1}, end=old) for g in machines(5)),
        *(report(g, problems={"New@x.py:1": 1}, version="2.0") for g in machines(5)),
    )
    since = (datetime.now(UTC) - timedelta(days=2)).date().isoformat()
    assert [p["signature"] for p in (await ask(client, "problems", f"?since={since}"))["problems"]] == ["New@x.py:1"]
    until = (old + timedelta(days=1)).date().isoformat()
    assert [p["signature"] for p in (await ask(client, "problems", f"?until={until}"))["problems"]] == ["Old@x.py:1"]
    assert [p["signature"] for p in (await ask(client, "problems", "?version=2.0"))["problems"]] == ["New@x.py:1"]
    assert (await ask(client, "problems", "?product=other"))["problems"] == []
    for query in ("since=yesterday", "version=%00", "product=" + "x" * 256):
        bad = await client.get(f"/v1/query/problems?{query}", headers=auth())
        assert bad.status == 400 and (await bad.json())["error"] == "bad-query"


async def test_feature_adoption_is_the_share_of_active_machines(client: Any) -> None:
    fleet = machines(10)
    await send(
        client,
        *(report(g, counters={"open_file": 2}) for g in fleet[:6]),  # 6 of 10 machines open files
        *(report(g, counters={"tag": 1}) for g in fleet[6:]),  # 4 of 10 tag: under k = 5, hidden
        report(fleet[0], counters={"open_file": 3}),  # a second report of one machine: uses add up
    )
    answer = await ask(client, "features", "?product=sample")
    assert answer["features"] == [
        {
            "product": "sample",
            "name": "open_file",
            "label": None,
            "machines": 6,
            "active_machines": 10,
            "adoption": 0.6,
            "uses": 15,
            "uses_per_active_machine": 1.5,
        }
    ]
    assert answer["hidden"] == 1


async def test_configuration_distributions_fold_small_groups_into_other(client: Any) -> None:
    await send(
        client,
        *(report(os="Linux", config={"theme": "dark"}) for _ in range(6)),
        *(report(os="Windows", config={"theme": "light"}) for _ in range(5)),
        *(report(os=f"Rare{i}", config={"theme": "light"}) for i in range(5)),  # five values of one machine each
    )
    rows = {(r["key"], r["value"]): r["machines"] for r in (await ask(client, "config"))["config"]}
    assert rows[("system.os", "Linux")] == 6
    assert rows[("system.os", "Windows")] == 5
    assert rows[("system.os", "other")] == 5
    assert not any(value.startswith("Rare") for _, value in rows)
    assert rows[("config.theme", "light")] == 10
    assert rows[("system.cpu_logical", "8")] == 16


async def test_timing_percentiles_per_metric_and_version(client: Any) -> None:
    # Five machines; bucket 40 (2^10 = 1024 ms) holds 90 values, bucket 48 (4096 ms) holds 10.
    buckets = [0] * 40 + [90] + [0] * 7 + [10]
    await send(client, *(report(timings={"render_ms": buckets}) for _ in range(5)))
    await send(client, *(report(timings={"render_ms": buckets}, version="2.0") for _ in range(4)))
    answer = await ask(client, "timings")
    assert len(answer["timings"]) == 1 and answer["hidden"] == 1  # version 2.0: four machines only
    row = answer["timings"][0]
    assert (row["name"], row["version"], row["machines"], row["count"]) == ("render_ms", "1.0", 5, 500)
    assert row["p50"] == pytest.approx(2 ** (40.5 / 4)) and row["p90"] == row["p50"]
    assert row["p99"] == pytest.approx(2 ** (48.5 / 4))


def test_percentile_of_the_zero_bucket_is_zero() -> None:
    assert percentile({-1024: 3, 4: 1}, 0.5) == 0.0
    assert percentile({-1024: 3, 4: 1}, 0.99) == pytest.approx(2 ** (4.5 / 4))


async def test_participation_counts_active_machines_per_day(client: Any) -> None:
    fleet = machines(6)
    await send(client, *(report(g) for g in fleet), *(report(g) for g in fleet[:3]))
    today = (datetime.now(UTC) - timedelta(minutes=1)).date().isoformat()
    assert (await ask(client, "participation"))["active"] == [{"product": "sample", "day": today, "active_machines": 6}]


async def test_the_query_api_needs_the_token(client: Any) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic dGVzdC10b2tlbg=="}):
        response = await client.get("/v1/query/problems", headers=headers)
        assert response.status == 401
        assert (await response.json())["error"] == "unauthorized"
    assert (await client.get("/v1/query/nonsense", headers=auth())).status == 404


async def test_no_answer_carries_a_guid_or_a_report(client: Any) -> None:
    fleet = machines(6)
    await send(client, *(report(g, problems={"E@x.py:1": 1}, counters={"open_file": 1}) for g in fleet))
    for what in ("problems", "features", "config", "timings", "participation"):
        text = await (await client.get(f"/v1/query/{what}", headers=auth())).text()
        assert not any(g in text for g in fleet), what
        assert "report_id" not in text


def test_ceip_report_offers_every_query() -> None:
    from ceip_core.service import commands, queries

    assert set(commands._COLUMNS) == set(queries.QUERIES)


#: ``sqlite_stat1`` of ``reach``'s key as ANALYZE wrote it in bench/dashboard.py's 5 M reports of 100,000
#: machines: with it, SQLite chose to skip-scan the key (47-85 ms per family) for a count across versions
#: that left ``version`` out of the condition.
FLEET_STATISTICS = ("reach", "sqlite_autoindex_reach_1", "460688 65813 35438 17063 5688 146 26 12 1")


async def test_every_reach_query_searches_its_key_by_equality_under_a_fleets_statistics(tmp_path: Path) -> None:
    """Not a timing: the plan. Each query the API makes of ``reach`` searches the key by family, scope and
    (unless it counts by every version) version as equalities, rather than skip-scanning it once SQLite has
    statistics (an operator's ``PRAGMA optimize`` gathers them too)."""
    path = tmp_path / "plans.db"
    storage = SQLiteStorage(f"sqlite://{path}")
    await storage.open()
    asked: list[tuple[str, Mapping[str, Any]]] = []
    real = storage.query

    async def recorded(sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        asked.append((sql, params))
        return await real(sql, params)

    storage.query = recorded  # type: ignore[method-assign]
    day = int(time.time() // 86400)
    every = (Filters(), Filters(product="sample", since=day - 30, until=day), Filters("sample", "1.0", day - 7, day))
    for filters in every:
        for query in (problems, trends, features, config_query, timings, participation, versions, problem_versions):
            await query(storage, filters, 5)
    await storage.close()
    with closing(sqlite3.connect(path)) as db:
        db.execute("ANALYZE")
        db.execute("INSERT INTO sqlite_stat1 VALUES (?, ?, ?)", FLEET_STATISTICS)
        db.commit()
    with closing(sqlite3.connect(path)) as db:  # statistics are read when a connection opens
        searches = []
        for sql, params in asked:
            if " FROM reach " in sql:
                # Counts by version (scope 'version', no version asked for) read every version's rows.
                prefix = "family=? AND scope=?" + (" AND version=?" if "version" in params else "")
                plan = db.execute(f"EXPLAIN QUERY PLAN {sql}", params)
                searches += [(prefix, row[3], sql, params) for row in plan if " reach " in row[3]]
    assert len(searches) >= 3 * 8, searches
    for prefix, search, sql, params in searches:
        assert f"USING INDEX sqlite_autoindex_reach_1 ({prefix}" in search, (search, sql, params)
