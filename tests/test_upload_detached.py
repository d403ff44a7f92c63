"""Uploading in the background: a product exits at once while a detached ``ceip upload`` delivers its queue;
one uploader at a time; the upload URL setting; ``ceip upload`` and ``ceip export`` from the command line."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fake_service import Fail, FakeService
from helpers import epoch, wait_for

import ceip_core
from ceip_core.cli import cli
from ceip_core.consent import Consent
from ceip_core.default_plugins.file_transport import SUFFIX
from ceip_core.detached import uploader_lock
from ceip_core.sealing import seal_session
from ceip_core.session_data import SessionData
from ceip_core.spool import Spool
from ceip_core.statedb import StateDB

#: A product: records a session, closes the recorder, hands the upload to the background, exits.
PRODUCT = """
import sys, ceip_core
with ceip_core.recorder("sample", "1.0") as rec:
    rec.feature("open_file")
sys.exit(0 if ceip_core.spawn_uploader({url!r}) else 3)
"""


@pytest.fixture
def spool(sample: Any, ceip_home: Path) -> Spool:
    Consent(StateDB(ceip_home)).opt_in("sample")
    return Spool(StateDB(ceip_home))


def seal(spool: Spool, n: int = 1) -> None:
    for _ in range(n):
        data = SessionData("sample", "1.0", time.time() - 60, time.time(), counters={("open_file", None): 1})
        data.consent_epoch = epoch(spool, "sample")
        assert seal_session(data, spool.db.folder)


def uploader_done(home: Path) -> bool:
    """True once no uploader holds the state folder's upload lock."""
    with uploader_lock(home) as free:
        return free


def test_a_product_exits_at_once_and_its_report_is_uploaded_in_the_background(
    spool: Spool, fake_service: FakeService, ceip_home: Path
) -> None:
    fake_service.script.append(Fail(delay=2.0))  # a slow service: it takes two seconds to answer
    started = time.monotonic()
    product = subprocess.run([sys.executable, "-c", PRODUCT.format(url=fake_service.url)], timeout=60)
    exited = time.time()
    assert product.returncode == 0, "spawn_uploader did not start an upload"
    wait_for(lambda: fake_service.answered, timeout=30)
    # The product was gone well before the service answered the upload it started.
    assert fake_service.answered[0] - exited >= 1.0, f"the product took {time.monotonic() - started:.2f} s"
    wait_for(lambda: spool.stats().reports == 0 and uploader_done(ceip_home), timeout=30)
    assert [r["product"] for r in fake_service.stored.values()] == ["sample"]


def test_ceip_upload_detach_returns_at_once_and_uses_the_configured_url(
    spool: Spool, fake_service: FakeService, ceip_home: Path
) -> None:
    seal(spool, 2)
    runner = CliRunner()
    assert runner.invoke(cli, ["config", "set", "upload-url", fake_service.url]).exit_code == 0
    fake_service.script.append(Fail(delay=1.0))
    result = runner.invoke(cli, ["upload", "--detach"])
    assert result.exit_code == 0 and "Uploading in the background." in result.output
    assert fake_service.answered == []  # returned before the service answered
    wait_for(lambda: spool.stats().reports == 0 and uploader_done(ceip_home), timeout=30)
    assert len(fake_service.stored) == 2


def test_only_one_uploader_runs_at_a_time(spool: Spool, fake_service: FakeService, ceip_home: Path) -> None:
    seal(spool)
    with uploader_lock(ceip_home) as mine:
        assert mine
        assert ceip_core.spawn_uploader(fake_service.url) is False
        result = CliRunner().invoke(cli, ["upload", "--to", fake_service.url])
        assert result.exit_code == 0 and "Another upload is running" in result.output
    assert fake_service.posts == 0 and spool.stats().reports == 1
    assert "Sent 1 item(s)" in CliRunner().invoke(cli, ["upload", "--to", fake_service.url]).output


def test_spawn_uploader_starts_nothing_when_there_is_nothing_to_do(
    spool: Spool, fake_service: FakeService, ceip_home: Path, tmp_path: Path
) -> None:
    assert ceip_core.spawn_uploader(fake_service.url) is False  # nothing queued
    seal(spool)
    assert ceip_core.spawn_uploader() is False  # no URL given or configured
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    assert ceip_core.spawn_uploader(fake_service.url, home=not_a_folder) is False  # never raises
    assert fake_service.posts == 0


def test_ceip_upload_shows_why_items_were_kept(spool: Spool, fake_service: FakeService) -> None:
    seal(spool)
    fake_service.script.append(Fail(status=503, headers={"Retry-After": "60"}))
    result = CliRunner().invoke(cli, ["upload", "--to", fake_service.url])
    # Regression: a failed upload exited 0, and a second try during the backoff said only "Sent 0 item(s)".
    assert result.exit_code == 1 and "1 kept to retry later: http-503" in result.output
    assert "1 item(s) wait for a retry; the next try is at " in result.output
    assert "last error: http-503" in result.output
    again = CliRunner().invoke(cli, ["upload", "--to", fake_service.url, "--json"])
    as_json = json.loads(again.output)
    assert again.exit_code == 1 and as_json["accepted"] == 0 and as_json["retried"] == 0  # not due for a minute
    assert as_json["waiting"] == 1 and as_json["next_try"] > time.time() + 30
    status = json.loads(CliRunner().invoke(cli, ["status", "--json"]).output)["retry"]
    assert status["waiting"] == 1 and status["last_error"] == "http-503"
    assert status["next_try"] == as_json["next_try"]
    assert (
        "Retrying:       1 item(s) wait for a retry; the next try is at" in CliRunner().invoke(cli, ["status"]).output
    )


