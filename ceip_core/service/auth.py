"""The token that guards the query API (as a bearer token) and the dashboard (typed on its login page).

Reports come from anonymous machines and need no credential; what the service tells about them does.
The token is configured (``$CEIP_SERVICE_TOKEN``, ``--token-file``, or ``--token``, which other local users
see in ``ps``) or generated at first start into the service's data folder, readable by its owner only
(mode 0600), and compared in constant time. A token shorter than :data:`MIN_TOKEN_CHARS` is refused unless
the operator asks for it (:func:`check_token`): it is all that stands between the internet and the
aggregates, and the login throttle slows guessing down, it does not stop it.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from ceip_core.private_files import private_folder

TOKEN_FILE = "query-token"
#: Shortest query token taken without ``--allow-short-token`` (a generated one has 43 characters).
MIN_TOKEN_CHARS = 16


class TokenError(ValueError):
    """A token that cannot be used; the message names where it came from and the fix."""


def check_token(token: str, where: str, allow_short: bool = False) -> str:
    """``token`` if it can guard the service: not empty, no spaces around it (``matches`` ignores them, so
    they would not be part of it), and at least :data:`MIN_TOKEN_CHARS` characters unless ``allow_short``."""
    if not token.strip():
        raise TokenError(f"the query token ({where}) is empty")
    if token != token.strip():
        raise TokenError(f"the query token ({where}) starts or ends with white space: remove it")
    if len(token) < MIN_TOKEN_CHARS and not allow_short:
        raise TokenError(
            f"the query token ({where}) has {len(token)} characters; use at least {MIN_TOKEN_CHARS} "
            "(or leave it out: one is generated into the data folder), or give --allow-short-token"
        )
    return token


def read_token_file(path: Path) -> str:
    """The token in the file ``path`` (its first line, without the line break)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenError(f"cannot read the token file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    lines = text.splitlines()
    return lines[0] if lines else ""


def load_or_create_token(data_dir: Path) -> str:
    """The token stored in ``data_dir``, created (random, 256 bits, mode 0600) if there is none yet."""
    private_folder(data_dir)  # the database's opening warns if it is open to others
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
