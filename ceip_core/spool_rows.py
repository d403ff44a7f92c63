"""The spool's rows, written inside a caller's transaction: queuing an item, counting a drop, and the
agent's unsealed aggregates.

Beneath both the spool and consent, because both write these rows in their own transactions: an opt-out or
a reset of the machine ID queues its deletion request and counts what it removed in the same transaction
that records the choice (``ceip_core.consent``), and the spool's queue does the rest
(``ceip_core.spool``). Standard library only; the rows hold bytes and know nothing of records.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from ceip_core import deletion_journal


def insert_item(
    conn: sqlite3.Connection, item_id: str, kind: str, product: str, guid: str, data: bytes, now: float | None = None
) -> None:
    """Insert one item inside the caller's transaction (the consent module queues deletion requests).
    A deletion request is written to the deletion journal first, so it survives damage to the database."""
    created = time.time() if now is None else now
    if kind == "deletion":
        deletion_journal.add(_folder_of(conn), deletion_journal.JournalEntry(item_id, product, guid, created, data))
    conn.execute(
        "INSERT INTO spool (item_id, kind, product, guid, created, size, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (item_id, kind, product, guid, created, len(data), data),
    )


def _folder_of(conn: sqlite3.Connection) -> Path:
    """The state folder of the database ``conn`` has open (the deletion journal lives beside it)."""
    return Path(conn.execute("PRAGMA database_list").fetchone()[2]).parent


def count_drop(conn: sqlite3.Connection, reason: str, product: str, n: int = 1) -> None:
    """Count ``n`` items removed for ``reason`` inside the caller's transaction."""
    if n:
        conn.execute(
            "INSERT INTO drops (reason, product, count) VALUES (?, ?, ?) "
            "ON CONFLICT (reason, product) DO UPDATE SET count = count + excluded.count",
            (reason, product, n),
        )


#: Where the agent keeps, between two ``ceip agent --once`` runs, what it collected and did not seal yet.
_PARTIAL = "agent-partial:"


def save_partial(conn: sqlite3.Connection, product: str, epoch: int, data: bytes) -> None:
    """Keep the agent's unsealed aggregate for ``product``, collected under consent ``epoch``."""
    value = f"{epoch} {data.decode('utf-8')}"
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (_PARTIAL + product, value))


def read_partials(conn: sqlite3.Connection) -> dict[str, tuple[int, bytes]]:
    """Every product's unsealed aggregate with its consent epoch (see :func:`save_partial`)."""
    found: dict[str, tuple[int, bytes]] = {}
    for key, value in conn.execute("SELECT key, value FROM meta WHERE key LIKE ?", (_PARTIAL + "%",)):
        epoch, _, data = value.partition(" ")
        if epoch.isdigit():
            found[key.removeprefix(_PARTIAL)] = (int(epoch), data.encode("utf-8"))
    return found


def drop_partial(conn: sqlite3.Connection, product: str) -> None:
    """Forget the unsealed aggregate of ``product`` (an opt-out does, in its own transaction)."""
    conn.execute("DELETE FROM meta WHERE key = ?", (_PARTIAL + product,))
