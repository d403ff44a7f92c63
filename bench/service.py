"""Benchmark of the receiving service: durable accepted reports/s of ``ceip serve`` on SQLite, beside two
baselines written here, all driven by the same load generator in the same run.

    python bench/service.py            # about a minute; loopback only

- (a) ``bare``: an aiohttp handler that reads the body and answers 204 (the HTTP floor);
- (b) ``minimal``: read, gunzip, parse, insert each report into SQLite in batches (group commit, WAL,
  synchronous=FULL), answer after the commit (the durable floor);
- ``ceip serve``: everything the service does (limits, rate limit, validation, de-duplication, the raw
  report and its rollup queue entry committed before the answer).

Bodies are realistic: gzip JSON batches of generated Analyst-like reports (about 1.5 KB each expanded),
1 or 20 reports per request, a fresh report id in every report. The load generator (``bench/loadgen.py``)
is lean: prebuilt requests over keep-alive sockets from several processes, the same for every server; each
row prints the generator's CPU and the server's (in % of one core) so a reader sees which one was the
ceiling. Each server runs in its own process on its own empty database. ``ceip serve`` acknowledges a
report once it and its rollup-queue entry are committed and folds reports into the rollups when the load
eases (or the backlog passes 1,000); the "sustained" rows count the time until that backlog is empty too,
and print the largest fold lag seen during the run (sampled every 0.25 s). Targets: ceip >= 60% of (b) at
both batch sizes, sustained (with folding) >= 60% of (b) on SQLite and PostgreSQL, >= 35% of (a) for
single-report requests; two workers >= 1.6x one; with ``--postgres URL`` (a loopback server), PostgreSQL
>= 40% of (b). Every server runs on asyncio's own loop (uvloop hidden, if installed); ``--uvloop`` also runs
``ceip serve`` and (b) on uvloop (needs ``ceip[uvloop]``), compared with each other. ``--before DIR`` also runs an
earlier ``ceip_core`` (a folder holding one, e.g. ``git archive main ceip_core | tar -x -C DIR``) right after
this tree's, so that a change is measured against the code before it in the same machine conditions.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import pickle
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import psutil

sys.path.insert(0, str(Path(__file__).parent))
from loadgen import load

LOOPBACK = "127.0.0.1"  # the only address this benchmark ever talks to
ALLOWLIST = '[products.analyst]\nexecutables = ["analyst", "analyst.exe"]\n'


# -- bodies -------------------------------------------------------------------------------------------


def make_report(rng: random.Random, now: datetime) -> dict[str, Any]:
    """One Analyst-like report: system info, 8 counters, 3 timing histograms, config, a session, sometimes a problem."""
    end = now - timedelta(minutes=rng.randint(1, 600))

    def histogram(name: str, centre: int) -> dict[str, Any]:
        buckets = {str(centre + i): rng.randint(1, 20) for i in range(-4, 4)}
        count = sum(buckets.values())
        return {"name": name, "count": count, "sum": count * 2.0 ** (centre / 4), "min": 2.0 ** ((centre - 4) / 4),
                "max": 2.0 ** ((centre + 4) / 4), "buckets": buckets, "label": None}  # fmt: skip

    counters = [("open_session", None), ("filter", "text"), ("filter", "range"), ("export", "pdf"), ("chart", "bar"),
                ("chart", "line"), ("summarise", None), ("help_opened", None)]  # fmt: skip
    return {
        "type": "report",
        "report_id": str(uuid.uuid4()),
        "guid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "product": "analyst",
        "product_version": rng.choice(["5.1", "5.2", "5.3"]),
        "period": {"start": (end - timedelta(hours=1)).isoformat(), "end": end.isoformat()},
        "schema": 1,
        "system": {
            "cpu_logical": rng.choice([4, 8, 16]),
            "cpu_physical": rng.choice([2, 4, 8]),
            "memory_bucket": rng.choice(["8-16 GiB", "16-32 GiB"]),
            "os": rng.choice(["Windows", "Linux"]),
            "os_version": rng.choice(["10.0.19045", "6.1.0"]),
            "arch": "x86_64",
            "net_interfaces_up": 2,
            "net_connected": True,
            "boot_age_bucket": "1-7 d",
            "features": {"bluetooth": "present", "usb_high_speed": "present"},
        },
        "counters": [{"name": n, "value": rng.randint(1, 50), "label": label} for n, label in counters],
        "histograms": [
            histogram("click_to_response_ms", 28),
            histogram("open_file_ms", 36),
            histogram("render_chart_ms", 24),
        ],
        "problems": [
            {"kind": "error", "signature": f"TimeoutError@analyst/io.py:{rng.choice([41, 88, 120])}", "count": 1}
        ]
        if rng.random() < 0.3
        else [],
        "config": {"theme": rng.choice(["light", "dark"]), "default_chart": "bar", "auto_save": True},
        "sessions": [
            {
                "executable": "analyst.exe",
                "started": (end - timedelta(minutes=50)).isoformat(),
                "duration_s": 1800.5,
                "cpu_s": 12.5,
                "peak_rss_bytes": 250_000_000,
                "ended": "normal",
            }
        ],
        "diagnostics": {"scrub.identifiers.path": rng.randint(0, 3)},
    }


def make_bodies(requests: int, batch: int, seed: int) -> list[tuple[bytes, int]]:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    bodies = []
    for _ in range(requests):
        items = [make_report(rng, now) for _ in range(batch)]
        bodies.append((gzip.compress(orjson.dumps({"schema": 1, "items": items}), 6, mtime=0), batch))
    return bodies


# -- the baselines --------------------------------------------------------------------------------------


def serve_baseline(kind: str, port: int, db_path: str) -> None:
    """Serve baseline ``kind`` (``bare``, ``minimal``; ``minimal-uv`` is the minimal pipeline on uvloop)."""
    from aiohttp import web

    if kind.endswith("-uv"):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        kind = kind.removesuffix("-uv")

    async def bare(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS reports (id TEXT PRIMARY KEY, body TEXT NOT NULL)")
    writer = ThreadPoolExecutor(1)
    pending: list[tuple[list[tuple[str, str]], asyncio.Future[None]]] = []
    wake = asyncio.Event()

    def insert(rows: list[tuple[str, str]]) -> None:
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT OR IGNORE INTO reports VALUES (?, ?)", rows)
        db.execute("COMMIT")

    async def committer() -> None:
        while True:
            await wake.wait()
            wake.clear()
            while pending:
                group = pending[:]
                del pending[:]
                await asyncio.get_running_loop().run_in_executor(writer, insert, [r for rows, _ in group for r in rows])
                for _, future in group:
                    future.set_result(None)

    async def minimal(request: web.Request) -> web.Response:
        doc = orjson.loads(zlib.decompress(await request.read(), 31))
        rows = [(item["report_id"], orjson.dumps(item).decode()) for item in doc["items"]]
        future = asyncio.get_running_loop().create_future()
        pending.append((rows, future))
        wake.set()
        await future
        return web.json_response({"accepted": len(rows)})

    async def start(app: web.Application) -> Any:
        task = asyncio.create_task(committer())
        yield
        task.cancel()

    app = web.Application(client_max_size=2 << 20, handler_args={"auto_decompress": False})
    app.cleanup_ctx.append(start)
    app.router.add_post("/v1/reports", bare if kind == "bare" else minimal)
    app.router.add_get("/healthz", lambda _: web.Response(text="ok"))  # type: ignore[arg-type,return-value]
    web.run_app(app, host=LOOPBACK, port=port, access_log=None, print=None)


# -- running it -----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def wait_healthy(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "server exited"
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("server did not become healthy")


async def _fold_queue(database: str) -> tuple[int, float]:
    """Reports acknowledged but not yet folded into the rollups, and how long ago the oldest arrived (s)."""
    sql = "SELECT COUNT(*), MIN(r.received) FROM rollup_queue q JOIN reports r ON r.seq = q.seq"
    if database.startswith("sqlite"):
        with sqlite3.connect(database[len("sqlite://") :]) as db:
            count, oldest = db.execute(sql).fetchone()
    else:
        import asyncpg

        conn = await asyncpg.connect(database)
        try:
            count, oldest = await conn.fetchrow(sql)
        finally:
            await conn.close()
    return int(count), 0.0 if oldest is None else time.time() - oldest


class FoldWatch:
    """Samples the fold queue every 0.25 s on a thread while the load runs: the largest backlog and lag seen."""

    def __init__(self, database: str | None) -> None:
        self.database = database
        self.queued, self.lag = 0, 0.0
        self._stop = False
        self._thread = ThreadPoolExecutor(1)
        self._done = self._thread.submit(self._run) if database else None

    def _run(self) -> None:
        assert self.database is not None
        while not self._stop:
            count, lag = asyncio.run(_fold_queue(self.database))
            self.queued, self.lag = max(self.queued, count), max(self.lag, lag)
            time.sleep(0.25)

    def stop(self) -> None:
        self._stop = True
        if self._done is not None:
            self._done.result()
        self._thread.shutdown()


async def _fresh_schema(server: str, name: str) -> str:
    """A URL for an empty schema ``name`` on the PostgreSQL ``server``."""
    import asyncpg

    conn = await asyncpg.connect(server)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}")
    finally:
        await conn.close()
    return f"{server}{'&' if '?' in server else '?'}search_path={name}"


def _cpu_s(proc: psutil.Process) -> float:
    """CPU seconds of a process and its children (the workers of ``ceip serve --workers N``)."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            times = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def without_uvloop(folder: Path) -> dict[str, str]:
    """An environment in which ``import uvloop`` fails, in a server and in every worker it spawns.

    ``ceip serve`` takes uvloop when it can, so the rows of ``ceip serve`` on asyncio's own loop (all but
    ``ceip-uv``) hide it: they stay comparable between machines with and without it, and with the
    baselines, which run on asyncio's loop too.
    """
    hidden = folder / "no-uvloop"
    hidden.mkdir(exist_ok=True)
    (hidden / "uvloop.py").write_text('raise ImportError("hidden by bench/service.py")\n')
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(hidden), os.environ.get("PYTHONPATH")]))}


