"""Running the receiving service: one process, or N worker processes sharing one port (SO_REUSEPORT).

The parent prepares what workers must not race on (the schema, the query token), reserves the port (so
``--port 0`` works with N workers too: a bound, never-listening socket holds the number) and supervises:
a worker that dies stops the service with an error, and SIGINT/SIGTERM stop the workers gracefully. The
kernel spreads connections over the workers; each has its own event loop, group committer and rate
limiter, and the database de-duplicates across them.

The access log, when switched on, has no remote address: the service never records who sent a report.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
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
from ceip_core.service.storage import open_storage

#: aiohttp's access log without ``%a`` (the remote address) and without the user agent.
ACCESS_LOG_FORMAT = '%t "%r" %s %b %Tf'

log = logging.getLogger(__name__)


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

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls_cert else 'http'}://{host}:{self.port}"


def tls_context(cert: Path, key: Path | None) -> ssl.SSLContext:
    """A server TLS context from a PEM certificate chain and key (the key may be in the cert file)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) with SO_REUSEPORT and not listening: it holds the port number."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    holder = socket.socket(family, kind, proto)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind(address)
    return holder


async def prepare(database: str) -> None:
    """Create or migrate the schema once, before any worker starts."""
    storage = open_storage(database)
    await storage.open()
    await storage.close()


def run_worker(options: ServeOptions) -> None:
    """Serve until SIGINT or SIGTERM (blocking): one worker process, on uvloop if it is installed (``ceip[uvloop]``)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    app = make_app(options.config, options.database, options.token)
    web.run_app(
        app,
        host=options.host,
        port=options.port,
        reuse_port=True,
        ssl_context=tls_context(options.tls_cert, options.tls_key) if options.tls_cert else None,
        access_log=logging.getLogger("aiohttp.access") if options.access_log else None,
        access_log_format=ACCESS_LOG_FORMAT,
        print=None,
    )


def serve(options: ServeOptions, announce: Callable[[str], None] = print) -> int:
    """Run the service with ``options.workers`` processes; the exit status."""
    if options.tls_cert:
        tls_context(options.tls_cert, options.tls_key)  # fail here, once, not in every worker
    asyncio.run(prepare(options.database))
    holder = reserve_port(options.host, options.port)
    try:
        options = attrs.evolve(options, port=holder.getsockname()[1])
        announce(
            f"ceip serve: {options.workers} worker(s) on {options.url}, database {open_storage(options.database).url}"
        )
        if options.workers == 1:
            run_worker(options)
            return 0
        return _supervise(options)
    finally:
        holder.close()


def _supervise(options: ServeOptions) -> int:
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=run_worker, args=(options,), name=f"ceip-worker-{i}") for i in range(options.workers)
    ]
    for worker in workers:
        worker.start()
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                worker.terminate()  # SIGTERM: aiohttp shuts down gracefully

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    status = 0
    while any(worker.is_alive() for worker in workers):
        for worker in workers:
            worker.join(timeout=0.2)
            if worker.exitcode not in (None, 0) and not stopping:
                print(f"ceip serve: {worker.name} exited with {worker.exitcode}; stopping", file=sys.stderr)
                status = 1
                stop(signal.SIGTERM, None)
    return status
