"""What one anonymous sender can make the service do: no more items per batch than the limit, no more than
its connection source's rate however many GUIDs it makes up, and a limiter whose memory and cost per
request stay bounded however many machines it has seen (docs/security.md)."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
from service.factory import GZIP, body, config, report

from ceip_core import wire
from ceip_core.default_plugins.http_transport import HttpTransport
from ceip_core.service.limits import RateLimiter, source_key
from ceip_core.transport import Batch, BatchItem, Outcome


async def test_a_batch_over_the_item_limit_is_refused_with_the_limit(make_client: Any) -> None:
    client = await make_client(config(max_items=3))
    response = await client.post("/v1/reports", data=body(*(report() for _ in range(4))), headers=GZIP)
    assert response.status == 413
    answer = await response.json()
    assert answer["error"] == "too-many-items" and answer["limit"] == 3
    assert "at most 3" in answer["detail"]
    deletions = [{**report(), "type": "deletion"} for _ in range(4)]  # refused by count, before any item is read
    assert (await client.post("/v1/deletions", data=body(*deletions), headers=GZIP)).status == 413
    response = await client.post("/v1/reports", data=body(*(report() for _ in range(3))), headers=GZIP)
    assert response.status == 200
    assert [r["status"] for r in (await response.json())["results"]] == ["accepted"] * 3


def test_the_default_item_limit_is_what_clients_send_at_most() -> None:
    assert config().limits.max_items == wire.MAX_BATCH_ITEMS == 500
    items = [b'{"x":1}'] * 1201
    assert [len(group) for group in wire.split_batches(items)] == [500, 500, 201]


async def test_the_transport_splits_a_batch_for_a_service_that_takes_fewer_items(make_client: Any) -> None:
    client = await make_client(config(max_items=2))
    items = [report() for _ in range(5)]
    transport = HttpTransport(str(client.make_url("/")).rstrip("/"))
    try:
        batch = Batch(BatchItem(i["report_id"], "report", "sample", orjson.dumps(i)) for i in items)
        results = await transport.send(batch)
    finally:
        await transport.close()
    assert sorted(r.item_id for r in results) == sorted(i["report_id"] for i in items)
    assert {r.outcome for r in results} == {Outcome.ACCEPTED}


async def test_one_source_posing_as_many_machines_is_held_back(make_client: Any) -> None:
    client = await make_client(config(source_burst=10, source_per_s=0.001))
    # Fresh GUIDs every time: the per-machine limit never binds, the per-source one does (1 per request
    # plus 1 per item: 1 + 4 and 1 + 4 pass, the third request finds no token left).
    for _ in range(2):
        response = await client.post("/v1/reports", data=body(*(report() for _ in range(4))), headers=GZIP)
        assert response.status == 200
    response = await client.post("/v1/reports", data=body(report()), headers=GZIP)
    assert response.status == 429
    assert (await response.json())["error"] == "rate-limited"
    assert int(response.headers["Retry-After"]) >= 1
    # Refused before its body is read: even an empty body gets the same answer.
    assert (await client.post("/v1/reports", data=b"", headers=GZIP)).status == 429


async def test_a_source_burst_of_0_switches_the_source_limit_off(make_client: Any) -> None:
    client = await make_client(config(source_burst=0, source_per_s=0))
    for _ in range(3):
        response = await client.post("/v1/reports", data=body(*(report() for _ in range(50))), headers=GZIP)
        assert response.status == 200


def test_a_source_is_known_by_a_keyed_hash_never_by_its_address() -> None:
    key = bytes(32)
    assert source_key("192.0.2.7", key) == source_key("192.0.2.7", key)
    assert source_key("192.0.2.7", key) != source_key("192.0.2.8", key)
    assert b"192.0.2.7" not in source_key("192.0.2.7", key) and len(source_key("192.0.2.7", key)) == 16
    # Another process has another key: what one worker held means nothing anywhere else.
    assert source_key("192.0.2.7", key) != source_key("192.0.2.7", bytes([1]) * 32)
    # IPv6 by its /64 (one subscriber holds all of it); IPv4-mapped as IPv4; a zone id changes nothing.
    assert source_key("2001:db8:1:2::1", key) == source_key("2001:db8:1:2:ffff::9", key)
    assert source_key("2001:db8:1:2::1", key) != source_key("2001:db8:1:3::1", key)
    assert source_key("::ffff:192.0.2.7", key) == source_key("192.0.2.7", key)
    assert source_key("fe80::1%eth0", key) == source_key("fe80::2", key)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_limiter_forgets_buckets_once_they_have_refilled() -> None:
    clock = Clock()
    limiter = RateLimiter(burst=10, per_s=1, clock=clock)
    for i in range(1000):
        assert limiter.take({f"machine-{i}": 3}) == 0
    clock.now += 2  # 9 tokens each: not full, so kept
    assert limiter.take({"machine-0": 5}) == 0  # 9 - 5
    assert len(limiter) == 1000
    assert limiter.take({"machine-0": 5}) == pytest.approx(1.0)  # 4 left: one second short
    clock.now += 1  # machines 1-999 are full again, machine-0 (charged last, so at the end) has 5
    assert limiter.take({"machine-1000": 1}) == 0
    assert len(limiter) == 2
    assert limiter.take({"machine-0": 6}) == pytest.approx(1.0)  # what it had left, not a fresh bucket
    clock.now += 5
    assert limiter.take({"machine-1001": 1}) == 0
    assert len(limiter) == 1


def test_a_bucket_not_yet_full_at_the_front_holds_the_rest_back_at_most_one_refill_time() -> None:
    clock = Clock()
    limiter = RateLimiter(burst=10, per_s=1, clock=clock)
    assert limiter.take({"big": 10}) == 0
    for i in range(100):
        assert limiter.take({f"small-{i}": 1}) == 0
    clock.now += 1  # the small ones are full, "big" at the front is not
    assert limiter.take({"another": 1}) == 0
    assert len(limiter) == 102
    clock.now += 9  # ten seconds after its charge "big" is full too: burst / per_s bounds the wait
    assert limiter.take({"another-still": 1}) == 0
    assert len(limiter) == 1


def test_the_limiter_holds_at_most_max_keys() -> None:
    clock = Clock()
    limiter = RateLimiter(burst=10, per_s=0, clock=clock, max_keys=100)  # never refills: nothing expires
    for i in range(250):
        assert limiter.take({f"machine-{i}": 10}) == 0
    assert len(limiter) == 100
    assert limiter.take({"machine-249": 1}) > 0  # the most recent are kept ...
    assert limiter.take({"machine-0": 10}) == 0  # ... the least recently charged forgotten


def test_a_charge_refused_costs_nothing_and_a_big_batch_pays_at_most_the_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(burst=10, per_s=2, clock=clock)
    guid = str(uuid.uuid4())
    assert limiter.take({guid: 500}) == 0  # charged as the burst
    assert limiter.take({guid: 1, "other": 1}) == pytest.approx(0.5)
    assert limiter.take({"other": 10}) == 0  # the refused charge took nothing from "other"
