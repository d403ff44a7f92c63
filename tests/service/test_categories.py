"""Consent by category at the receiving service, on SQLite and on PostgreSQL: a report stores nothing of a
category it says was not consented, and a deletion request naming categories deletes that machine's data of
those categories (raw reports, per-machine rows, totals, reach) and nothing else."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from service.factory import GZIP, auth, body, deletion, jsonable, report, withdrawing

from ceip_core.records import Category, DeletionRequest
from ceip_core.service.app import STORAGE

GONE = "0f3e7a52-0c1e-4c59-9d61-00000000c001"
OTHERS = [f"0f3e7a52-0c1e-4c59-9d61-{i:012d}" for i in range(20, 25)]


async def post(client: Any, items: list[dict[str, Any]], path: str = "/v1/reports") -> list[dict[str, Any]]:
    response = await client.post(path, data=body(*items), headers=GZIP)
    assert response.status == 200, await response.text()
    results: list[dict[str, Any]] = (await response.json())["results"]
    return results


def full(guid: str) -> dict[str, Any]:
    """A report with something of every category: a counter (program use), a problem and a timing
    (performance), a setting and system information (configuration), a session (program use)."""
    return report(guid, counters={"open_file": 3}, problems={"E@x.py:1": 2}, timings={"render_ms": [0, 4]})


async def bodies(client: Any, guid: str) -> list[dict[str, Any]]:
    rows = await client.server.app[STORAGE].query("SELECT body FROM reports WHERE guid = :guid", {"guid": guid})
    return [orjson.loads(b) for (b,) in rows]


async def rollup_rows(storage: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every total and reach count, zero counts left out: what the queries read."""
    await storage.roll_up(wait=True)
    found = {}
    for table, value in (
        ("counter_totals", "uses"),
        ("problem_totals", "occurrences"),
        ("histogram_buckets", "count"),
        ("reach", "machines"),
    ):
        rows = await storage.query(f"SELECT * FROM {table} WHERE {value} <> 0", {})
        found[table] = sorted(tuple(r) for r in rows)
    return found


async def test_a_report_stores_nothing_of_a_category_it_says_was_not_consented(client: Any) -> None:
    item = {**full(GONE), "categories": ["configuration", "program use"]}
    assert (await post(client, [item]))[0]["status"] == "accepted"
    [stored] = await bodies(client, GONE)
    assert stored["problems"] == [] and stored["histograms"] == []  # performance: not consented, not stored
    assert [c["name"] for c in stored["counters"]] == ["open_file"] and stored["config"] == {"theme": "dark"}
    assert stored["categories"] == ["configuration", "program use"]
    assert stored["diagnostics"]["service.scrub.declared.not_consented"] == 2


async def test_an_unknown_category_is_refused_with_a_4xx_reason_and_old_bodies_stay_valid(client: Any) -> None:
    bad = {**full(GONE), "categories": ["configuration", "telepathy"]}
    [result] = await post(client, [bad])
    assert result["status"] == "rejected" and result["reason"] == "invalid"
    assert "categories" in result["detail"]
    old = full(GONE)
    assert "categories" not in old  # what clients that predate the field send, and a person consenting to all
    assert (await post(client, [old]))[0]["status"] == "accepted"
    request = deletion(GONE)
    assert "categories" not in request
    bad_request = {**request, "categories": ["nope"]}
    assert (await post(client, [bad_request], "/v1/deletions"))[0]["reason"] == "invalid"


