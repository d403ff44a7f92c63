"""Distinct machines from ``reach`` equal a brute-force count, whatever order days arrive in and after deletions."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import attrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from service.factory import GZIP, TOKEN, auth, body, config, deletion, report, withdrawing

from ceip_core.records import Category
from ceip_core.service import queries, reach
from ceip_core.service.app import make_app
from ceip_core.service.queries import Filters
from ceip_core.service.reach import NO_DAY, add_day
from ceip_core.service.storage import SCHEMA_VERSION, NewReport
from ceip_core.service.stores import open_storage
from ceip_core.service.validation import decode_stored


def a_minute_ago() -> datetime:
    """The newest moment a report may end at, at any hour: "today at noon" is in the future before noon."""
    return datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)


#: A report with one problem, as validation decodes it (what the fold reads).
PROBLEM_REPORT = decode_stored(orjson.dumps(report(product="p", problems={"E@x.py:1": 1})))


GROUP = ("problem", "all", "", "p", "error", "E@x.py:1")
KEY = ("problem", "all", "", "error", "E@x.py:1")  # the group, as a state of product "p" holds it


def test_runs_merge_and_split() -> None:
    runs: list[int] = []
    assert add_day(runs, 10) == (NO_DAY, NO_DAY) and runs == [10, 10]
    assert add_day(runs, 12) == (10, NO_DAY) and runs == [10, 10, 12, 12]
    assert add_day(runs, 11) == (10, 12) and runs == [10, 12]  # joins both neighbours
    assert add_day(runs, 11) is None
    assert add_day(runs, 5) == (NO_DAY, 10) and runs == [5, 5, 10, 12]
    assert add_day(runs, 9) == (5, 10) and runs == [5, 5, 9, 12]
    assert add_day(runs, 14) == (12, NO_DAY) and runs == [5, 5, 9, 12, 14, 14]


def machines_in(deltas: reach.Deltas, since: int, until: int) -> int:
    return sum(
        row[-1]
        for row in reach.rows(deltas)
        if row[:4] + row[5:7] == GROUP and since <= row[4] <= until and row[7] < since
    )


def machines_on(deltas: reach.Deltas, day: int) -> int:
    return sum(row[-1] for row in reach.rows(deltas) if row[:4] + row[5:7] == GROUP and row[4] == day)


@settings(max_examples=200, deadline=None)
@given(
    days=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 30)), max_size=60),
    batch=st.integers(1, 10),
    deleted=st.sets(st.integers(0, 5)),
    since=st.integers(0, 30),
    length=st.integers(0, 30),
)
def test_counts_equal_brute_force(
    days: list[tuple[int, int]], batch: int, deleted: set[int], since: int, length: int
) -> None:
    """Machines' active days arrive in any order, in batches, some twice; some machines are deleted."""
    states: dict[int, reach.State] = defaultdict(lambda: reach.State("p"))
    deltas = reach.Deltas()
    for start in range(0, len(days), batch):  # a batch is stored and read back, as a fold does
        for machine, day in days[start : start + batch]:
            reach.add(states[machine], PROBLEM_REPORT, day, deltas)
        states = defaultdict(lambda: reach.State("p"), {m: round_trip(s, GROUP_IDS) for m, s in states.items()})
    for machine in deleted:
        reach.remove(states.pop(machine, reach.State("p")), deltas)
    kept = [(m, d) for m, d in days if m not in deleted]
    until = since + length
    assert machines_in(deltas, since, until) == len({m for m, d in kept if since <= d <= until})
    for day in range(31):
        assert machines_on(deltas, day) == len({m for m, d in kept if d == day})


GROUP_IDS = reach.Groups()


def round_trip(state: reach.State, groups: reach.Groups) -> reach.State:
    """``state`` stored and read back, its new groups numbered as a store numbers them (``reach_groups``)."""
    unknown, known = groups.unknown_keys([state]), len(groups.id_of)
    groups.learn([(known + 1 + i, *fields) for i, fields in enumerate(unknown)])
    return reach.decode(reach.parse(reach.encode(state, groups)), state.product, groups)


