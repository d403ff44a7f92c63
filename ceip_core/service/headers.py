"""Security headers on every answer of the service, JSON and errors included, not only the HTML pages.

The JSON answers carry aggregates behind the query token and must not be cached, sniffed into HTML or
framed any more than the pages may. Over TLS, ``Strict-Transport-Security`` tells browsers to keep using
HTTPS for this host (a year), so a later plain-HTTP link cannot be used to strip it.
"""

from __future__ import annotations

from aiohttp import web

#: Added to every answer that does not set them itself (the dashboard's pages set a stricter policy).
DEFAULTS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}
HSTS = "max-age=31536000"


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in DEFAULTS.items():
        response.headers.setdefault(name, value)
    if request.secure:
        response.headers.setdefault("Strict-Transport-Security", HSTS)


def add_security_headers(app: web.Application) -> None:
    app.on_response_prepare.append(_on_prepare)
