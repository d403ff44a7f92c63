"""Hub Server's local status file: what the server publishes about itself, and what its ceip collector
reads from outside the server's process.

A real server would expose this on a status endpoint or in a file; the stand-in writes a JSON file
(atomically: a reader never sees half of one) at :func:`status_path`. Counts are totals since the server
started, so a reader that missed a pass loses nothing; recent response times carry a sequence number, so
a reader takes each one once. Nothing in it names a user, a client or a repository.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

#: Where the status file is, if set; else :func:`status_path`'s default.
STATUS_ENV = "HUB_SERVER_STATUS"
#: How many recent response times the file keeps.
RECENT = 500


def status_path() -> Path:
    """``$HUB_SERVER_STATUS``, else ``hub-server/status.json`` in the user's state folder."""
    if os.environ.get(STATUS_ENV):
        return Path(os.environ[STATUS_ENV])
    import platformdirs

    return platformdirs.user_state_path("hub-server") / "status.json"


def write_status(path: Path, status: dict[str, Any]) -> None:
    """Replace the status file with ``status`` in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(status), encoding="utf-8")
    os.replace(tmp, path)
