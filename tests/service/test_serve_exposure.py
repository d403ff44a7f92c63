"""What a real ``ceip serve`` process exposes to the network: idle and slow connections cannot make it
unreachable or flood its log, no log line names a sender, and a busy port is refused, not shared.

Each test runs on asyncio's own event loop and on uvloop, which ``ceip serve`` takes where it is installed
(``ceip[uvloop]``): the two loops' transports differ in what they are and in how they close."""

from __future__ import annotations

import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from certs import self_signed
from helpers import wait_for
from service.factory import GZIP, body, report, specs_file

ALLOWLIST_TOML = '[products.sample]\nexecutables = ["sample-app"]\n'
HALF_A_HEAD = b"POST /v1/reports HTTP/1.1\r\nHost: ceip\r\nContent-Encoding: gz"


class Service:
    """One ``ceip serve`` process on a port of its choosing, its output in files."""

    def __init__(self, folder: Path, *args: str, loop: str = "asyncio", open_files: int | None = None) -> None:
        (folder / "allowlist.toml").write_text(ALLOWLIST_TOML)
        self.loop = loop
        self.out, self.err = folder / "stdout.txt", folder / "stderr.txt"
        command = [
            sys.executable,
            "-m",
            "ceip_core",
            "serve",
            "--port",
            "0",
            "--data",
            str(folder),
            "--token",
            "test-token-0000001",
        ]
        command += ["--allowlist", str(folder / "allowlist.toml"), "--specs", str(specs_file(folder))]
        command += ["--db", f"sqlite:{folder / 'ceip.db'}", *args]
        with self.out.open("w") as out, self.err.open("w") as err:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            self.proc = subprocess.Popen(
                command,
                stdout=out,
                stderr=err,
                text=True,
                env=_on_loop(loop, folder),
                preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, hard)))
                if open_files
                else None,
            )
        found = wait_for(lambda: re.search(r"on https?://127\.0\.0\.1:(\d+)", self.out.read_text()), timeout=60)
        assert isinstance(found, re.Match)
        self.port = int(found[1])

    def stop(self) -> str:
        """Stop the service gracefully; its log (stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.err.read_text()


def _on_loop(loop: str, folder: Path) -> dict[str, str]:
    """The environment of a ``ceip serve`` on ``loop``: for asyncio's own, one where ``import uvloop`` fails."""
    if loop == "uvloop":
        import uvloop  # noqa: F401  (a test dependency: the test fails, rather than skips, without it)

        return dict(os.environ)
    hidden = folder / "no-uvloop"
    hidden.mkdir()
    (hidden / "uvloop.py").write_text('raise ImportError("hidden by the test")\n')
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(hidden), os.environ.get("PYTHONPATH")]))}


