"""The HTTPS transport behind a company proxy: ``HTTPS_PROXY``/``https_proxy``, ``NO_PROXY`` and the URL's
``?proxy=`` option, against a real local CONNECT proxy that counts its tunnels and the fake service over
TLS; and the whole conformance suite through the tunnel."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from certs import self_signed, server_context
from connect_proxy import ConnectProxy
from fake_service import FakeService
from transport_harnesses import ServiceHarness

from ceip_core.conformance import report_item
from ceip_core.default_plugins.http_transport import HttpTransport
from ceip_core.testing import PROXY_VARIABLES, TransportConformance
from ceip_core.transport import Batch, Outcome, Transport


@pytest.fixture(autouse=True)
def no_proxy_from_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test's proxy settings only, whatever the machine running the tests has set."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    running = ConnectProxy().start()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def tls_service(tmp_path: Path) -> Iterator[tuple[FakeService, Path]]:
    cert, key = self_signed(tmp_path / "tls")
    service = FakeService(server_context(cert, key)).start()
    try:
        yield service, cert
    finally:
        service.close()


async def send_one(url: str) -> tuple[Outcome, str | None]:
    transport = HttpTransport(url, timeout=10.0)
    try:
        item = report_item()
        (result,) = await transport.send(Batch([item]))
        return result.outcome, result.reason
    finally:
        await transport.close()


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "https_proxy"])
async def test_reports_go_through_the_proxy_the_environment_names(
    variable: str, proxy: ConnectProxy, tls_service: tuple[FakeService, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    service, cert = tls_service
    monkeypatch.setenv(variable, proxy.url)
    assert await send_one(f"{service.url}?ca={cert}") == (Outcome.ACCEPTED, None)
    assert proxy.tunnels == [f"127.0.0.1:{service.port}"]
    assert len(service.stored) == 1


@pytest.mark.parametrize("exempt", ["127.0.0.1", "localhost,127.0.0.1", "*"])
async def test_no_proxy_goes_direct(
    exempt: str, proxy: ConnectProxy, tls_service: tuple[FakeService, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    service, cert = tls_service
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", exempt)
    assert await send_one(f"{service.url}?ca={cert}") == (Outcome.ACCEPTED, None)
    assert proxy.tunnels == [] and proxy.requests == []
    assert len(service.stored) == 1


async def test_the_url_names_its_proxy(proxy: ConnectProxy, tls_service: tuple[FakeService, Path]) -> None:
    """``?proxy=`` in the upload URL (the ``upload-url`` setting), with nothing in the environment."""
    service, cert = tls_service
    assert await send_one(f"{service.url}?ca={cert}&proxy={proxy.url}") == (Outcome.ACCEPTED, None)
    assert proxy.tunnels == [f"127.0.0.1:{service.port}"]


async def test_the_url_proxy_wins_over_the_environment(
    proxy: ConnectProxy, tls_service: tuple[FakeService, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    service, cert = tls_service
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # discard: nothing would answer there
    assert await send_one(f"{service.url}?ca={cert}&proxy={proxy.url}") == (Outcome.ACCEPTED, None)
    assert proxy.tunnels == [f"127.0.0.1:{service.port}"]


async def test_tls_runs_end_to_end_through_the_tunnel(
    proxy: ConnectProxy, tls_service: tuple[FakeService, Path], tmp_path: Path
) -> None:
    """The proxy sees the host name and encrypted bytes: a service certificate the client does not trust
    is still refused, so a proxy cannot pose as the receiving service."""
    service, _ = tls_service
    other, _ = self_signed(tmp_path / "other")
    outcome, reason = await send_one(f"{service.url}?ca={other}&proxy={proxy.url}")
    assert outcome is Outcome.RETRY and "certificate verification failed" in (reason or "")
    assert proxy.tunnels == [f"127.0.0.1:{service.port}"] and service.stored == {}


@pytest.mark.parametrize("answer", ["407 Proxy Authentication Required", "403 Forbidden"])
async def test_a_proxy_that_refuses_the_tunnel_keeps_the_reports(
    answer: str, proxy: ConnectProxy, tls_service: tuple[FakeService, Path]
) -> None:
    service, cert = tls_service
    proxy.refuse = answer
    outcome, reason = await send_one(f"{service.url}?ca={cert}&proxy={proxy.url}")
    assert outcome is Outcome.RETRY and answer.split()[0] in (reason or "")
    assert service.stored == {}


async def test_a_proxy_that_is_down_keeps_the_reports(tls_service: tuple[FakeService, Path]) -> None:
    service, cert = tls_service
    outcome, reason = await send_one(f"{service.url}?ca={cert}&proxy=http://127.0.0.1:9")
    assert outcome is Outcome.RETRY and reason
    assert service.stored == {}


@pytest.mark.parametrize("option", ["socks5://127.0.0.1:1080", "https://proxy.example:3128", "http://", "http://p:1/x"])
def test_a_proxy_option_that_is_not_an_http_proxy_is_refused(option: str) -> None:
    with pytest.raises(ValueError, match="is not an HTTP proxy URL"):
        HttpTransport(f"https://ceip.example.com?proxy={option}")


def test_a_bare_host_and_port_is_an_http_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("https_proxy", "proxy.example:3128")
    assert HttpTransport("https://ceip.example.com").proxy == "http://proxy.example:3128"
    monkeypatch.setenv("https_proxy", "socks5://proxy.example:1080")
    with pytest.raises(ValueError, match="HTTPS_PROXY in the environment"):
        HttpTransport("https://ceip.example.com")


class TestHttpsTransportThroughAProxy(TransportConformance):
    """The Transport contract holds through a CONNECT tunnel, cancellation on opt-out included."""

    @pytest.fixture
    def ceip_transport_under_test(
        self, proxy: ConnectProxy, tls_service: tuple[FakeService, Path]
    ) -> Iterator[ServiceHarness]:
        service, cert = tls_service

        class ThroughProxy(ServiceHarness):
            def make_transport(self) -> Transport:
                return HttpTransport(f"{service.url}?ca={cert}&proxy={proxy.url}", timeout=30.0)

        harness = ThroughProxy(service, cert)
        yield harness
        assert proxy.tunnels, "nothing went through the proxy"
