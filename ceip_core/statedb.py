"""The state folder and its SQLite database, shared by every ceip process on the machine.

One database holds consent, the machine GUID and the spool, so that an opt-out and a concurrent write
of a report are serialised by SQLite itself: once the opt-out transaction commits, no later write can add
a report for that product, in any process. WAL mode lets readers go on while one process writes.

This module, like consent and spool, uses the standard library only: a product's process opens it
when a recording session starts, and must not pay for heavy imports.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path

from ceip_core.lazylog import LazyLogger

TYPE_CHECKING = False  # typing and logging cost more than the recording path's import budget
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import TypeVar

    T = TypeVar("T")

log = LazyLogger(__name__)

DB_NAME = "ceip.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS consent (
    product TEXT PRIMARY KEY,
    state   TEXT NOT NULL CHECK (state IN ('in', 'out')),
    changed REAL NOT NULL,
    epoch   INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS identity (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS spool (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id     TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL CHECK (kind IN ('report', 'deletion')),
    product     TEXT NOT NULL,
    guid        TEXT NOT NULL,
    created     REAL NOT NULL,
    size        INTEGER NOT NULL,
    data        BLOB NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    not_before  REAL NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0,
    lease_token TEXT
);
CREATE INDEX IF NOT EXISTS spool_product ON spool (product, kind);
CREATE INDEX IF NOT EXISTS spool_age ON spool (kind, created);
CREATE INDEX IF NOT EXISTS spool_due ON spool (not_before);
-- Running totals of the queue, kept by triggers in the writing transaction itself, whoever writes:
-- the quota check on every insert and `ceip status` read them instead of scanning the queue.
CREATE TABLE IF NOT EXISTS spool_totals (
    kind    TEXT NOT NULL,
    product TEXT NOT NULL,
    items   INTEGER NOT NULL,
    bytes   INTEGER NOT NULL,
    PRIMARY KEY (kind, product)
);
CREATE TRIGGER IF NOT EXISTS spool_totals_insert AFTER INSERT ON spool BEGIN
    INSERT INTO spool_totals (kind, product, items, bytes) VALUES (NEW.kind, NEW.product, 1, NEW.size)
    ON CONFLICT (kind, product) DO UPDATE SET items = items + 1, bytes = bytes + excluded.bytes;
END;
CREATE TRIGGER IF NOT EXISTS spool_totals_delete AFTER DELETE ON spool BEGIN
    UPDATE spool_totals SET items = items - 1, bytes = bytes - OLD.size
    WHERE kind = OLD.kind AND product = OLD.product;
END;
CREATE TABLE IF NOT EXISTS drops (
    reason  TEXT NOT NULL,
    product TEXT NOT NULL,
    count   INTEGER NOT NULL,
    PRIMARY KEY (reason, product)
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

#: Raised whenever ``_SCHEMA`` changes; an older database is brought up to date when it is opened.
SCHEMA_VERSION = 2

#: The write-ahead log is truncated back to this size after each checkpoint, so that one large
#: transaction (a bulk removal, a busy hour) does not leave a log the size of the database behind.
WAL_LIMIT_BYTES = 4 * 1024 * 1024

# SQLite's primary result codes for a damaged file: SQLITE_CORRUPT and SQLITE_NOTADB.
_CORRUPT_CODES = {11, 26}


def state_dir() -> Path:
    """The state folder: ``$CEIP_HOME`` if set, else the platform's per-user data folder."""
    home = os.environ.get("CEIP_HOME")
    if home:
        return Path(home)
    import platformdirs  # only when no CEIP_HOME is set; small and pure Python

    return Path(platformdirs.user_data_dir("ceip", appauthor=False))


