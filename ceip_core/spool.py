"""The spool: a durable on-disk queue of encoded reports and deletion requests waiting to be sent.

A report is written here before any attempt to send it, and leaves only when (a) its transport
acknowledged it, (b) the receiver rejected it for good, (c) a quota pushed it out, oldest first, or
(d) its product's consent was withdrawn. Every removal other than (a) is counted with its reason.

Sending uses leases: :meth:`Spool.lease` hands out items and marks them for ``lease_s`` seconds;
:meth:`Spool.settle` then deletes the acknowledged ones and reschedules the rest. If the sender dies, the
lease runs out and the items are handed out again; the receiver's de-duplication by item id makes the
second delivery harmless. Nothing is lost, nothing is stored twice.

Standard library only; the spool stores bytes and knows nothing of records.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ceip_core import deletion_journal, sent_history, vendor_policy
from ceip_core.consent import Consent, Policy, read_guid
from ceip_core.spool_rows import count_drop, insert_item
from ceip_core.statedb import WAL_LIMIT_BYTES, StateDB


@dataclass(frozen=True)
class Quotas:
    """Bounds on what waits on the machine, enforced in the transaction that queues a report, from
    running totals and indexes (so that a full spool queues as fast as an empty one). When one is
    exceeded the oldest reports go first, each counted as a drop with the quota's name as reason.
    Deletion requests are exempt: they are tiny, and they are what a person asked for when opting out."""

    max_reports: int = 10_000
    max_bytes: int = 50_000_000
    """Bytes on disk: the pages of the state database in use (reports, their indexes and the
    bookkeeping beside them, not just the reports' encoded length) plus the most the write-ahead log
    beside it keeps after a checkpoint (``statedb.WAL_LIMIT_BYTES``, 4 MiB)."""
    max_age_s: float = 30 * 86400


#: A quota eviction or purge that removes at least this many items gives the space back at once.
_BULK_REMOVAL = 1000


@dataclass(frozen=True)
class SpooledItem:
    """One queued item as stored."""

    item_id: str
    kind: str
    product: str
    guid: str
    created: float
    attempts: int
    data: bytes


@dataclass(frozen=True)
class Lease:
    """Items handed to one sender until ``expires``; settle them with :meth:`Spool.settle`."""

    token: str
    expires: float
    items: list[SpooledItem]


@dataclass(frozen=True)
class SpoolStats:
    """What ``ceip status`` shows about the queue."""

    reports: int
    deletions: int
    bytes: int
    """The encoded length of everything queued."""
    by_product: dict[str, int]
    drops: dict[str, int] = field(default_factory=dict)
    """Removed items by ``reason`` (and ``reason:product`` for each product)."""
    last_upload: float | None = None
    next_attempt: float | None = None
    """When the earliest of the ``waiting`` items is tried again."""
    waiting: int = 0
    """Items waiting out a retry delay (their next try is in the future)."""
    last_error: str | None = None
    """Why the last try that left items to retry failed (a transport's reason: ``timeout``, ``http-503`` ...)."""
    last_error_at: float | None = None
    disk_bytes: int = 0
    """On disk now: the pages of the state database in use and its write-ahead log."""


def _settle_journal(folder: Path, conn: sqlite3.Connection, settled: list[str]) -> None:
    """Forget delivered deletion requests in the journal; empty it once none is queued."""
    if conn.execute("SELECT 1 FROM spool WHERE kind = 'deletion' LIMIT 1").fetchone() is None:
        deletion_journal.clear(folder)
    else:
        deletion_journal.done(folder, settled)


def disk_bytes(conn: sqlite3.Connection) -> int:
    """The pages of the database in use, in bytes (free pages, which SQLite reuses, are not counted).
    Read from the file's header: constant time however full the spool is."""
    pages = conn.execute("PRAGMA page_count").fetchone()[0] - conn.execute("PRAGMA freelist_count").fetchone()[0]
    return int(pages * conn.execute("PRAGMA page_size").fetchone()[0])


def _queued_reports(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COALESCE(SUM(items), 0) FROM spool_totals WHERE kind = 'report'").fetchone()[0])


def _drop_reports(conn: sqlite3.Connection, reports: str, args: tuple[float, ...], reason: str) -> int:
    """Delete ``reports`` (a table and condition that select one range of an index) and count them per
    product."""
    counts = conn.execute(f"SELECT product, COUNT(*) FROM {reports} GROUP BY product", args).fetchall()
    for product, n in counts:
        count_drop(conn, reason, product, n)
    conn.execute(f"DELETE FROM {reports}", args)
    return sum(n for _, n in counts)


# ``NOT INDEXED`` has the planner walk the table itself, ordered by ``seq``, from its start; it would
# otherwise pick an index on ``kind`` and visit (and sort) every report.
#: The oldest reports, in queue order.
_OLDEST = "SELECT seq, size FROM spool NOT INDEXED WHERE kind = 'report' ORDER BY seq"
#: The reports up to a ``seq``.
_UP_TO = "spool NOT INDEXED WHERE kind = 'report' AND seq <= ?"
#: The reports created before a time: a range of the age index.
_OLDER = "spool INDEXED BY spool_age WHERE kind = 'report' AND created < ?"


class Spool:
    """The queue in one state folder. Safe to use from several processes at once; one object per thread."""

    def __init__(self, db: StateDB | None = None, quotas: Quotas | None = None, policy: Policy | None = None) -> None:
        self.db = db or StateDB()
        self.quotas = quotas or Quotas()
        # Consent registers the backup restore on the database, so that a recreated spool keeps choices.
        self.consent = Consent(self.db, policy)

    # -- writing ------------------------------------------------------------------------------------

    def put_report(
        self, item_id: str, product: str, guid: str, data: bytes, *, consent_epoch: int, now: float | None = None
    ) -> bool:
        """Queue one encoded report. Returns False, and counts a drop, unless, *at the moment of writing*,
        ``product`` is opted in under the same ``consent_epoch`` the data was recorded under, and ``guid``
        is still the machine's GUID: a report recorded before an opt-out (even one followed by a new
        opt-in) or before a reset of the GUID is never queued after it."""
        now = time.time() if now is None else now
        allowed = self.consent.policy.allows(product)

        def work(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT state, epoch FROM consent WHERE product = ?", (product,)).fetchone()
            if not allowed or row is None or row[0] != "in":
                count_drop(conn, "not-opted-in", product)
                return False
            if row[1] != consent_epoch:
                count_drop(conn, "stale-consent", product)
                return False
            if read_guid(conn) != guid:
                count_drop(conn, "stale-guid", product)
                return False
            insert_item(conn, item_id, "report", product, guid, data, now)
            removed[0] = self._enforce_quotas(conn, now)
            return True

        removed = [0]
        queued = self.db.write(work)
        if removed[0] >= _BULK_REMOVAL:
            self.db.compact()
        return queued

    def count_drop(self, reason: str, product: str, n: int = 1) -> None:
        """Count a report that was dropped before it reached the spool (e.g. by a scrubber)."""
        self.db.write(lambda conn: count_drop(conn, reason, product, n))

    def _enforce_quotas(self, conn: sqlite3.Connection, now: float) -> int:
        """Apply the quotas after an insert; returns how many reports were pushed out. Every query here
        reads an index or the running totals, never the whole queue."""
        q = self.quotas
        removed = 0
        cutoff = now - q.max_age_s
        if conn.execute("SELECT 1 FROM spool WHERE kind = 'report' AND created < ? LIMIT 1", (cutoff,)).fetchone():
            removed += _drop_reports(conn, _OLDER, (cutoff,), "quota-age")
        excess = _queued_reports(conn) - q.max_reports
        if excess > 0:
            last = conn.execute(f"{_OLDEST} LIMIT 1 OFFSET ?", (excess - 1,)).fetchone()[0]
            removed += _drop_reports(conn, _UP_TO, (last,), "quota-count")
        while (over := disk_bytes(conn) + WAL_LIMIT_BYTES - q.max_bytes) > 0:
            # Walk from the oldest until their length covers the excess; pages are freed only as they empty,
            # so measure again and go on if need be.
            last = None
            for seq, size in conn.execute(f"{_OLDEST} LIMIT 256"):
                last, over = seq, over - size
                if over <= 0:
                    break
            if last is None:
                break  # nothing left to push out: the rest is bookkeeping and deletion requests
            removed += _drop_reports(conn, _UP_TO, (last,), "quota-bytes")
        return removed

    # -- sending ------------------------------------------------------------------------------------

    def lease(
        self,
        max_items: int = 500,
        max_bytes: int = 8_000_000,
        lease_s: float = 120,
        now: float | None = None,
        *,
        due_only: bool = True,
    ) -> Lease:
        """Hand out up to ``max_items`` ready items, oldest first: deletion requests always; reports only
        for products that are opted in, not capped by the machine policy, not disabled by the vendor
        (``ceip_core.vendor_policy``), and with no deletion request queued for the same machine and
        product (a report never overtakes the deletion request that was made before it). With
        ``due_only=False``, items waiting out a retry delay are handed out too."""
        now = time.time() if now is None else now
        token = uuid.uuid4().hex
        policy = self.consent.policy

        def work(conn: sqlite3.Connection) -> list[SpooledItem]:
            # Both policies are applied in SQL, before LIMIT: held-back reports at the head of the queue
            # must not fill the batch and starve the deletion requests (and allowed reports) behind them.
            held = sorted(policy.off_products | vendor_policy.read(conn).disabled)
            reports_ok = (
                "0"
                if policy.force_off
                else f"c.state = 'in' AND s.product NOT IN ({', '.join('?' * len(held))}) AND NOT EXISTS "
                "(SELECT 1 FROM spool d WHERE d.kind = 'deletion' AND d.product = s.product AND d.guid = s.guid)"
            )
            rows = conn.execute(
                "SELECT s.seq, s.item_id, s.kind, s.product, s.guid, s.created, s.attempts, s.data FROM spool s "
                "LEFT JOIN consent c ON c.product = s.product "
                f"WHERE s.not_before <= ? AND s.lease_until <= ? AND (s.kind = 'deletion' OR ({reports_ok})) "
                "ORDER BY s.seq LIMIT ?",
                (now if due_only else float("inf"), now, *([] if policy.force_off else held), max_items),
            ).fetchall()
            items: list[SpooledItem] = []
            total = 0
            for _seq, item_id, kind, product, guid, created, attempts, data in rows:
                if items and total + len(data) > max_bytes:
                    break
                items.append(SpooledItem(item_id, kind, product, guid, created, attempts, bytes(data)))
                total += len(data)
            conn.executemany(
                "UPDATE spool SET lease_until = ?, lease_token = ? WHERE item_id = ?",
                [(now + lease_s, token, i.item_id) for i in items],
            )
            return items

        return Lease(token, now + lease_s, self.db.write(work))

    def settle(
        self,
        lease: Lease,
        accepted: Iterable[str] = (),
        retry: Mapping[str, float] | None = None,
        rejected: Mapping[str, str] | None = None,
        now: float | None = None,
        destination: str | None = None,
    ) -> None:
        """Apply a transport's results: delete ``accepted``, keeping them in the sent history with
        ``destination`` (``ceip_core.sent_history``); reschedule ``retry`` (item id -> delay in seconds);
        delete ``rejected`` (item id -> reason) and count each reason. Items of the lease that appear
        nowhere are released for another try at once. Items deleted meanwhile (an opt-out) are simply gone."""
        now = time.time() if now is None else now
        retry = retry or {}
        rejected = rejected or {}
        accepted = set(accepted)
        products = {i.item_id: i.product for i in lease.items}

        def work(conn: sqlite3.Connection) -> None:
            mine = "item_id = ? AND lease_token = ?"
            if accepted:
                sent_history.record_accepted(conn, accepted, lease.token, sent_history.destination_of(destination), now)
            conn.executemany(f"DELETE FROM spool WHERE {mine}", [(i, lease.token) for i in accepted])
            for item_id, reason in rejected.items():
                if conn.execute(f"DELETE FROM spool WHERE {mine}", (item_id, lease.token)).rowcount:
                    count_drop(conn, f"rejected:{reason}", products.get(item_id, "?"))
            reschedule = "UPDATE spool SET lease_until = 0, lease_token = NULL, attempts = attempts + 1, not_before = ?"
            conn.executemany(
                f"{reschedule} WHERE {mine}",
                [(now + delay, i, lease.token) for i, delay in retry.items()],
            )
            conn.execute("UPDATE spool SET lease_until = 0, lease_token = NULL WHERE lease_token = ?", (lease.token,))
            if accepted:
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_upload', ?)", (repr(now),))

        self.db.write(work)
        # Only after the commit: a request is forgotten by the journal once the database no longer has it.
        settled = [
            i.item_id for i in lease.items if i.kind == "deletion" and (i.item_id in accepted or i.item_id in rejected)
        ]
        if settled:
            self.db.write(lambda conn: _settle_journal(self.db.folder, conn, settled))

    def reset_backoff(self, now: float | None = None) -> None:
        """The receiver accepted items again: items waiting out a retry delay are due now, with their
        backoff started afresh (a backoff measures one outage, not every outage an item has seen)."""
        now = time.time() if now is None else now
        self.db.write(
            lambda conn: conn.execute(
                "UPDATE spool SET attempts = 0, not_before = MIN(not_before, ?) "
                "WHERE attempts > 0 AND lease_until <= ?",
                (now, now),
            )
        )

    # -- inspecting and purging ---------------------------------------------------------------------

    def items(self, product: str | None = None) -> list[SpooledItem]:
        """Everything queued (for ``ceip review``), oldest first, optionally for one product."""
        query = "SELECT item_id, kind, product, guid, created, attempts, data FROM spool"
        args: tuple[str, ...] = ()
        if product is not None:
            query += " WHERE product = ?"
            args = (product,)
        rows = self.db.read(lambda conn: conn.execute(query + " ORDER BY seq", args).fetchall())
        return [
            SpooledItem(i, kind, prod, guid, created, attempts, bytes(data))
            for i, kind, prod, guid, created, attempts, data in rows
        ]

    def stream(self, product: str | None = None, batch: int = 500) -> Iterator[SpooledItem]:
        """Everything queued, oldest first, optionally for one product, read ``batch`` items per read
        transaction: ``ceip review`` holds one batch in memory however full the spool is. An item removed
        meanwhile is not seen; one queued meanwhile is, at the end."""
        # ``NOT INDEXED``: walk the table by ``seq`` from the last one seen (a seek, not a scan), filtering
        # the product on the way, instead of sorting the product's whole index range for every batch.
        query = "SELECT seq, item_id, kind, product, guid, created, attempts, data FROM spool NOT INDEXED WHERE seq > ?"
        query += " AND product = ? ORDER BY seq LIMIT ?" if product is not None else " ORDER BY seq LIMIT ?"

        def page(after: int) -> list[tuple[Any, ...]]:
            args = (after, product, batch) if product is not None else (after, batch)
            return self.db.read(lambda conn: conn.execute(query, args).fetchall())

        after = 0
        while rows := page(after):
            for _seq, i, kind, prod, guid, created, attempts, data in rows:
                yield SpooledItem(i, kind, prod, guid, created, attempts, bytes(data))
            if len(rows) < batch:
                return
            after = rows[-1][0]

    def note_retry(self, reason: str, now: float | None = None) -> None:
        """Remember why items were kept for a later try, for ``ceip status`` and ``ceip upload``."""
        value = f"{time.time() if now is None else now!r} {reason}"
        self.db.write(
            lambda conn: conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_retry', ?)", (value,))
        )

    def products(self) -> set[str]:
        """Every product with something queued."""
        return self.db.read(lambda conn: {p for (p,) in conn.execute("SELECT DISTINCT product FROM spool")})

    def stats(self, now: float | None = None) -> SpoolStats:
        """The queue's totals, read from the running totals and indexes (constant time in its length), and
        its retry state; ``waiting`` and ``next_attempt`` are as seen at ``now``."""
        now = time.time() if now is None else now

        def work(conn: sqlite3.Connection) -> SpoolStats:
            by_kind: dict[str, int] = {}
            by_product: dict[str, int] = {}
            size = 0
            for kind, product, n, item_bytes in conn.execute(
                "SELECT kind, product, items, bytes FROM spool_totals WHERE items > 0 ORDER BY product"
            ):
                by_kind[kind] = by_kind.get(kind, 0) + n
                size += item_bytes
                if kind == "report":
                    by_product[product] = n
            drops: dict[str, int] = {}
            for reason, product, n in conn.execute("SELECT reason, product, count FROM drops ORDER BY reason, product"):
                drops[reason] = drops.get(reason, 0) + n
                if product != "*":
                    drops[f"{reason}:{product}"] = n
            last = conn.execute("SELECT value FROM meta WHERE key = 'last_upload'").fetchone()
            waiting, nxt = conn.execute(
                "SELECT COUNT(*), MIN(not_before) FROM spool WHERE not_before > ?", (now,)
            ).fetchone()
            error = conn.execute("SELECT value FROM meta WHERE key = 'last_retry'").fetchone()
            error_at, _, reason = error[0].partition(" ") if error else (None, "", None)
            return SpoolStats(
                reports=by_kind.get("report", 0),
                deletions=by_kind.get("deletion", 0),
                bytes=size,
                by_product=by_product,
                drops=drops,
                last_upload=float(last[0]) if last else None,
                next_attempt=nxt,
                waiting=waiting,
                last_error=reason,
                last_error_at=float(error_at) if error_at is not None else None,
                disk_bytes=disk_bytes(conn) + self._wal_bytes(),
            )

        return self.db.read(work)

    def _wal_bytes(self) -> int:
        try:
            return os.path.getsize(f"{self.db.path}-wal")
        except OSError:
            return 0

    def purge(self, product: str | None = None) -> int:
        """Delete queued reports (of one product, or all) without sending them; deletion requests stay,
        since they carry a promise made to the person. Returns how many were deleted."""

        def work(conn: sqlite3.Connection) -> int:
            where, args = (
                ("kind = 'report'", ()) if product is None else ("kind = 'report' AND product = ?", (product,))
            )
            counts = conn.execute(
                f"SELECT product, COUNT(*) FROM spool WHERE {where} GROUP BY product", args
            ).fetchall()
            for prod, n in counts:
                count_drop(conn, "purged", prod, n)
            conn.execute(f"DELETE FROM spool WHERE {where}", args)
            return sum(n for _, n in counts)

        purged = self.db.write(work)
        if purged >= _BULK_REMOVAL:
            self.db.compact()
        return purged
