"""End to end, with real processes: recorder -> spool -> ``ceip upload`` over HTTPS -> ``ceip serve`` -> stored
once; the service's kill switch honoured by the client; an opt-out's deletion request honoured by the service.

The service runs with a self-signed certificate made by the test; the transport must refuse it unless given
that certificate as its CA file.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from certs import self_signed
from click.testing import CliRunner
from helpers import wait_for

import ceip_core
from ceip_core.cli import cli
from ceip_core.consent import Consent
from ceip_core.default_plugins.http_transport import HttpTransport
from ceip_core.spool import Spool
from ceip_core.statedb import StateDB
from ceip_core.transport import Batch, BatchItem, Outcome, SendResult


@pytest.fixture
def service(tmp_path: Path, sample: Any) -> Iterator[tuple[str, Path, Path]]:
    """``ceip serve`` over TLS, with the vendor's kill switch on for ``other``: (URL, CA file, data folder)."""
    cert, key = self_signed(tmp_path / "tls")
    policy = tmp_path / "policy.toml"
    policy.write_text("[products.other]\nenabled = false\n")
    data = tmp_path / "service"
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "ceip_core", "serve", "--port", "0", "--data", str(data)]
    command += ["--tls-cert", str(cert), "--tls-key", str(key), "--policy", str(policy)]
    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        found = wait_for(lambda: proc.poll() is None and re.search(r"on (https://127\.0\.0\.1:(\d+))", log.read_text()))
        url, port = found.group(1), int(found.group(2))  # type: ignore[attr-defined]
        wait_for(lambda: listening(port), timeout=30)
        yield url, cert, data
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def send_directly(url: str, items: Sequence[BatchItem]) -> Sequence[SendResult]:
    async def run() -> Sequence[SendResult]:
        transport = HttpTransport(url)
        try:
            return await transport.send(Batch(items))
        finally:
            await transport.close()

    return asyncio.run(run())


def sample_uses(data: Path) -> float:
    """Uses of ``open_file`` per active machine, as the service's own report command prints them."""
    result = CliRunner().invoke(cli, ["report", "features", "--json", "--k", "1", "--data", str(data)])
    assert result.exit_code == 0, result.output
    rows = [r for r in json.loads(result.output)["features"] if r["product"] == "sample"]
    return sum(r["uses_per_active_machine"] for r in rows)


def test_recorded_use_reaches_the_service_once_over_verified_tls(
    service: tuple[str, Path, Path], ceip_home: Path
) -> None:
    url, ca, data = service
    consent = Consent(StateDB(ceip_home))
    consent.opt_in("sample")
    consent.opt_in("other")
    for product, feature in (("sample", "open_file"), ("sample", "open_file"), ("other", "used")):
        with ceip_core.recorder(product, "1.0") as rec:
            rec.feature(feature)
    spool = Spool(StateDB(ceip_home))
    queued = [BatchItem(i.item_id, i.kind, i.product, i.data) for i in spool.items("sample")]
    assert len(queued) == 2 and spool.stats().by_product == {"sample": 2, "other": 1}

    # The service's certificate is not trusted without its CA: nothing is delivered, nothing is dropped.
    refused = send_directly(url, queued)
    assert {r.outcome for r in refused} == {Outcome.RETRY}
    assert all(r.reason and r.reason.startswith("certificate verification failed") for r in refused)

    runner = CliRunner()
    assert runner.invoke(cli, ["config", "set", "upload-url", f"{url}/?ca={ca}"]).exit_code == 0
    result = runner.invoke(cli, ["upload"])
    assert result.exit_code == 0 and "Sent 2 item(s)" in result.output, result.output
    # The vendor switched 'other' off: its report stays queued, and new ones are not even recorded.
    assert spool.stats().by_product == {"other": 1}
    with ceip_core.recorder("other", "1.0") as rec:
        rec.feature("used")
    assert spool.stats().drops["disabled-by-vendor:other"] == 1
    assert sample_uses(data) == 2.0

    # The same reports again (a lost answer, a second machine's retry): acknowledged, stored once.
    again = send_directly(f"{url}/?ca={ca}", queued)
    assert {r.outcome for r in again} == {Outcome.ACCEPTED}
    assert sample_uses(data) == 2.0

    # Opting out sends one deletion request, which the service honours.
    consent.opt_out("sample")
    assert "Sent 1 item(s)" in runner.invoke(cli, ["upload"]).output
    assert sample_uses(data) == 0.0


def sample_report(data: Path, kind: str) -> list[dict[str, Any]]:
    """The rows of one of the service's own report commands for ``sample``."""
    result = CliRunner().invoke(cli, ["report", kind, "--json", "--k", "1", "--product", "sample", "--data", str(data)])
    assert result.exit_code == 0, result.output
    rows: list[dict[str, Any]] = json.loads(result.output)[kind]
    return rows


def test_withdrawing_a_category_deletes_only_its_data_at_the_service(
    service: tuple[str, Path, Path], ceip_home: Path
) -> None:
    """Consent by category end to end: what was sent before the narrowing loses the withdrawn category at the
    service (the deletion request naming it), and what is recorded after never carries it."""
    url, ca, data = service
    runner = CliRunner()
    assert runner.invoke(cli, ["consent", "in", "sample"]).exit_code == 0
    assert runner.invoke(cli, ["config", "set", "upload-url", f"{url}/?ca={ca}"]).exit_code == 0
    with ceip_core.recorder("sample", "1.0") as rec:
        rec.feature("open_file")
        rec.problem("ValueError@x.py:1")
    assert "Sent 1 item(s)" in runner.invoke(cli, ["upload"]).output
    assert sample_report(data, "problems") and sample_uses(data) == 1.0

    said = runner.invoke(cli, ["consent", "out", "sample", "--only", "performance"])
    assert said.exit_code == 0 and "A request to delete what was already sent of it is queued." in said.output
    with ceip_core.recorder("sample", "1.0") as rec:
        rec.feature("open_file")
        rec.problem("ValueError@x.py:1")
    result = runner.invoke(cli, ["upload"])
    assert "Sent 2 item(s)" in result.output, result.output  # the deletion request, then the new report
    assert sample_report(data, "problems") == []  # the machine's problems are gone, sent before or after
    assert sample_uses(data) == 2.0  # its program use stays
