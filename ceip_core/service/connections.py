"""What idle, slow or broken connections may cost a worker: a bounded number of sockets and log lines.

aiohttp closes a connection that has no complete request head when its keep-alive timer fires, and
that timer starts when the connection is made and again after each answer; the service sets it to the
idle timeout, so one number bounds both the time to send a head and the time kept alive between requests.
What aiohttp does not bound is how many connections a worker holds: :class:`ConnectionGuard` answers 503
(with ``Retry-After``) and closes a connection beyond ``max_connections``, before the open-files limit is
reached, so that the worker can still accept a health check once the idle ones time out.

Errors that repeat with every bad connection (a refused connection, an out-of-files accept, a garbled
request) are logged once and then counted: :class:`RepeatLog` writes at most one line per kind and
interval. None of these lines names the sender: asyncio's context (which holds sockets and transports,
whose descriptions carry the peer's address) is never printed, and aiohttp's "Error handling request from
<address>" is rewritten by :func:`hide_addresses`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

#: What a connection beyond the limit is told before it is closed.
_BUSY_BODY = b'{"error": "busy", "detail": "too many open connections; retry later"}'
BUSY_ANSWER = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)
#: Shortest time between two log lines about the same kind of repeated error.
REPEAT_EVERY_S = 60.0


class RepeatLog:
    """Log each kind of repeated event at most once per ``every`` seconds, with how many were not logged."""

    def __init__(
        self, logger: logging.Logger, every: float = REPEAT_EVERY_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.logger = logger
        self.every = every
        self.clock = clock
        self._last: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def note(self, level: int, message: str, kind: str | None = None) -> bool:
        """Log ``message`` unless one of the same ``kind`` (default: the message) was logged within
        ``every`` seconds; True if logged."""
        kind = message if kind is None else kind
        now = self.clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.every:
            self._unlogged[kind] = self._unlogged.get(kind, 0) + 1
            return False
        self._last[kind] = now
        more = self._unlogged.pop(kind, 0)
        suffix = f" (and {more} more in the last {now - last:.0f} s)" if more and last is not None else ""
        self.logger.log(level, "%s%s", message, suffix)
        return True

    def flush(self) -> None:
        """Log the counts not logged yet (at shutdown)."""
        for kind, more in sorted(self._unlogged.items()):
            self.logger.info("%s: %d more time(s) not logged", kind, more)
        self._unlogged.clear()

    def loop_exception(self, _loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The event loop's exception handler: the message and the exception, never the context's objects."""
        exc = context.get("exception")
        message = str(context.get("message", "event loop error"))
        detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        self.note(logging.ERROR, message + detail, kind=f"{message} ({type(exc).__name__})")


class ConnectionGuard:
    """The protocol factory of a worker's listening socket: aiohttp's handler while fewer than ``limit``
    connections are open, else a protocol that answers 503 and closes."""

    def __init__(self, server: web.Server, limit: int, repeats: RepeatLog) -> None:
        self.server = server
        self.limit = limit
        self.repeats = repeats
        self.refused = 0

    def __call__(self) -> asyncio.BaseProtocol:
        if len(self.server.connections) < self.limit:
            return self.server()
        self.refused += 1
        self.repeats.note(logging.WARNING, f"refused connections: {self.limit} open, the most per worker")
        return _Busy()


#: How long a refused connection stays open for the sender to read the answer (a close with its request
#: unread would reset the connection and lose the answer).
BUSY_LINGER_S = 1.0


class _Busy(asyncio.Protocol):
    """Answer 503, stop sending, read and discard until the sender closes or :data:`BUSY_LINGER_S`."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, but not always an asyncio.Transport instance: uvloop's is not a subclass.
        transport = cast(asyncio.Transport, transport)
        transport.write(BUSY_ANSWER)
        if transport.can_write_eof():
            transport.write_eof()
        asyncio.get_running_loop().call_later(BUSY_LINGER_S, transport.close)

    def data_received(self, data: bytes) -> None:
        pass


#: aiohttp's messages that carry the sender's address, as the service logs them instead.
_ADDRESSED = {"Error handling request from %s": "Refused a request that could not be handled: %s"}


class _HideAddresses(logging.Filter):
    """Rewrite aiohttp's per-request error messages without the address, and rate-limit them."""

    def __init__(self) -> None:
        super().__init__()
        self.repeats = RepeatLog(logging.getLogger("ceip_core.service.connections"))

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg not in _ADDRESSED:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        # One line, however the sender's bytes (which aiohttp quotes) were broken up.
        what = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}" if exc is not None else "unknown error"
        # Unparsable bytes are the sender's problem, not the service's: information, not an error.
        level = min(record.levelno, logging.INFO) if isinstance(exc, HttpProcessingError) else record.levelno
        self.repeats.note(level, _ADDRESSED[str(record.msg)] % what, kind=type(exc).__name__)
        return False


def hide_addresses() -> None:
    """Install the rewriting of aiohttp's addressed messages (on the logger aiohttp's server writes to)."""
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _HideAddresses) for f in server_log.filters):
        server_log.addFilter(_HideAddresses())
