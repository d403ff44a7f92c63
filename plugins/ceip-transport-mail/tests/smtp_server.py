"""A real SMTP server on 127.0.0.1 for the tests (aiosmtpd), in a thread of its own, with a collecting
mailbox that can be told to refuse, ask to retry, or hold messages."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Coroutine
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session
from ceip_transport_mail.mailbox import extract


class CollectingMailbox:
    """The aiosmtpd handler: keeps every message it accepts, answers as told."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.answer: str | None = None
        """Answer every message with this reply instead of storing it (``451 ...``, ``550 ...``)."""
        self.refuse: dict[str, str] = {}
        """Item id -> reason: refuse the message carrying that item with ``550 5.7.1 <reason>``."""
        self.hold = False
        """Take the message in, then never answer until the client goes away."""
        self.holding = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        if self.answer is not None:
            return self.answer
        found = extract(content)
        if found is not None and found[0] in self.refuse:
            return f"550 5.7.1 {self.refuse[found[0]]}"
        if self.hold:
            self.holding += 1
            try:
                await asyncio.Event().wait()  # cancelled by aiosmtpd when the connection is lost
            finally:
                self.holding -= 1
        self.messages.append(content)
        return "250 2.0.0 stored"


class SmtpServer:
    """Listens on a free loopback port (``port``) until :meth:`stop`; STARTTLS with ``tls_context``."""

    def __init__(self, mailbox: CollectingMailbox, tls_context: ssl.SSLContext | None = None) -> None:
        self.mailbox = mailbox
        self.tls_context = tls_context
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="smtp-server", daemon=True)
        self._server: asyncio.Server | None = None
        self._sessions: list[SMTP] = []

    def start(self) -> SmtpServer:
        self._thread.start()
        self._server = self._call(self._listen())
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _listen(self) -> asyncio.Server:
        def protocol() -> SMTP:
            session = SMTP(
                self.mailbox,
                hostname="mail.test",
                tls_context=self.tls_context,
                require_starttls=self.tls_context is not None,
            )
            self._sessions.append(session)
            return session

        return await self._loop.create_server(protocol, "127.0.0.1", 0)

    def stop(self) -> None:
        """Stop listening and drop every open session: the destination is gone."""
        if self._server is not None:
            self._call(self._drop_sessions(self._server))
            self._server = None

    async def _drop_sessions(self, server: asyncio.Server) -> None:
        # On the server's own loop: an asyncio.Server is not thread-safe (closed from another thread, it
        # raced a connection ending on this one).
        server.close()
        for session in self._sessions:
            if session.transport is not None:
                session.transport.abort()
        self._sessions.clear()

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)