def measure(server: str, bodies: Path, warmup: Path, args: argparse.Namespace, folder: Path) -> Any:
    """Start ``server`` on an empty database, warm it up, drive it, stop it; the load generator's figures.

    ``server``: ``bare``, ``minimal``, ``minimal-uv`` (on uvloop), ``ceip`` (SQLite), ``ceip-2w`` (SQLite, 2
    workers), ``ceip-uv`` (SQLite, uvloop), ``ceip-pg``; all on asyncio's own loop but the two ``-uv``;
    ``ceip-before`` and ``ceip-pg-before`` run the ``ceip_core`` in ``--before DIR`` instead of this tree's.
    """
    port = free_port()
    before = server.endswith("-before")
    server = server.removesuffix("-before")
    if server in ("bare", "minimal", "minimal-uv"):
        command = [sys.executable, __file__, "--serve", server, "--port", str(port), "--db", str(folder / f"{port}.db")]
        database = None
    else:
        if server == "ceip-pg":
            database = asyncio.run(_fresh_schema(args.postgres, f"bench_{port}"))
        else:
            database = f"sqlite://{folder / f'{port}.db'}"
        (folder / "allowlist.toml").write_text(ALLOWLIST)
        command = [sys.executable, "-m", "ceip_core", "serve", "--port", str(port), "--db", database]
        command += [
            "--data",
            str(folder),
            "--token",
            "bench-token-000001",
            "--allowlist",
            str(folder / "allowlist.toml"),
        ]
        command += ["--source-burst", "0"]  # every simulated machine sends from loopback: one source
        command += ["--workers", "2" if server == "ceip-2w" else "1"]
    # ``python -m`` imports from the current folder first: ``--before``'s ceip_core there.
    cwd = args.before if before else None
    env = None if server in ("ceip-uv", "minimal-uv") else without_uvloop(folder)
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd, env=env)
    try:
        wait_healthy(port, proc)
        url = f"http://{LOOPBACK}:{port}/v1/reports"
        load(url, warmup, args.processes, args.connections)
        if database is not None:  # start from an empty fold queue
            while asyncio.run(_fold_queue(database))[0]:
                time.sleep(0.05)
        server_proc = psutil.Process(proc.pid)
        cpu_before = _cpu_s(server_proc)
        watch = FoldWatch(database)
        try:
            result: dict[str, Any] = load(url, bodies, args.processes, args.connections)
            result["server_cpu_s"] = _cpu_s(server_proc) - cpu_before
            if database is not None:  # how long until every accepted report is folded into the rollups
                started = time.perf_counter()
                while asyncio.run(_fold_queue(database))[0]:
                    time.sleep(0.05)
                result["drain"] = time.perf_counter() - started
            result["server_cpu_all_s"] = _cpu_s(server_proc) - cpu_before  # the fold after the load included
        finally:
            watch.stop()
        result["max_queued"], result["max_lag"] = watch.queued, watch.lag
        return result
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
        if proc.returncode not in (0, -15):
            print(err.decode(), file=sys.stderr)