def is_corruption(exc: BaseException) -> bool:
    """True if ``exc`` says the database file is damaged (as opposed to busy, locked, or a bug)."""
    if not isinstance(exc, sqlite3.DatabaseError) or isinstance(exc, sqlite3.IntegrityError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _CORRUPT_CODES
    text = str(exc)
    return "malformed" in text or "not a database" in text


class StateDB:
    """The state database of one state folder. Cheap to create; connects lazily, one connection per
    object (use one object per thread). Corruption is repaired by moving the file aside and starting a
    fresh one, after which ``on_recreate`` callbacks restore what can be restored (consent, GUID)."""

    def __init__(self, folder: Path | str | None = None) -> None:
        self.folder = Path(folder) if folder is not None else state_dir()
        self.path = self.folder / DB_NAME
        self._conn: sqlite3.Connection | None = None
        self.on_recreate: list[Callable[[sqlite3.Connection], None]] = []

    # -- connection ---------------------------------------------------------------------------------

    def connect(self) -> sqlite3.Connection:
        """The open connection, creating folder, file and schema on first use."""
        if self._conn is None:
            try:
                self._conn = self._open()
            except sqlite3.DatabaseError as exc:
                if not is_corruption(exc):
                    raise
                self._recover(exc)
                self._conn = self._open()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        self.folder.mkdir(parents=True, exist_ok=True)
        new_file = not self.path.exists() or self.path.stat().st_size == 0
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        try:
            if new_file:
                # Free pages go back to the file system on ``compact()``. Only a database without tables
                # can take it (an older one reuses its free pages instead), and setting it costs a write.
                conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives any process crash (kill -9); only an OS crash or power loss can
            # lose the last commits. FULL would fsync every report, which the seal budget cannot afford.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
            conn.execute("PRAGMA wal_autocheckpoint=1000")  # pages: the log is checkpointed at about 4 MB
            # The running totals' triggers make each insert keep a statement journal; in memory, not a file.
            conn.execute("PRAGMA temp_store=MEMORY")
            if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
                return conn  # the usual case: the schema is complete and current, no write lock needed
            # Schema and restore in one transaction: no other process can see a new database before the
            # backup is restored into it (it would read "not participating"), and a crash in between
            # leaves no half-made database behind.
            conn.execute("BEGIN IMMEDIATE")
            try:
                tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                for statement in _statements(_SCHEMA):
                    conn.execute(statement)
                if "spool" in tables and "spool_totals" not in tables:
                    # A database from before the running totals: count what it already holds, once.
                    conn.execute(
                        "INSERT INTO spool_totals (kind, product, items, bytes) "
                        "SELECT kind, product, COUNT(*), SUM(size) FROM spool GROUP BY kind, product"
                    )
                if "consent" not in tables:
                    for restore in self.on_recreate:
                        restore(conn)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def compact(self) -> None:
        """Give the space of removed items back to the file system: free pages of the database (where
        auto-vacuum is on) and the write-ahead log beyond ``WAL_LIMIT_BYTES``. Called after a bulk
        removal; never needed for correctness. Skipped quietly while other processes hold the log."""
        conn = self.connect()
        with contextlib.suppress(sqlite3.OperationalError):
            conn.executescript("PRAGMA incremental_vacuum")  # execute() would free only the first page
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    # -- transactions -------------------------------------------------------------------------------

    def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one write transaction (``BEGIN IMMEDIATE``), repairing a corrupt file once."""
        return self._run(work, "BEGIN IMMEDIATE")

    def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one read transaction (a consistent snapshot), repairing a corrupt file once."""
        return self._run(work, "BEGIN")

    def _run(self, work: Callable[[sqlite3.Connection], T], begin: str) -> T:
        for attempt in (1, 2):
            conn = self.connect()
            try:
                conn.execute(begin)
                try:
                    result = work(conn)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                return result
            except sqlite3.DatabaseError as exc:
                if attempt == 2 or not is_corruption(exc):
                    raise
                self._recover(exc)
        raise AssertionError("unreachable")

    # -- corruption ---------------------------------------------------------------------------------

    def _recover(self, exc: BaseException) -> None:
        """Move the damaged database aside (it may still be useful for a post-mortem) and start afresh.

        Several processes may find the damage at once; a lock file makes exactly one of them move the
        file, and the others see that it has been replaced already.
        """
        self.close()
        with _folder_lock(self.folder):
            if self._healthy():
                return
            stem = f"{DB_NAME}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
            base, n = stem, 1
            while any((self.folder / f"{base}{suffix}").exists() for suffix in ("", "-wal", "-shm")):
                base, n = f"{stem}-{n}", n + 1  # a second repair in the same second must not overwrite the first
            # The main file goes last: a process that opens the path meanwhile still finds the damaged file
            # (and waits for this lock) instead of creating a new database whose -wal we would then move.
            for suffix in ("-wal", "-shm", ""):
                src = Path(f"{self.path}{suffix}")
                if src.exists():
                    src.replace(self.folder / f"{base}{suffix}")
            log.error("state database %s was damaged (%s); moved aside, starting a new one", self.path, exc)
            # Create the new file under the lock, so a racing process cannot half-create it.
            self._conn = self._open()
            self._conn.execute(
                "INSERT INTO drops (reason, product, count) VALUES ('corrupt-spool', '*', 1) "
                "ON CONFLICT (reason, product) DO UPDATE SET count = count + 1"
            )
            self.close()

    def _healthy(self) -> bool:
        if not self.path.exists():
            return False
        try:
            conn = sqlite3.connect(self.path, timeout=30)
            try:
                return bool(conn.execute("PRAGMA quick_check").fetchone()[0] == "ok")
            finally:
                conn.close()
        except sqlite3.DatabaseError:
            return False


def _statements(script: str) -> list[str]:
    """The statements of ``script`` (``sqlite3.complete_statement`` keeps a trigger's body whole)."""
    out: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        pending += line
        if sqlite3.complete_statement(pending):
            out.append(pending.strip())
            pending = ""
    return out


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive advisory lock on the state folder (a no-op where fcntl does not exist)."""
    try:
        import fcntl
    except ImportError:  # Windows: SQLite's own locking still protects the database itself
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "ceip.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