def test_state_survives_encoding() -> None:
    state = reach.State("p")
    for day in (3, 4, 9):
        reach.add(state, PROBLEM_REPORT, day, reach.Deltas())
    assert state.days()[KEY] == [3, 4, 9, 9] and state.days()["active", "version", "1.0", "", ""] == [3, 4, 9, 9]
    assert len(state.parts) == 1  # every group active on the same days: one list of runs for all of them
    groups = reach.Groups()
    assert round_trip(state, groups) == state
    assert reach.parse(None) == reach.parse("") == [] and reach.decode([], "p", groups) == reach.State("p")
    assert round_trip(state, groups) != reach.State("q", state.parts)  # a state is one product's
    text = reach.encode(state, groups)
    # Schema 5 wrote each group as its key, 3 and 4 as the list of its fields: the one reader reads both.
    schema_5 = orjson.dumps({"parts": [[runs, list(keys)] for runs, keys in state.parts]}).decode()
    assert all(isinstance(i, int) for _, ids in orjson.loads(text)["ids"] for i in ids)
    assert len(text) * 10 < len(schema_5)
    schema_4 = orjson.dumps([[runs, [list(reach.fields(k)) for k in keys]] for runs, keys in state.parts]).decode()
    for old in (schema_5, schema_4):
        assert reach.decode(reach.parse(old), "p", reach.Groups()) == state
        assert reach.Groups().unknown_ids([reach.parse(old)]) == []  # nothing to read for them
    # The readers of schemas 5 and 4 fail on the new form rather than misreading it.
    with pytest.raises(KeyError):
        orjson.loads(text)["parts"]
    with pytest.raises(ValueError):
        [(runs, set(map(tuple, keys))) for runs, keys in orjson.loads(text)]
    with pytest.raises(KeyError):  # an id no one named is an error (the store quarantines), never a guess
        reach.decode(reach.parse(text), "p", reach.Groups())


def test_groups_share_runs_until_their_days_differ_and_again_once_they_meet() -> None:
    """A report that names fewer groups splits the machine's part; the days that make them equal again join it."""
    plain = decode_stored(orjson.dumps(report(product="p")))
    state, deltas = reach.State("p"), reach.Deltas()
    reach.add(state, PROBLEM_REPORT, 5, deltas)
    reach.add(state, plain, 6, deltas)  # the problem is not seen on day 6
    assert state.days()[KEY] == [5, 5] and state.days()["active", "all", "", "", ""] == [5, 6]
    assert len(state.parts) == 2
    reach.add(state, PROBLEM_REPORT, 6, deltas)  # ... then it is, late: the same days as the rest again
    assert len(state.parts) == 1 and state.days()[KEY] == [5, 6]
    assert machines_in(deltas, 5, 6) == 1 and machines_on(deltas, 6) == 1 and machines_in(deltas, 6, 6) == 1


# -- on the real stores ------------------------------------------------------------------------------


async def send(client: Any, items: list[dict[str, Any]], path: str = "/v1/reports") -> None:
    for start in range(0, len(items), 100):
        response = await client.post(path, data=body(*items[start : start + 100]), headers=GZIP)
        assert response.status == 200
        assert {r["status"] for r in (await response.json())["results"]} == {"accepted"}


async def ask(client: Any, what: str, query: str = "") -> dict[str, Any]:
    response = await client.get(f"/v1/query/{what}{query}", headers=auth())
    assert response.status == 200, await response.text()
    answer: dict[str, Any] = await response.json()
    return answer


