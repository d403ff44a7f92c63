"""Dashboard sessions: a person types the query token once, on a login page, and gets a signed cookie.

A browser cannot send a bearer header by itself, and basic auth's prompt cannot log out; so the login
page trades the token for a session cookie. The cookie is *signed, not stored*: ``<expiry>.<nonce>.<mac>``
with an HMAC-SHA256 keyed by a key derived from the token. Every worker of every host that knows the token
verifies it without shared state, it expires on its own (``SESSION_TTL_S``), and changing the token ends
every session at once. It is ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page
can make the browser send it, so no cross-site request acts with it) and ``Secure`` over HTTPS. Logging
out clears it from the browser.
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
    return hmac.new(token.encode(), b"ceip dashboard session v1", hashlib.sha256).digest()


def _mac(token: str, payload: str) -> str:
    return hmac.new(_key(token), payload.encode(), hashlib.sha256).hexdigest()


def issue(token: str, now: float | None = None) -> str:
    """A new session cookie value, valid for ``SESSION_TTL_S``."""
    payload = f"{int((time.time() if now is None else now) + SESSION_TTL_S)}.{secrets.token_urlsafe(16)}"
    return f"{payload}.{_mac(token, payload)}"


def valid(cookie: str | None, token: str, now: float | None = None) -> bool:
    """True if ``cookie`` was issued with ``token`` and has not expired. Any malformed value is just False."""
    if not cookie or cookie.count(".") != 2:
        return False
    payload, _, mac = cookie.rpartition(".")
    if not hmac.compare_digest(mac.encode(), _mac(token, payload).encode()):
        return False
    expiry = payload.partition(".")[0]
    return expiry.isdigit() and (time.time() if now is None else now) < int(expiry)
