"""A lean HTTP load generator for the service benchmarks: never the ceiling, and it says so.

Each of ``processes`` processes opens ``connections`` keep-alive sockets to one loopback server and sends
prebuilt request bytes (``POST /v1/reports`` with a gzip batch body) as fast as the server answers: no HTTP
library, no per-request header building, a response read with one small parser. The processes start at the
same wall-clock moment and report their own CPU time, so the benchmark prints the generator's CPU share
beside the server's: a generator far from a full core per process is not what limits the figure.

    python bench/loadgen.py URL BODIES.pickle --processes 2 --connections 16    # prints one JSON line
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pickle
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def requests_of(url: str, bodies: list[tuple[bytes, int]]) -> list[tuple[bytes, int]]:
    """Whole HTTP/1.1 requests (head and body), built once before the clock starts."""
    parts = urlsplit(url)
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Encoding: gzip\r\n"
        "Content-Type: application/vnd.ceip.batch+json\r\nContent-Length: {}\r\n\r\n"
    )
    return [(head.format(len(data)).encode() + data, n) for data, n in bodies]


def accepted_in(status: int, body: bytes, sent: int) -> int:
    """Reports a response acknowledges: the bare server's 204, the minimal pipeline's count, ceip's results."""
    if status == 204:
        return sent
    if status != 200:
        return 0
    if b'"results"' in body:
        return body.count(b'"status":"accepted"')
    return int(json.loads(body)["accepted"])


async def _connection(host: str, port: int, work: list[tuple[bytes, int]], tally: dict[str, Any]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while work:
            request, n = work.pop()
            writer.write(request)
            line = await reader.readuntil(b"\r\n")
            status = int(line.split(b" ", 2)[1])
            length = 0
            while (header := await reader.readuntil(b"\r\n")) != b"\r\n":
                if header[:15].lower() == b"content-length:":
                    length = int(header[15:])
            data = await reader.readexactly(length) if length else b""
            tally["accepted"] += accepted_in(status, data, n)
            tally["sent"] += n
            tally["statuses"][status] = tally["statuses"].get(status, 0) + 1
    finally:
        writer.close()


async def _drive(url: str, work: list[tuple[bytes, int]], connections: int, start_at: float) -> dict[str, Any]:
    parts = urlsplit(url)
    assert parts.hostname in LOOPBACK, "loopback only"
    tally: dict[str, Any] = {"accepted": 0, "sent": 0, "statuses": {}}
    await asyncio.sleep(max(0.0, start_at - time.time()))
    began = time.time()
    await asyncio.gather(*(_connection(parts.hostname, parts.port or 80, work, tally) for _ in range(connections)))
    return {**tally, "began": began, "ended": time.time()}


def run_one(url: str, bodies: Path, part: int, parts: int, connections: int, start_at: float) -> dict[str, Any]:
    """One generator process's share of the bodies (every ``parts``-th, from ``part``); its tally and CPU time."""
    work = requests_of(url, pickle.loads(bodies.read_bytes())[part::parts])
    work.reverse()  # popped from the end: sent in the original order
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    result = asyncio.run(_drive(url, work, connections, start_at))
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {**result, "cpu_s": after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime}


def load(url: str, bodies: Path, processes: int = 2, connections: int = 16) -> dict[str, Any]:
    """Drive ``url`` with every body once from ``processes`` processes; the merged figures.

    ``elapsed`` runs from the common start to the last answer; ``cpu_s`` is the generator's CPU time in all.
    """
    start_at = time.time() + 1.0 + 0.3 * processes  # time to start and build the requests
    command = [
        sys.executable,
        __file__,
        url,
        str(bodies),
        "--connections",
        str(connections),
        "--start-at",
        str(start_at),
    ]
    procs = [
        subprocess.Popen([*command, "--part", str(i), "--parts", str(processes)], stdout=subprocess.PIPE)
        for i in range(processes)
    ]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, f"load generator failed ({proc.returncode})"
        results.append(json.loads(out))
    statuses: dict[str, int] = {}
    for r in results:
        for status, n in r["statuses"].items():
            statuses[status] = statuses.get(status, 0) + n
    return {
        "accepted": sum(r["accepted"] for r in results),
        "sent": sum(r["sent"] for r in results),
        "elapsed": max(r["ended"] for r in results) - min(r["began"] for r in results),
        "cpu_s": sum(r["cpu_s"] for r in results),
        "statuses": statuses,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("bodies", type=Path, help="a pickle of [(gzip body, reports in it), ...]")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16, help="per process")
    parser.add_argument("--part", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--parts", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part is None:
        print(json.dumps(load(args.url, args.bodies, args.processes, args.connections)))
    else:
        print(json.dumps(run_one(args.url, args.bodies, args.part, args.parts, args.connections, args.start_at)))


if __name__ == "__main__":
    main()
