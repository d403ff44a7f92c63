"""The token that guards the query API (as a bearer token) and the dashboard (typed on its login page).

Reports come from anonymous machines and need no credential; what the service tells about them does.
The token is configured (``--token`` / ``CEIP_SERVICE_TOKEN``) or generated at first start into the
service's data folder, readable by its owner only (mode 0600), and compared in constant time.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

TOKEN_FILE = "query-token"


def load_or_create_token(data_dir: Path) -> str:
    """The token stored in ``data_dir``, created (random, 256 bits, mode 0600) if there is none yet."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / TOKEN_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        token = path.read_text(encoding="ascii").strip()
        if not token:
            raise ValueError(f"{path} is empty: delete it to have a new token generated") from None
        return token
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(token + "\n")
    return token


def matches(given: str, token: str) -> bool:
    """True if ``given`` is the token (surrounding spaces aside), compared in constant time."""
    return hmac.compare_digest(given.strip().encode(), token.encode())


def authorized(header: str | None, token: str) -> bool:
    """True if an ``Authorization`` header carries ``Bearer <token>``."""
    if not header or not header.startswith("Bearer "):
        return False
    return matches(header[len("Bearer ") :], token)
