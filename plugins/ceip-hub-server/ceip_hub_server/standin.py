"""A stand-in for Hub Server: a process called ``hub-server`` that uses the recording API as the server would,
and publishes its status file (``ceip_hub_server.status``) for the plugin's collector, as a server would.

Installed as the ``hub-server`` console script, for the demo and the tests (see ``ceip_core.standin``):
``hub-server --seconds 5``, ``hub-server --crash``. It is also a short example of recording a
long-running server (which would pass ``seal_every`` to seal a report every day).
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Sequence
from typing import Any

import ceip_core
from ceip_core import standin
from ceip_hub_server.status import RECENT, status_path, write_status

VERSION = "2.4.0"


def main(argv: Sequence[str] | None = None) -> int:
    opts = standin.start("hub-server", argv)
    rng = random.Random(opts.seed)
    started = time.monotonic()
    path = status_path()
    # What the server publishes about itself (requests, response times, clients, errors): the plugin's
    # collector reads it from outside this process. What only the process knows, it records itself.
    status: dict[str, Any] = {
        "version": VERSION,
        "hosted_repositories": rng.randint(1, 200),
        "connected_clients": rng.randint(1, 40),
        "requests": {"api": 0, "web": 0, "sync": 0},
        "errors": {},
        "recent_response_ms": [],
    }
    seq = 0
    with ceip_core.recorder("hub-server", VERSION, seal_every=None) as rec:
        rec.feature("server_starts")
        rec.config("storage_backend", rng.choice(["sqlite", "postgresql"]))
        rec.config("tls_enabled", True)
        rec.config("worker_count", rng.choice([2, 4, 8]))
        for tick in opts.ticks():
            for _ in range(rng.randint(0, 5)):
                kind = rng.choice(["api", "api", "web", "sync"])
                status["requests"][kind] += 1
                seq += 1
                status["recent_response_ms"].append([seq, kind, round(rng.lognormvariate(3, 0.8), 3)])
            del status["recent_response_ms"][:-RECENT]
            if tick % 20 == 0:  # a sample a second stands in for one a minute
                status["connected_clients"] = max(0, status["connected_clients"] + rng.randint(-3, 3))
            if rng.random() < 0.005:
                errors = status["errors"]
                errors["ConnectionResetError@sync.py:214"] = errors.get("ConnectionResetError@sync.py:214", 0) + 1
            write_status(path, status)
        rec.observe("uptime_s", time.monotonic() - started)
        opts.crash_if_asked()
    return 0


if __name__ == "__main__":
    sys.exit(main())
