"""Running the receiving service: one process, or N worker processes on one listening socket.

The parent prepares what workers must not race on (the schema, the query token) and binds the port
itself, without ``SO_REUSEPORT``: a port that another process listens on is refused with a clear error
instead of being shared with a service that has another database and token. Its workers inherit that one
socket (so ``--port 0`` works with N workers too), and whichever worker is free accepts the next
connection. The parent supervises: a worker that dies stops the service with an error, and SIGINT/SIGTERM
stop the workers gracefully.

What one sender may hold is bounded, so that idle or slow connections cannot make the service unreachable
(:mod:`ceip_core.service.connections`): a connection must complete its TLS handshake, and then deliver a
complete request head, within the idle timeout (after connecting, or after its last answer); each worker
keeps at most ``max_connections`` open and answers 503 beyond that; and the open-files limit is raised to
its hard limit at start.

The service never logs who sent anything: the access log, when switched on, has no remote address, and
aiohttp's and asyncio's error messages are rewritten without it (and rate-limited, so a flood of bad
connections cannot flood the log).
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import multiprocessing
import resource
import signal
import socket
import ssl
import sys
from collections.abc import Callable
from pathlib import Path

import attrs
from aiohttp import web
from attrs import frozen

from ceip_core.service.app import make_app
from ceip_core.service.config import ServiceConfig
from ceip_core.service.connections import ConnectionGuard, RepeatLog, hide_addresses
from ceip_core.service.sqlite_store import path_of
from ceip_core.service.storage import redact
from ceip_core.service.stores import is_sqlite, open_storage

#: aiohttp's access log without ``%a`` (the remote address) and without the user agent.
ACCESS_LOG_FORMAT = '%t "%r" %s %b %Tf'
#: Connections the kernel queues for the workers before they accept them.
BACKLOG = 1024
#: Open files a worker keeps for itself (database, logs, its own sockets) below the open-files limit.
RESERVED_FILES = 128

log = logging.getLogger(__name__)


class ServeError(Exception):
    """The service cannot start; the message says why and what to do."""


@frozen
class ServeOptions:
    """Everything a worker process needs; picklable, so it crosses into spawned workers."""

    config: ServiceConfig
    database: str
    token: str
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    tls_cert: Path | None = None
    tls_key: Path | None = None
    access_log: bool = False
    log_level: str = "INFO"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls_cert else 'http'}://{host}:{self.port}"


def tls_context(cert: Path, key: Path | None) -> ssl.SSLContext:
    """A server TLS context from a PEM certificate chain and key (the key may be in the cert file).
    Raises :class:`ServeError` naming the file and what is wrong with it, in words (OpenSSL says "PEM lib")."""
    cert_text = _pem(cert, "--tls-cert")
    key_text = _pem(key, "--tls-key") if key is not None else cert_text
    if b"-----BEGIN CERTIFICATE-----" not in cert_text:
        found = " (it holds a private key: give that with --tls-key)" if b"PRIVATE KEY-----" in cert_text else ""
        raise ServeError(f"--tls-cert {cert} holds no PEM certificate{found}")
    if b"PRIVATE KEY-----" not in key_text:
        where = f"--tls-key {key}" if key is not None else f"--tls-cert {cert} (no --tls-key given)"
        raise ServeError(f"{where} holds no PEM private key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        problem = (
            "the private key does not belong to the certificate"
            if "KEY_VALUES_MISMATCH" in str(exc)
            else (
                "a certificate or key in it is damaged (cut short, or not the base64 of one), or the key is encrypted"
            )
        )
        raise ServeError(f"--tls-cert {cert}{f' / --tls-key {key}' if key else ''}: {problem}") from None
    return context


def _pem(path: Path, option: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ServeError(f"{option} {path} cannot be read: {exc.strerror or exc}") from None


def listen(host: str, port: int) -> socket.socket:
    """The service's listening socket on (host, port); :class:`ServeError` if another process holds it.

    ``SO_REUSEADDR`` only lets a restarted service bind past connections in TIME_WAIT; on Linux it never
    shares a port with a live listener. ``SO_REUSEPORT`` is deliberately not set: it would."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise ServeError(f"cannot listen on {host!r}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ServeError(
                f"port {port} on {host} is already in use by another process: stop it, or give another --port"
            ) from None
        raise ServeError(f"cannot listen on {host} port {port}: {exc.strerror or exc}") from None
    return sock


