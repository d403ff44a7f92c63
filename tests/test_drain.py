"""Draining a backlog after an outage: the backoff ends with the outage, and a rate-limited drain goes on at
the receiver's rate instead of leaving the backlog for later drains."""

from __future__ import annotations

import asyncio
import math
import uuid
from pathlib import Path
from typing import Any

import pytest
from helpers import epoch

from ceip_core.consent import Consent
from ceip_core.service.config import AdmissionLimits
from ceip_core.service.limits import RateLimiter
from ceip_core.spool import Quotas, Spool
from ceip_core.statedb import StateDB
from ceip_core.transport import Batch, Outcome, SendResult
from ceip_core.upload import Backoff, drain


def fill(spool: Spool, n: int) -> None:
    guid = spool.consent.guid()
    assert guid is not None
    for _ in range(n):
        assert spool.put_report(uuid.uuid4().hex, "sample", guid, b"{}" * 20, consent_epoch=epoch(spool, "sample"))


@pytest.fixture
def spool(sample: Any, ceip_home: Path) -> Spool:
    Consent(StateDB(ceip_home)).opt_in("sample")
    return Spool(StateDB(ceip_home))


class Outage:
    """A receiver that is down (every item retried, no Retry-After) until ``up`` is set."""

    def __init__(self) -> None:
        self.up = False
        self.sent: list[int] = []

    async def send(self, batch: Batch) -> list[SendResult]:
        self.sent.append(len(batch.items))
        if self.up:
            return batch.results(Outcome.ACCEPTED)
        return batch.results(Outcome.RETRY, "connection refused")

    async def flush(self, timeout: float | None = None) -> bool:
        return True

    async def close(self) -> None:
        return None


def test_the_first_accepted_batch_ends_the_backoff_of_the_whole_backlog(spool: Spool) -> None:
    fill(spool, 40)
    receiver = Outage()
    backoff = Backoff(initial=1000, maximum=10**6)  # waits far beyond the test, once an item has failed
    for _ in range(4):  # an outage: every item fails four times (sent anyway, as ceip export would)
        asyncio.run(drain(spool, receiver, backoff=backoff, waiting_too=True))
    assert {i.attempts for i in spool.items()} == {4}
    assert asyncio.run(drain(spool, receiver, backoff=backoff)).batches == 0  # all waiting out the backoff

    receiver.up = True
    fill(spool, 1)  # one item is due (a new report, or the first of the backlog whose delay ran out)
    summary = asyncio.run(drain(spool, receiver, backoff=backoff))
    assert summary.accepted == 41 and spool.stats().reports == 0  # the whole backlog, in the same drain
    assert receiver.sent == [40] * 4 + [1, 40]


def test_after_a_success_a_new_failure_backs_off_from_the_start(spool: Spool) -> None:
    fill(spool, 10)
    receiver = Outage()
    backoff = Backoff(initial=1000, maximum=10**6)
    for _ in range(5):
        asyncio.run(drain(spool, receiver, backoff=backoff, waiting_too=True))
    receiver.up = True
    fill(spool, 1)
    lease = spool.lease(max_items=1)  # the new item, sent alone and accepted ...
    spool.settle(lease, [i.item_id for i in lease.items])
    spool.reset_backoff()
    receiver.up = False  # ... then the receiver fails again
    asyncio.run(drain(spool, receiver, backoff=backoff))
    assert {i.attempts for i in spool.items()} == {1}  # not 6: this is the first failure of a new outage


class RateLimited:
    """A receiver with the service's own rate limiter on a clock that the drain's ``sleep`` advances:
    whole batches accepted while the machine has tokens, else 429 with the service's ``Retry-After``."""

    def __init__(self, burst: float, per_s: float) -> None:
        self.now = 0.0
        self.limiter = RateLimiter(burst, per_s, clock=lambda: self.now)
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def send(self, batch: Batch) -> list[SendResult]:
        wait = self.limiter.take({"machine": len(batch.items)})
        if wait:
            return batch.results(Outcome.RETRY, "rate-limited", float(max(1, math.ceil(wait))))
        return batch.results(Outcome.ACCEPTED)

    async def flush(self, timeout: float | None = None) -> bool:
        return True

    async def close(self) -> None:
        return None


def test_a_rate_limited_backlog_drains_in_one_drain_at_the_configured_rate(spool: Spool) -> None:
    fill(spool, 2400)
    receiver = RateLimited(burst=1000, per_s=50)
    summary = asyncio.run(drain(spool, receiver, sleep=receiver.sleep))
    assert summary.accepted == 2400 and spool.stats().reports == 0
    # The burst at once, the rest at 50 a second: (2400 - 1000) / 50 = 28 s, give or take a rounded second
    # per pause; never faster than the rate.
    assert 28 <= receiver.now <= 28 + len(receiver.sleeps)
    assert all(s <= 60 for s in receiver.sleeps)


def test_a_receiver_that_refuses_at_once_is_not_waited_for(spool: Spool) -> None:
    fill(spool, 30)
    receiver = RateLimited(burst=10, per_s=0.001)
    receiver.limiter.take({"machine": 10})  # the allowance is used up
    summary = asyncio.run(drain(spool, receiver, sleep=receiver.sleep))
    assert summary.accepted == 0 and receiver.sleeps == []  # left to the schedule (Retry-After), not slept
    assert spool.stats().reports == 30


def test_the_default_limits_let_a_full_default_spool_through_within_ten_minutes_and_stop_a_flood() -> None:
    limits = AdmissionLimits()
    receiver = RateLimited(limits.rate_burst, limits.rate_per_s)
    left = Quotas().max_reports
    while left:  # the uploader's batches (a lease: 500 items), each retried after the Retry-After it gets
        batch = min(500, left)
        wait = receiver.limiter.take({"machine": batch})
        receiver.now += max(1, math.ceil(wait)) if wait else 0.1
        left -= 0 if wait else batch
    assert receiver.now <= 600  # by the service's clock; bench/drain.py measures the whole path for real
    # ... and a machine that keeps sending gets no more than the rate.
    assert receiver.limiter.take({"machine": 100}) > 0
    receiver.now += 60
    taken = sum(receiver.limiter.take({"machine": 100}) == 0 for _ in range(1000))
    assert taken * 100 <= 60 * limits.rate_per_s
