"""Reading every row that can still be read out of a damaged state database.

A damaged spool must not cost the whole queue: a bad page loses the rows on that page, not the rest.
The damaged file is copied (the original stays as it was, for a post-mortem) and each table is read in
ranges of rowids; a range that fails is read again row by row, and the rows that still fail are counted
as lost. A range read can also end early *without* an error: a garbled page may hold a cell with a huge
rowid, and the scan stops there. So every rowid a range did not return is looked up on its own too; a
lookup starts from the root of the table and is misled only by the page it ends on. This works for damage
SQLite can still find its way around (a bad page in the middle, a file cut short, a garbage WAL); a file
whose 100-byte header is smashed gets a sound header first. What is beyond reach this way (the schema
page itself gone) counts as a loss of unknown size.

Standard library only, like the rest of the state database.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

#: Rows read per query; a failing range is read again row by row.
CHUNK = 256
#: Stop looking for more rows after this many empty ranges past the last row found, when the largest
#: rowid cannot be read from the file itself.
EMPTY_RANGES_PAST_END = 64
#: Give up reading a table row by row after this many rows failed (twice the default queue bound): the
#: damage is then in the table's upper pages, and probing every rowid would take minutes for nothing.
MAX_FAILED_ROWS = 20_000

_SPOOL_COLUMNS = "seq, item_id, kind, product, guid, created, size, data, attempts, not_before"


@dataclass
class Salvaged:
    """What could be read back from a damaged database."""

    spool: list[tuple[object, ...]] = field(default_factory=list)
    """Rows of the spool table, oldest first, without lease columns (see ``_SPOOL_COLUMNS``)."""
    drops: list[tuple[object, ...]] = field(default_factory=list)
    meta: list[tuple[object, ...]] = field(default_factory=list)
    lost_rows: int = 0
    """Spool rows that were there and could not be read."""
    readable: bool = True
    """False when nothing could be read at all: the loss is of unknown size."""
    complete: bool = True
    """False when reading gave up part-way (see :data:`MAX_FAILED_ROWS`): ``lost_rows`` is a lower bound."""


def salvage(damaged: Path) -> Salvaged:
    """Every readable row of ``damaged`` (and its ``-wal``), which is left untouched."""
    with tempfile.TemporaryDirectory(prefix="ceip-salvage-") as scratch:
        copy = Path(scratch) / "damaged.db"
        try:
            shutil.copyfile(damaged, copy)
            wal = Path(f"{damaged}-wal")
            if wal.is_file():
                shutil.copyfile(wal, Path(f"{copy}-wal"))
        except OSError:  # a directory in its place, or a file this user cannot read
            return Salvaged(readable=False)
        result = _read(copy)
        if result.readable:
            return result
        if _repair_header(copy):
            return _read(copy)
        return result


def _read(path: Path) -> Salvaged:
    try:
        conn = sqlite3.connect(path, isolation_level=None)
    except sqlite3.DatabaseError:
        return Salvaged(readable=False)
    try:
        try:
            conn.execute("PRAGMA cell_size_check = ON")
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError:
            return Salvaged(readable=False)
        result = Salvaged()
        if "spool" in tables:
            largest = _largest_seq(conn)
            rows, failed, result.complete = _rows(conn, "spool", _SPOOL_COLUMNS, largest)
            result.spool = [row for row in rows if _sound_spool_row(row)]
            # Rowids that failed past the last row seen were probably never there, unless the file says so.
            last = largest if largest is not None else max((_rowid(r) for r in result.spool), default=0)
            result.lost_rows = len(rows) - len(result.spool) + sum(1 for rowid in failed if rowid <= last)
            # A row whose cell was garbled can vanish without an error; the running totals, where they can
            # still be read, say how many items there were.
            queued = _queued_items(conn) if "spool_totals" in tables else None
            if queued is not None:
                result.lost_rows = max(result.lost_rows, queued - len(result.spool))
        if "drops" in tables:
            result.drops = [r for r in _rows(conn, "drops", "reason, product, count", None)[0] if _sound_drop(r)]
        if "meta" in tables:
            result.meta = [r for r in _rows(conn, "meta", "key, value", None)[0] if all(isinstance(v, str) for v in r)]
        return result
    finally:
        conn.close()


def _queued_items(conn: sqlite3.Connection) -> int | None:
    """How many items the spool held, by its running totals (``spool_totals``), if they can be read."""
    try:
        row = conn.execute("SELECT SUM(items) FROM spool_totals").fetchone()
    except sqlite3.DatabaseError:
        return None
    return row[0] if row is not None and isinstance(row[0], int) else None


def _largest_seq(conn: sqlite3.Connection) -> int | None:
    """The largest rowid the spool ever handed out, if the file still says."""
    found = []
    for query in ("SELECT MAX(seq) FROM spool", "SELECT seq FROM sqlite_sequence WHERE name = 'spool'"):
        try:
            row = conn.execute(query).fetchone()
        except sqlite3.DatabaseError:
            continue
        if row is not None and isinstance(row[0], int):
            found.append(row[0])
    return max(found) if found else None


def _rowid(row: tuple[object, ...]) -> int:
    return row[0] if isinstance(row[0], int) else 0


def _rows(
    conn: sqlite3.Connection, table: str, columns: str, largest: int | None
) -> tuple[list[tuple[object, ...]], list[int], bool]:
    """The readable rows of ``table`` in rowid order (up to rowid ``largest`` if known), the rowids that
    failed to read, and False if it gave up before the end."""
    try:
        first = conn.execute(f"SELECT MIN(rowid) FROM {table}").fetchone()[0]
    except sqlite3.DatabaseError:
        first = None
    start = first if isinstance(first, int) else 1
    rows: list[tuple[object, ...]] = []
    failed: list[int] = []
    empty_run = 0
    while True:
        if largest is not None and start > largest:
            break
        if largest is None and empty_run >= EMPTY_RANGES_PAST_END:
            break
        end = start + CHUNK - 1
        try:
            found = dict(
                (r[0], r[1:])
                for r in conn.execute(
                    f"SELECT rowid, {columns} FROM {table} WHERE rowid BETWEEN ? AND ? ORDER BY rowid", (start, end)
                )
            )
        except sqlite3.DatabaseError:
            found = {}
        for rowid in range(start, end + 1):
            if rowid in found:
                continue
            try:
                row = conn.execute(f"SELECT {columns} FROM {table} WHERE rowid = ?", (rowid,)).fetchone()
            except sqlite3.DatabaseError:
                failed.append(rowid)
                continue
            if row is not None:
                found[rowid] = row
        chunk = [found[rowid] for rowid in sorted(found)]
        if len(failed) > MAX_FAILED_ROWS:
            return rows + chunk, failed, False
        empty_run = 0 if chunk else empty_run + 1
        rows += chunk
        start = end + 1
    return rows, failed, True


def _sound_spool_row(row: tuple[object, ...]) -> bool:
    _seq, item_id, kind, product, guid, created, size, data, attempts, not_before = row
    return (
        isinstance(item_id, str)
        and kind in ("report", "deletion")
        and isinstance(product, str)
        and isinstance(guid, str)
        and isinstance(created, float | int)
        and isinstance(data, bytes)
        and size == len(data)
        and isinstance(attempts, int)
        and isinstance(not_before, float | int)
    )


def _sound_drop(row: tuple[object, ...]) -> bool:
    reason, product, count = row
    return isinstance(reason, str) and isinstance(product, str) and isinstance(count, int) and count >= 0


def _repair_header(path: Path) -> bool:
    """Give ``path`` a sound 100-byte database header if its own is smashed. The page size is taken from
    the damaged header when it is still plausible, else SQLite's default; True if the header changed."""
    with open(path, "r+b") as handle:
        header = handle.read(100)
        size = handle.seek(0, 2)
        page = int.from_bytes(header[16:18], "big") if len(header) >= 18 else 0
        page = 65536 if page == 1 else page
        if page < 512 or page > 65536 or page & (page - 1):
            page = 4096
        if size < 2 * page:
            return False
        template = _template_header(page)
        template[28:32] = (size // page).to_bytes(4, "big")
        if header == bytes(template):
            return False
        handle.seek(0)
        handle.write(template)
    return True


def _template_header(page: int) -> bytearray:
    with tempfile.TemporaryDirectory(prefix="ceip-header-") as scratch:
        path = Path(scratch) / "template.db"
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute(f"PRAGMA page_size = {page}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("CREATE TABLE t (x)")
        finally:
            conn.close()
        return bytearray(path.read_bytes()[:100])
