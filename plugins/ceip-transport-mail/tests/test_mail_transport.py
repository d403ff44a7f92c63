"""The mail transport against a real SMTP server on loopback: the conformance suite ceip ships for
transport authors, then what is particular to mail (the URL, STARTTLS, privacy of the envelope, the
collecting side's unpacking)."""

from __future__ import annotations

import datetime
import email
import email.policy
import ipaddress
import mailbox
import socket
import ssl
import subprocess
import sys
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import pytest
from ceip_transport_mail.mailbox import extract, unpack
from ceip_transport_mail.transport import MailTransport
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ceip_core import wire
from ceip_core.conformance import report_item
from ceip_core.consent import Consent
from ceip_core.plugins import Plugins
from ceip_core.spool import Spool
from ceip_core.statedb import StateDB
from ceip_core.testing import TransportConformance, TransportHarness
from ceip_core.transport import Batch, Outcome, Transport

sys.path.insert(0, str(Path(__file__).parent))
from smtp_server import CollectingMailbox, SmtpServer

TO = "survey@vendor.example"


class MailboxHarness(TransportHarness):
    """The collecting mailbox behind a real SMTP server."""

    tells_retry_delay = False  # SMTP has no Retry-After

    def __init__(self, server: SmtpServer, query: str = "") -> None:
        self.server = server
        self.box = server.mailbox
        self.query = query

    def make_transport(self) -> Transport:
        return MailTransport(f"smtp://127.0.0.1:{self.server.port}?to={TO}{self.query}", timeout=10.0)

    async def accept(self) -> None:
        self.box.answer, self.box.refuse, self.box.hold = None, {}, False

    async def retry_later(self, seconds: float) -> None:
        self.box.answer = "451 4.3.0 mailbox busy, try again later"

    async def reject(self, reason: str, item_ids: Collection[str] | None = None) -> None:
        if item_ids is None:
            self.box.answer = f"554 5.7.1 {reason}"
        else:
            self.box.refuse = dict.fromkeys(item_ids, reason)

    async def stall(self) -> None:
        self.box.hold = True

    def stalled(self) -> int:
        return self.box.holding

    async def unreachable(self) -> None:
        self.server.stop()

    def received(self) -> list[Any]:
        items = []
        for message in self.box.messages:
            found = extract(message)
            assert found is not None, "a message without a readable item arrived"
            items += wire.read_body(found[1])
        return items


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer(CollectingMailbox()).start()
    try:
        yield server
    finally:
        server.close()


class TestMailTransport(TransportConformance):
    @pytest.fixture
    def ceip_transport_under_test(self, smtp_server: SmtpServer) -> MailboxHarness:
        return MailboxHarness(smtp_server)


def self_signed(folder: Path) -> tuple[Path, ssl.SSLContext]:
    """A certificate for 127.0.0.1 (its own CA file) and a server context presenting it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return cert_path, context


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[SmtpServer, Path]]:
    """An SMTP server that requires STARTTLS, and its certificate."""
    cert, context = self_signed(tmp_path / "tls")
    server = SmtpServer(CollectingMailbox(), tls_context=context).start()
    try:
        yield server, cert
    finally:
        server.close()


class TestMailTransportOverStarttls(TransportConformance):
    """The whole suite again with the session encrypted (the server refuses mail without STARTTLS)."""

    @pytest.fixture
    def ceip_transport_under_test(self, tls_server: tuple[SmtpServer, Path]) -> MailboxHarness:
        server, cert = tls_server
        return MailboxHarness(server, f"&starttls=1&ca={cert}")


# -- what is particular to mail ----------------------------------------------------------------------------


async def test_a_server_requiring_starttls_gets_nothing_in_the_clear(tls_server: tuple[SmtpServer, Path]) -> None:
    server, _ = tls_server
    transport = MailTransport(f"smtp://127.0.0.1:{server.port}?to={TO}")
    results = await transport.send(Batch([report_item()]))
    assert [r.outcome for r in results] == [Outcome.RETRY]
    assert "STARTTLS" in (results[0].reason or "")
    assert server.mailbox.messages == []


async def test_an_untrusted_certificate_is_refused_and_retried(
    tls_server: tuple[SmtpServer, Path], tmp_path: Path
) -> None:
    server, _ = tls_server
    other, _ = self_signed(tmp_path / "other")
    transport = MailTransport(f"smtp://127.0.0.1:{server.port}?to={TO}&starttls=1&ca={other}")
    results = await transport.send(Batch([report_item()]))
    assert [r.outcome for r in results] == [Outcome.RETRY]
    assert "certificate verification failed" in (results[0].reason or "")
    assert server.mailbox.messages == []


async def test_a_refused_mailbox_keeps_the_queue(smtp_server: SmtpServer) -> None:
    """A mistyped collecting address (550 at RCPT TO) is a configuration problem, not a verdict on the
    reports: every item is kept to retry."""

    class NoSuchUser(CollectingMailbox):
        async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
            return "550 5.1.1 no such mailbox"

    smtp_server.mailbox.__class__ = NoSuchUser
    transport = MailTransport(f"smtp://127.0.0.1:{smtp_server.port}?to=typo@vendor.example")
    batch = Batch([report_item(), report_item()])
    results = await transport.send(batch)
    assert [r.outcome for r in results] == [Outcome.RETRY, Outcome.RETRY]
    assert all("550 5.1.1 no such mailbox" in (r.reason or "") for r in results)


async def test_the_envelope_names_no_machine(smtp_server: SmtpServer) -> None:
    """The greeting says ``localhost``, the sender is the collecting address, and the message holds
    neither the machine's name nor a local time zone."""
    seen: list[str] = []

    class Recording(CollectingMailbox):
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            seen.append(session.host_name)
            seen.append(envelope.mail_from)
            return await super().handle_DATA(server, session, envelope)

    smtp_server.mailbox.__class__ = Recording
    transport = MailTransport(f"smtp://127.0.0.1:{smtp_server.port}?to={TO}")
    assert [r.outcome for r in await transport.send(Batch([report_item()]))] == [Outcome.ACCEPTED]
    assert seen == ["localhost", TO]
    message = smtp_server.mailbox.messages[0]
    # What the message says in words: every header of every part, and the attachment as it decodes (its
    # base64 form may hold any short name by chance).
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    said = "\n".join(f"{k}: {v}" for part in parsed.walk() for k, v in part.items())
    found = extract(message)
    assert found is not None
    said += "\n" + "\n".join(map(str, wire.read_body(found[1])))
    for name in {socket.gethostname(), socket.getfqdn()} - {"localhost"}:
        assert name not in said
    assert "+0000" in parsed["Date"] or "GMT" in parsed["Date"]


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("smtp://mail.vendor.example", "names no mailbox"),
        ("smtp://mail.vendor.example?to=survey@vendor.example", "refusing plain SMTP to mail.vendor.example"),
        ("smtp://127.0.0.1?to=a@b.example&cafile=x", "unknown option cafile"),
        ("smtp://127.0.0.1?to=a@b.example&ca=/x.pem", "applies with ?starttls=1 only"),
        ("http://127.0.0.1?to=a@b.example", "not an smtp:// URL"),
    ],
)
def test_urls_that_cannot_serve_are_refused_when_made(url: str, error: str) -> None:
    with pytest.raises(ValueError, match=error.replace("?", r"\?")):
        MailTransport(url)


