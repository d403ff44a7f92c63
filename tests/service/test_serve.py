"""``ceip serve`` as a real process: N workers on one port, TLS, the token file, an access log without addresses."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
from helpers import wait_for
from service.factory import GZIP, body, free_port, report, specs_file

from ceip_core.service.serve import GC_THRESHOLD, SQLITE_WORKERS_NOTE

ALLOWLIST_TOML = '[products.sample]\nexecutables = ["sample-app"]\n'


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    """``start(*args)``: run ``ceip serve`` with ``args`` until the test ends; returns (process, base URL)."""
    started: list[subprocess.Popen[str]] = []
    (tmp_path / "allowlist.toml").write_text(ALLOWLIST_TOML)

    def run(*args: str, scheme: str = "http") -> tuple[subprocess.Popen[str], str]:
        port = free_port()
        command = [sys.executable, "-m", "ceip_core", "serve", "--port", str(port), "--data", str(tmp_path)]
        command += ["--allowlist", str(tmp_path / "allowlist.toml"), "--specs", str(specs_file(tmp_path)), *args]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(proc)
        return proc, f"{scheme}://127.0.0.1:{port}"

    yield run
    for proc in started:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def healthy(url: str, **kwargs: Any) -> bool:
    async def probe() -> bool:
        try:
            async with aiohttp.ClientSession() as session, session.get(f"{url}/healthz", **kwargs) as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    return asyncio.run(probe())


def listeners(proc: subprocess.Popen[str], port: int) -> set[int]:
    """Pids of ``proc``'s process tree that listen on ``port``."""
    tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    return {
        p.pid
        for p in tree
        if any(c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in p.net_connections("tcp"))
    }


def test_two_workers_share_one_port_and_store_a_report_once(start: Any, database: str) -> None:
    proc, url = start("--workers", "2", "--db", database, "--token", "secret-token-0001")
    wait_for(lambda: healthy(url) and len(listeners(proc, int(url.rsplit(":", 1)[1]))) == 2, timeout=30)
    item = report()

    async def send_from_many_connections() -> list[str]:
        async def one() -> str:
            # A connection of its own each time, so that both workers (one socket, whichever is free) take some.
            async with (
                aiohttp.ClientSession() as session,
                session.post(f"{url}/v1/reports", data=body(item), headers=GZIP) as response,
            ):
                assert response.status == 200
                return str((await response.json())["results"][0]["status"])

        return await asyncio.gather(*(one() for _ in range(20)))

    statuses = asyncio.run(send_from_many_connections())
    assert sorted(statuses) == ["accepted"] + ["duplicate"] * 19


def test_tls_token_file_and_an_access_log_without_addresses(start: Any, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
        check=True, capture_output=True,
    )  # fmt: skip
    proc, url = start("--tls-cert", str(cert), "--tls-key", str(key), "--access-log", scheme="https")
    trusted = ssl.create_default_context(cafile=str(cert))
    wait_for(lambda: healthy(url, ssl=trusted), timeout=30)
    assert not healthy(url, ssl=ssl.create_default_context())  # not trusted without the CA

    token_file = tmp_path / "query-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    token = token_file.read_text().strip()

    async def ask() -> tuple[int, int]:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/v1/reports", data=body(report()), headers=GZIP, ssl=trusted) as r:
                assert r.status == 200
            headers = {"Authorization": f"Bearer {token}"}
            async with session.get(f"{url}/v1/query/problems", headers=headers, ssl=trusted) as ok:
                assert ok.headers["Strict-Transport-Security"].startswith("max-age=")  # over TLS: HSTS
            async with session.get(f"{url}/v1/query/problems", ssl=trusted) as refused:
                return ok.status, refused.status

    assert asyncio.run(ask()) == (200, 401)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert "POST /v1/reports" in err  # the access log is on ...
    assert "127.0.0.1" not in err.replace(url, "")  # ... and names no sender


def test_each_worker_tunes_its_collector_after_start_up(start: Any) -> None:
    """A fold step's many short-lived containers set off full collections with CPython's default
    thresholds (``serve.tune_collector``): every worker, spawned or not, raises them once it has started."""
    proc, _ = start("--workers", "2", "--log-level", "DEBUG")
    assert proc.stderr is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    pattern = re.compile(r"collector: thresholds \((\d+), \d+, \d+\), (\d+) start-up objects frozen")

    def tuned() -> list[tuple[str, ...]]:
        return [m.groups() for m in map(pattern.search, list(lines)) if m]

    wait_for(lambda: len(tuned()) == 2, timeout=30)
    assert all(int(threshold) == GC_THRESHOLD and int(frozen) > 10_000 for threshold, frozen in tuned()), tuned()


@pytest.mark.parametrize("workers", [1, 2])
def test_several_workers_on_one_sqlite_file_are_told_to_use_postgresql(start: Any, workers: int) -> None:
    """Workers on one SQLite file share its write lock (docs/operations.md measures 0.86-1.11x of one). A
    SIGTERM that comes while the workers start stops them all."""
    proc, _ = start("--workers", str(workers))
    assert proc.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    wait_for(lambda: any("worker(s) on" in line for line in list(lines)), timeout=30)
    said = [line.strip() for line in list(lines)]
    assert (SQLITE_WORKERS_NOTE in said) == (workers > 1), said
    # Stopped while its workers start, it stops them too: its output ends once every process holding it has.
    proc.send_signal(signal.SIGTERM)
    reader.join(timeout=60)
    assert not reader.is_alive(), "a worker outlived ceip serve"
    proc.wait(timeout=10)


def test_bad_configuration_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "allowlist.toml"
    bad.write_text("[products.sample]\nexecutables = 5\n")
    proc = subprocess.run(
        [sys.executable, "-m", "ceip_core", "serve", "--allowlist", str(bad), "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CEIP_SERVICE_TOKEN": "test-token-0000001"},
    )
    assert proc.returncode != 0
    assert "executables" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["import", "--db", "sqlite:ceip.db", "."]])
def test_a_plugin_that_fails_to_register_its_scrubbers_fails_the_start_in_a_line(
    tmp_path: Path, command: list[str]
) -> None:
    """The second pass needs every scrubber: without one, nothing is served or imported."""
    fixtures = str(Path(__file__).parents[1] / "fixture_plugins")
    proc = subprocess.run(
        [sys.executable, "-m", "ceip_core", *command[:1], "--data", str(tmp_path), *command[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={
            **os.environ,
            "CEIP_SERVICE_TOKEN": "test-token-0000001",
            "CEIP_PLUGIN_MODULES": "ceip_broken_scrubbers",
            "PYTHONPATH": os.pathsep.join(filter(None, [fixtures, os.environ.get("PYTHONPATH")])),
        },
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("Error: plugin ceip_broken_scrubbers failed in ceip_register_scrubbers"), proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_unsupported_database_url_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ceip_core", "serve", "--data", str(tmp_path), "--db", "mysql://db/ceip", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Invalid value for --db: unsupported database URL 'mysql://db/ceip'" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no query token generated for a service that never started
