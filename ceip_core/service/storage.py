"""The one small storage interface of the receiving service, and what its implementations share.

Two implementations pass the same test suite (tests/service): SQLite (``sqlite:///path.db``, embedded,
zero setup) and PostgreSQL (``postgresql://...``, shared by many ``ceip serve`` workers). A database URL
picks one in ``stores``, above both, so that neither this module nor the code that uses a
:class:`Storage` imports them. What they share lives here and beside them: the rollup tables and how
reports become rollup rows (``rollups``), and every query (``queries``), written once in the SQL both
databases speak, with ``:name`` parameters.

Storing a report is two steps. ``write`` inserts the raw report and queues it for rollup in one
transaction; that commit is what the service acknowledges, so it must stay cheap. ``roll_up`` later
folds queued reports into the rollups, many at a time, and queries call it first, so an answer always
includes every acknowledged report.

The fold reads what validation produced, never a second parse: ``write`` keeps each new report's
decoded struct (:class:`Held`) for ``roll_up`` to take, and only a report this process does not hold (it
restarted, another worker stored it, the rollups are being rebuilt) is read back from its stored body, by
the ingest decoder itself (``validation.decode_stored``). A report the fold still cannot take is
**quarantined**: moved from the rollup queue to the ``quarantine`` table with the reason, counted
(:meth:`Storage.quarantined`, shown by ``/readyz``), and never retried by itself, so it blocks nothing.

A deletion request deletes every row of its (guid, product), takes its counts out of the totals (feature
uses and timing buckets from its folded raw reports, :func:`totals_removal`), and leaves a **tombstone** that
refuses the pair's reports recorded before it (:func:`refused`). The rollups commit without waiting for
the disk, the raw reports do: :meth:`Storage.rebuild` folds the raw reports again. Raw reports and
per-machine rows age out (``aging``); :meth:`Storage.stats` is what operators see (``metrics``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from attrs import frozen

from ceip_core.service import rollups
from ceip_core.service.validation import Rejection, decode_stored

if TYPE_CHECKING:
    from ceip_core.service.withdrawal import Withdrawal

#: The version of the database schema this code creates and reads; stored in the ``meta`` table. Opening an
#: older one upgrades it (``rollups.upgrade``). Schema 1 had no totals and no reach; 2 spelled out each
#: group's runs in a machine's reach state; 3 keeps runs shared by the groups active on the same days
#: (``reach.State``); 4 keeps no per-machine feature uses (``counter_days``); 5 wrote each group of a
#: reach state as one string (``reach.Key``); 6 names each group by an id (``reach_groups``, ``reach.Groups``).
#: ``reach.parse`` reads every form from 3 on, so those upgrades change nothing stored, and a worker of an
#: older schema, which would misread the new form, fails on it instead.
SCHEMA_VERSION = 6


class StorageUnavailable(Exception):
    """The database cannot be reached or cannot take writes now; the service answers 503 and clients retry."""


class StorageError(Exception):
    """A database this service cannot use (wrong URL, a schema from a newer ceip); fatal at start."""


@frozen
class NewReport:
    """A validated report, ready to be stored. ``body`` is the item's JSON, as received; ``item`` is what
    validation decoded it into (``validation.Valid.item``), which the fold takes."""

    report_id: str
    guid: str
    product: str
    version: str
    day: int
    """Day of the report's period end, in days since 1970-01-01 (UTC): the day rollups count it on."""
    received: float
    """The service's own clock when the request arrived (seconds since the epoch)."""
    body: str
    item: Any


@frozen
class Deletion:
    """A validated deletion request: delete everything held for (guid, product), or the data of some
    categories only (:attr:`withdrawal`)."""

    request_id: str
    guid: str
    product: str
    day: int
    """Day the service received it (days since the epoch): what "opt-outs per day" counts."""
    received: float
    requested: float = 0.0
    """When the machine asked (its own clock, seconds since the epoch): the pair's **tombstone**. A report
    of the pair whose period ended by then (a late upload, an import of a bundle exported before the
    opt-out) is refused from then on; one recorded after a new opt-in, on the same clock, is not."""
    withdrawal: Withdrawal | None = None
    """For a request naming categories (a person narrowed their consent): delete only the pair's data of
    those (``ceip_core.service.withdrawal``), and leave no tombstone. None: delete everything."""


Write = NewReport | Deletion