def test_urls_that_serve() -> None:
    assert MailTransport("smtp://mail.vendor.example?to=survey@vendor.example&allow_plain=1").port == 25
    made = MailTransport("smtp://mail.vendor.example:587?to=survey@vendor.example&starttls=1&from=ceip@vendor.example")
    assert (made.port, made.sender, made.starttls) == (587, "ceip@vendor.example", True)


def test_the_plugin_registers_the_smtp_scheme() -> None:
    """Installed, the distribution's entry point gives ceip the ``smtp`` scheme (``ceip upload --to smtp://...``)."""
    plugins = Plugins.load(entry_points=True)
    transport = plugins.transport_for(f"smtp://127.0.0.1?to={TO}")
    assert isinstance(transport, MailTransport)


async def test_the_mailbox_unpacks_into_files_ceip_import_reads(smtp_server: SmtpServer, tmp_path: Path) -> None:
    """Messages saved in a Maildir become one batch file per item (a duplicate makes no second file);
    a message that is not ours is skipped."""
    batch = Batch([report_item(), report_item()])
    transport = MailTransport(f"smtp://127.0.0.1:{smtp_server.port}?to={TO}")
    for _ in range(2):
        assert {r.outcome for r in await transport.send(batch)} == {Outcome.ACCEPTED}
    box = mailbox.Maildir(tmp_path / "Maildir")
    for message in smtp_server.mailbox.messages:
        box.add(message)
    box.add(b"From: someone@example.org\r\nSubject: hello\r\n\r\nnot a report\r\n")
    written, skipped = unpack(tmp_path / "Maildir", tmp_path / "inbox")
    assert (written, skipped) == (4, 1)
    files = sorted((tmp_path / "inbox").glob("*.ceip.json.gz"))
    assert [f.name.removesuffix(".ceip.json.gz") for f in files] == sorted(i.item_id for i in batch.items)
    assert sorted(item["report_id"] for f in files for item in wire.read_body(f.read_bytes())) == sorted(
        i.item_id for i in batch.items
    )


def test_a_hostile_attachment_name_is_not_a_path() -> None:
    from email.message import EmailMessage

    msg = EmailMessage()
    msg.set_content("x")
    msg.add_attachment(wire.encode_batch([report_item().data]), "application", "gzip", filename="../../x.ceip.json.gz")
    assert extract(msg.as_bytes()) is None


def test_ceip_upload_mails_the_queue_and_the_mailbox_gives_it_back(
    smtp_server: SmtpServer, ceip_home: Path, tmp_path: Path
) -> None:
    """Installed like any plugin: ``ceip upload --to smtp://...`` (a process of its own) finds the
    transport by its scheme and empties the queue into the mailbox; unpacked, the mailbox holds the
    queued reports byte for byte."""
    spool = Spool(StateDB(ceip_home))
    consent = Consent(spool.db)
    consent.opt_in("conformance")
    guid, epoch = consent.guid(), consent.epoch("conformance")
    assert guid is not None and epoch is not None
    queued = [report_item(guid=guid) for _ in range(3)]
    for item in queued:
        assert spool.put_report(item.item_id, "conformance", guid, item.data, consent_epoch=epoch)
    url = f"smtp://127.0.0.1:{smtp_server.port}?to={TO}"
    run = subprocess.run(
        [sys.executable, "-m", "ceip_core", "upload", "--to", url], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert spool.items() == []
    box = mailbox.Maildir(tmp_path / "Maildir")
    for message in smtp_server.mailbox.messages:
        box.add(message)
    assert unpack(tmp_path / "Maildir", tmp_path / "inbox") == (3, 0)
    unpacked = {p.name: p.read_bytes() for p in (tmp_path / "inbox").iterdir()}
    assert unpacked == {f"{i.item_id}.ceip.json.gz": wire.encode_batch([i.data]) for i in queued}
