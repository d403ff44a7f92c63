"""The built-in transports pass the conformance suite that ceip ships for transport authors
(``ceip_core.conformance``): the drop folder, and HTTPS against a real local service with a self-signed
certificate. And the suite's documentation lists every check it makes."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest
from certs import self_signed, server_context
from fake_service import FakeService
from transport_harnesses import FolderHarness, ServiceHarness

from ceip_core.testing import TransportConformance

DOCS = Path(__file__).parents[1] / "docs" / "transports.md"


class TestFileTransport(TransportConformance):
    @pytest.fixture
    def ceip_transport_under_test(self, tmp_path: Path) -> FolderHarness:
        return FolderHarness(tmp_path / "outbox")


class TestHttpsTransport(TransportConformance):
    @pytest.fixture
    def ceip_transport_under_test(self, tmp_path: Path) -> Iterator[ServiceHarness]:
        cert, key = self_signed(tmp_path / "tls")
        service = FakeService(server_context(cert, key)).start()
        try:
            yield ServiceHarness(service, cert)
        finally:
            service.close()


def test_every_check_is_documented() -> None:
    checks = [name for name, _ in inspect.getmembers(TransportConformance) if name.startswith("test_")]
    documented = DOCS.read_text()
    assert len(checks) >= 9
    assert [name for name in checks if f"| `{name}` |" not in documented] == []
