"""The HTTP transport against a real local fake service: delivery exactly once through every kind of failure,
TLS verification, the plain-http rule, permanent rejections, Retry-After, and consent withdrawal."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from certs import self_signed, server_context
from click.testing import CliRunner
from fake_service import Fail, FakeService
from helpers import epoch, wait_for

from ceip_core.cli import cli
from ceip_core.consent import Consent
from ceip_core.default_plugins.http_transport import HttpTransport
from ceip_core.sealing import seal_session
from ceip_core.session_data import SessionData
from ceip_core.spool import Spool
from ceip_core.statedb import StateDB, state_dir
from ceip_core.upload import Backoff, UploadSummary, drain


@pytest.fixture
def spool(sample: Any, ceip_home: Path) -> Spool:
    """Three reports of ``sample`` queued, and the spool they are in."""
    opt_in(ceip_home, "sample")
    record("sample", 3)
    return Spool(StateDB(ceip_home))


def opt_in(home: Path, product: str) -> None:
    Consent(StateDB(home)).opt_in(product)


def record(product: str, sessions: int) -> None:
    """Seal ``sessions`` recorded sessions of ``product`` into the spool (what a recorder's close does)."""
    home = state_dir()
    for _ in range(sessions):
        used = "open_file" if product == "sample" else "used"
        data = SessionData(product, "1.0", time.time() - 60, time.time(), counters={(used, None): 1})
        data.consent_epoch = epoch(Spool(StateDB(home)), product)
        assert seal_session(data, home)


def upload(spool: Spool, url: str, *, timeout: float = 5.0) -> UploadSummary:
    """One drain through a fresh HTTP transport, with no backoff delay (a retry is due at once)."""

    async def run() -> UploadSummary:
        transport = HttpTransport(url, timeout=timeout)
        try:
            return await drain(spool, transport, backoff=Backoff(initial=0.0))
        finally:
            await transport.close()

    return asyncio.run(run())


def queued_ids(spool: Spool) -> set[str]:
    return {i.item_id for i in spool.items()}


def not_before(spool: Spool) -> list[float]:
    return [row[0] for row in spool.db.read(lambda c: c.execute("SELECT not_before FROM spool").fetchall())]


# -- delivery ---------------------------------------------------------------------------------------------


def test_reports_and_deletions_go_to_their_endpoints_as_gzip_batches(
    spool: Spool, fake_service: FakeService, ceip_home: Path
) -> None:
    opt_in(ceip_home, "other")
    record("other", 1)
    Consent(StateDB(ceip_home)).opt_out("other")  # deletes other's report, queues one deletion request
    ids = queued_ids(spool)
    summary = upload(spool, fake_service.url)
    assert summary.accepted == 4 and spool.stats().reports == spool.stats().deletions == 0
    assert set(fake_service.stored) == ids
    # In the documented order: deletion requests first, so no report can arrive after its machine's deletion.
    assert [path for _, path in fake_service.requests if path != "/v1/policy"] == ["/v1/deletions", "/v1/reports"]
    for headers in fake_service.headers:
        assert headers["Content-Encoding"] == "gzip"
        assert headers["Content-Type"] == "application/vnd.ceip.batch+json"


def failing(kind: str, fake_service: FakeService) -> float:
    """Make the next upload fail the ``kind`` way; returns the client timeout to use."""
    if kind == "refused":
        fake_service.stop()
    elif kind == "timeout":
        fake_service.script.append(Fail(delay=3.0))  # stores, then answers too late
        return 0.5
    else:
        fake_service.script.append(
            {
                "500": Fail(status=500),
                "502-html": Fail(status=502, body=b"<html>Bad gateway</html>"),
                "503-retry-after": Fail(status=503, headers={"Retry-After": "0"}),
                "429-retry-after": Fail(status=429, headers={"Retry-After": "0"}),
                "408": Fail(status=408),
                "lost-answer": Fail(drop_after_store=True),
            }[kind]
        )
    return 5.0


@pytest.mark.parametrize(
    "kind", ["500", "502-html", "503-retry-after", "429-retry-after", "408", "timeout", "refused", "lost-answer"]
)
def test_everything_arrives_exactly_once_after_the_service_recovers(
    kind: str, spool: Spool, fake_service: FakeService
) -> None:
    ids = queued_ids(spool)
    timeout = failing(kind, fake_service)
    failed = upload(spool, fake_service.url, timeout=timeout)
    assert failed.accepted == 0 and failed.retried == 3 and failed.rejected == {}
    assert queued_ids(spool) == ids and spool.stats().drops == {}  # nothing lost
    if kind == "refused":
        fake_service.start()  # on the same port
    recovered = upload(spool, fake_service.url)
    assert recovered.accepted == 3 and queued_ids(spool) == set()
    assert set(fake_service.stored) == ids  # every report, stored once
    delivered_twice = {i for i, n in fake_service.deliveries.items() if n > 1}
    # Only when the service had stored them before the answer was lost does it see them again.
    assert delivered_twice == (ids if kind in ("timeout", "lost-answer") else set())


def test_a_long_outage_of_every_kind_loses_and_duplicates_nothing(spool: Spool, fake_service: FakeService) -> None:
    ids = queued_ids(spool)
    for kind in ("500", "lost-answer", "429-retry-after", "timeout", "refused", "503-retry-after"):
        timeout = failing(kind, fake_service)
        assert upload(spool, fake_service.url, timeout=timeout).accepted == 0
        if kind == "refused":
            fake_service.start()
        record("sample", 1)
        ids |= queued_ids(spool)
    assert upload(spool, fake_service.url).accepted == len(ids) == 9
    assert set(fake_service.stored) == ids and spool.stats().drops == {}
    assert spool.stats().reports == 0


# -- what the service says --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [("120", 120.0), ("an HTTP date 300 s ahead", 300.0), ("999999", 3600.0)],
)
def test_retry_after_sets_when_the_items_are_tried_again(
    header: str, expected: float, spool: Spool, fake_service: FakeService
) -> None:
    if header.startswith("an HTTP date"):
        header = formatdate(time.time() + expected, usegmt=True)
    fake_service.script.append(Fail(status=429, headers={"Retry-After": header}))
    started = time.time()
    assert upload(spool, fake_service.url).retried == 3
    for when in not_before(spool):
        assert started + expected - 5 <= when <= time.time() + expected + 1
    posts = fake_service.posts
    assert upload(spool, fake_service.url).accepted == 0 and fake_service.posts == posts  # not due: nothing sent


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (400, json.dumps({"error": "malformed", "detail": "items[0]: expected an object"}).encode(), "malformed"),
        (413, b"<html>Request Entity Too Large</html>", "http-413"),
        (415, json.dumps({"error": "unsupported-encoding"}).encode(), "unsupported-encoding"),
        (401, b"", "http-401"),
        (403, json.dumps({"error": "not-allowlisted", "detail": "product 'sample'"}).encode(), "not-allowlisted"),
    ],
)
def test_a_permanent_rejection_is_counted_and_never_retried(
    status: int, body: bytes, reason: str, spool: Spool, fake_service: FakeService
) -> None:
    fake_service.script.append(Fail(status=status, body=body))
    summary = upload(spool, fake_service.url)
    assert summary.rejected == {reason: 3} and summary.retried == 0
    assert spool.stats().reports == 0 and spool.stats().drops[f"rejected:{reason}:sample"] == 3
    posts = fake_service.posts
    record("sample", 1)
    assert upload(spool, fake_service.url).accepted == 1 and fake_service.posts == posts + 1  # only the new report
    assert len(fake_service.stored) == 1