async def test_late_days_deletions_and_versions_on_the_stores(make_client: Any) -> None:
    """Twelve machines over ten days, sent newest first (late arrivals everywhere), one upgrading, two deleted."""
    client = await make_client(attrs.evolve(config(), k=1))
    today = a_minute_ago()
    fleet = [f"0f3e7a52-0c1e-4c59-9d61-{i:012d}" for i in range(12)]
    sent = []
    for back in range(9, -1, -1):  # oldest first, then the same machines' older days again, late
        for i, guid in enumerate(fleet):
            if (i + back) % 3:  # each machine skips every third day: gaps between active days
                version = "2.0" if i == 0 and back < 5 else "1.0"
                sent.append((guid, back, version, i % 4 == 0))
    late, early = sent[len(sent) // 2 :], sent[: len(sent) // 2]
    for part in (late, early):
        await send(
            client,
            [
                report(g, version=v, end=today - timedelta(days=b), problems={"E@x.py:1": 2} if p else {})
                for g, b, v, p in part
            ],
        )
    gone = {fleet[1], fleet[4]}
    await send(client, [deletion(g) for g in gone], "/v1/deletions")
    kept = [s for s in sent if s[0] not in gone]

    def day(back: int) -> str:
        return (today - timedelta(days=back)).date().isoformat()

    for since, until in ((9, 0), (6, 3), (2, 2), (0, 0)):
        window = [s for s in kept if until <= s[1] <= since]
        query = f"?since={day(since)}&until={day(until)}"
        assert (await ask(client, "versions", query))["versions"] == [
            {"product": "sample", "version": None, "machines": len({s[0] for s in window})},
            *(
                {"product": "sample", "version": v, "machines": n}
                for v in ("1.0", "2.0")
                if (n := len({s[0] for s in window if s[2] == v}))
            ),
        ]
        problems = (await ask(client, "problems", query))["problems"]
        hit = [s for s in window if s[3]]
        assert [(p["machines"], p["occurrences"]) for p in problems] == ([(len({s[0] for s in hit}), 2 * len(hit))])
        only_v2 = (await ask(client, "features", query + "&version=2.0"))["features"]
        assert [f["machines"] for f in only_v2] == [n for n in [len({s[0] for s in window if s[2] == "2.0"})] if n]
    per_day = (await ask(client, "participation"))["active"]
    assert [r["active_machines"] for r in per_day] == [
        len({s[0] for s in kept if s[1] == back}) for back in range(9, -1, -1)
    ]
    trend = (await ask(client, "trends"))["trends"]
    assert [r["machines"] for r in trend] == [
        n for back in range(9, -1, -1) if (n := len({s[0] for s in kept if s[1] == back and s[3]}))
    ]


async def on_database(database: str, statements: list[str], reads: tuple[str, ...] = ()) -> list[list[Any]]:
    """Run ``statements`` straight on the database (as an older ceip left it), then the first column of ``reads``."""
    if database.startswith("sqlite"):
        with sqlite3.connect(database.removeprefix("sqlite://")) as db:
            for statement in statements:
                db.execute(statement)
            return [[row[0] for row in db.execute(sql)] for sql in reads]
    conn = await asyncpg.connect(database)
    try:
        for statement in statements:
            await conn.execute(statement)
        return [[row[0] for row in await conn.fetch(sql)] for sql in reads]
    finally:
        await conn.close()


GROUPS = "SELECT json_array(id, family, scope, version, name, value) FROM reach_groups"


async def stored_states(database: str, product: str = "sample") -> dict[str, reach.State]:
    """Every machine's reach state as stored, by guid, its groups named by the database's ``reach_groups``
    (what a worker that never saw the groups reads)."""
    reads = ("SELECT guid FROM reach_state ORDER BY guid", "SELECT runs FROM reach_state ORDER BY guid")
    groups_sql = GROUPS if database.startswith("sqlite") else GROUPS.replace("json_array", "json_build_array")
    guids, texts, rows = await on_database(database, [], (*reads, groups_sql))
    return {g: stored_again(text, product, rows) for g, text in zip(guids, texts, strict=True)}


def stored_again(text: str, product: str, rows: list[Any]) -> reach.State:
    groups = reach.Groups()
    groups.learn(orjson.loads(r) if isinstance(r, str) else r for r in rows)
    return reach.decode(reach.parse(text), product, groups)


async def test_a_schema_1_database_is_rebuilt_from_its_reports(aiohttp_client: Any, database: str) -> None:
    """Opening a database of schema 1 folds every stored report again into the new rollups."""
    first = await aiohttp_client(make_app(attrs.evolve(config(), k=1), database, "t"))
    await send(first, [report(problems={"E@x.py:1": 1}) for _ in range(3)])
    before = await (await first.get("/v1/query/problems", headers={"Authorization": "Bearer t"})).json()
    await first.close()
    statements = ["UPDATE meta SET value = '1' WHERE key = 'schema'", "DELETE FROM reach", "DELETE FROM problem_totals"]
    statements.append("CREATE TABLE config_days (product TEXT)")  # a table of schema 1, dropped by the upgrade
    await on_database(database, statements)
    again = await aiohttp_client(make_app(attrs.evolve(config(), k=1), database, "t"))
    after = await (await again.get("/v1/query/problems", headers={"Authorization": "Bearer t"})).json()
    assert after == before and after["problems"][0]["machines"] == 3


async def test_a_schema_2_database_keeps_aged_rollups_and_gets_the_new_reach_state(
    aiohttp_client: Any, database: str
) -> None:
    """Schema 2 spelled each group's runs out in a machine's state: the upgrade rebuilds the reach state, from
    the first day whose raw reports are all held, and keeps the rollups of the days before (aged out)."""
    first = await aiohttp_client(make_app(attrs.evolve(config(), k=1), database, "t"))
    await send(first, [report(problems={"E@x.py:1": 1}) for _ in range(3)])
    before = await (await first.get("/v1/query/problems", headers={"Authorization": "Bearer t"})).json()
    await first.close()
    today = int(a_minute_ago().timestamp() // 86400)
    old_state = orjson.dumps([["active", "all", "", "", "", [today, today]]]).decode()  # schema 2's shape
    statements = [
        "UPDATE meta SET value = '2' WHERE key = 'schema'",
        f"UPDATE reach_state SET runs = '{old_state}'",
        "DELETE FROM meta WHERE key = 'raw_reports_since_day'",
        f"INSERT INTO meta (key, value) VALUES ('raw_reports_since_day', '{today - 5}')",
        "INSERT INTO problem_totals (product, day, kind, signature, version, occurrences, first_seen, last_seen) "
        f"VALUES ('sample', {today - 10}, 'error', 'aged@x.py:1', '1.0', 4, 0, 0)",
    ]
    reads = ("SELECT runs FROM reach_state", f"SELECT occurrences FROM problem_totals WHERE day = {today - 10}")
    await on_database(database, statements)
    again = await aiohttp_client(make_app(attrs.evolve(config(), k=1), database, "t"))
    after = await (await again.get("/v1/query/problems", headers={"Authorization": "Bearer t"})).json()
    assert after == before and after["problems"][0]["machines"] == 3
    states, aged = await on_database(database, [], reads)
    assert aged == [4]  # its day's raw reports are gone: the rollup was kept, not rebuilt to nothing
    assert len(states) == 3
    for state in (await stored_states(database)).values():
        assert state.days()["problem", "all", "", "error", "E@x.py:1"] == [today, today]


async def test_a_schema_3_database_loses_only_its_per_machine_feature_uses(aiohttp_client: Any, database: str) -> None:
    """Schema 3 kept each machine's feature uses per day (``counter_days``); 4 reads a deleted machine's uses
    from its raw reports. The upgrade drops the table and folds nothing again (a total of a day whose
    raw reports aged out stays), and a deletion after it takes the machine's uses out of the totals."""
    guids = [f"0f3e7a52-0c1e-4c59-9d61-{i:012d}" for i in range(3)]
    first = await aiohttp_client(make_app(attrs.evolve(config(), k=1), database, TOKEN))
    await send(first, [report(g, counters={"open_file": 2 + i}) for i, g in enumerate(guids)])
    before = await ask(first, "features")
    await first.close()
    today = int(a_minute_ago().timestamp() // 86400)
    await on_database(
        database,
        [
            "UPDATE meta SET value = '3' WHERE key = 'schema'",
            "CREATE TABLE counter_days (product TEXT, day BIGINT, guid TEXT, uses BIGINT)",
            "INSERT INTO counter_totals (product, day, name, label, version, uses) "
            f"VALUES ('sample', {today - 10}, 'aged_feature', '', '1.0', 7)",
        ],
    )
    again = await aiohttp_client(make_app(attrs.evolve(config(), k=1), database, TOKEN))
    assert await ask(again, "features") == before
    table = (
        "SELECT COUNT(*) FROM sqlite_master WHERE name = 'counter_days'"
        if database.startswith("sqlite")
        else "SELECT CASE WHEN to_regclass('counter_days') IS NULL THEN 0 ELSE 1 END"
    )
    aged = "SELECT uses FROM counter_totals WHERE name = 'aged_feature'"
    assert await on_database(database, [], ("SELECT value FROM meta WHERE key = 'schema'", table, aged)) == [
        [str(SCHEMA_VERSION)],
        [0],
        [7],  # not rebuilt: a rebuild would have emptied the day whose raw reports are gone
    ]
    await send(again, [deletion(guids[1])], "/v1/deletions")
    features = (await ask(again, "features"))["features"]
    assert [(f["name"], f["machines"], f["uses"]) for f in features] == [("open_file", 2, 2 + 4)]


OLDER_FORMS = {
    4: lambda state: [[runs, [list(reach.fields(k)) for k in keys]] for runs, keys in state.parts],
    5: lambda state: {"parts": [[runs, sorted(keys)] for runs, keys in state.parts]},
}


@pytest.mark.parametrize("schema", sorted(OLDER_FORMS))
async def test_an_older_database_keeps_its_reach_states_and_files_onto_them(
    aiohttp_client: Any, database: str, schema: int
) -> None:
    """Schema 4 wrote each group of a reach state as the list of its fields, 5 as one string, 6 as an id
    (``reach_groups``). The upgrade rewrites nothing, since the one reader reads every form: a machine seen
    again the next day counts once over both days, its state is then written in the new form, a category
    withdrawal of a state still in the old form keeps the rest of it, and a deletion takes all of its
    entries out."""
    guids = [f"0f3e7a52-0c1e-4c59-9d61-{i:012d}" for i in range(3)]
    today = a_minute_ago()  # once: "a day later" stays one day later across midnight
    first = await aiohttp_client(make_app(attrs.evolve(config(), k=1), database, TOKEN))
    await send(first, [report(g, problems={"E@x.py:1": 1}, end=today - timedelta(days=1)) for g in guids])
    assert [p["machines"] for p in (await ask(first, "problems"))["problems"]] == [3]  # a query folds first
    await first.close()
    old = {g: orjson.dumps(OLDER_FORMS[schema](state)).decode() for g, state in (await stored_states(database)).items()}
    assert sorted(old) == guids
    await on_database(
        database,
        [
            f"UPDATE meta SET value = '{schema}' WHERE key = 'schema'",
            *(f"UPDATE reach_state SET runs = '{text}' WHERE guid = '{g}'" for g, text in old.items()),
            "DROP TABLE reach_groups",
        ],
    )
    again = await aiohttp_client(make_app(attrs.evolve(config(), k=1), database, TOKEN))
    await send(again, [withdrawing(guids[2], Category.PERFORMANCE)], "/v1/deletions")
    await send(again, [report(g, problems={"E@x.py:1": 1}, end=today) for g in guids[:2]])
    assert [p["machines"] for p in (await ask(again, "problems"))["problems"]] == [2]  # not 4, and not the third
    schema_now, texts = await on_database(
        database, [], ("SELECT value FROM meta WHERE key = 'schema'", "SELECT runs FROM reach_state ORDER BY guid")
    )
    assert schema_now == [str(SCHEMA_VERSION)]
    assert all("ids" in orjson.loads(text) for text in texts)
    states = await stored_states(database)
    for g in guids[:2]:
        assert len(states[g].days()["problem", "all", "", "error", "E@x.py:1"]) == 2
    assert ("problem", "all", "", "error", "E@x.py:1") not in states[guids[2]].days()
    assert ("active", "all", "", "", "") in states[guids[2]].days()  # the rest of its state stays
    await send(again, [deletion(guids[0])], "/v1/deletions")
    assert [p["machines"] for p in (await ask(again, "problems"))["problems"]] == [1]


def new_report(item: dict[str, Any]) -> NewReport:
    """What ingest hands the storage for a valid item: its fields, its JSON, and what validation decoded."""
    body = orjson.dumps(item)
    decoded = decode_stored(body)
    day = int(decoded.period.end.timestamp() // 86400)
    return NewReport(item["report_id"], item["guid"], item["product"], item["product_version"], day, 0.0,
                     body.decode(), decoded)  # fmt: skip


async def test_two_workers_folding_one_machines_reports_at_once_stay_exact(database: str) -> None:
    """Two storages (as two ``ceip serve`` workers) fold disjoint sets of the same machines' reports at once."""
    first, second = open_storage(database), open_storage(database)
    await first.open()
    await second.open()
    try:
        today = a_minute_ago()
        fleet = [f"0f3e7a52-0c1e-4c59-9d61-{i:012d}" for i in range(8)]
        items = [
            report(g, end=today - timedelta(days=b)) for b in range(12) for i, g in enumerate(fleet) if (b + i) % 3
        ]
        await first.write([new_report(i) for i in items[::-1]])  # newest first: late days everywhere
        while sum(await asyncio.gather(first.roll_up(7), second.roll_up(5))):
            pass
        for since in range(12):
            filters = Filters(since=int(today.timestamp() // 86400) - since)
            answer = await queries.versions(first, filters, 1)
            expected = {
                i["guid"] for i in items if datetime.fromisoformat(i["period"]["end"]) >= today - timedelta(days=since)
            }
            assert answer["versions"][0]["machines"] == len(expected)
    finally:
        await first.close()
        await second.close()


async def test_a_fold_undone_leaves_no_state_naming_a_group_id_it_gave(database: str, monkeypatch: Any) -> None:
    """A fold step that fails after its new groups got their ids is undone, and what it added with it: SQLite
    gives a rolled-back id to the next group added, so a worker that kept it would file a machine under
    another group. The report that fails is quarantined; the others, folded one by one, and every later
    fold name only groups the database holds, each by its own id."""
    encode = reach.encode

    def failing(state: reach.State, groups: reach.Groups) -> str:
        text = encode(state, groups)  # fails as ever for a group without an id, which the store then adds
        if any("poison" in key for _, keys in state.parts for key in keys):
            raise RuntimeError("this report cannot be stored")
        return text

    monkeypatch.setattr(reach, "encode", failing)
    guids = [f"0f3e7a52-0c1e-4c59-9d61-{i:012d}" for i in range(3)]
    signatures = ["good@x.py:1", "poison@x.py:1", "later@x.py:1"]
    storage = open_storage(database)
    await storage.open()
    try:
        await storage.write(
            [new_report(report(g, problems={s: 1})) for g, s in zip(guids[:2], signatures, strict=False)]
        )
        while await storage.roll_up(wait=True):
            pass
        assert await storage.quarantined() == 1
        await storage.write([new_report(report(guids[2], problems={signatures[2]: 1}))])
        while await storage.roll_up(wait=True):
            pass
    finally:
        await storage.close()
    states = await stored_states(database)  # a fresh reader: every id named by the table
    assert sorted(states) == [guids[0], guids[2]]
    for guid, signature in ((guids[0], signatures[0]), (guids[2], signatures[2])):
        problems = {key[4] for key in states[guid].days() if key[0] == "problem"}
        assert problems == {signature}


async def test_a_worker_that_forgets_group_ids_reads_them_again(database: str, monkeypatch: Any) -> None:
    """A worker keeps at most ``GROUPS_KEPT`` group ids in memory and starts again past that, between folds:
    what it folds after is as exact as before."""
    monkeypatch.setattr(reach, "GROUPS_KEPT", 3)
    guids = [f"0f3e7a52-0c1e-4c59-9d61-{i:012d}" for i in range(4)]
    today = a_minute_ago()  # once: the three days stay consecutive across midnight
    storage = open_storage(database)
    await storage.open()
    try:
        for day in (2, 1, 0):  # each day new groups, and the machines' others seen again
            items = [
                report(g, problems={f"E{i}@x.py:{day}": 1}, end=today - timedelta(days=day))
                for i, g in enumerate(guids)
            ]
            await storage.write([new_report(item) for item in items])
            while await storage.roll_up(2):  # two machines per fold: each fold knows more than it keeps
                pass
    finally:
        await storage.close()
    states = await stored_states(database)
    for i, guid in enumerate(guids):
        days = states[guid].days()
        assert len(days["active", "all", "", "", ""]) == 2  # one run of the three days
        assert all(len(days["problem", "all", "", "error", f"E{i}@x.py:{day}"]) == 2 for day in (0, 1, 2))
