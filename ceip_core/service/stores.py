"""How a database URL picks the receiving service's storage: SQLite or PostgreSQL.

Above both implementations (``sqlite_store``, ``postgres_store``), which build on the interface they share
(``storage``) and never on each other; the code that stores and queries takes a
:class:`~ceip_core.service.storage.Storage` and imports neither.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from ceip_core.service.sqlite_store import SQLiteStorage
from ceip_core.service.storage import Storage, StorageError, redact


def storage_type(url: str) -> Callable[[str], Storage]:
    """What stores a database URL: ``sqlite:///path/to/file.db`` or ``postgresql://user@host/db``. Raises
    :class:`StorageError` for any other (commands check their ``--db`` with it before doing anything)."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        return SQLiteStorage
    if scheme in ("postgresql", "postgres"):
        from ceip_core.service.postgres_store import PostgresStorage  # asyncpg: only for a PostgreSQL URL

        return PostgresStorage
    raise StorageError(f"unsupported database URL {redact(url)!r}: use sqlite:///path.db or postgresql://...")


def is_sqlite(url: str) -> bool:
    """Whether ``url`` names a SQLite file (raises as :func:`storage_type` does for a URL of no kind)."""
    return storage_type(url) is SQLiteStorage


def open_storage(url: str) -> Storage:
    """The storage for a database URL (see :func:`storage_type`). Not yet opened: call ``await storage.open()``."""
    return storage_type(url)(url)