def test_per_item_answers_accept_some_and_reject_others(
    spool: Spool, fake_service: FakeService, ceip_home: Path
) -> None:
    opt_in(ceip_home, "other")
    record("other", 2)
    fake_service.reject_products["other"] = "not-allowlisted"
    summary = upload(spool, fake_service.url)
    assert summary.accepted == 3 and summary.rejected == {"not-allowlisted": 2}
    assert spool.stats().reports == 0 and spool.stats().drops["rejected:not-allowlisted:other"] == 2
    assert {r["product"] for r in fake_service.stored.values()} == {"sample"}


def test_items_the_answer_leaves_out_are_retried(spool: Spool, fake_service: FakeService) -> None:
    left_out = next(iter(queued_ids(spool)))
    fake_service.omit.add(left_out)
    summary = upload(spool, fake_service.url)
    assert summary.accepted == 2 and summary.retry_reasons.keys() == {"missing-from-answer"}
    assert [i.item_id for i in spool.items()] == [left_out] and spool.items()[0].attempts >= 1
    fake_service.omit.clear()
    assert upload(spool, fake_service.url).accepted == 1 and queued_ids(spool) == set()


@pytest.mark.parametrize(
    "answer", [b"not json", b"[]", b'{"results": 5}', b'{"results": [1, null, {"id": 7}, {"status": "accepted"}]}']
)
def test_an_unreadable_answer_keeps_everything(answer: bytes, spool: Spool, fake_service: FakeService) -> None:
    ids = queued_ids(spool)
    fake_service.answer_body = answer
    summary = upload(spool, fake_service.url)
    assert summary.accepted == 0 and summary.retried == 3 and queued_ids(spool) == ids


