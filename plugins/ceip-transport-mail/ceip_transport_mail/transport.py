"""The mail transport (``smtp://relay[:port]?to=survey@vendor.example``): one message per item to a
collecting mailbox, the way Debian's popularity-contest reports.

Each message carries one item as a gzip batch body (docs/wire-format.md in ceip) in an attachment named
``<item id>.ceip.json.gz``, so the mailbox's owner saves the attachments into a folder
(``python -m ceip_transport_mail.mailbox``) and runs ``ceip import`` on it; the receiving service's
de-duplication by item id makes a message that arrives twice harmless. One message per item lets the
server answer per item, as the Transport contract asks:

- the answer to the message (after ``DATA``): 2xx accepted; 4xx kept to retry; 5xx rejected for good,
  the reply text as the reason (a message too large, content refused);
- a refused sender or recipient (``MAIL FROM``/``RCPT TO``), a greeting, ``EHLO`` or ``STARTTLS``
  failure, a refused or dropped connection, a timeout: nothing about the report, so kept to retry. A
  mistyped mailbox must not destroy the queue (the HTTP transport retries a 404 for the same reason).

SMTP cannot say how long to wait, so a retry carries no delay and the uploader's backoff applies.

Privacy: the greeting names no host (``EHLO localhost``, not the machine's name), the ``Message-ID`` is
made from the item id, the date is in UTC, and the sender defaults to the collecting address itself.
The relay still adds its ``Received`` lines with the sender's address: strip them before the mail is
kept, as the receiving service never stores an IP.

smtplib blocks, so a send runs in a worker thread; cancelling the send (an opt-out) shuts the socket
down under that thread, which ends the transfer at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import smtplib
import socket
import ssl
import threading
from collections.abc import Callable, Sequence
from email.message import EmailMessage
from email.utils import formatdate
from urllib.parse import parse_qs, urlsplit

from ceip_core import wire
from ceip_core.default_plugins.file_transport import SUFFIX
from ceip_core.default_plugins.http_transport import ca_context, is_loopback
from ceip_core.hookspecs import hookimpl
from ceip_core.transport import Batch, BatchItem, Outcome, SendResult, TransportFactory

#: URL query options this transport understands.
OPTIONS = ("to", "from", "starttls", "ca", "allow_plain")
#: The name the client greets with: never the machine's own name.
HELO_NAME = "localhost"
#: Domain of the ``Message-ID`` made from each item id.
MESSAGE_ID_DOMAIN = "ceip.invalid"
#: Seconds one SMTP command may wait for its answer (connect, each command, each message).
DEFAULT_TIMEOUT_S = 60.0
#: Longest reason kept from a reply: reasons become drop counter names.
MAX_REASON_CHARS = 64


def _flag(options: dict[str, list[str]], name: str) -> bool:
    return options.get(name, ["0"])[-1].lower() in ("1", "true", "yes")


class MailTransport:
    """Sends each item of a batch as one message, over one SMTP session per batch."""

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        parts = urlsplit(url)
        if parts.scheme != "smtp" or not parts.hostname:
            raise ValueError(f"not an smtp:// URL: {url!r}")
        options = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ValueError(f"unknown option {', '.join(unknown)} in {url!r} (known: {', '.join(OPTIONS)})")
        to = options.get("to", [""])[-1]
        if "@" not in to:
            raise ValueError(f"{url!r} names no mailbox: add ?to=ADDRESS (the collecting mailbox)")
        self.host = parts.hostname
        self.port = parts.port or 25
        self.to = to
        self.sender = options.get("from", [to])[-1]
        self.timeout = timeout
        self.starttls = _flag(options, "starttls")
        ca = options.get("ca", [None])[-1]
        if ca is not None and not self.starttls:
            raise ValueError(f"a CA file applies with ?starttls=1 only: {url!r}")
        if not self.starttls and not is_loopback(self.host) and not _flag(options, "allow_plain"):
            raise ValueError(
                f"refusing plain SMTP to {self.host}: reports would cross the network unencrypted. "
                f"Add ?starttls=1, or ?allow_plain=1 if that network is trusted"
            )
        # With a CA file, only that CA is trusted; without one, the system's CAs are.
        self.tls_context = (ca_context(ca) if ca else ssl.create_default_context()) if self.starttls else None

    # -- the Transport contract ---------------------------------------------------------------------

    async def send(self, batch: Batch) -> Sequence[SendResult]:
        session = _Session(self)
        delivery = asyncio.ensure_future(asyncio.to_thread(session.deliver, batch.items))
        try:
            return await asyncio.shield(delivery)
        except asyncio.CancelledError:
            session.abort()  # the worker's next socket call fails, and it returns
            raise

    async def flush(self, timeout: float | None = None) -> bool:
        return True  # nothing is buffered: send returns when the server has answered every message

    async def close(self) -> None:
        return None  # each send opens and closes its own session

    # -- messages -----------------------------------------------------------------------------------

    def message(self, item: BatchItem) -> bytes:
        """The message carrying ``item``: a line for a person, and the item as a one-item batch file."""
        msg = EmailMessage(policy=email.policy.SMTP)
        msg["From"] = self.sender
        msg["To"] = self.to
        msg["Subject"] = f"ceip {item.kind} {item.product}"
        msg["Date"] = formatdate(usegmt=True)
        msg["Message-ID"] = f"<{item.item_id}@{MESSAGE_ID_DOMAIN}>"
        msg.set_content(
            "A ceip telemetry item. Save the attachment into a folder and run `ceip import` on it "
            "(python -m ceip_transport_mail.mailbox does that for a whole mailbox).\n"
        )
        msg.add_attachment(
            wire.encode_batch([item.data]),
            maintype="application",
            subtype="gzip",
            filename=f"{item.item_id}{SUFFIX}",
        )
        return msg.as_bytes()


class _Session:
    """One SMTP session, run by a worker thread; :meth:`abort` ends it from any thread."""

    def __init__(self, transport: MailTransport) -> None:
        self.transport = transport
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._aborted = False

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            if self._sock is not None:
                with contextlib.suppress(OSError):  # already closed
                    self._sock.shutdown(socket.SHUT_RDWR)

    def deliver(self, items: Sequence[BatchItem]) -> list[SendResult]:
        t = self.transport
        results: list[SendResult] = []
        try:
            smtp = self._connect()
        except (OSError, smtplib.SMTPException) as exc:
            return [SendResult(i.item_id, Outcome.RETRY, _describe(exc, t)) for i in items]
        left = "session ended"
        try:
            for item in items:
                result, session_over = self._send_one(smtp, item)
                results.append(result)
                if session_over:  # the session is gone, or refuses every message alike: keep the rest
                    left = result.reason or left
                    break
        finally:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()
        answered = {r.item_id for r in results}
        return results + [SendResult(i.item_id, Outcome.RETRY, left) for i in items if i.item_id not in answered]

    def _connect(self) -> smtplib.SMTP:
        t = self.transport
        smtp = smtplib.SMTP(t.host, t.port, timeout=t.timeout, local_hostname=HELO_NAME)
        with self._lock:
            self._sock = smtp.sock
            if self._aborted:
                smtp.close()
                raise OSError("send cancelled")
        try:
            smtp.ehlo()
            if t.starttls:
                smtp.starttls(context=t.tls_context)
                with self._lock:
                    self._sock = smtp.sock
                smtp.ehlo()
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _send_one(self, smtp: smtplib.SMTP, item: BatchItem) -> tuple[SendResult, bool]:
        """The result for ``item``, and whether the session is over for the items after it."""
        t = self.transport
        try:
            smtp.sendmail(t.sender, [t.to], t.message(item))
        except smtplib.SMTPDataError as exc:
            reason = _reply(exc.smtp_code, exc.smtp_error)
            if 500 <= exc.smtp_code < 600:
                return SendResult(item.item_id, Outcome.REJECTED, reason), False
            return SendResult(item.item_id, Outcome.RETRY, reason), exc.smtp_code == 421
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            return SendResult(item.item_id, Outcome.RETRY, f"recipient refused: {_reply(code, text)}"), True
        except smtplib.SMTPSenderRefused as exc:
            reason = f"sender refused: {_reply(exc.smtp_code, exc.smtp_error)}"
            return SendResult(item.item_id, Outcome.RETRY, reason), True
        except (OSError, smtplib.SMTPException) as exc:
            return SendResult(item.item_id, Outcome.RETRY, _describe(exc, t)), True
        return SendResult(item.item_id, Outcome.ACCEPTED), False


def _reply(code: int, text: bytes | str) -> str:
    """A server reply as a reason: code and text on one line, cut to :data:`MAX_REASON_CHARS`."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return " ".join(f"{code} {text}".split())[:MAX_REASON_CHARS]


def _describe(exc: BaseException, t: MailTransport) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        return _reply(exc.smtp_code, exc.smtp_error)
    if isinstance(exc, TimeoutError):
        return f"timeout talking to {t.host}:{t.port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verification failed: {exc.verify_message}"
    return f"{type(exc).__name__}: {exc}"[:200]


@hookimpl
def ceip_register_transports(register: Callable[[str, TransportFactory], None]) -> None:
    register("smtp", MailTransport)
