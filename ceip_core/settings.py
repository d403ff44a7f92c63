"""Settings made once per state folder with ``ceip config``, kept in the state database's ``meta`` table.

There is one today: ``upload-url``, where ``ceip upload`` and the background uploader send the queue when
no ``--to`` is given. It lives in the state folder, beside the queue it applies to, so that a product's
installer sets it once and every later upload (from any process of that user) finds it; the URL is
checked when it is set, so a typo or an unencrypted remote URL is refused then, not at exit time.

Standard library only: the background uploader reads it in the product's process.
"""

from __future__ import annotations

import sqlite3

#: Every setting, with what it is for (``ceip config show`` lists them).
SETTINGS = {"upload-url": "where `ceip upload` and the background uploader send the queue"}


def _key(name: str) -> str:
    if name not in SETTINGS:
        raise KeyError(f"unknown setting {name!r} (known: {', '.join(SETTINGS)})")
    return f"setting:{name}"


def get(conn: sqlite3.Connection, name: str) -> str | None:
    """The value of setting ``name``, or None if it is not set."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (_key(name),)).fetchone()
    return row[0] if row else None


def put(conn: sqlite3.Connection, name: str, value: str) -> None:
    """Set ``name`` inside the caller's transaction."""
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (_key(name), value))


def delete(conn: sqlite3.Connection, name: str) -> None:
    """Unset ``name`` inside the caller's transaction."""
    conn.execute("DELETE FROM meta WHERE key = ?", (_key(name),))
