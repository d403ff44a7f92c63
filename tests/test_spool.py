"""The spool on a real SQLite file: leases and settling, consent at the spool boundary, quotas, opt-out
and purge. Time is controlled through the ``now=`` arguments, never by sleeping.

These tests need no plugins: they use ``ceip_home`` (a fresh state folder) and store opaque bytes.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import epoch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ceip_core.consent import Consent, Policy, State
from ceip_core.records import DeletionRequest
from ceip_core.spool import Lease, Quotas, Spool, SpooledItem, SpoolStats, disk_bytes
from ceip_core.spool_rows import insert_item
from ceip_core.statedb import WAL_LIMIT_BYTES, StateDB
from ceip_core.wire import decode_item

DATA = b'{"n": 1}'


@pytest.fixture
def spool(ceip_home: Path) -> Iterator[Spool]:
    """A spool in a fresh state folder with ``sample`` opted in."""
    Consent(StateDB(ceip_home)).opt_in("sample")
    s = Spool(StateDB(ceip_home))
    yield s
    s.db.close()


def put(spool: Spool, item_id: str, product: str = "sample", data: bytes = DATA, now: float | None = None) -> bool:
    guid = spool.consent.guid()
    assert guid is not None
    return spool.put_report(item_id, product, guid, data, consent_epoch=epoch(spool, product), now=now)


def ids(items: Lease | list[SpooledItem]) -> list[str]:
    return [i.item_id for i in (items.items if isinstance(items, Lease) else items)]


def other_spool(spool: Spool, quotas: Quotas | None = None, policy: Policy | None = None) -> Spool:
    """A second spool object (its own connection) on the same state folder, as another process would have."""
    return Spool(StateDB(spool.db.folder), quotas=quotas, policy=policy)


# -- leases and settling ------------------------------------------------------------------------------------


def test_put_lease_accept_removes(spool: Spool) -> None:
    guid = spool.consent.guid()
    for n in range(3):
        assert put(spool, f"r{n}", data=b'{"n": %d}' % n)
    assert spool.stats().reports == 3

    lease = spool.lease()
    assert ids(lease) == ["r0", "r1", "r2"]  # oldest first
    first = lease.items[0]
    assert (first.kind, first.product, first.guid, first.attempts) == ("report", "sample", guid, 0)
    assert first.data == b'{"n": 0}'
    assert spool.lease().items == []  # leased items are not handed out twice

    spool.settle(lease, accepted=["r0", "r1", "r2"])
    assert spool.items() == []
    stats = spool.stats()
    assert (stats.reports, stats.bytes, stats.drops) == (0, 0, {})
    assert stats.last_upload is not None and stats.last_upload == pytest.approx(time.time(), abs=60)


def test_retry_reschedules_until_not_before(spool: Spool) -> None:
    put(spool, "a")
    put(spool, "b")
    t = time.time()
    lease = spool.lease(now=t)
    spool.settle(lease, accepted=["b"], retry={"a": 60}, now=t)

    assert ids(spool.items()) == ["a"]  # kept, not lost
    assert spool.stats().next_attempt == pytest.approx(t + 60)
    assert spool.lease(now=t).items == []
    assert spool.lease(now=t + 59).items == []
    again = spool.lease(now=t + 61)
    assert ids(again) == ["a"]
    assert again.items[0].attempts == 1

    spool.settle(again, retry={"a": 120}, now=t + 61)
    assert spool.lease(now=t + 180).items == []
    third = spool.lease(now=t + 182)
    assert third.items[0].attempts == 2
    spool.settle(third, accepted=["a"], now=t + 182)
    assert spool.items() == []


def test_items_a_settle_does_not_name_are_released_at_once(spool: Spool) -> None:
    put(spool, "a")
    put(spool, "b")
    t = time.time()
    lease = spool.lease(now=t)
    spool.settle(lease, accepted=["a"], now=t)
    again = spool.lease(now=t)
    assert ids(again) == ["b"]
    assert again.items[0].attempts == 0  # not a failed attempt, just not tried


def test_rejected_is_removed_and_counted(spool: Spool) -> None:
    for n in range(3):
        put(spool, f"r{n}")
    lease = spool.lease()
    spool.settle(lease, accepted=["r0"], rejected={"r1": "invalid"})
    assert ids(spool.items()) == ["r2"]
    drops = spool.stats().drops
    assert drops["rejected:invalid"] == 1
    assert drops["rejected:invalid:sample"] == 1
    assert ids(spool.lease()) == ["r2"]  # the unnamed one was released


def test_dead_sender_items_are_leased_again_when_the_lease_expires(spool: Spool) -> None:
    for n in range(3):
        put(spool, f"r{n}")
    t = time.time()
    dead = spool.lease(lease_s=120, now=t)  # this sender dies without settling
    assert ids(dead) == ["r0", "r1", "r2"]
    assert dead.expires == pytest.approx(t + 120)

    # Another process sees the items, but cannot lease them until the lease runs out.
    other = other_spool(spool)
    assert ids(other.items()) == ["r0", "r1", "r2"]
    assert other.lease(now=t + 119).items == []
    retry = other.lease(lease_s=120, now=t + 121)
    assert ids(retry) == ["r0", "r1", "r2"]
    other.settle(retry, accepted=ids(retry), now=t + 122)
    assert spool.items() == []
    other.db.close()


def test_a_stale_lease_cannot_settle_items_now_leased_by_another(spool: Spool) -> None:
    for n in range(3):
        put(spool, f"r{n}")
    t = time.time()
    old = spool.lease(lease_s=10, now=t)
    new = spool.lease(lease_s=100, now=t + 20)  # the old lease expired; a second sender took the items
    assert ids(new) == ids(old)

    # The first sender wakes up and settles: nothing of it may touch the items the second one holds.
    spool.settle(old, accepted=["r0"], retry={"r1": 0}, rejected={"r2": "invalid"}, now=t + 21)
    assert ids(spool.items()) == ["r0", "r1", "r2"]
    assert spool.stats().drops == {}
    assert spool.lease(now=t + 22).items == []  # still leased by the second sender
    assert all(i.attempts == 0 for i in spool.items())

    spool.settle(new, accepted=ids(new), now=t + 23)
    assert spool.items() == []


def test_concurrent_leases_hold_disjoint_items(spool: Spool) -> None:
    for n in range(4):
        put(spool, f"r{n}")
    t = time.time()
    a = spool.lease(max_items=2, now=t)
    b = other_spool(spool).lease(max_items=2, now=t)
    assert (ids(a), ids(b)) == (["r0", "r1"], ["r2", "r3"])

    # A settle naming the other lease's items touches none of them, and releases only its own.
    spool.settle(b, accepted=["r0"], retry={"r0": 5}, rejected={"r1": "invalid"}, now=t)
    assert ids(spool.items()) == ["r0", "r1", "r2", "r3"]
    assert spool.stats().drops == {}
    assert ids(spool.lease(now=t)) == ["r2", "r3"]  # r0, r1 are still held by lease a


def test_lease_bounds_items_and_bytes(spool: Spool) -> None:
    for n in range(5):
        put(spool, f"r{n}", data=b"x" * 100)
    assert ids(spool.lease(max_items=2)) == ["r0", "r1"]
    assert ids(spool.lease(max_bytes=250)) == ["r2", "r3"]
    put(spool, "big", data=b"x" * 1000)
    # A single item larger than the budget still goes out alone, so it cannot block the queue.
    assert ids(spool.lease(max_bytes=50)) == ["r4"]
    assert ids(spool.lease(max_bytes=50)) == ["big"]


def test_settle_after_opt_out_is_harmless(spool: Spool) -> None:
    put(spool, "a")
    put(spool, "b")
    lease = spool.lease()
    spool.consent.opt_out("sample")  # deletes both while they are out for sending
    spool.settle(lease, accepted=["a"], rejected={"b": "invalid"})
    assert [i.kind for i in spool.items()] == ["deletion"]
    drops = spool.stats().drops
    assert drops == {"opted-out": 2, "opted-out:sample": 2}  # no rejection counted for a deleted item


def test_concurrent_senders_deliver_each_item_once(spool: Spool) -> None:
    """Two senders (threads with their own connections) drain the queue: every item is handed out
    exactly once, as long as no lease expires."""
    for n in range(200):
        put(spool, f"r{n}")
    delivered: list[list[str]] = [[], []]
    errors: list[BaseException] = []

    def sender(k: int) -> None:
        try:
            s = other_spool(spool)
            while True:
                lease = s.lease(max_items=7)
                if not lease.items:
                    break
                delivered[k].extend(ids(lease))
                s.settle(lease, accepted=ids(lease))
            s.db.close()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
    assert not errors
    assert not any(th.is_alive() for th in threads)
    assert not set(delivered[0]) & set(delivered[1])
    assert sorted(delivered[0] + delivered[1]) == sorted(f"r{n}" for n in range(200))
    assert spool.items() == []


# -- consent at the spool boundary -------------------------------------------------------------------------


def test_put_for_a_product_not_opted_in_is_refused(spool: Spool) -> None:
    guid = spool.consent.guid()
    assert guid is not None
    assert spool.put_report("a", "never", guid, DATA, consent_epoch=epoch(spool, "never")) is False
    spool.consent.opt_in("other")
    spool.consent.opt_out("other")
    assert spool.put_report("b", "other", guid, DATA, consent_epoch=epoch(spool, "other")) is False
    assert spool.items(product="never") == [] and spool.stats().reports == 0
    drops = spool.stats().drops
    assert drops["not-opted-in"] == 2
    assert drops["not-opted-in:never"] == 1 and drops["not-opted-in:other"] == 1


def test_put_with_a_guid_replaced_by_reset_id_is_refused(spool: Spool) -> None:
    old = spool.consent.guid()
    assert old is not None
    new = spool.consent.reset_id()
    assert new != old and spool.consent.guid() == new
    assert spool.put_report("a", "sample", old, DATA, consent_epoch=epoch(spool, "sample")) is False
    assert spool.put_report("b", "sample", new, DATA, consent_epoch=epoch(spool, "sample")) is True
    assert ids([i for i in spool.items() if i.kind == "report"]) == ["b"]  # and the old GUID's deletion
    assert spool.stats().drops == {"stale-guid": 1, "stale-guid:sample": 1}


def test_a_report_recorded_before_an_opt_out_and_re_opt_in_is_refused(spool: Spool) -> None:
    """Another product keeps the GUID alive, so only the consent epoch can tell the data is from before."""
    spool.consent.opt_in("other")
    guid, before = spool.consent.guid(), epoch(spool, "sample")
    assert guid is not None
    spool.consent.opt_out("sample")
    spool.consent.opt_in("sample")
    assert spool.consent.guid() == guid
    assert spool.put_report("a", "sample", guid, DATA, consent_epoch=before) is False
    assert spool.put_report("b", "sample", guid, DATA, consent_epoch=epoch(spool, "sample")) is True
    assert [i.item_id for i in spool.items() if i.kind == "report"] == ["b"]
    assert spool.stats().drops["stale-consent:sample"] == 1


def test_put_with_the_guid_of_before_an_opt_out_is_refused(spool: Spool) -> None:
    old = spool.consent.guid()
    assert old is not None
    spool.consent.opt_out("sample")
    assert (
        spool.put_report("a", "sample", old, DATA, consent_epoch=epoch(spool, "sample")) is False
    )  # not opted in any more
    spool.consent.opt_in("sample")
    assert spool.consent.guid() not in (None, old)
    assert (
        spool.put_report("b", "sample", old, DATA, consent_epoch=epoch(spool, "sample")) is False
    )  # opted in again, but a report of before
    assert spool.stats().reports == 0
    drops = spool.stats().drops
    assert drops["not-opted-in:sample"] == 1 and drops["stale-guid:sample"] == 1


@pytest.mark.parametrize("policy", [Policy(force_off=True), Policy(off_products=frozenset({"sample"}))])
def test_put_under_a_policy_cap_is_refused(spool: Spool, policy: Policy) -> None:
    capped = other_spool(spool, policy=policy)
    assert put(capped, "a") is False
    assert capped.stats().reports == 0
    assert capped.stats().drops["not-opted-in:sample"] == 1
    capped.db.close()


@pytest.fixture
def mixed(spool: Spool) -> Spool:
    """3 reports of ``sample``, 2 of ``other`` (both opted in) and one deletion request of ``gone``."""
    spool.consent.opt_in("other")
    spool.consent.opt_in("gone")
    for n in range(3):
        put(spool, f"s{n}")
    for n in range(2):
        put(spool, f"o{n}", product="other")
    spool.consent.opt_out("gone")
    return spool


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (None, ["s0", "s1", "s2", "o0", "o1", "deletion"]),
        (Policy(off_products=frozenset({"sample"})), ["o0", "o1", "deletion"]),
        (Policy(off_products=frozenset({"sample", "other"})), ["deletion"]),
        (Policy(force_off=True), ["deletion"]),
    ],
)
def test_lease_hands_out_capped_products_never_and_deletions_always(
    mixed: Spool, policy: Policy | None, expected: list[str]
) -> None:
    sender = other_spool(mixed, policy=policy or Policy())
    lease = sender.lease()
    assert [i.item_id if i.kind == "report" else i.kind for i in lease.items] == expected
    assert mixed.stats().reports == 5  # a cap withholds reports; it does not delete them
    sender.db.close()


@pytest.mark.parametrize(
    ("policy", "expected"),
    [(Policy(force_off=True), ["deletion"]), (Policy(off_products=frozenset({"sample"})), ["o0", "o1", "deletion"])],
)
def test_capped_reports_do_not_starve_what_is_queued_behind_them(
    mixed: Spool, policy: Policy, expected: list[str]
) -> None:
    """Regression: the cap was applied after ``LIMIT``, so a batch filled by the capped reports at the head
    of the queue came back empty, and the deletion request behind them was never sent."""
    sender = other_spool(mixed, policy=policy)
    lease = sender.lease(max_items=len(expected))
    assert [i.item_id if i.kind == "report" else i.kind for i in lease.items] == expected
    sender.db.close()


def test_lease_never_hands_out_reports_of_a_product_not_opted_in(mixed: Spool) -> None:
    """Defence in depth: even a report that got in without ``put_report`` (``gone`` is opted out, ``never``
    never opted in) is not handed out; the deletion request is."""
    guid = mixed.consent.guid()

    def sneak(conn: object) -> None:
        insert_item(conn, "g0", "report", "gone", guid, DATA)  # type: ignore[arg-type]
        insert_item(conn, "n0", "report", "never", guid, DATA)  # type: ignore[arg-type]

    mixed.db.write(sneak)
    mixed.consent.opt_out("sample")
    mixed.consent.opt_out("other")
    leased = [(i.kind, i.product) for i in mixed.lease().items]
    assert leased == [("deletion", "gone"), ("deletion", "sample"), ("deletion", "other")]


# -- quotas --------------------------------------------------------------------------------------------------


def quota_spool(spool: Spool, **quotas: float) -> Spool:
    return other_spool(spool, quotas=Quotas(**quotas))  # type: ignore[arg-type]


def test_quota_count_drops_the_oldest(spool: Spool) -> None:
    q = quota_spool(spool, max_reports=3)
    assert all(put(q, f"r{n}") for n in range(5))
    assert ids(q.items()) == ["r2", "r3", "r4"]
    assert q.stats().drops == {"quota-count": 2, "quota-count:sample": 2}


KIB = 1024


def test_quota_bytes_counts_the_disk_and_drops_the_oldest_not_the_largest(spool: Spool) -> None:
    base = spool.db.read(disk_bytes) + WAL_LIMIT_BYTES  # an empty database, and room for its log
    q = quota_spool(spool, max_bytes=base + 275 * KIB)
    put(q, "small-old", data=b"x" * 50 * KIB)
    put(q, "large", data=b"x" * 200 * KIB)
    put(q, "small-new", data=b"x" * 50 * KIB)  # 300 > 275: the oldest goes, though the large one would free more
    assert ids(q.items()) == ["large", "small-new"]
    assert q.stats().bytes == 250 * KIB
    assert 250 * KIB < q.db.read(disk_bytes) + WAL_LIMIT_BYTES <= base + 275 * KIB  # data and bookkeeping
    put(q, "another", data=b"x" * 100 * KIB)  # 350 > 275: now the large one is the oldest
    assert ids(q.items()) == ["small-new", "another"]
    assert q.stats().drops == {"quota-bytes": 2, "quota-bytes:sample": 2}


def test_the_byte_quota_bounds_the_files_on_disk(spool: Spool) -> None:
    quota = WAL_LIMIT_BYTES + 2_000_000
    q = quota_spool(spool, max_bytes=quota)
    for n in range(300):  # 6 MB offered, in reports of 20 KiB
        assert put(q, f"r{n}", data=bytes([n % 251]) * 20 * KIB)
    stats = q.stats()
    assert 80 <= stats.reports < 100
    assert stats.drops["quota-bytes"] == 300 - stats.reports
    q.db.compact()
    files = [Path(f"{q.db.path}{suffix}").stat().st_size for suffix in ("", "-wal")]
    assert files[0] <= quota - WAL_LIMIT_BYTES + 64 * KIB  # the pages in use, and a few free ones
    assert files[1] <= WAL_LIMIT_BYTES
    assert q.stats().disk_bytes <= quota


def test_a_bulk_removal_gives_the_space_back(spool: Spool) -> None:
    for n in range(1200):
        put(spool, f"r{n}", data=b"y" * 4 * KIB)
    db_file = spool.db.path
    full = db_file.stat().st_size
    assert spool.purge() == 1200
    assert db_file.stat().st_size < full / 4
    assert Path(f"{db_file}-wal").stat().st_size <= WAL_LIMIT_BYTES


def test_running_totals_follow_every_writer(spool: Spool) -> None:
    """Totals are kept by triggers, so a removal by consent (not by the spool) is counted too."""
    spool.consent.opt_in("other")
    for n in range(5):
        put(spool, f"s{n}", data=b"s" * 10)
        put(spool, f"o{n}", product="other", data=b"o" * 7)
    spool.consent.opt_out("other")  # deletes its reports in consent's own transaction, queues a deletion
    stats = spool.stats()
    assert (stats.reports, stats.deletions, stats.by_product) == (5, 1, {"sample": 5})
    assert stats.bytes == 50 + len(next(i for i in spool.items() if i.kind == "deletion").data)
    assert stats == scanned_stats(spool)


def scanned_stats(spool: Spool) -> SpoolStats:
    """The totals the slow way, to check the running ones against."""
    items = spool.items()
    reports = [i for i in items if i.kind == "report"]
    by_product: dict[str, int] = {}
    for i in reports:
        by_product[i.product] = by_product.get(i.product, 0) + 1
    stats = spool.stats()
    return SpoolStats(
        reports=len(reports),
        deletions=len(items) - len(reports),
        bytes=sum(len(i.data) for i in items),
        by_product=by_product,
        drops=stats.drops,
        last_upload=stats.last_upload,
        next_attempt=stats.next_attempt,
        waiting=stats.waiting,
        last_error=stats.last_error,
        last_error_at=stats.last_error_at,
        disk_bytes=stats.disk_bytes,
    )


def test_a_database_from_before_the_running_totals_is_counted_when_opened(spool: Spool) -> None:
    for n in range(3):
        put(spool, f"r{n}", data=b"z" * 10)
    spool.db.close()
    conn = sqlite3.connect(spool.db.path)
    conn.executescript(
        "DROP TRIGGER spool_totals_insert; DROP TRIGGER spool_totals_delete; DROP TABLE spool_totals; "
        "DROP INDEX spool_age; DROP INDEX spool_due; PRAGMA user_version = 0;"
    )
    conn.close()
    reopened = other_spool(spool)
    assert (reopened.stats().reports, reopened.stats().bytes) == (3, 30)
    assert put(reopened, "r3", data=b"z" * 10)
    assert reopened.stats() == scanned_stats(reopened)


def test_quota_age_drops_the_old(spool: Spool) -> None:
    q = quota_spool(spool, max_age_s=100)
    t = time.time()
    put(q, "t0", now=t)
    put(q, "t50", now=t + 50)
    put(q, "t120", now=t + 120)  # t0 is now 120 s old
    assert ids(q.items()) == ["t50", "t120"]
    put(q, "t155", now=t + 155)  # t50 is 105 s old
    assert ids(q.items()) == ["t120", "t155"]
    assert q.stats().drops == {"quota-age": 2, "quota-age:sample": 2}


def test_quotas_count_per_product(spool: Spool) -> None:
    spool.consent.opt_in("other")
    q = quota_spool(spool, max_reports=2)
    put(q, "s0")
    put(q, "o0", product="other")
    put(q, "s1")
    put(q, "o1", product="other")
    assert ids(q.items()) == ["s1", "o1"]
    assert q.stats().drops == {"quota-count": 2, "quota-count:sample": 1, "quota-count:other": 1}


def test_quotas_never_drop_deletion_requests(spool: Spool) -> None:
    spool.consent.opt_in("other")
    spool.consent.opt_out("other")  # a deletion request of ~150 bytes, created now
    deletion = spool.items()[0]
    assert deletion.kind == "deletion"

    q = quota_spool(spool, max_reports=1, max_age_s=10)
    t = time.time() + 1000  # the deletion request is far older than max_age_s
    for n in range(4):
        assert put(q, f"r{n}", data=b"x" * 10, now=t + n)
    assert [i.item_id for i in q.items()] == [deletion.item_id, "r3"]
    stats = q.stats()
    assert (stats.deletions, stats.reports) == (1, 1)
    assert stats.drops["quota-count"] == 3

    tiny = quota_spool(spool, max_bytes=20)  # less than the database itself: every report is pushed out
    assert put(tiny, "r4", data=b"x" * 10, now=t + 4)
    assert [i.item_id for i in tiny.items()] == [deletion.item_id]
    assert tiny.stats().drops["quota-bytes"] == 2  # r3 and r4


# -- opt-out -----------------------------------------------------------------------------------------------


def test_opt_out_deletes_the_products_reports_and_queues_one_deletion(spool: Spool) -> None:
    consent = spool.consent
    consent.opt_in("other")
    guid = consent.guid()
    for n in range(3):
        put(spool, f"s{n}")
    for n in range(2):
        put(spool, f"o{n}", product="other")

    change = consent.opt_out("sample")
    assert (change.before, change.after) == (State.IN, State.OUT)
    assert (change.reports_deleted, change.deletion_queued, change.guid_discarded) == (3, True, False)
    items = spool.items()
    assert [(i.kind, i.product) for i in items] == [("report", "other")] * 2 + [("deletion", "sample")]
    deletion = items[-1]
    assert deletion.guid == guid
    request = decode_item(deletion.data)
    assert isinstance(request, DeletionRequest)
    assert (request.guid, request.product, request.request_id) == (guid, "sample", deletion.item_id)
    assert spool.stats().drops == {"opted-out": 3, "opted-out:sample": 3}
    assert consent.guid() == guid  # ``other`` still participates

    again = consent.opt_out("sample")  # a second opt-out asks for nothing more
    assert (again.before, again.reports_deleted, again.deletion_queued) == (State.OUT, 0, False)
    assert spool.stats().deletions == 1

    last = consent.opt_out("other")
    assert (last.reports_deleted, last.deletion_queued, last.guid_discarded) == (2, True, True)
    assert consent.guid() is None
    requests = [decode_item(i.data) for i in spool.items()]
    assert [(r.product, r.guid) for r in requests] == [("sample", guid), ("other", guid)]  # type: ignore[union-attr]

    assert consent.opt_in("sample").guid_created
    assert consent.guid() not in (None, guid)


def test_opting_out_a_product_never_opted_in_queues_nothing(spool: Spool) -> None:
    change = spool.consent.opt_out("never")
    assert (change.before, change.deletion_queued) == (State.UNSET, False)
    assert spool.items() == []
    assert spool.consent.guid() is not None  # ``sample`` still participates


def test_deletion_requests_are_leased_and_settled_like_reports(spool: Spool) -> None:
    spool.consent.opt_out("sample")
    lease = spool.lease()
    assert [i.kind for i in lease.items] == ["deletion"]
    spool.settle(lease, accepted=ids(lease))
    assert spool.items() == []


# -- purge -------------------------------------------------------------------------------------------------


def test_purge_all_keeps_deletion_requests(mixed: Spool) -> None:
    assert mixed.purge() == 5
    assert [i.kind for i in mixed.items()] == ["deletion"]
    drops = mixed.stats().drops
    assert (drops["purged"], drops["purged:sample"], drops["purged:other"]) == (5, 3, 2)


def test_purge_one_product(mixed: Spool) -> None:
    assert mixed.purge("sample") == 3
    assert [i.item_id if i.kind == "report" else i.kind for i in mixed.items()] == ["o0", "o1", "deletion"]
    assert mixed.stats().drops == {"purged": 3, "purged:sample": 3}
    assert mixed.purge("sample") == 0
    assert mixed.stats().drops["purged"] == 3


def test_count_drop_for_reports_dropped_before_the_spool(spool: Spool) -> None:
    spool.count_drop("scrubbed", "sample", 2)
    spool.count_drop("scrubbed", "sample")
    assert spool.stats().drops == {"scrubbed": 3, "scrubbed:sample": 3}


# -- a model: nothing acknowledged is ever lost without a counted reason ------------------------------------


class SpoolMachine(RuleBasedStateMachine):
    """Random puts, leases, settles, clock jumps, opt-outs and purges. Invariant: every report the spool
    acknowledged is still queued, or was accepted by a transport, or is counted among the drops."""

    @initialize()
    def setup(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="ceip-spool-model-"))
        Consent(StateDB(self.home), Policy()).opt_in("sample")
        room = StateDB(self.home).read(disk_bytes) + WAL_LIMIT_BYTES + 40 * KIB
        self.spool = Spool(StateDB(self.home), quotas=Quotas(max_reports=6, max_bytes=room), policy=Policy())
        self.now = time.time()
        self.n = 0
        self.acked: set[str] = set()
        self.accepted: set[str] = set()
        self.leases: list[Lease] = []
        self.rejected_deletions = 0

    def teardown(self) -> None:
        if hasattr(self, "spool"):
            self.spool.db.close()
            shutil.rmtree(self.home, ignore_errors=True)

    @rule(size=st.integers(1, 12 * KIB))
    def put(self, size: int) -> None:
        item_id = f"r{self.n}"
        self.n += 1
        guid = self.spool.consent.guid()
        if self.spool.put_report(
            item_id, "sample", guid or "-", b"x" * size, consent_epoch=epoch(self.spool, "sample"), now=self.now
        ):
            self.acked.add(item_id)
        else:
            assert guid is None

    @rule(max_items=st.integers(1, 4))
    def lease(self, max_items: int) -> None:
        lease = self.spool.lease(max_items=max_items, lease_s=30, now=self.now)
        held = {i.item_id for live in self.leases if live.expires > self.now for i in live.items}
        assert not held & set(ids(lease)), "an item was leased twice"
        self.leases.append(lease)

    @precondition(lambda self: self.leases)
    @rule(data=st.data())
    def settle(self, data: st.DataObject) -> None:
        lease = self.leases.pop(data.draw(st.integers(0, len(self.leases) - 1)))
        outcome = {i: data.draw(st.sampled_from(["accepted", "retry", "rejected", "none"])) for i in ids(lease)}
        kinds = {i.item_id: i.kind for i in self.spool.items()}
        self.spool.settle(
            lease,
            accepted=[i for i, o in outcome.items() if o == "accepted"],
            retry={i: 10 for i, o in outcome.items() if o == "retry"},
            rejected={i: "bad" for i, o in outcome.items() if o == "rejected"},
            now=self.now,
        )
        gone = set(kinds) - {i.item_id for i in self.spool.items()}
        self.accepted |= {i for i, o in outcome.items() if o == "accepted" and i in gone and kinds[i] == "report"}
        self.rejected_deletions += sum(
            o == "rejected" and i in gone and kinds[i] == "deletion" for i, o in outcome.items()
        )

    @rule(seconds=st.sampled_from([1, 11, 31]))
    def tick(self, seconds: int) -> None:
        self.now += seconds

    @rule()
    def opt_out_and_in(self) -> None:
        self.spool.consent.opt_out("sample")
        self.spool.consent.opt_in("sample")

    @rule()
    def purge(self) -> None:
        self.spool.purge()

    @invariant()
    def nothing_lost_without_a_reason(self) -> None:
        if not hasattr(self, "spool"):
            return
        queued = {i.item_id for i in self.spool.items() if i.kind == "report"}
        # Per-product counts (``reason:sample``) of everything removed without delivery.
        counted = sum(n for key, n in self.spool.stats().drops.items() if key.endswith(":sample"))
        counted -= self.rejected_deletions  # the receiver may reject a deletion request too
        assert queued <= self.acked
        assert len(self.acked) == len(queued) + len(self.accepted) + counted
        assert self.spool.stats() == scanned_stats(self.spool)


SpoolMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_spool_model = SpoolMachine.TestCase


# -- streaming (ceip review) --------------------------------------------------------------------------------


def test_stream_reads_in_batches_oldest_first_per_product(spool: Spool) -> None:
    Consent(spool.db).opt_in("other")
    for n in range(7):
        assert put(spool, f"r{n}", "sample" if n % 3 else "other")
    assert ids(list(spool.stream(batch=2))) == [f"r{n}" for n in range(7)]
    assert ids(list(spool.stream("sample", batch=2))) == ["r1", "r2", "r4", "r5"]
    assert ids(list(spool.stream("other", batch=1))) == ["r0", "r3", "r6"]
    assert list(spool.stream("nothing")) == []
    assert list(spool.stream(batch=3)) == spool.items()


def test_stream_sees_what_changed_between_batches(spool: Spool) -> None:
    for n in range(4):
        assert put(spool, f"r{n}")
    stream = spool.stream(batch=2)
    assert [next(stream).item_id, next(stream).item_id] == ["r0", "r1"]
    spool.purge()  # between two batches: what is gone is not shown
    assert put(spool, "r4")  # ... and what was queued meanwhile is, at the end
    assert ids(list(stream)) == ["r4"]