def test_ceip_upload_exits_0_once_everything_went(spool: Spool, fake_service: FakeService) -> None:
    seal(spool)
    fake_service.script.append(Fail(status=503))
    assert CliRunner().invoke(cli, ["upload", "--to", fake_service.url]).exit_code == 1
    # The retry delay is over (as if a minute had passed): the next upload sends it.
    spool.db.write(lambda conn: conn.execute("UPDATE spool SET not_before = 0"))
    result = CliRunner().invoke(cli, ["upload", "--to", fake_service.url])
    assert result.exit_code == 0 and "Sent 1 item(s) in 1 batch(es)." in result.output, result.output
    assert json.loads(CliRunner().invoke(cli, ["status", "--json"]).output)["retry"] is None


def test_config_set_show_unset(sample: Any) -> None:
    runner = CliRunner()
    assert "(not set)" in runner.invoke(cli, ["config", "show"]).output
    assert runner.invoke(cli, ["config", "set", "upload-url", "https://ceip.example.com"]).exit_code == 0
    assert json.loads(runner.invoke(cli, ["config", "show", "--json"]).output) == {
        "upload-url": "https://ceip.example.com"
    }
    for bad in ("ceip.example.com", "ftp://ceip.example.com", "https://ceip.example.com/?verify=0"):
        result = runner.invoke(cli, ["config", "set", "upload-url", bad])
        assert result.exit_code == 2, bad
    assert runner.invoke(cli, ["config", "set", "colour", "blue"]).exit_code == 2
    assert runner.invoke(cli, ["config", "unset", "upload-url"]).exit_code == 0
    result = runner.invoke(cli, ["upload"])
    assert result.exit_code == 2 and "no upload URL" in result.output


def test_export_moves_the_whole_queue_into_a_bundle_folder(
    spool: Spool, fake_service: FakeService, tmp_path: Path
) -> None:
    seal(spool, 3)
    fake_service.script.append(Fail(status=503, headers={"Retry-After": "600"}))
    CliRunner().invoke(cli, ["upload", "--to", fake_service.url])  # now waiting out a retry delay
    bundle = tmp_path / "usb" / "ceip-bundle"
    result = CliRunner().invoke(cli, ["export", "--to", str(bundle)])
    assert result.exit_code == 0 and f"Exported 3 item(s) into {bundle}." in result.output
    assert spool.stats().reports == 0
    [batch] = bundle.iterdir()
    assert batch.name.endswith(SUFFIX)
    assert len(json.loads(gzip.decompress(batch.read_bytes()))["items"]) == 3


def test_export_refuses_a_file(spool: Spool, tmp_path: Path) -> None:
    seal(spool)
    target = tmp_path / "bundle.gz"
    target.write_text("")
    result = CliRunner().invoke(cli, ["export", "--to", str(target)])
    assert result.exit_code == 2 and spool.stats().reports == 1


#: A product that records and exits, and calls nothing to send: ``with`` seals in this process, a recorder
#: left open is handed to the sealing process at exit.
RECORDS_AND_EXITS = {
    "closed": 'import ceip_core\nwith ceip_core.recorder("sample", "1.0") as rec:\n    rec.feature("open_file")\n',
    "at exit": 'import ceip_core\nrec = ceip_core.recorder("sample", "1.0")\nrec.feature("open_file")\n',
}


@pytest.fixture
def ceip_serve(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real ``ceip serve`` on loopback that stores what it gets in its data folder: (URL, data folder)."""
    from service.factory import free_port, specs_file

    data = tmp_path / "service"
    data.mkdir()
    (data / "allowlist.toml").write_text('[products.sample]\nexecutables = ["sample-app"]\n')
    port = free_port()
    command = [sys.executable, "-m", "ceip_core", "serve", "--port", str(port), "--data", str(data)]
    command += ["--allowlist", str(data / "allowlist.toml"), "--specs", str(specs_file(data))]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(f"{url}/healthz"), timeout=30)
        yield url, data
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def stored_uses(data: Path) -> int:
    """How often ``open_file`` was used, as the service's own report command counts what it stored."""
    result = CliRunner().invoke(cli, ["report", "features", "--json", "--k", "1", "--data", str(data)])
    assert result.exit_code == 0, result.output
    return sum(r["uses"] for r in json.loads(result.output)["features"] if r["product"] == "sample")


@pytest.mark.parametrize("how", sorted(RECORDS_AND_EXITS))
def test_a_product_that_records_and_exits_is_sent_after_it_closed_without_calling_anything(
    how: str, spool: Spool, ceip_serve: tuple[str, Path], ceip_home: Path
) -> None:
    url, data = ceip_serve
    assert CliRunner().invoke(cli, ["config", "set", "upload-url", url]).exit_code == 0
    product = subprocess.run([sys.executable, "-c", RECORDS_AND_EXITS[how]], timeout=60)
    assert product.returncode == 0
    # The product is gone; its report leaves the spool and is stored by the service all the same.
    wait_for(lambda: stored_uses(data) == 1, timeout=60)
    wait_for(lambda: spool.stats().reports == 0 and uploader_done(ceip_home), timeout=30)


def test_no_upload_is_started_after_exit_where_an_agent_serves_the_machine(
    spool: Spool, fake_service: FakeService, ceip_home: Path
) -> None:
    from ceip_core.agent import agent_lock
    from ceip_core.detached import upload_after_exit

    assert CliRunner().invoke(cli, ["config", "set", "upload-url", fake_service.url]).exit_code == 0
    seal(spool)
    with agent_lock(ceip_home):  # the agent sends on its own schedule
        assert not upload_after_exit(ceip_home)
    assert upload_after_exit(ceip_home)
    wait_for(lambda: spool.stats().reports == 0 and uploader_done(ceip_home), timeout=30)
    assert [r["product"] for r in fake_service.stored.values()] == ["sample"]
