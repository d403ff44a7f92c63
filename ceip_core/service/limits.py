"""What one request, one machine or one connection source may cost the service: body size, expansion,
items per batch, and rate.

The body is read chunk by chunk and refused as soon as it passes the compressed limit, so a sender
cannot make the service buffer more than that; ``wire.inflate`` then inflates incrementally and stops
at the expanded limit, so a gzip bomb costs at most that much memory; a batch of more than
``max_items`` items is refused whole (413 ``too-many-items``, with the limit, which the HTTPS transport
splits its batch to).

Two token-bucket limiters (:class:`RateLimiter`) are charged one token per batch item: one per machine
(GUID), so a runaway client cannot crowd out the fleet; and one per connection source, because anyone
can make up GUIDs, so the per-machine limit alone does not hold back one sender posing as many machines.
The source limiter is also charged one token per request before the body is read. A source is the peer
address of the connection, which the service otherwise never reads; the limiter keys it by
:func:`source_key`, a keyed hash with a random key made when the worker process starts and never
written anywhere, so what it holds cannot be turned back into an address, even from a memory dump
after a restart, and it is never logged or stored (docs/security.md). Both live in the worker's memory:
with N workers a sender gets up to N times the rate, which is fine for their purpose, and needs no
shared state.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import Generic, TypeVar

import msgspec
from aiohttp import web

from ceip_core import wire
from ceip_core.service.validation import BatchError, decode_batch


class BodyError(Exception):
    """A body refused as a whole: the HTTP status, the machine-readable reason and detail, and for
    ``too-many-items`` the most items a batch may hold (``limit``)."""

    def __init__(self, status: int, reason: str, detail: str, limit: int | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail
        self.limit = limit


async def read_batch(
    request: web.Request, max_compressed: int, max_expanded: int, max_items: int = wire.MAX_BATCH_ITEMS
) -> list[msgspec.Raw]:
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
        items = decode_batch(wire.inflate(b"".join(chunks), max_expanded=max_expanded))
    except wire.WireError as exc:
        raise BodyError(413 if exc.reason == "too-large" else 400, exc.reason, exc.detail) from None
    except BatchError as exc:
        raise BodyError(400, exc.reason, exc.detail) from None
    if len(items) > max_items:
        raise BodyError(
            413,
            "too-many-items",
            f"{len(items)} items in one batch; send at most {max_items} per batch",
            limit=max_items,
        )
    return items


#: The key of :func:`source_key`: made at random when the process starts, never written anywhere.
_SOURCE_KEY = secrets.token_bytes(32)


def source_key(host: str, key: bytes = _SOURCE_KEY) -> bytes:
    """What the per-source limiter knows of a connection's peer address ``host``: a keyed hash, never
    the address. An IPv6 address counts by its /64 network (one subscriber gets a whole /64, so counting
    single addresses would give one sender 2^64 sources); an IPv4-mapped IPv6 address as the IPv4 one."""
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        source = host  # not an IP address (a Unix socket's path, or none at all)
    else:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        source = str(ipaddress.ip_network(f"{address}/64", strict=False)) if address.version == 6 else str(address)
    return hashlib.blake2b(source.encode(), key=key, digest_size=16).digest()


def source_of(request: web.Request) -> bytes:
    """The :func:`source_key` of the connection a request came on (read here only, and held nowhere)."""
    peer = request.transport.get_extra_info("peername") if request.transport is not None else None
    return source_key(str(peer[0]) if isinstance(peer, tuple) and peer else "")


#: Longest wait the limiter asks for.
MAX_WAIT_S = 3600.0
#: Most keys a limiter holds (about 250 bytes each); past it the least recently charged key is forgotten,
#: which gives it a full bucket: leniency for one machine, never a refusal.
MAX_KEYS = 200_000


K = TypeVar("K", bound=Hashable)


class RateLimiter(Generic[K]):
    """A token bucket per key: ``burst`` tokens at most, refilled at ``per_s`` tokens a second.

    Each charge costs O(1) amortized, however many keys are held. A key with a full bucket behaves exactly
    like a key never seen, so it need not be kept. The buckets are kept in the order they were last charged
    (an ordered dict; a charged key moves to the end), and each charge first drops the full ones at the
    front, stopping at the first that is not full: every key is dropped at most once per time it was
    charged, so the work is constant per request. A bucket is full at the latest ``burst / per_s`` seconds
    (40 s by default) after its last charge, so the keys held are at most those charged within that time,
    and never more than ``max_keys``. (The baseline rebuilt the whole table on every request once it held
    100,000 keys: bench/limiter.py.)
    """

    def __init__(
        self, burst: float, per_s: float, clock: Callable[[], float] = time.monotonic, max_keys: int = MAX_KEYS
    ) -> None:
        self.burst = burst
        self.per_s = per_s
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: OrderedDict[K, tuple[float, float]] = OrderedDict()
        """key -> (tokens, when they were counted), least recently charged first."""

    def __len__(self) -> int:
        """How many keys are held (the others have full buckets)."""
        return len(self._buckets)

    def _tokens(self, key: K, now: float) -> float:
        tokens, then = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - then) * self.per_s)

    def take(self, costs: Mapping[K, int]) -> float:
        """Charge each key its cost if every key can pay; else charge nothing.

        :returns: 0 if charged, else the seconds until every key could pay (what ``Retry-After`` says).
        A cost above ``burst`` is charged as ``burst``, so a big batch is slow but never refused forever.
        """
        now = self.clock()
        self._forget_full(now)
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
            self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return 0.0

    def _forget_full(self, now: float) -> None:
        """Drop the keys at the front whose buckets have refilled, up to the first that has not."""
        buckets = self._buckets
        while buckets:
            key, (tokens, then) = next(iter(buckets.items()))
            if tokens + (now - then) * self.per_s < self.burst:
                return
            del buckets[key]
