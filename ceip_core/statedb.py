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

from ceip_core import filelock, identity
from ceip_core.lazylog import LazyLogger
from ceip_core.private_files import FOLDER_MODE, private_file, private_folder

TYPE_CHECKING = False  # typing and logging cost more than the recording path's import budget
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import TypeVar

    T = TypeVar("T")

    from ceip_core.salvage import Salvaged

log = LazyLogger(__name__)

DB_NAME = "ceip.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS consent (
    product    TEXT PRIMARY KEY,
    state      TEXT NOT NULL CHECK (state IN ('in', 'out')),
    changed    REAL NOT NULL,
    epoch      INTEGER NOT NULL DEFAULT 0,
    -- The categories consented to ("configuration,program use": ceip_core.consent), NULL for all of them.
    categories TEXT
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
-- A queued report rewritten in place (consent narrowed to fewer categories) changes its size.
CREATE TRIGGER IF NOT EXISTS spool_totals_resize AFTER UPDATE OF size ON spool BEGIN
    UPDATE spool_totals SET bytes = bytes - OLD.size + NEW.size WHERE kind = OLD.kind AND product = OLD.product;
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
-- What receivers accepted, as sent, for `ceip review --sent` (ceip_core.sent_history: bounded, pruned).
CREATE TABLE IF NOT EXISTS sent (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    product     TEXT NOT NULL,
    guid        TEXT NOT NULL,
    sent        REAL NOT NULL,
    destination TEXT NOT NULL,
    size        INTEGER NOT NULL,
    data        BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS sent_time ON sent (sent);
CREATE INDEX IF NOT EXISTS sent_product ON sent (product);
"""

#: Raised whenever ``_SCHEMA`` changes; an older database is brought up to date when it is opened.
SCHEMA_VERSION = 4

#: The write-ahead log is truncated back to this size after each checkpoint, so that one large
#: transaction (a bulk removal, a busy hour) does not leave a log the size of the database behind.
WAL_LIMIT_BYTES = 4 * 1024 * 1024

# SQLite's primary result codes for a damaged file: SQLITE_CORRUPT and SQLITE_NOTADB.
_CORRUPT_CODES = {11, 26}

#: Drop reasons counted when the database is found damaged or gone: each time it happens; the reports
#: and the deletion requests known lost; and each time the loss could not be measured at all.
DAMAGED = "corrupt-spool"
LOST_REPORTS = "corrupt-spool-reports"
LOST_DELETIONS = "corrupt-spool-deletions"
LOST_UNKNOWN = "corrupt-spool-unmeasured"


class StateFolderError(OSError):
    """The state folder cannot be used by this user: no permission, a read-only disk, a file in the way.
    The message names the folder and how to fix it."""


def folder_error(folder: Path, exc: BaseException) -> StateFolderError | None:
    """``exc`` in words naming ``folder`` and the fix, if it says the folder is unusable (else None)."""
    if isinstance(exc, StateFolderError):
        return exc
    if isinstance(exc, sqlite3.OperationalError):
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code not in (3, 8, 14):  # SQLITE_PERM, SQLITE_READONLY, SQLITE_CANTOPEN
            return None
        reason = str(exc)
    elif isinstance(exc, OSError) and not isinstance(exc, (BlockingIOError, TimeoutError)):
        reason = exc.strerror or str(exc)
        if exc.filename is not None:
            reason += f" ({exc.filename})"
    else:
        return None
    return StateFolderError(
        f"cannot use the state folder {folder}: {reason}. Make it a folder this user can write to "
        "(check its owner and permissions), or choose another one with --home or CEIP_HOME"
    )


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


def _count(conn: sqlite3.Connection, reason: str, n: int = 1, product: str = "*") -> None:
    if n:
        conn.execute(
            "INSERT INTO drops (reason, product, count) VALUES (?, ?, ?) "
            "ON CONFLICT (reason, product) DO UPDATE SET count = count + excluded.count",
            (reason, product, n),
        )


def _cannot_open(path: Path, exc: sqlite3.DatabaseError) -> bool:
    """True if ``exc`` came from a file that is there but is no usable database file: a directory in its
    place, or a file this user may not read and write (in a folder this user may change)."""
    if getattr(exc, "sqlite_errorcode", None) != 14:  # SQLITE_CANTOPEN
        return False
    if path.is_dir():
        return True
    return path.exists() and not os.access(path, os.R_OK | os.W_OK) and os.access(path.parent, os.W_OK)


class StateDB:
    """The state database of one state folder. Cheap to create; connects lazily, one connection per
    object (use one object per thread). A damaged file is moved aside and replaced by a fresh one, into
    which ``on_recreate`` callbacks restore what the backup holds (consent, GUID), the deletion journal
    restores every queued deletion request, and every readable row of the damaged file is copied
    (``ceip_core.salvage``). What could not be saved is counted by kind."""

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
                try:
                    self._conn = self._open()
                except sqlite3.DatabaseError as exc:
                    if not is_corruption(exc) and not _cannot_open(self.path, exc):
                        raise
                    self._recover(exc)
                    self._conn = self._open()
            except (OSError, sqlite3.OperationalError) as exc:
                unusable = folder_error(self.folder, exc)
                if unusable is None:
                    raise
                raise unusable from exc
        return self._conn

    def _open(self, *, replacing: bool = False) -> sqlite3.Connection:
        """Connect, and make the schema if the file is new. A new file is made under the folder lock, so
        that it cannot be mistaken for a lost database while another process is replacing a damaged one;
        ``replacing`` says the caller holds that lock already."""
        if replacing:
            return self._connect(lost_if_new=False)
        try:
            if self.path.stat().st_size:
                return self._connect(lost_if_new=False)
        except FileNotFoundError:
            pass
        self._make_folder()
        with _folder_lock(self.folder):
            return self._connect(lost_if_new=True)

    def _make_folder(self) -> None:
        """The state folder, 0700 if made here. The platform's default folder is ceip's own, so one made
        more open (by an older ceip) is tightened; a ``CEIP_HOME`` folder may be shared on purpose and is
        left as it is, silently: this runs in products' processes, whose output is theirs (and logging
        is not imported on the recording path). The files in it are 0600 either way."""
        if private_folder(self.folder) and "CEIP_HOME" not in os.environ and self.folder == state_dir():
            with contextlib.suppress(OSError):
                os.chmod(self.folder, FOLDER_MODE)

    def _connect(self, *, lost_if_new: bool) -> sqlite3.Connection:
        self._make_folder()
        new_file = not self.path.exists() or self.path.stat().st_size == 0
        private_file(self.path)  # before SQLite opens it: its -wal and -shm take the file's mode
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
            # Removed reports (uploaded, purged, opted out) are overwritten, not just unlinked from the
            # b-tree: on builds where this is off by default their bytes would stay in free pages.
            conn.execute("PRAGMA secure_delete=ON")
            if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
                return conn  # the usual case: the schema is complete and current, no write lock needed
            # Schema and restore in one transaction: no other process can see a new database before the
            # backup is restored into it (it would read "not participating"), and a crash in between
            # leaves no half-made database behind.
            conn.execute("BEGIN IMMEDIATE")
            try:
                tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if "consent" in tables and "categories" not in _columns(conn, "consent"):
                    # A database from before consent by category: every choice in it covers all of them.
                    conn.execute("ALTER TABLE consent ADD COLUMN categories TEXT")
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
                    self._replay_journal(conn, lost_database=lost_if_new)
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
                    unusable = folder_error(self.folder, exc)
                    if unusable is None:
                        raise
                    raise unusable from exc
                self._recover(exc)
        raise AssertionError("unreachable")

    # -- corruption ---------------------------------------------------------------------------------

    def _replay_journal(self, conn: sqlite3.Connection, *, lost_database: bool) -> None:
        """In a database just created: queue again every deletion request the journal holds. If the
        folder shows that a database was here before (an identity backup or a journal), it was emptied
        or deleted behind our back: count that, as a loss whose size nobody can know any more."""
        from ceip_core import deletion_journal  # a new database is rare: not on the recording path

        entries, unreadable = deletion_journal.pending(self.folder)
        for e in entries:
            conn.execute(
                "INSERT OR IGNORE INTO spool (item_id, kind, product, guid, created, size, data) "
                "VALUES (?, 'deletion', ?, ?, ?, ?, ?)",
                (e.item_id, e.product, e.guid, e.created, len(e.data), e.data),
            )
        _count(conn, LOST_DELETIONS, unreadable)
        existed = (self.folder / identity.BACKUP_NAME).exists() or deletion_journal.exists(self.folder)
        if lost_database and existed:
            log.error(
                "state database %s was empty or missing; %d deletion request(s) restored from the journal",
                self.path,
                len(entries),
            )
            _count(conn, DAMAGED)
            _count(conn, LOST_UNKNOWN)

    def _recover(self, exc: BaseException) -> None:
        """Move the damaged database aside (kept as it was, for a post-mortem), start afresh, and copy
        into the new database every row of the old one that can still be read.

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
            from ceip_core.salvage import salvage  # only ever needed here

            saved = salvage(self.path)  # reads a copy: the damaged file stays as it was
            # The main file goes last: a process that opens the path meanwhile still finds the damaged file
            # (and waits for this lock) instead of creating a new database whose -wal we would then move.
            for suffix in ("-wal", "-shm", ""):
                src = Path(f"{self.path}{suffix}")
                if src.exists():
                    src.replace(self.folder / f"{base}{suffix}")
            # Create the new file under the lock, so a racing process cannot half-create it.
            conn = self._conn = self._open(replacing=True)
            conn.execute("BEGIN IMMEDIATE")
            try:
                kept = _restore_salvaged(conn, saved)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            log.error(
                "state database %s was damaged (%s); moved aside as %s and replaced: %d item(s) saved, %s lost",
                self.path,
                exc,
                base,
                kept,
                f"{saved.lost_rows} item(s)" if saved.readable and saved.complete else "an unknown number of items",
            )
            self.close()

    def _healthy(self) -> bool:
        if self.path.is_dir():
            return False
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


