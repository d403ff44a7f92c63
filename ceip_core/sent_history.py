"""What left the machine: a bounded history of the items a receiver accepted, for ``ceip review --sent``.

The seeds let a person check what is collected before it is sent; this lets them check afterwards too,
as Windows' Diagnostic Data Viewer does. Each accepted item is kept exactly as it was sent (the wire
bytes the receiver got), with when and where it went, in the state database, in the same transaction
that removes it from the queue.

It is bounded three ways, oldest dropped first: :data:`MAX_AGE_S` (30 days), :data:`MAX_ITEMS` and
:data:`MAX_BYTES`. Opting a product out removes its history with its queue, and resetting the machine ID
removes the history sent under the old one: what the person withdrew is not kept here either.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

#: How long an item stays in the history.
MAX_AGE_S = 30 * 86400.0
#: At most this many items are kept ...
MAX_ITEMS = 2000
#: ... and at most this many bytes of them.
MAX_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class SentItem:
    """One item as it left the machine."""

    item_id: str
    kind: str
    product: str
    sent: float
    """When the receiver accepted it (seconds since the epoch)."""
    destination: str
    data: bytes
    """The item's wire bytes, exactly as sent."""


def destination_of(url: str | None) -> str:
    """Where items went, as the history shows it: the URL's scheme, host and path, without the user name,
    password, query (a CA file, a proxy) or fragment it may carry."""
    if not url:
        return "unknown"
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def record_accepted(
    conn: sqlite3.Connection, item_ids: Iterable[str], lease_token: str, destination: str, now: float
) -> None:
    """Copy the accepted items of a lease from the queue into the history (inside the transaction that
    then deletes them from the queue), and prune the history to its bounds."""
    conn.executemany(
        "INSERT INTO sent (item_id, kind, product, guid, sent, destination, size, data) "
        "SELECT item_id, kind, product, guid, ?, ?, size, data FROM spool WHERE item_id = ? AND lease_token = ?",
        [(now, destination, item_id, lease_token) for item_id in item_ids],
    )
    prune(conn, now)


def prune(conn: sqlite3.Connection, now: float) -> None:
    """Drop what is older than :data:`MAX_AGE_S`, then the oldest beyond :data:`MAX_ITEMS` or :data:`MAX_BYTES`."""
    conn.execute("DELETE FROM sent WHERE sent < ?", (now - MAX_AGE_S,))
    conn.execute(
        "DELETE FROM sent WHERE seq IN (SELECT seq FROM ("
        "  SELECT seq, ROW_NUMBER() OVER newest AS n, SUM(size) OVER newest AS bytes FROM sent"
        "  WINDOW newest AS (ORDER BY seq DESC ROWS UNBOUNDED PRECEDING)"
        ") WHERE n > ? OR bytes > ?)",
        (MAX_ITEMS, MAX_BYTES),
    )


def forget_product(conn: sqlite3.Connection, product: str) -> int:
    """Remove ``product``'s history (an opt-out); returns how many items were removed."""
    return conn.execute("DELETE FROM sent WHERE product = ?", (product,)).rowcount


def forget_guid(conn: sqlite3.Connection, guid: str) -> int:
    """Remove what was sent under machine ID ``guid`` (a reset of the ID); returns how many items."""
    return conn.execute("DELETE FROM sent WHERE guid = ?", (guid,)).rowcount


def read_sent(conn: sqlite3.Connection, now: float, product: str | None = None) -> Iterator[SentItem]:
    """The history of the last :data:`MAX_AGE_S` seconds before ``now``, oldest first, one item at a time."""
    query = "SELECT item_id, kind, product, sent, destination, data FROM sent WHERE sent >= ?"
    args: tuple[object, ...] = (now - MAX_AGE_S,)
    if product is not None:
        query += " AND product = ?"
        args += (product,)
    for row in conn.execute(query + " ORDER BY seq", args):
        yield SentItem(row[0], row[1], row[2], row[3], row[4], bytes(row[5]))


def count_sent(conn: sqlite3.Connection, now: float) -> dict[str, int]:
    """How many items of each kind (``report``, ``deletion``) the history holds from the last
    :data:`MAX_AGE_S` seconds before ``now``, without reading them."""
    rows = conn.execute("SELECT kind, COUNT(*) FROM sent WHERE sent >= ? GROUP BY kind", (now - MAX_AGE_S,))
    return {kind: n for kind, n in rows}


__all__ = [
    "MAX_AGE_S",
    "MAX_BYTES",
    "MAX_ITEMS",
    "SentItem",
    "count_sent",
    "destination_of",
    "forget_guid",
    "forget_product",
    "prune",
    "read_sent",
    "record_accepted",
]