@pytest.mark.parametrize(
    "fail", [Fail(status=404), Fail(status=405), Fail(status=302, headers={"Location": "/elsewhere"})]
)
def test_a_url_that_leads_nowhere_keeps_the_queue(fail: Fail, spool: Spool, fake_service: FakeService) -> None:
    """A misconfigured URL must not destroy what is queued; redirects are not followed."""
    fake_service.script.append(fail)
    assert upload(spool, fake_service.url).retried == 3 and spool.stats().reports == 3
    assert ("POST", "/elsewhere") not in fake_service.requests


# -- TLS and plain http -----------------------------------------------------------------------------------


@pytest.fixture
def tls_service(tmp_path: Path) -> Iterator[tuple[FakeService, Path]]:
    cert, key = self_signed(tmp_path / "tls")
    svc = FakeService(ssl_context=server_context(cert, key)).start()
    try:
        yield svc, cert
    finally:
        svc.close()


def test_https_delivers_with_the_ca_and_is_refused_without_it(
    spool: Spool, tls_service: tuple[FakeService, Path]
) -> None:
    fake_service, cert = tls_service
    ids = queued_ids(spool)
    refused = upload(spool, fake_service.url)  # the system's CAs do not know the test's certificate
    assert refused.retried == 3 and refused.rejected == {} and queued_ids(spool) == ids
    [reason] = refused.retry_reasons
    assert reason.startswith("certificate verification failed") and fake_service.stored == {}
    assert upload(spool, f"{fake_service.url}/?ca={cert}").accepted == 3
    assert set(fake_service.stored) == ids


@pytest.mark.parametrize(
    "url", ["http://ceip.example.com", "http://ceip.example.com:8080/base", "http://192.0.2.7", "http://[2001:db8::1]"]
)
def test_plain_http_to_another_host_is_refused_before_connecting(url: str) -> None:
    with pytest.raises(ValueError, match=r"refusing plain http to .*: reports would cross the network unencrypted"):
        HttpTransport(url)
    HttpTransport(url + "?allow_http=1")  # explicitly forced: allowed (nothing is sent here)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9", "http://127.8.9.10", "http://[::1]:9/", "http://localhost:9"])