async def test_a_deletion_for_some_categories_deletes_only_their_data_of_that_machine(client: Any) -> None:
    storage = client.server.app[STORAGE]
    await post(client, [full(g) for g in [GONE, *OTHERS]])
    await storage.roll_up(wait=True)  # folded, so the totals hold the machine's counts
    await post(client, [full(GONE)])  # not folded yet: rewritten while it waits in the queue

    request = withdrawing(GONE, Category.PERFORMANCE)
    assert await post(client, [request], "/v1/deletions") == [{"id": request["request_id"], "status": "accepted"}]

    for stored in await bodies(client, GONE):  # raw reports: the performance parts are gone, the rest stays
        assert stored["problems"] == [] and stored["histograms"] == [], stored
        assert stored["counters"] and stored["config"] and stored["system"] and stored["sessions"]
        assert stored["categories"] == ["configuration", "program use"]
        assert stored["diagnostics"]["service.withdrawn"] == 2
    for other in OTHERS:
        [kept] = await bodies(client, other)
        assert kept["problems"] and kept["histograms"] and "categories" not in kept

    after = await rollup_rows(storage)
    mine = {"guid": GONE}
    assert await storage.query("SELECT COUNT(*) FROM problem_days WHERE guid = :guid", mine) == [(0,)]
    uses = sum(r[-1] for r in after["counter_totals"])
    assert uses == 3 * (len(OTHERS) + 2)  # program use was not withdrawn: both reports' uses stay
    occurrences = sum(r[5] for r in after["problem_totals"])
    assert occurrences == 2 * len(OTHERS)  # the machine's problems are out of the totals
    assert sum(r[-1] for r in after["histogram_buckets"]) == 4 * len(OTHERS)  # and its timings
    problems = await (await client.get("/v1/query/problems", headers=auth())).json()
    assert sum(row["machines"] for row in problems["problems"]) == len(OTHERS)

    # The rollups are what the rewritten raw reports give: a rebuild from them changes nothing.
    await storage.rebuild()
    assert await rollup_rows(storage) == after
    # Applied once: the same request again is a duplicate and takes nothing more.
    assert (await post(client, [request], "/v1/deletions"))[0]["status"] == "duplicate"
    assert await rollup_rows(storage) == after
    # Not an opt-out: the machine still takes part, and what it records from now on is stored.
    later = report(GONE, end=datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2))
    assert (await post(client, [later]))[0]["status"] == "accepted"
    participation = await (await client.get("/v1/query/participation", headers=auth())).json()
    assert participation["deletions"] == []
    # Its opt-out later takes out what the withdrawal left, read from the rewritten reports: its uses, all
    # of them (the two folded reports' and the new one's), and not a second time its withdrawn timings.
    opt_out = jsonable(DeletionRequest(str(uuid.uuid4()), GONE, "sample", datetime.now(UTC) + timedelta(seconds=3)))
    assert (await post(client, [opt_out], "/v1/deletions"))[0]["status"] == "accepted"
    final = await rollup_rows(storage)
    assert sum(r[-1] for r in final["counter_totals"]) == 3 * len(OTHERS)
    assert final["histogram_buckets"] == after["histogram_buckets"]
    await storage.rebuild()
    assert await rollup_rows(storage) == final


async def test_withdrawing_configuration_takes_the_machines_settings_and_system_out_of_reach(client: Any) -> None:
    storage = client.server.app[STORAGE]
    await post(client, [full(g) for g in [GONE, *OTHERS]])
    await storage.roll_up(wait=True)
    await post(client, [withdrawing(GONE, Category.CONFIGURATION)], "/v1/deletions")
    [stored] = await bodies(client, GONE)
    assert stored["config"] == {} and stored["system"] is None and stored["counters"] and stored["problems"]
    config = {tuple(r[:2]): r[2] for r in await storage.query(
        "SELECT name, value, SUM(machines) FROM reach WHERE family = 'config' AND scope = 'all' GROUP BY name, value",
        {},
    )}  # fmt: skip
    assert config[("config.theme", "dark")] == len(OTHERS)
    assert config[("system.os", "Linux")] == len(OTHERS)
    active = await storage.query("SELECT SUM(machines) FROM reach WHERE family = 'active' AND scope = 'all'", {})
    assert active == [(len(OTHERS) + 1,)]  # still an active machine
    await storage.rebuild()
    rebuilt = await storage.query(
        "SELECT SUM(machines) FROM reach WHERE family = 'config' AND name = 'config.theme' AND scope = 'all'", {}
    )
    assert rebuilt == [(len(OTHERS),)]


async def test_a_copy_made_before_the_withdrawal_is_refused_and_the_rewritten_one_is_stored(client: Any) -> None:
    """An exported bundle carried to the service after the person withdrew a category: its reports still
    claim the category and were recorded before the request, so they are not stored (answered as duplicates,
    so the client forgets them); the client's own rewritten reports name the narrower categories and are."""
    old = full(GONE)
    await post(client, [withdrawing(GONE, Category.PERFORMANCE)], "/v1/deletions")
    assert (await post(client, [old]))[0]["status"] == "duplicate"
    assert (await post(client, [{**full(GONE), "categories": ["performance and reliability"]}]))[0]["status"] == (
        "duplicate"
    )
    rewritten = {**full(GONE), "categories": ["configuration", "program use"], "problems": [], "histograms": []}
    assert (await post(client, [rewritten]))[0]["status"] == "accepted"
    other = full(OTHERS[0])
    assert (await post(client, [other]))[0]["status"] == "accepted"  # another machine: no tombstone of its own
    assert len(await bodies(client, GONE)) == 1
