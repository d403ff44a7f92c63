"""POST /v1/reports and /v1/deletions against a real service on loopback, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from service.factory import GZIP, auth, body, config, deletion, report

from ceip_core.service import rollups
from ceip_core.service.app import STORAGE


async def post(client: Any, items: list[dict[str, Any]], path: str = "/v1/reports") -> list[dict[str, Any]]:
    response = await client.post(path, data=body(*items), headers=GZIP)
    assert response.status == 200, await response.text()
    results: list[dict[str, Any]] = (await response.json())["results"]
    return results


async def stored_reports(client: Any) -> int:
    """Reports counted by the participation query (active machine-days), plus the raw count via problems."""
    answer = await (await client.get("/v1/query/participation", headers=auth())).json()
    return sum(row["active_machines"] for row in answer["active"])


async def test_accepts_a_report_then_calls_the_same_report_a_duplicate(client: Any) -> None:
    item = report()
    first = await post(client, [item])
    assert first == [{"id": item["report_id"], "status": "accepted"}]
    # The response was lost, the client retries: stored once, answered "duplicate".
    assert await post(client, [item]) == [{"id": item["report_id"], "status": "duplicate"}]
    # The same id twice in one batch: the second is the duplicate.
    twice = report()
    assert [r["status"] for r in await post(client, [twice, twice])] == ["accepted", "duplicate"]


async def test_bad_items_are_rejected_one_by_one_and_good_ones_in_the_same_batch_are_stored(client: Any) -> None:
    now = datetime.now(UTC)
    good = report()
    cases: dict[str, dict[str, Any]] = {
        "invalid": {**report(), "counters": [{"name": "open_file", "value": "5", "label": None}]},
        "negative-value": {**report(), "counters": [{"name": "open_file", "value": -1, "label": None}]},
        "too-long": {**report(), "problems": [{"kind": "error", "signature": "x" * 10_000, "count": 1}]},
        "future-timestamp": report(end=now + timedelta(days=2)),
        "too-old": report(end=now - timedelta(days=5000)),
        "not-allowlisted": report(product="unknown"),
        "wrong-endpoint": deletion(good["guid"]),
        "unknown-item-type": {"type": "telemetry-v9", "report_id": "x"},
        "bad-id": {**report(), "guid": "john@example.com"},
        "bad-period": {**report(), "period": {"start": now.isoformat(), "end": (now - timedelta(hours=1)).isoformat()}},
        "out-of-range": {**report(), "counters": [{"name": "open_file", "value": 1 << 60, "label": None}]},
        "malformed": [1, 2, 3],  # type: ignore[dict-item]
    }
    extra = report()
    extra["surprise"] = True
    cases["invalid "] = extra  # extra fields are refused (the key's space keeps the dict unique)
    wrong_executable = report()
    wrong_executable["sessions"][0]["executable"] = "bash"
    cases["not-allowlisted "] = wrong_executable
    items = [good, *cases.values()]
    results = await post(client, items)
    assert results[0] == {"id": good["report_id"], "status": "accepted"}
    for (expected, _), result in zip(cases.items(), results[1:], strict=True):
        assert result["status"] == "rejected", result
        assert result["reason"] == expected.strip(), result
        assert result["detail"]
    assert await stored_reports(client) == 0  # k = 5: one machine is not published ...
    answer = await (await client.get("/v1/query/participation", headers=auth())).json()
    assert answer["hidden"] == 1  # ... but it is there


async def test_whole_body_problems_get_a_clear_4xx_and_the_service_stays_up(client: Any) -> None:
    good = body(report())
    bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb_body = bomb.compress(b"[" + b" " * (64 << 20)) + bomb.flush()  # 64 MiB of spaces in ~64 KiB
    cases = [
        (good, {"Content-Encoding": "br"}, 415, "unsupported-encoding"),
        (good, {}, 415, "unsupported-encoding"),
        (b"\x00" * (2 << 20), GZIP, 413, "too-large"),
        (bomb_body, GZIP, 413, "too-large"),
        (good[: len(good) // 2], GZIP, 400, "bad-gzip"),
        (b"not gzip at all", GZIP, 400, "bad-gzip"),
        (gzip.compress(b"{not json"), GZIP, 400, "malformed-json"),
        (gzip.compress(b'{"items": 5, "schema": 1}'), GZIP, 400, "malformed"),
        (gzip.compress(orjson.dumps({"schema": 1, "items": [], "extra": 1})), GZIP, 400, "malformed"),
        (body(report(), schema=99), GZIP, 400, "unsupported-schema"),
    ]
    for data, headers, status, reason in cases:
        response = await client.post("/v1/reports", data=data, headers=headers)
        assert response.status == status, (reason, await response.text())
        answer = await response.json()
        assert answer["error"] == reason and answer["detail"]
    assert (await client.get("/healthz")).status == 200
    assert (await post(client, [report()]))[0]["status"] == "accepted"


async def test_deletion_removes_the_pairs_data_and_nothing_else(client: Any) -> None:
    gone, kept = "0f3e7a52-0c1e-4c59-9d61-000000000001", "0f3e7a52-0c1e-4c59-9d61-000000000002"
    others = [f"0f3e7a52-0c1e-4c59-9d61-{i:012d}" for i in range(10, 14)]
    await post(client, [report(g, problems={"E@x.py:1": 1}) for g in [gone, kept, *others]])
    await post(client, [report(gone, product="other", counters={"used": 1})])
    assert await problem_machines(client) == 6

    request = deletion(gone)
    assert await post(client, [request], "/v1/deletions") == [{"id": request["request_id"], "status": "accepted"}]
    assert await problem_machines(client) == 5
    # Gone from the stored rows themselves, not only from the aggregates: raw reports and per-machine rows.
    storage = client.server.app[STORAGE]
    for table in ("reports", *(t.name for t in rollups.PER_MACHINE)):
        mine = "guid = :guid AND product = 'sample'"
        assert await storage.query(f"SELECT COUNT(*) FROM {table} WHERE {mine}", {"guid": gone}) == [(0,)], table
    kept_rows = await storage.query("SELECT COUNT(*) FROM reports WHERE guid = :guid", {"guid": kept})
    assert kept_rows == [(1,)]
    assert await storage.query("SELECT COUNT(*) FROM reports WHERE guid = :guid", {"guid": gone}) == [(1,)]  # other
    # Idempotent: the same request again changes nothing and says so.
    assert (await post(client, [request], "/v1/deletions"))[0]["status"] == "duplicate"
    assert await problem_machines(client) == 5
    # The machine's other product, and the other machines, are untouched.
    participation = await (await client.get("/v1/query/participation?product=sample", headers=auth())).json()
    assert participation["active"][0]["active_machines"] == 5
    assert participation["deletions"][0]["product"] == "sample"
    assert participation["deletions"][0]["requests"] == 1
    report_items = await (await client.get("/v1/query/features?product=other", headers=auth())).json()
    assert report_items["hidden"] == 1  # 'other' still holds the machine's report (one machine: hidden)


async def problem_machines(client: Any) -> int:
    answer = await (await client.get("/v1/query/problems", headers=auth())).json()
    return sum(row["machines"] for row in answer["problems"])


async def test_policy_tells_clients_which_products_report(make_client: Any) -> None:
    from ceip_core.service.config import ProductPolicy

    client = await make_client(
        config().__class__(
            allowlist=config().allowlist, policy={"other": ProductPolicy(enabled=False, sample_rate=0.5)}
        )
    )
    answer = await (await client.get("/v1/policy")).json()
    assert answer == {
        "products": {
            "other": {"enabled": False, "sample_rate": 0.5},
            "sample": {"enabled": True, "sample_rate": 1.0},
        }
    }


async def test_a_machine_over_its_rate_gets_429_with_retry_after(make_client: Any) -> None:
    client = await make_client(config(rate_burst=3, rate_per_s=0.5))
    guid = "0f3e7a52-0c1e-4c59-9d61-000000000001"
    assert [r["status"] for r in await post(client, [report(guid), report(guid)])] == ["accepted"] * 2
    response = await client.post("/v1/reports", data=body(report(guid), report(guid)), headers=GZIP)
    assert response.status == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert (await response.json())["error"] == "rate-limited"
    # Another machine is not held back by this one.
    assert (await post(client, [report()]))[0]["status"] == "accepted"


async def test_health_and_readiness(client: Any) -> None:
    assert (await client.get("/healthz")).status == 200
    assert await (await client.get("/readyz")).json() == {"status": "ready", "quarantined": 0, "ingest": {}}


async def test_a_request_that_stalls_gets_408(make_client: Any) -> None:
    client = await make_client(config(request_timeout_s=0.5))
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    head = "POST /v1/reports HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nContent-Length: 1000\r\n\r\n"
    writer.write(head.encode() + b"\x1f\x8b")  # ... and the rest never comes
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), timeout=10)
    assert status_line.startswith(b"HTTP/1.1 408")
    writer.close()
    assert (await client.get("/healthz")).status == 200


def raw_body(*items: bytes) -> bytes:
    """A gzip batch body of items given as JSON bytes, which may be anything at all."""
    return gzip.compress(b'{"schema": 1, "items": [' + b", ".join(items) + b"]}", mtime=0)


async def test_json_nested_too_deeply_is_refused_with_a_4xx_on_both_endpoints(client: Any) -> None:
    deep = b"[" * 5000 + b"]" * 5000
    in_a_field = orjson.dumps(report())[:-1] + b', "config": {"x": ' + deep + b"}}"
    bodies = {raw_body(deep): "malformed-json", raw_body(orjson.dumps(report()), in_a_field): "malformed-json"}
    bodies[gzip.compress(deep)] = "malformed"  # not an object: said before it is read any deeper
    bodies[gzip.compress(b'{"schema": 1, "items": [], "x": ' + deep + b"}")] = "malformed"
    for path in ("/v1/reports", "/v1/deletions"):
        for data, reason in bodies.items():
            response = await client.post(path, data=data, headers=GZIP)
            assert response.status == 400, await response.text()
            assert (await response.json())["error"] == reason
    # Shallower than the recursion limit: refused item by item, the good item of the batch kept.
    shallow = b"[" * 500 + b"]" * 500
    response = await client.post("/v1/reports", data=raw_body(shallow, orjson.dumps(good := report())), headers=GZIP)
    assert response.status == 200
    first, second = (await response.json())["results"]
    assert first["status"] == "rejected" and first["reason"] == "malformed"
    assert second == {"id": good["report_id"], "status": "accepted"}


async def test_an_item_that_is_not_utf8_or_holds_a_nul_is_refused_alone(client: Any) -> None:
    """Each would once fail the whole batch with a 500 (PostgreSQL cannot store a NUL), which clients retry forever."""
    good, other = report(), report()
    not_utf8 = orjson.dumps(report()).replace(b"Linux", b"Li\xffux")
    nul = orjson.dumps({**report(), "product_version": "1.0\x00"})
    nul_in_a_name = orjson.dumps({**report(), "counters": [{"name": "a\x00b", "value": 1, "label": None}]})
    items = [orjson.dumps(good), not_utf8, nul, nul_in_a_name, orjson.dumps(other)]
    response = await client.post("/v1/reports", data=raw_body(*items), headers=GZIP)
    assert response.status == 200, await response.text()
    results = (await response.json())["results"]
    assert [(r["status"], r.get("reason")) for r in results] == [
        ("accepted", None),
        ("rejected", "malformed-json"),
        ("rejected", "invalid"),
        ("rejected", "invalid"),
        ("accepted", None),
    ]
    assert "NUL" in results[2]["detail"] and "product_version" in results[2]["detail"]
    # An escaped unpaired surrogate is valid JSON but no character (and no ceip client writes one); an
    # escaped pair is an emoji and stays one.
    lone_surrogate = orjson.dumps(report()).replace(b"Linux", b"Li\\ud800ux")
    pair = orjson.dumps(emoji := report()).replace(b"Linux", b"Li\\ud83d\\ude00ux")
    response = await client.post("/v1/reports", data=raw_body(lone_surrogate, pair), headers=GZIP)
    assert response.status == 200, await response.text()
    refused, kept = (await response.json())["results"]
    assert refused["status"] == "rejected" and refused["reason"] == "invalid" and "surrogate" in refused["detail"]
    assert kept == {"id": emoji["report_id"], "status": "accepted"}
    nul_deletion = orjson.dumps({**deletion(good["guid"]), "product": "sample\x00"})
    response = await client.post("/v1/deletions", data=raw_body(nul_deletion), headers=GZIP)
    assert response.status == 200
    assert (await response.json())["results"][0]["reason"] == "invalid"
    answer = await (await client.get("/v1/query/participation", headers=auth())).json()
    assert answer["hidden"] == 1  # the two good machines' day (fewer than k): both stored, nothing deleted