#: The quarantine: queued reports the fold could not take, by ``seq`` (the raw report stays in ``reports``).
QUARANTINE_DDL = (
    "CREATE TABLE IF NOT EXISTS quarantine (seq BIGINT PRIMARY KEY, reason TEXT NOT NULL, "
    "quarantined DOUBLE PRECISION NOT NULL)"
)
#: Tombstones: per deleted (guid, product), the newest deletion's ``requested`` time (see :class:`Deletion`).
TOMBSTONES_DDL = (
    "CREATE TABLE IF NOT EXISTS tombstones (guid TEXT NOT NULL, product TEXT NOT NULL, "
    "requested DOUBLE PRECISION NOT NULL, PRIMARY KEY (guid, product))"
)
#: Record a tombstone, with positional parameters (guid, product, requested) in the dialect's marks.
TOMBSTONE_SQL = (
    "INSERT INTO tombstones (guid, product, requested) VALUES ({}, {}, {}) ON CONFLICT (guid, product) "
    "DO UPDATE SET requested = CASE WHEN excluded.requested > tombstones.requested "
    "THEN excluded.requested ELSE tombstones.requested END"
)
#: Raw reports expire by day; this index keeps each bounded expiry step a range read.
REPORTS_DAY_INDEX = "CREATE INDEX IF NOT EXISTS reports_day ON reports (day)"
#: ``meta`` counters (integers as text): reports refused by a tombstone, rows expired, and the first day
#: whose raw reports are all still held (the rebuild re-folds from there on).
TOMBSTONED, EXPIRED, HELD_SINCE = "refused_tombstoned", "expired_rows", "raw_reports_since_day"
#: Add to a ``meta`` counter, with positional parameters (key, amount) in the dialect's marks.
COUNT_SQL = (
    "INSERT INTO meta (key, value) VALUES ({0}, CAST({1} AS TEXT)) ON CONFLICT (key) DO UPDATE SET "
    "value = CAST(CAST(meta.value AS BIGINT) + CAST(excluded.value AS BIGINT) AS TEXT)"
)


def refused(reports: Sequence[NewReport], tombstones: Mapping[tuple[str, str], float]) -> set[str]:
    """The report ids among ``reports`` that a tombstone refuses: recorded by a deleted pair before it asked."""
    return {
        r.report_id
        for r in reports
        if (r.guid, r.product) in tombstones and r.item.period.end.timestamp() <= tombstones[r.guid, r.product]
    }


def totals_removal(bodies: Iterable[str], withdrawn: Callable[[str], bool] | None = None) -> dict[str, list[Any]]:
    """Per total table, the rows (negative counts) that take a deleted machine's folded reports back out
    (with ``withdrawn``: only the metrics it names; ``rollups.totals_removal``).

    Feature uses and timings keep no per-machine rows (they would add a third to the fold's writes), so a
    deletion reads the machine's folded raw reports, still stored at that point, with the ingest decoder.
    """
    items = (item for item in (decode_stored(body.encode()) for body in bodies) if not isinstance(item, Rejection))
    return rollups.totals_removal(items, withdrawn)


#: A deletion request deletes the quarantine rows of the pair's reports too (before the reports).
DELETE_QUARANTINED = "DELETE FROM quarantine WHERE seq IN (SELECT seq FROM reports WHERE guid = {} AND product = {})"
#: Most reports a store holds in memory for the fold (see :class:`Held`): the committer's backlog bound and
#: a full commit group beyond it, about 25 MB (a decoded report of 1.7 KB of JSON takes about 6 KB).
MAX_HELD = 4_000


class Held:
    """Reports this process stored and has not folded yet, as validation decoded them, by ``seq``.

    The hand-off from ingest to the fold. It is only a shortcut: the fold reads a report that is not here
    from its stored body, with the same decoder. So the bound costs a decode, never a report (when it is
    reached, newer reports are not held: the fold takes the oldest first, so those held are the next it
    needs), and an entry counts only if its report id matches the queued row's, so a ``seq`` that SQLite
    reuses after a deletion never folds the wrong report.
    """

    def __init__(self, limit: int = MAX_HELD) -> None:
        self.limit = limit
        self._items: dict[int, Any] = {}

    def keep(self, stored: Iterable[tuple[int, Any]]) -> None:
        """Hold ``(seq, item)`` pairs that a committed transaction stored, as many as the bound allows."""
        for seq, item in stored:
            if len(self._items) >= self.limit:
                return
            self._items[seq] = item

    def take(self, queued: Iterable[Sequence[Any]]) -> tuple[dict[int, Any], list[int]]:
        """For queued ``(seq, report_id)`` rows: the reports held for them (no longer held), and the seqs
        of the others, whose stored bodies the fold must decode (:func:`decode_bodies`)."""
        found: dict[int, Any] = {}
        missing: list[int] = []
        for seq, report_id in queued:
            item = self._items.pop(seq, None)
            if item is not None and item.report_id == report_id:
                found[seq] = item
            else:
                missing.append(seq)
        return found, missing

    def forget(self, seqs: Iterable[int]) -> None:
        """Drop the reports a committed deletion request took out of the queue: nothing of them stays."""
        for seq in seqs:
            self._items.pop(seq, None)

    def clear(self) -> None:
        """Forget every report: the queue was found empty, so whatever is held was folded or deleted."""
        self._items.clear()