def _restore_salvaged(conn: sqlite3.Connection, saved: Salvaged) -> int:
    """Copy what ``salvage`` read into the new database and count the damage; returns the items kept.

    Consent and the GUID come from the backup (it is written before each change commits, so it is never
    older than the database). A salvaged report is kept only if its product is opted in under the same
    GUID now, so that a report of a product opted out since, or of an identity reset since, is never sent;
    deletion requests are always kept.
    """
    for key, value in saved.meta:
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value))
    for reason, product, n in saved.drops:  # checked by salvage: text, text, a count
        _count(conn, str(reason), n, str(product))  # type: ignore[arg-type]
    # Lost rows that were deletion requests came back from the journal: they are not lost.
    from_journal = {i for (i,) in conn.execute("SELECT item_id FROM spool WHERE kind = 'deletion'")}
    lost = max(0, saved.lost_rows - len(from_journal - {row[1] for row in saved.spool}))
    opted_in = {p for (p,) in conn.execute("SELECT product FROM consent WHERE state = 'in'")}
    row = conn.execute("SELECT value FROM identity WHERE key = 'guid'").fetchone()
    guid = row[0] if row else None
    kept = 0
    for _seq, item_id, kind, product, item_guid, created, size, data, attempts, not_before in saved.spool:
        if kind == "report" and (product not in opted_in or item_guid != guid):
            _count(conn, "not-opted-in", product=str(product))
            continue
        kept += conn.execute(
            "INSERT OR IGNORE INTO spool (item_id, kind, product, guid, created, size, data, attempts, not_before) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (item_id, kind, product, item_guid, created, size, data, attempts, not_before),
        ).rowcount
    _count(conn, DAMAGED)
    _count(conn, LOST_REPORTS, lost)
    _count(conn, LOST_UNKNOWN, 0 if saved.readable and saved.complete else 1)
    return kept


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


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
    """An exclusive advisory lock on the state folder, held across the schema's creation and migration."""
    folder.mkdir(parents=True, exist_ok=True)
    with filelock.holding(folder / "ceip.lock"):
        yield
