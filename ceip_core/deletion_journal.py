"""A small append-only file beside the state database that keeps every queued deletion request.

A deletion request is a promise made to a person when they opted out, so it must outlive damage to the
database that queues it. Each request is appended here (and flushed to disk) *before* the database
transaction that queues it commits; when the database is found damaged or missing, every request the
journal holds and the database no longer does is queued again. Sending a request twice is harmless: the
receiving service deletes by (machine, product) and de-duplicates by request id.

One JSON object per line: ``{"add": id, "product", "guid", "created", "data"}`` when a request is queued,
``{"done": id}`` when the receiver took it (or refused it for good). The file is emptied when no request
remains queued, so it stays a few lines long. A line cut short by a crash is skipped and counted.

Standard library only: opting out happens in a product's settings dialog too.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

JOURNAL_NAME = "deletions.journal"


@dataclass(frozen=True)
class JournalEntry:
    """One deletion request as the journal keeps it: everything needed to queue it again."""

    item_id: str
    product: str
    guid: str
    created: float
    data: bytes


def _append(folder: Path, lines: list[dict[str, object]]) -> None:
    from ceip_core.private_files import private_file

    text = "".join(json.dumps(line, sort_keys=True) + "\n" for line in lines)
    private_file(folder / JOURNAL_NAME)  # 0600: it names the machine's GUID
    with open(folder / JOURNAL_NAME, "a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def add(folder: Path, entry: JournalEntry) -> None:
    """Keep ``entry``; call before the transaction that queues it commits."""
    _append(
        folder,
        [
            {
                "add": entry.item_id,
                "product": entry.product,
                "guid": entry.guid,
                "created": entry.created,
                "data": entry.data.decode("utf-8"),
            }
        ],
    )


def done(folder: Path, item_ids: list[str]) -> None:
    """Forget the requests ``item_ids`` (delivered, or refused for good)."""
    if item_ids:
        _append(folder, [{"done": i} for i in item_ids])


def clear(folder: Path) -> None:
    """Empty the journal: call only inside a write transaction that sees no deletion request queued (so
    no other process can be between its journal line and its commit)."""
    path = folder / JOURNAL_NAME
    if path.exists() and path.stat().st_size:
        os.truncate(path, 0)


def pending(folder: Path) -> tuple[list[JournalEntry], int]:
    """The requests kept and not done, oldest first, and how many lines could not be read."""
    try:
        text = (folder / JOURNAL_NAME).read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return [], 0
    entries: dict[str, JournalEntry] = {}
    unreadable = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            if "done" in doc:
                entries.pop(str(doc["done"]), None)
                continue
            entry = JournalEntry(
                str(doc["add"]), str(doc["product"]), str(doc["guid"]), float(doc["created"]), doc["data"].encode()
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            unreadable += 1
            continue
        entries[entry.item_id] = entry
    return list(entries.values()), unreadable


def exists(folder: Path) -> bool:
    return (folder / JOURNAL_NAME).exists()
