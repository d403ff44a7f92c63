"""What one request or one machine may cost the service: body size, expansion, and rate.

The body is read chunk by chunk and refused as soon as it passes the compressed limit, so a sender
cannot make the service buffer more than that; ``wire.inflate`` then inflates incrementally and stops
at the expanded limit, so a gzip bomb costs at most that much memory.

The rate limiter is a token bucket per machine (GUID), charged one token per batch item. It lives in the
worker's memory: with N workers a machine gets up to N times the rate, which is fine for its purpose
(a runaway client must not crowd out the fleet), and needs no shared state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import msgspec
from aiohttp import web

from ceip_core import wire
from ceip_core.service.validation import BatchError, decode_batch


class BodyError(Exception):
    """A body refused as a whole: the HTTP status, and the machine-readable reason and detail."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail


async def read_batch(request: web.Request, max_compressed: int, max_expanded: int) -> list[msgspec.Raw]:
    """The raw items of a gzip batch request body; raises :class:`BodyError` (415, 413 or 400)."""
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding != "gzip":
        raise BodyError(
            415,
            "unsupported-encoding",
            f"send the batch gzip-compressed with Content-Encoding: gzip (got {encoding!r})",
        )
    if request.content_length is not None and request.content_length > max_compressed:
        raise BodyError(413, "too-large", f"body of {request.content_length} bytes (limit {max_compressed})")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > max_compressed:
                raise BodyError(413, "too-large", f"body larger than {max_compressed} bytes")
            chunks.append(chunk)
    except ConnectionError:  # the sender went away mid-body: its mistake (or its network's), not the service's
        raise BodyError(400, "incomplete-body", "the connection closed before the whole body arrived") from None
    try:
        return decode_batch(wire.inflate(b"".join(chunks), max_expanded=max_expanded))
    except wire.WireError as exc:
        raise BodyError(413 if exc.reason == "too-large" else 400, exc.reason, exc.detail) from None
    except BatchError as exc:
        raise BodyError(400, exc.reason, exc.detail) from None


#: Longest wait the limiter asks for.
MAX_WAIT_S = 3600.0


class RateLimiter:
    """A token bucket per key: ``burst`` tokens at most, refilled at ``per_s`` tokens a second."""

    def __init__(self, burst: float, per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.per_s = per_s
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        """key -> (tokens, when they were counted); a key with a full bucket need not be kept."""

    def _tokens(self, key: str, now: float) -> float:
        tokens, then = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - then) * self.per_s)

    def take(self, costs: Mapping[str, int]) -> float:
        """Charge each key its cost if every key can pay; else charge nothing.

        :returns: 0 if charged, else the seconds until every key could pay (what ``Retry-After`` says).
        A cost above ``burst`` is charged as ``burst``, so a big batch is slow but never refused forever.
        """
        now = self.clock()
        wait = 0.0
        balances = {}
        for key, cost in costs.items():
            tokens = self._tokens(key, now)
            need = min(float(cost), self.burst)
            balances[key] = tokens - need
            if tokens < need:
                wait = max(wait, min((need - tokens) / self.per_s if self.per_s > 0 else MAX_WAIT_S, MAX_WAIT_S))
        if wait:
            return wait
        for key, balance in balances.items():
            self._buckets[key] = (balance, now)
        if len(self._buckets) > 100_000:
            self._forget_full(now)
        return 0.0

    def _forget_full(self, now: float) -> None:
        """Drop keys whose buckets have refilled: they behave exactly like keys never seen."""
        self._buckets = {k: v for k, v in self._buckets.items() if self._tokens(k, now) < self.burst}
