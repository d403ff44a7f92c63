"""A stand-in for Hub Server: a process called ``hub-server`` that uses the recording API as the server would.

Installed as the ``hub-server`` console script, for the demo and the tests (see ``ceip_core.standin``):
``hub-server --seconds 5``, ``hub-server --crash``. It is also a short example of recording a
long-running server (which would pass ``seal_every`` to seal a report every day).
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Sequence

import ceip_core
from ceip_core import standin


def main(argv: Sequence[str] | None = None) -> int:
    opts = standin.start("hub-server", argv)
    rng = random.Random(opts.seed)
    started = time.monotonic()
    with ceip_core.recorder("hub-server", "2.4.0", seal_every=None) as rec:
        rec.feature("server_starts")
        rec.config("storage_backend", rng.choice(["sqlite", "postgresql"]))
        rec.config("tls_enabled", True)
        rec.config("worker_count", rng.choice([2, 4, 8]))
        clients = rng.randint(1, 40)
        for tick in opts.ticks():
            for _ in range(rng.randint(0, 5)):
                kind = rng.choice(["api", "api", "web", "sync"])
                rec.feature("requests_served", kind)
                rec.observe("response_time_ms", rng.lognormvariate(3, 0.8), kind)
            if tick % 20 == 0:  # a sample a second stands in for one a minute
                clients = max(0, clients + rng.randint(-3, 3))
                rec.observe("connected_clients", clients)
            if rng.random() < 0.005:
                rec.problem("ConnectionResetError@sync.py:214")
        rec.observe("uptime_s", time.monotonic() - started)
        opts.crash_if_asked()
    return 0


if __name__ == "__main__":
    sys.exit(main())