def raise_open_files_limit() -> int:
    """Raise the soft limit on open files to the hard limit (each connection is one); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError) as exc:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, hard, exc)
    return soft


def describe(database: str) -> str:
    """The database as the start-up line names it: a SQLite file by its absolute path (a URL such as
    ``sqlite:///ceip.db`` means the filesystem's root, which is easy to miss), else the URL without password."""
    if is_sqlite(database):
        return f"{path_of(database).absolute()} (SQLite)"
    return redact(database)


async def prepare(database: str) -> None:
    """Create or migrate the schema once, before any worker starts."""
    storage = open_storage(database)
    await storage.open()
    await storage.close()


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    hide_addresses()


def run_worker(options: ServeOptions, sock: socket.socket) -> None:
    """Serve on ``sock`` until SIGINT or SIGTERM (blocking): one worker process, on uvloop if it is
    installed (``ceip[uvloop]``)."""
    _configure_logging(options.log_level)
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(_serve(options, sock))


#: The collector's youngest-generation threshold in a worker (CPython's default is 700).
GC_THRESHOLD = 50_000


def tune_collector() -> None:
    """Take what start-up made out of every later collection, and collect young objects less often.

    Why: a fold step holds a few hundred thousand short-lived containers at once (reach keys, rows), none
    of them in a cycle. With the default threshold every step pushed them through all three generations
    and set off full collections of about 40 ms each, stalling the event loop and costing about a tenth of
    the worker's CPU at batch 20 (``bench/service.py``). CPython counts containers allocated minus freed,
    so temporaries that die never trigger a collection; cycles (an exception and its traceback, say) are
    still collected, a few fold steps later. ``gc.freeze`` keeps modules, plugins and the configuration,
    which live as long as the worker, out of every full collection.
    """
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])


async def _serve(options: ServeOptions, sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    repeats = RepeatLog(log)
    loop.set_exception_handler(repeats.loop_exception)
    limits = options.config.limits
    runner = web.AppRunner(
        make_app(options.config, options.database, options.token),
        access_log=logging.getLogger("aiohttp.access") if options.access_log else None,
        access_log_format=ACCESS_LOG_FORMAT,
        keepalive_timeout=limits.idle_timeout_s,
    )
    await runner.setup()
    tune_collector()  # after start-up, so that what it made is frozen
    log.debug("collector: thresholds %s, %d start-up objects frozen", gc.get_threshold(), gc.get_freeze_count())
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    most = limits.max_connections
    if soft != resource.RLIM_INFINITY and soft - RESERVED_FILES < most:
        most = max(1, soft - RESERVED_FILES)
        log.warning("at most %d connections per worker: the open-files limit is %d", most, soft)
    assert runner.server is not None
    guard = ConnectionGuard(runner.server, most, repeats)
    context = tls_context(options.tls_cert, options.tls_key) if options.tls_cert else None
    server = await loop.create_server(
        guard,
        sock=sock,
        backlog=BACKLOG,
        ssl=context,
        ssl_handshake_timeout=limits.idle_timeout_s if context else None,  # only allowed with TLS
    )
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        server.close()
        await runner.cleanup()
        repeats.flush()


#: Said at start when several workers share one SQLite file: measured, they gain little or nothing.
SQLITE_WORKERS_NOTE = (
    "ceip serve: note: workers on one SQLite file take turns at its one write lock, so they gain little "
    "over one (docs/operations.md, Sizing); for more than one worker, use PostgreSQL"
)


def serve(options: ServeOptions, announce: Callable[[str], None] = print) -> int:
    """Run the service with ``options.workers`` processes; the exit status. Raises :class:`ServeError`."""
    if options.tls_cert:
        tls_context(options.tls_cert, options.tls_key)  # fail here, once, not in every worker
    raise_open_files_limit()  # before the workers start: they inherit it
    sock = listen(options.host, options.port)  # first: a busy port must not leave a new database behind
    try:
        asyncio.run(prepare(options.database))
        options = attrs.evolve(options, port=sock.getsockname()[1])
        if options.workers > 1 and is_sqlite(options.database):
            announce(SQLITE_WORKERS_NOTE)
        announce(f"ceip serve: {options.workers} worker(s) on {options.url}, database {describe(options.database)}")
        if options.workers == 1:
            run_worker(options, sock)
            return 0
        return _supervise(options, sock)
    finally:
        sock.close()


def _supervise(options: ServeOptions, sock: socket.socket) -> int:
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=run_worker, args=(options, sock), name=f"ceip-worker-{i}")
        for i in range(options.workers)
    ]
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                worker.terminate()  # SIGTERM: the worker shuts down gracefully

    # Before the first worker starts: a SIGTERM while they start must stop them, not kill this process alone
    # and leave them running, orphaned, with nothing to stop them.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for worker in workers:
        if stopping:
            break
        worker.start()
        if stopping:  # the signal came while it started, before it had a pid to be told by
            worker.terminate()
    sock.close()  # the workers have their copies; the parent only supervises
    status = 0
    while any(worker.is_alive() for worker in workers):
        for worker in workers:
            worker.join(timeout=0.2)
            if worker.exitcode not in (None, 0) and not stopping:
                print(f"ceip serve: {worker.name} exited with {worker.exitcode}; stopping", file=sys.stderr)
                status = 1
                stop(signal.SIGTERM, None)
    return status
