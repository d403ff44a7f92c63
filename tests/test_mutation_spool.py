"""Spool edges that the mutation run (bench/mutation.sh) found untested: quotas and leases exactly at
their bounds, the order a lease keeps, and what a lease says about itself. Time comes from ``now=``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import epoch

from ceip_core.consent import Consent
from ceip_core.spool import Quotas, Spool
from ceip_core.statedb import StateDB


@pytest.fixture
def spool(ceip_home: Path) -> Iterator[Spool]:
    Consent(StateDB(ceip_home)).opt_in("sample")
    s = Spool(StateDB(ceip_home))
    yield s
    s.db.close()


def with_quotas(spool: Spool, **quotas: float) -> Spool:
    return Spool(StateDB(spool.db.folder), quotas=Quotas(**quotas))  # type: ignore[arg-type]


def put(spool: Spool, item_id: str, data: bytes = b"x" * 10) -> bool:
    guid = spool.consent.guid()
    assert guid is not None
    return spool.put_report(item_id, "sample", guid, data, consent_epoch=epoch(spool, "sample"))


def ids(spool: Spool) -> list[str]:
    return [i.item_id for i in spool.items()]


def test_a_lease_fills_its_byte_bound_exactly_and_keeps_the_queue_order(spool: Spool) -> None:
    for item_id, size in (("a", 10), ("b", 10), ("c", 100), ("d", 10)):
        put(spool, item_id, data=b"x" * size)
    lease = spool.lease(max_bytes=20)
    assert [i.item_id for i in lease.items] == ["a", "b"]  # 20 bytes: exactly the bound
    spool.settle(lease)  # released
    # "c" does not fit in 50 bytes after "a" and "b": the lease ends there; "d" never overtakes it.
    assert [i.item_id for i in spool.lease(max_bytes=50).items] == ["a", "b"]


def test_a_lease_expires_lease_s_after_it_was_taken(spool: Spool) -> None:
    put(spool, "a")
    now = time.time()
    lease = spool.lease(lease_s=120, now=now)
    assert lease.expires == now + 120
    assert spool.lease(now=now + 119).items == []
    assert [i.item_id for i in spool.lease(now=now + 120).items] == ["a"]