def compare(what: str, value: float, name: str, baseline: float, target: float | None = None) -> list[str]:
    """A table row: the figure, its baseline, the target share of it and whether it is met."""
    share = value / baseline
    met = "-" if target is None else ("yes" if share >= target else "NO")
    goal = "-" if target is None else (f">= {target:g}x" if target > 1 else f">= {target:.0%} of {name.split()[0]}")
    return [what, f"{value:.0f}", f"{name} {baseline:.0f}", goal, f"{share:.0%} {met}"]


def cpu(result: dict[str, Any], baseline: dict[str, Any]) -> list[str]:
    """Generator and server CPU (% of one core) of a row's run and of its baseline's, the server's CPU time
    per report (the fold after the load included: on a shared machine a steadier figure than a rate), and
    the fold lag."""

    def shares(r: dict[str, Any]) -> str:
        return f"{r['cpu_s'] / r['elapsed']:.0%}/{r['server_cpu_s'] / r['elapsed']:.0%}"

    def per_report(r: dict[str, Any]) -> str:
        return f"{r['server_cpu_all_s'] / r['accepted'] * 1e6:.0f}"

    lag = f"{result['max_lag']:.1f} s ({result['max_queued']})" if "drain" in result else "-"
    return [shares(result), shares(baseline), f"{per_report(result)}/{per_report(baseline)}", lag]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=12000, help="requests per run with 1 report each")
    parser.add_argument("--processes", type=int, default=2, help="load generator processes")
    parser.add_argument("--connections", type=int, default=16, help="keep-alive connections per generator process")
    parser.add_argument(
        "--postgres", help="also measure on this (loopback) PostgreSQL, e.g. postgresql://postgres@127.0.0.1/postgres"
    )
    parser.add_argument("--uvloop", action="store_true", help="also run ceip serve on uvloop (needs ceip[uvloop])")
    parser.add_argument(
        "--before",
        type=Path,
        help="a folder holding an earlier ceip_core (e.g. from git archive): its ceip serve runs beside this one's",
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_baseline(args.serve, args.port, args.db)
        return

    if args.postgres and urlsplit(args.postgres).hostname not in (LOOPBACK, "::1", "localhost"):
        parser.error("--postgres must name a server on loopback (127.0.0.1, ::1 or localhost)")
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="ceip-bench-") as tmp:
        folder = Path(tmp)
        for batch, requests in ((1, args.requests), (20, max(args.requests // 10, 100))):
            bodies, warmup = folder / f"bodies-{batch}", folder / f"warmup-{batch}"
            bodies.write_bytes(pickle.dumps(make_bodies(requests, batch, seed=batch)))
            warmup.write_bytes(pickle.dumps(make_bodies(max(requests // 20, 50), batch, seed=1000 + batch)))
            size = sum(len(b) for b, _ in pickle.loads(bodies.read_bytes())) / (requests * batch)
            print(f"batch {batch}: {requests} requests, {size:.0f} bytes gzip per report", file=sys.stderr)
            servers = ["bare", "minimal", "ceip"] + (["ceip-before"] if args.before else [])
            servers += ["ceip-2w"] if batch == 20 else []
            servers += ["minimal-uv", "ceip-uv"] if args.uvloop else []
            servers += ["ceip-pg"] if args.postgres else []
            servers += ["ceip-pg-before"] if args.postgres and args.before else []
            rate, sustained, result = {}, {}, {}
            for server in servers:
                result[server] = r = measure(server, bodies, warmup, args, folder)
                assert r["accepted"] == requests * batch, f"{server}: accepted {r['accepted']}: {r}"
                rate[server] = r["accepted"] / r["elapsed"]
                if "drain" in r:
                    sustained[server] = r["accepted"] / (r["elapsed"] + r["drain"])
                print(f"  {server}: {rate[server]:.0f} reports/s", file=sys.stderr)
            b, minimal = f"batch {batch}:", result["minimal"]
            rows.append(
                compare(f"{b} durable accepted/s", rate["ceip"], "(b) minimal", rate["minimal"], 0.6)
                + cpu(result["ceip"], minimal)
            )
            if batch == 1:
                rows.append(
                    compare(f"{b} vs bare HTTP", rate["ceip"], "(a) bare", rate["bare"], 0.35)
                    + cpu(result["ceip"], result["bare"])
                )
            rows.append(
                compare(f"{b} sustained incl. folding", sustained["ceip"], "(b) minimal", rate["minimal"], 0.6)
                + cpu(result["ceip"], minimal)
            )
            if "ceip-before" in rate:
                rows.append(
                    compare(f"{b} sustained vs --before", sustained["ceip"], "before", sustained["ceip-before"])
                    + cpu(result["ceip"], result["ceip-before"])
                )
            if "ceip-2w" in rate:
                rows.append(
                    compare(f"{b} 2 workers vs 1", rate["ceip-2w"], "1 worker", rate["ceip"], 1.6)
                    + cpu(result["ceip-2w"], result["ceip"])
                )
            if "ceip-uv" in rate:
                rows.append(
                    compare(f"{b} uvloop sustained vs asyncio", sustained["ceip-uv"], "asyncio", sustained["ceip"])
                    + cpu(result["ceip-uv"], result["ceip"])
                )
                rows.append(  # both on uvloop: the loop's gain is not credited to ceip serve alone
                    compare(f"{b} uvloop sustained", sustained["ceip-uv"], "(b) on uvloop", rate["minimal-uv"], 0.6)
                    + cpu(result["ceip-uv"], result["minimal-uv"])
                )
            if "ceip-pg" in rate:
                pg = result["ceip-pg"]
                rows.append(
                    compare(f"{b} PostgreSQL accepted/s", rate["ceip-pg"], "(b) minimal", rate["minimal"], 0.4)
                    + cpu(pg, minimal)
                )
                rows.append(
                    compare(f"{b} PostgreSQL sustained", sustained["ceip-pg"], "(b) minimal", rate["minimal"], 0.6)
                    + cpu(pg, minimal)
                )
            if "ceip-pg-before" in rate:
                rows.append(
                    compare(
                        f"{b} PostgreSQL sustained vs --before",
                        sustained["ceip-pg"],
                        "before",
                        sustained["ceip-pg-before"],
                    )
                    + cpu(result["ceip-pg"], result["ceip-pg-before"])
                )
    header = [
        "benchmark (reports/s; SQLite, 1 worker unless said)",
        "ceip serve",
        "baseline",
        "target",
        "met",
        "CPU gen/server",
        "baseline's",
        "server µs/report (baseline's)",
        "max fold lag (queued)",
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for line in (header, ["-" * w for w in widths], *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
    print(
        f"\n{os.cpu_count()} CPUs; load generator: bench/loadgen.py, {args.processes} processes x "
        f"{args.connections} keep-alive connections; CPU in % of one core over the measured run; server µs/report:\n"
        "the server's CPU time (its workers' included) per report, up to the end of the fold."
    )


if __name__ == "__main__":
    main()
