"""A fault-injecting HTTP proxy on loopback, for the fault campaign (bench/faults.py) and its tests.

It sits between a client and a real receiving service and, request by request, either passes the
exchange through or fails it the ways a network and an overloaded service fail:

- ``503`` / ``429``: answered by the proxy itself with ``Retry-After``; the service never sees the request;
- ``reset-request``: half of the request body reaches the service, then both connections are reset;
- ``reset-response``: the request reaches the service (which stores it), then the connection is reset
  half-way through the answer: the client must retry, and the service must not store the items twice;
- ``garble``: the service's answer has its body replaced by bytes of the same length that are not JSON;
- ``stall``: the service answers, and the proxy holds the answer back for ``stall_s`` (past the client's
  timeout) before closing the connection without sending it.

It speaks just enough HTTP/1.1 for that: requests and answers with a ``Content-Length`` (what aiohttp sends
for a byte body), keep-alive on the client's side, one upstream connection per client connection. It is
plain asyncio, so it runs inside a test's event loop or, for synchronous callers, in a thread of its own
(:meth:`FaultProxy.start_in_thread`). It counts what it did and every status the service answered, so a
caller can tell a 5xx of the service from a fault the proxy injected.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import random
import socket
import struct
import threading
from collections.abc import Callable, Coroutine
from typing import Any

LOOPBACK = "127.0.0.1"
FAULTS = ("pass", "503", "429", "reset-request", "reset-response", "garble", "stall")
#: Longest request or answer head the proxy reads; a longer one closes the connection.
MAX_HEAD = 64 * 1024

Chooser = Callable[[str, str], str]
"""``choose(method, path) -> fault``: which of :data:`FAULTS` to apply to one request."""


def weighted(weights: dict[str, float], seed: int | None = None, only_posts: bool = True) -> Chooser:
    """A chooser that draws faults with these weights (e.g. ``{"pass": 5, "503": 1}``), reproducibly from
    ``seed``; with ``only_posts``, other requests (the policy fetch) always pass."""
    unknown = set(weights) - set(FAULTS)
    if unknown:
        raise ValueError(f"unknown faults {sorted(unknown)} (known: {', '.join(FAULTS)})")
    rng = random.Random(seed)
    names, cum = list(weights), list(weights.values())

    def choose(method: str, path: str) -> str:
        if only_posts and method != "POST":
            return "pass"
        return rng.choices(names, cum)[0]

    return choose


def scripted(faults: list[str]) -> Chooser:
    """A chooser that applies ``faults`` to the next POSTs in order, then passes everything."""
    queue = list(faults)

    def choose(method: str, path: str) -> str:
        return queue.pop(0) if method == "POST" and queue else "pass"

    return choose


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (RST), as a broken network or a crashed peer does, not a clean FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            try:
                return int(value.strip())
            except ValueError:
                return None
    return None


async def _read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    """One HTTP message (head, body) with a Content-Length body, or None when the peer closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None
    length = _content_length(head)
    if length is None:
        return head, b""
    try:
        return head, await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


class FaultProxy:
    """Listens on 127.0.0.1 and forwards to ``upstream`` (a loopback port), applying ``choose``'s faults."""

    def __init__(self, upstream_port: int, choose: Chooser | None = None, *, stall_s: float = 5.0) -> None:
        self.upstream_port = upstream_port
        self.choose: Chooser = choose or (lambda method, path: "pass")
        self.stall_s = stall_s
        self.port = 0
        self.faults: collections.Counter[str] = collections.Counter()
        """Requests by the fault applied (``pass`` included)."""
        self.statuses: collections.Counter[int] = collections.Counter()
        """Statuses the upstream service answered (not those the proxy made up)."""
        self.accepted: collections.Counter[str] = collections.Counter()
        """How often the service answered ``accepted`` for each item id (twice: the item was stored twice)."""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def server_errors(self) -> int:
        """Answers of the service itself with a status of 500 or more."""
        return sum(n for status, n in self.statuses.items() if status >= 500)

    # -- in an event loop --------------------------------------------------------------------------

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._serve, LOOPBACK, self.port, limit=MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    # -- from synchronous code ---------------------------------------------------------------------

    def start_in_thread(self) -> FaultProxy:
        """Run the proxy on an event loop in a daemon thread (for callers that drive processes)."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        self._call(self.start())
        return self

    def stop_thread(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self._call(self.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    # -- one client connection ---------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                head = await self._read_head(reader)
                if head is None:
                    return
                request_line = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
                method, path = ([*request_line, "", ""])[:2]
                fault = self.choose(method, path)
                self.faults[fault] += 1
                length = _content_length(head) or 0
                try:
                    body = await reader.readexactly(length)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                if fault in ("503", "429"):
                    text = b'{"error": "proxy-fault", "detail": "injected by the fault proxy"}'
                    writer.write(
                        f"HTTP/1.1 {fault} Injected\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                        f"Content-Length: {len(text)}\r\n\r\n".encode()
                        + text
                    )
                    await writer.drain()
                    continue
                if upstream is None:
                    try:
                        upstream = await asyncio.open_connection(LOOPBACK, self.upstream_port, limit=MAX_HEAD)
                    except OSError:
                        _reset(writer)  # the service is down: the client sees a refused exchange, not a 502
                        return
                up_reader, up_writer = upstream
                if fault == "reset-request":
                    up_writer.write(head + body[: length // 2])
                    await up_writer.drain()
                    _reset(up_writer)
                    _reset(writer)
                    return
                up_writer.write(head + body)
                await up_writer.drain()
                answer = await _read_message(up_reader)
                if answer is None:
                    _reset(writer)  # the service died mid-answer
                    return
                answer_head, answer_body = answer
                status = int(answer_head.split(b" ", 2)[1])
                self.statuses[status] += 1
                if status == 200 and method == "POST":
                    self._count_accepted(answer_body)
                if fault == "reset-response":
                    writer.write((answer_head + answer_body)[: len(answer_head) + len(answer_body) // 2])
                    await writer.drain()
                    _reset(writer)
                    return
                if fault == "stall":
                    await asyncio.sleep(self.stall_s)
                    writer.close()
                    return
                if fault == "garble":
                    answer_body = bytes(random.getrandbits(8) | 0x80 for _ in answer_body)
                writer.write(answer_head + answer_body)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:  # the proxy is closing: this connection ends with it
            return
        finally:
            self._tasks.discard(task)
            if upstream is not None:
                upstream[1].close()
            if not writer.is_closing():
                writer.close()

    def _count_accepted(self, answer: bytes) -> None:
        try:
            results = json.loads(answer)["results"]
        except (ValueError, KeyError, TypeError):
            return
        for result in results:
            if isinstance(result, dict) and result.get("status") == "accepted":
                self.accepted[str(result.get("id"))] += 1

    async def _read_head(self, reader: asyncio.StreamReader) -> bytes | None:
        try:
            return await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            return None
