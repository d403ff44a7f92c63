"""Data that ages out: raw reports and per-machine rows older than the retention window are deleted, rollups stay.

A vendor keeps what a report *said* (the per-day totals and distinct-machine counts) and not, for ever,
which machine said it. So after ``retention_days`` (default :data:`DEFAULT_RETENTION_DAYS`) a report's raw
body and its machine's per-day rows (``machine_days``, ``problem_days``) are deleted, and
a machine with no active day left inside the window loses its ``reach_state`` too: it is no longer tracked,
so it stops counting as active (popcon stops counting a machine after 20 silent days), and if it reports
again it is filed as a new machine. Totals, histograms and ``reach`` of the old days are kept: they name no
machine.

It runs inside every ``ceip serve`` worker, in the group committer's quiet moments (``groupcommit``): one
bounded transaction of at most ``batch`` rows at a time, never while requests wait to be committed, so
ingest never stalls behind it. Workers sharing a PostgreSQL database may age concurrently: deleting rows
that another worker deleted first is a no-op. The clock is a parameter, so tests move time instead of
waiting for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ceip_core.service.rollups import DAY_S
from ceip_core.service.storage import Storage

log = logging.getLogger(__name__)

#: How long raw reports and per-machine rows are kept, in days, unless the operator says otherwise.
DEFAULT_RETENTION_DAYS = 90
#: The per-machine rollup tables that age out with the raw reports (keys ``product, day, guid ...``).
AGED_TABLES = ("problem_days", "machine_days")
#: Every product with tracked machines, read from the key's leading column without scanning the table.
PRODUCTS_SQL = (
    "WITH RECURSIVE p (x) AS (SELECT MIN(product) FROM reach_state UNION ALL "
    "SELECT (SELECT MIN(product) FROM reach_state WHERE product > p.x) FROM p WHERE p.x IS NOT NULL) "
    "SELECT x FROM p WHERE x IS NOT NULL"
)
#: Machines of one product after a GUID, in key order: the keyset cursor of the silent-machine pass.
MACHINES_SQL = "SELECT guid FROM reach_state WHERE product = :product AND guid > :after ORDER BY guid LIMIT :limit"
#: Raw reports before a day, folded ones only (a queued report is folded first, then aged), at most ``limit``.
OLD_REPORTS_SQL = (
    "DELETE FROM reports WHERE seq IN (SELECT seq FROM reports WHERE day < :before "
    "AND seq NOT IN (SELECT seq FROM rollup_queue) LIMIT :limit)"
)
#: A quarantined report that aged out leaves its quarantine row (the quarantine is small: a scan is cheap).
ORPHANED_QUARANTINE_SQL = "DELETE FROM quarantine WHERE seq NOT IN (SELECT seq FROM reports)"


def delete_old(table: str, row_id: str) -> str:
    """The bounded delete of ``table``'s rows of one product before a day (``:product``, ``:before``,
    ``:limit``); ``row_id`` is the dialect's physical row id (``rowid`` on SQLite, ``ctid`` on PostgreSQL)."""
    select = f"SELECT {row_id} FROM {table} WHERE product = :product AND day < :before LIMIT :limit"
    return f"DELETE FROM {table} WHERE {row_id} IN ({select})"


class Aging:
    """When the next bounded aging step is due, and what it deletes; driven by the group committer."""

    def __init__(
        self,
        storage: Storage,
        retention_days: int = DEFAULT_RETENTION_DAYS,
        *,
        clock: Callable[[], float] = time.time,
        batch: int = 2000,
        every_s: float = 3600,
    ) -> None:
        """:param every_s: after a pass finds nothing more to delete, how long until the next one starts."""
        self.storage = storage
        self.retention_days = retention_days
        self.clock = clock
        self.batch = batch
        self.every_s = every_s
        self._next = 0.0  # a pass is due at start: the service may have been down for a while

    @property
    def cutoff_day(self) -> int:
        """The first day still inside the window (days since the epoch)."""
        return self._cutoff(self.clock())

    def _cutoff(self, now: float) -> int:
        return int(now // DAY_S) - self.retention_days + 1

    def due(self) -> bool:
        return self.retention_days > 0 and self.clock() >= self._next

    def wait(self) -> float:
        """Seconds until the next step is due (on the injected clock; a test's clock may jump)."""
        return min(max(self._next - self.clock(), 0.0), self.every_s)

    def postpone(self) -> None:
        """A step failed (the database is away): try again a minute later, not in a busy loop."""
        self._next = self.clock() + min(60.0, self.every_s)

    async def step(self) -> int:
        """One bounded transaction of aging; the rows it deleted. A short step ends the pass."""
        # One reading of the clock for the cutoff and for the next pass: a pass that deleted up to an old
        # cutoff while the clock moved on (a long step, a clock that jumped) must not put off the pass that
        # the new time makes due.
        now = self.clock()
        cutoff = self._cutoff(now)
        deleted = await self.storage.expire(cutoff, self.batch)
        if deleted < self.batch:
            self._next = now + self.every_s
        if deleted:
            log.info("aged out %d row(s) older than day %d", deleted, cutoff)
        return deleted
