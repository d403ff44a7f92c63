"""Dashboard sessions: a person types the query token once, on a login page, and gets a signed cookie.

A browser cannot send a bearer header by itself, and basic auth's prompt cannot log out; so the login
page trades the token for a session cookie: ``<expiry>.<epoch>.<nonce>.<mac>`` with an HMAC-SHA256 keyed
by a key derived from the token. Every worker of every host that knows the token verifies the signature
without shared state, a cookie expires on its own (``SESSION_TTL_S``), and changing the token ends every
session at once.

Logging out must end the session everywhere, also for a copy of the cookie: the *session epoch*, a
counter in the database every worker reads, is signed into each cookie, and logging out moves it on, so
every cookie issued before no longer verifies on any worker. (All sessions share the one query token,
so there is one principal: ending its sessions is what logging out means.)

The cookie is ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page can make the
browser send it) and ``Secure`` over HTTPS.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

#: The cookie's name.
COOKIE = "ceip_session"
#: How long a login lasts: a working day.
SESSION_TTL_S = 8 * 3600


def _key(token: str) -> bytes:
    """The signing key: derived from the token, so a cookie never carries (or reveals) the token itself."""
    return hmac.new(token.encode(), b"ceip dashboard session v2", hashlib.sha256).digest()


def _mac(token: str, payload: str) -> str:
    return hmac.new(_key(token), payload.encode(), hashlib.sha256).hexdigest()


def issue(token: str, epoch: int, now: float | None = None) -> str:
    """A new session cookie value for the current session ``epoch``, valid for ``SESSION_TTL_S``."""
    expiry = int((time.time() if now is None else now) + SESSION_TTL_S)
    payload = f"{expiry}.{epoch}.{secrets.token_urlsafe(16)}"
    return f"{payload}.{_mac(token, payload)}"


def valid(cookie: str | None, token: str, epoch: int, now: float | None = None) -> bool:
    """True if ``cookie`` was issued with ``token`` in session ``epoch`` and has not expired.

    Any malformed value is just False.
    """
    if not cookie or cookie.count(".") != 3:
        return False
    payload, _, mac = cookie.rpartition(".")
    if not hmac.compare_digest(mac.encode(), _mac(token, payload).encode()):
        return False
    expiry, issued_in = payload.split(".")[:2]
    if not (expiry.isdigit() and issued_in.isdigit()) or int(issued_in) != epoch:
        return False
    return (time.time() if now is None else now) < int(expiry)