@pytest.fixture(params=["asyncio", "uvloop"])
def serve(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    started: list[Service] = []

    def start(*args: str, **kwargs: Any) -> Service:
        folder = tmp_path / f"service-{len(started)}"
        folder.mkdir()
        started.append(Service(folder, *args, loop=request.param, **kwargs))
        return started[-1]

    yield start
    for service in started:
        service.stop()


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    """Client sockets the test opens; all closed at the end, whatever happens."""
    opened: list[socket.socket] = []
    yield opened
    for s in opened:
        s.close()


def ask(port: int, request: bytes, timeout: float = 10.0) -> bytes:
    """Send ``request`` on a new connection and read the answer until the service closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
        return answer


HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: ceip\r\nConnection: close\r\n\r\n"


def closed_by_peer(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_a_thousand_idle_and_half_sent_heads_neither_block_health_checks_nor_flood_the_log(
    serve: Any, sockets: list[socket.socket]
) -> None:
    service = serve("--idle-timeout", "3")
    for n in range(1000):
        s = socket.create_connection(("127.0.0.1", service.port), timeout=10)
        sockets.append(s)
        if n % 4:  # and one in four sends nothing at all
            s.sendall(HALF_A_HEAD)

    started = time.monotonic()
    assert ask(service.port, HEALTHZ).startswith(b"HTTP/1.1 200")
    assert time.monotonic() - started < 5  # answered while the thousand are open, not after they time out

    # Each slow head is cut off at the idle timeout: the service closes every one of them.
    wait_for(lambda: all(closed_by_peer(s) for s in sockets), timeout=60, interval=0.2)
    assert ask(service.port, HEALTHZ).startswith(b"HTTP/1.1 200")
    log = service.stop()
    assert len(log.splitlines()) < 20, log


def test_connections_beyond_the_limit_get_503_and_the_log_counts_them(serve: Any, sockets: list[socket.socket]) -> None:
    service = serve("--max-connections", "50", "--idle-timeout", "60")
    for _ in range(50):
        s = socket.create_connection(("127.0.0.1", service.port), timeout=10)
        sockets.append(s)
        s.sendall(HALF_A_HEAD)
    wait_for(lambda: ask(service.port, HEALTHZ).startswith(b"HTTP/1.1 503"), timeout=20, interval=0.1)
    answers = [ask(service.port, HEALTHZ) for _ in range(300)]
    assert all(a.startswith(b"HTTP/1.1 503") and b"Retry-After: 5" in a for a in answers)

    for s in sockets:  # the senders go away: the service answers again
        s.close()
    wait_for(lambda: ask(service.port, HEALTHZ).startswith(b"HTTP/1.1 200"), timeout=20, interval=0.1)
    log = service.stop()
    assert len(log.splitlines()) < 10, log
    assert "refused connections: 50 open" in log
    assert "more time(s) not logged" in log  # counted, not written 300 times


GARBAGE = [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),  # a TLS hello on the plain port
    b"\x00\xff\xfe garbage \r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: ceip\r\nBad Header Line\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"POST /v1/reports HTTP/1.1\r\nHost: ceip\r\nContent-Length: -5\r\n\r\n",
    b"POST /v1/reports HTTP/1.1\r\nHost: ceip\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n",
    b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: ceip\r\n" + b"X: " + b"b" * 20000 + b"\r\n\r\n",
]


def test_no_log_line_at_any_level_names_a_sender(serve: Any) -> None:
    service = serve("--log-level", "DEBUG", "--access-log")
    ports: list[int] = []
    for request in GARBAGE:
        with socket.create_connection(("127.0.0.1", service.port), timeout=10) as s:
            ports.append(s.getsockname()[1])
            s.sendall(request)
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
    request = body(report())
    head = f"POST /v1/reports HTTP/1.1\r\nHost: ceip\r\nContent-Encoding: {GZIP['Content-Encoding']}\r\n"
    head += f"Content-Length: {len(request)}\r\nConnection: close\r\n\r\n"
    assert ask(service.port, head.encode() + request).startswith(b"HTTP/1.1 200")
    log = service.stop()
    assert "Traceback" not in log
    assert ("asyncio DEBUG Using selector" in log) == (service.loop == "asyncio")  # the loop it was meant to run
    assert "POST /v1/reports" in log and "could not be handled" in log  # the log is on and did see them
    own = f"127.0.0.1:{service.port}"
    assert "127.0.0.1" not in log.replace(own, ""), log
    assert "::1" not in log
    # Start-up lines (a count of frozen objects, say) hold numbers that may equal a sender's port by chance;
    # the worker writes its last one before it serves, so no sender can be named before it.
    served = log.split("start-up objects frozen", 1)[1]
    for port in ports:
        assert not re.search(rf"(?<!\d){port}(?!\d)", served), port


def test_a_busy_port_is_refused_and_nothing_is_created(serve: Any, tmp_path: Path) -> None:
    other = socket.socket()
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # another service that would share
    other.bind(("127.0.0.1", 0))
    other.listen()
    with other:
        port = other.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "ceip_core", "serve", "--port", str(port), "--data", str(tmp_path),
             "--token", "test-token-0000001", "--db", f"sqlite:{tmp_path / 'new.db'}", "--workers", "2"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert proc.returncode != 0
    assert f"port {port} on 127.0.0.1 is already in use" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "new.db").exists()

    first = serve()
    second = subprocess.run(
        [sys.executable, "-m", "ceip_core", "serve", "--port", str(first.port), "--data", str(tmp_path),
         "--token", "test-token-0000001", "--db", f"sqlite:{tmp_path / 'new.db'}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert second.returncode != 0 and f"port {first.port} on 127.0.0.1 is already in use" in second.stderr
    assert ask(first.port, HEALTHZ).startswith(b"HTTP/1.1 200")


def test_workers_share_the_port_of_their_own_service(serve: Any) -> None:
    service = serve("--workers", "2")
    answers = [ask(service.port, HEALTHZ) for _ in range(20)]
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers)
    assert service.proc.poll() is None


def test_the_open_files_limit_is_raised_to_the_hard_limit(serve: Any) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.fail(f"this test needs a finite hard open-files limit above 256 (it is {hard})")
    service = serve(open_files=256)
    assert psutil.Process(service.proc.pid).rlimit(psutil.RLIMIT_NOFILE) == (hard, hard)


def test_a_tls_handshake_that_never_comes_is_cut_at_the_idle_timeout(
    serve: Any, tmp_path: Path, sockets: list[socket.socket]
) -> None:
    cert, key = self_signed(tmp_path / "tls")
    service = serve("--tls-cert", str(cert), "--tls-key", str(key), "--idle-timeout", "2")
    for _ in range(20):
        sockets.append(socket.create_connection(("127.0.0.1", service.port), timeout=10))
    wait_for(lambda: all(closed_by_peer(s) for s in sockets), timeout=30, interval=0.2)