def decode_bodies(bodies: Iterable[Sequence[Any]]) -> tuple[dict[int, Any], dict[int, str]]:
    """Stored ``(seq, body)`` rows decoded by the ingest decoder: the reports, and why each other one failed."""
    reports: dict[int, Any] = {}
    failed: dict[int, str] = {}
    for seq, body in bodies:
        item = decode_stored(body.encode())
        if isinstance(item, Rejection):
            failed[seq] = f"{item.reason}: {item.detail}"
        else:
            reports[seq] = item
    return reports, failed


def describe(exc: BaseException) -> str:
    """Why a report was quarantined, for the ``quarantine`` table and the log: short, one line."""
    return f"fold failed: {type(exc).__name__}: {exc}"[:300].replace("\n", " ")


class Storage(Protocol):
    """What the service needs from a database. Every method may raise :class:`StorageUnavailable`."""

    url: str
    """The database URL without any password, for logs and messages."""
    skip_scans: bool
    """Whether the database's planner may skip-scan a key, giving up the equalities on its leading columns
    to reach a later one (SQLite, once it has statistics): then a query keeps the conditions the key should
    not serve out of its reach (``queries.Filters.reach``)."""

    async def open(self) -> None:
        """Connect, and create or migrate the schema. Raises :class:`StorageError` if it cannot be used."""
        ...

    async def close(self) -> None:
        """Release connections and threads."""
        ...

    async def ping(self) -> None:
        """Return if the database answers, raise :class:`StorageUnavailable` otherwise."""
        ...

    async def write(self, writes: Sequence[Write]) -> list[bool]:
        """Apply ``writes`` in order in one durable transaction.

        :returns: per write, True if it changed something new: a report not stored before (False: a
            duplicate, by report id), a deletion request id not seen before (the deletion itself is
            applied either way, so it is idempotent).
        """
        ...

    async def roll_up(self, limit: int = 5000, *, wait: bool = False) -> int:
        """Fold up to ``limit`` queued reports into the rollups, in one transaction; how many left the queue.

        A report that cannot be folded (its body does not decode, or folding it fails) is quarantined in the
        same transaction and the others are folded: only an unavailable database makes this raise.

        :param wait: if another transaction (another worker) is folding queued reports right now, wait
            for it instead of skipping them: what a query needs to see every acknowledged report.
        """
        ...

    async def quarantined(self) -> int:
        """How many stored reports are in the quarantine (see the module docstring)."""
        ...

    async def rebuild(self) -> int:
        """Empty the rollups of every day whose raw reports are still held and fold those reports again.

        The rollups commit without waiting for the disk (the raw reports do wait), so after a power cut or
        a doubt this gives exactly the answers the reports give. Days that aged out keep their rollups.
        :returns: how many reports were folded.
        """
        ...

    async def expire(self, before_day: int, limit: int) -> int:
        """One bounded transaction of aging (``ceip_core.service.aging``): delete raw reports and per-machine
        rows of days before ``before_day``, and the state of machines silent since, touching at most
        ``limit`` rows; how many it touched (fewer than ``limit``: the pass is over)."""
        ...

    async def stats(self) -> dict[str, Any]:
        """What operators watch: ``{"bytes", "rows": {table: n}, "queued", "oldest_queued", "counters"}``.

        ``oldest_queued`` is when the oldest report not yet folded arrived (None: none is queued), so the
        fold lag is the clock minus it; ``counters`` are the ``meta`` counters (tombstoned, expired).
        """
        ...

    async def query(self, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run a read-only query written with ``:name`` parameters; the rows."""
        ...

    async def end_sessions(self) -> None:
        """Move the dashboard's session epoch (``SESSION_EPOCH`` in ``meta``) on: every session ends."""
        ...


#: The ``meta`` key of the dashboard's session epoch (``ceip_core.service.sessions``); absent means 0.
SESSION_EPOCH = "session_epoch"
#: The query that reads it, in either dialect.
SESSION_EPOCH_SQL = "SELECT value FROM meta WHERE key = :key"
#: The statement that moves it on, with one positional parameter (the key): ``?`` here, ``$1`` on PostgreSQL.
END_SESSIONS_SQL = (
    "INSERT INTO meta (key, value) VALUES (?, '1') "
    "ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(meta.value AS INTEGER) + 1 AS TEXT)"
)


async def session_epoch(storage: Storage) -> int:
    """The dashboard's current session epoch, as every worker sees it."""
    rows = await storage.query(SESSION_EPOCH_SQL, {"key": SESSION_EPOCH})
    return int(rows[0][0]) if rows else 0


def redact(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()
