"""A small fake receiving service for the client-side tests: the real HTTP contract on loopback, with
switches that make it fail the ways a real service and network fail.

It runs a real aiohttp server in a thread of its own, so that a test can upload to it from its own event
loop, from ``ceip`` subprocesses and from detached uploaders alike. It stores items by id, so a test can
check that everything arrived exactly once, and counts every delivery, so it can see the duplicates.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ceip_core import wire


@dataclass
class Fail:
    """How the service answers one POST instead of normally."""

    status: int | None = None
    """Answer with this status (and ``body``, ``headers``) without storing anything."""
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop_after_store: bool = False
    """Store the items, then drop the connection before answering: the answer is lost."""
    delay: float = 0.0
    """Store the items, then wait this long before answering (a slow commit, or a client timeout)."""


class FakeService:
    """``POST /v1/reports``, ``POST /v1/deletions`` and ``GET /v1/policy`` on 127.0.0.1."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        self.stored: dict[str, dict[str, Any]] = {}
        """Items by id, as the service keeps them (a second delivery of an id changes nothing)."""
        self.deliveries: collections.Counter[str] = collections.Counter()
        """How many times each id was received in a request the service processed."""
        self.requests: list[tuple[str, str]] = []
        self.headers: list[dict[str, str]] = []
        self.script: list[Fail] = []
        """Failures for the next POSTs, first one first."""
        self.always: Fail | None = None
        """How every POST fails once ``script`` is used up (None: it does not)."""
        self.policy: Any = {"products": {}}
        self.policy_status = 200
        self.reject_products: dict[str, str] = {}
        """Per-item rejections: product -> reason."""
        self.reject_ids: dict[str, str] = {}
        """Per-item rejections: item id -> reason."""
        self.omit: set[str] = set()
        """Ids left out of the answer."""
        self.answer_body: bytes | None = None
        """Answer every POST with this body and status 200 (after storing)."""
        self.hang = False
        """Read the body, then never answer; note when the client goes away."""
        self.hanging = 0
        self.disconnected: list[float] = []
        self.answered: list[float] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"

    @property
    def posts(self) -> int:
        return sum(1 for method, _ in self.requests if method == "POST")

    # -- running ------------------------------------------------------------------------------------

    def start(self) -> FakeService:
        """Listen (again, on the same port after :meth:`stop`)."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, name="fake-service", daemon=True)
            self._thread.start()
        self.port = self._call(self._start())
        return self

    def stop(self) -> None:
        """Stop listening: connections to the port are refused until :meth:`start`."""
        if self._runner is not None:
            self._call(self._runner.cleanup())
            self._runner = None

    def close(self) -> None:
        self.stop()
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
            self._loop = None

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    async def _start(self) -> int:
        app = web.Application(client_max_size=wire.MAX_COMPRESSED_BYTES)
        app.router.add_post("/v1/reports", self._post)
        app.router.add_post("/v1/deletions", self._post)
        app.router.add_get("/v1/policy", self._policy)
        app.router.add_post("/elsewhere", self._post)
        # handler_cancellation: a handler learns (by being cancelled) that its client went away;
        # auto_decompress=False: the body is read as sent, and the wire module expands it within its limits.
        self._runner = web.AppRunner(
            app, handler_cancellation=True, auto_decompress=False, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.ssl_context).start()
        return int(self._runner.addresses[0][1])

    # -- handlers -----------------------------------------------------------------------------------

    async def _policy(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if self.policy_status != 200:
            return web.Response(status=self.policy_status)
        if isinstance(self.policy, bytes):
            return web.Response(body=self.policy, content_type="application/json")
        return web.json_response(self.policy)

    async def _post(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        self.headers.append(dict(request.headers))
        fail = self.script.pop(0) if self.script else self.always or Fail()
        body = await request.read()
        if fail.status is not None:
            return web.Response(status=fail.status, body=fail.body, headers=fail.headers)
        if self.hang:
            self.hanging += 1
            try:
                await asyncio.Event().wait()
            finally:
                self.disconnected.append(time.monotonic())
        try:
            raw_items = wire.read_body(body)
        except wire.WireError as exc:
            return web.json_response({"error": exc.reason, "detail": exc.detail}, status=400)
        results = [self._store(raw) for raw in raw_items]
        if fail.drop_after_store:
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError  # the answer is lost with the connection
        if fail.delay:
            await asyncio.sleep(fail.delay)
        self.answered.append(time.time())
        if self.answer_body is not None:
            return web.Response(body=self.answer_body, content_type="application/json")
        return web.json_response({"results": [r for r in results if r["id"] not in self.omit]})

    def _store(self, raw: Any) -> dict[str, Any]:
        item_id = raw.get("report_id") or raw["request_id"]
        self.deliveries[item_id] += 1
        try:
            wire.structure_item(raw)
        except wire.WireError as exc:
            return {"id": item_id, "status": "rejected", "reason": exc.reason}
        reason = self.reject_ids.get(item_id) or self.reject_products.get(raw["product"])
        if reason is not None:
            return {"id": item_id, "status": "rejected", "reason": reason}
        if item_id in self.stored:
            return {"id": item_id, "status": "duplicate"}
        self.stored[item_id] = raw
        return {"id": item_id, "status": "accepted"}
