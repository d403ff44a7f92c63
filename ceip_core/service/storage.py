"""The one small storage interface of the receiving service, and how a database URL picks an implementation.

Two implementations pass the same test suite (tests/service): SQLite (``sqlite:///path.db``, embedded,
zero setup) and PostgreSQL (``postgresql://...``, shared by many ``ceip serve`` workers). What they
share lives outside them: the rollup tables and how reports become rollup rows (``rollups``), and every
query (``queries``), written once in the SQL both databases speak, with ``:name`` parameters.

Storing a report is two steps. ``write`` inserts the raw report and queues it for rollup in one
transaction; that commit is what the service acknowledges, so it must stay cheap. ``roll_up`` later
folds queued reports into the rollups, many at a time, and queries call it first, so an answer always
includes every acknowledged report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

from attrs import frozen

#: The version of the database schema this code creates and reads; stored in the ``meta`` table.
SCHEMA_VERSION = 2


class StorageUnavailable(Exception):
    """The database cannot be reached or cannot take writes now; the service answers 503 and clients retry."""


class StorageError(Exception):
    """A database this service cannot use (wrong URL, a schema from a newer ceip); fatal at start."""


@frozen
class NewReport:
    """A validated report, ready to be stored. ``body`` is the item's JSON, as received."""

    report_id: str
    guid: str
    product: str
    version: str
    day: int
    """Day of the report's period end, in days since 1970-01-01 (UTC): the day rollups count it on."""
    received: float
    """The service's own clock when the request arrived (seconds since the epoch)."""
    body: str


@frozen
class Deletion:
    """A validated deletion request: delete everything held for (guid, product)."""

    request_id: str
    guid: str
    product: str
    day: int
    """Day the service received it (days since the epoch): what "opt-outs per day" counts."""
    received: float


Write = NewReport | Deletion


class Storage(Protocol):
    """What the service needs from a database. Every method may raise :class:`StorageUnavailable`."""

    url: str
    """The database URL without any password, for logs and messages."""

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
        """Fold up to ``limit`` queued reports into the rollups, in one transaction; how many were folded.

        :param wait: if another transaction (another worker) is folding queued reports right now, wait
            for it instead of skipping them: what a query needs to see every acknowledged report.
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


def open_storage(url: str) -> Storage:
    """The storage for a database URL: ``sqlite:///path/to/file.db`` or ``postgresql://user@host/db``.

    Not yet opened: call ``await storage.open()``.
    """
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from ceip_core.service.sqlite_store import SQLiteStorage

        return SQLiteStorage(url)
    if scheme in ("postgresql", "postgres"):
        from ceip_core.service.postgres_store import PostgresStorage

        return PostgresStorage(url)
    raise StorageError(f"unsupported database URL {redact(url)!r}: use sqlite:///path.db or postgresql://...")