def test_plain_http_to_loopback_is_allowed(url: str) -> None:
    assert HttpTransport(url).base == url.rstrip("/")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://ceip.example.com/?allow_http=1", "allow_http applies to http:// URLs only"),
        ("http://127.0.0.1/?ca=/etc/ca.pem", "a CA file applies to https:// URLs only"),
        (
            "https://ceip.example.com/?ca=/no/such/ca.pem",
            "the CA file /no/such/ca.pem (?ca= in the upload URL) does not exist",
        ),
        ("https://ceip.example.com/?verify=0", "unknown option verify"),
        ("https:///v1", "not an http"),
    ],
)
def test_bad_urls_are_refused_with_the_reason(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        HttpTransport(url)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("hello\n", "holds no PEM certificate: it must contain a '-----BEGIN CERTIFICATE-----' block"),
        (
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "holds no PEM certificate (it holds a private key, not a certificate)",
        ),
        ("cut", "holds a damaged certificate: cut short, or not the base64 of one"),
        ("garbled", "holds a damaged certificate: cut short, or not the base64 of one"),
        (None, "is a folder: give the CA certificate's PEM file"),
    ],
)
def test_a_bad_ca_file_is_named_with_what_is_wrong(
    sample: Any, tmp_path: Path, content: str | None, message: str
) -> None:
    """Regression: a damaged CA file answered only OpenSSL's 'Error: [X509] PEM lib (_ssl.c:4154)'."""
    cert, _ = self_signed(tmp_path / "tls")
    ca = tmp_path / "ca.pem"
    if content is None:
        ca.mkdir()
    elif content == "cut":
        ca.write_text(cert.read_text()[:300])
    elif content == "garbled":
        ca.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    else:
        ca.write_text(content)
    result = CliRunner().invoke(cli, ["upload", "--to", f"https://127.0.0.1:9/?ca={ca}"])
    assert result.exit_code == 2
    assert f"the CA file {ca} (?ca= in the upload URL) {message}" in " ".join(result.output.split()), result.output
    assert "PEM lib" not in result.output and "_ssl.c" not in result.output


def test_the_cli_refuses_plain_http_to_another_host(sample: Any) -> None:
    for args in (
        ["upload", "--to", "http://ceip.example.com"],
        ["config", "set", "upload-url", "http://ceip.example.net"],
    ):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2 and "refusing plain http" in result.output


# -- consent withdrawal -----------------------------------------------------------------------------------


def test_opting_out_aborts_the_request_in_flight_within_a_second(
    spool: Spool, fake_service: FakeService, ceip_home: Path
) -> None:
    opt_in(ceip_home, "other")
    record("other", 2)
    others = {i.item_id for i in spool.items("other")}
    fake_service.hang = True  # the service takes the batch and never answers
    result: dict[str, UploadSummary] = {}
    worker = threading.Thread(target=lambda: result.update(summary=upload(spool, fake_service.url, timeout=60)))
    worker.start()
    try:
        wait_for(lambda: fake_service.hanging)
        Consent(StateDB(ceip_home)).opt_out("sample")
        opted_out = time.monotonic()
        wait_for(lambda: fake_service.disconnected, timeout=5)
        assert fake_service.disconnected[0] - opted_out <= 1.0  # the service saw the connection closed
        worker.join(5)
        assert not worker.is_alive()
    finally:
        worker.join()
    assert result["summary"].accepted == 0 and fake_service.stored == {}
    left = spool.items()
    assert {i.item_id for i in left if i.kind == "report"} == others  # other's reports still queued
    assert [(i.kind, i.product) for i in left if i.kind == "deletion"] == [("deletion", "sample")]
    fake_service.hang = False
    assert upload(spool, fake_service.url).accepted == 3  # the deletion request and other's two reports
    assert {r.get("product") for r in fake_service.stored.values()} == {"sample", "other"}
    assert sum(1 for r in fake_service.stored.values() if r["type"] == "report") == 2


def test_a_report_never_overtakes_a_deletion_request_of_its_product(
    spool: Spool, fake_service: FakeService, ceip_home: Path
) -> None:
    opt_in(ceip_home, "other")  # keeps the machine GUID alive across sample's opt-out and opt-in
    Consent(StateDB(ceip_home)).opt_out("sample")
    opt_in(ceip_home, "sample")
    record("sample", 1)
    fake_service.script.append(Fail(status=503, headers={"Retry-After": "0"}))  # the deletion request fails first
    assert upload(spool, fake_service.url).accepted == 0
    assert fake_service.requests[-1] == ("POST", "/v1/deletions")  # the new report was held back, not sent
    assert upload(spool, fake_service.url).accepted == 2
    paths = [p for m, p in fake_service.requests if m == "POST"]
    assert paths == ["/v1/deletions", "/v1/deletions", "/v1/reports"]


def test_the_body_is_the_spooled_items_byte_for_byte(spool: Spool, fake_service: FakeService) -> None:
    spooled = {i.item_id: json.loads(i.data) for i in spool.items()}
    upload(spool, fake_service.url)
    assert fake_service.stored == spooled  # the service read them with the wire module's strict reader
