"""My Product's collector: what the ceip agent reads about My Product from outside its process.

Use one when the product has something to say that its own recording cannot: a server's status endpoint,
a utility's log of runs, a product written in another language. The agent runs it while My Product is
allowlisted and opted in, shows it only My Product, and runs it in a worker thread within ``timeout_s``.
Return only metrics that ``plugin.SPEC`` declares: the rest is dropped and counted before the disk.

This one reads a small JSON status file that the product would write (``MYPRODUCT_STATUS``): exports so
far by format, and the time the last file took to open. Replace it with your product's own source.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from ceip_core.collectors import CollectContext, MetricsObserved, Observation

log = logging.getLogger(__name__)


class StatusCollector:
    name = "myproduct-status"  # unique among all collectors
    product = "myproduct"  # makes it this product's collector: it sees My Product only
    interval_s = 600.0  # how often the agent calls collect
    timeout_s = 5.0  # a pass that takes longer is counted and ignored

    def __init__(self) -> None:
        self._exports: dict[str, int] = {}  # totals seen at the last pass: report only what is new

    async def collect(self, ctx: CollectContext) -> Sequence[Observation]:
        path = Path(os.environ.get("MYPRODUCT_STATUS", "myproduct-status.json"))
        try:
            status = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:  # never raise for an ordinary failure: log and skip the pass
            log.warning("cannot read %s: %s", path, exc)
            return []
        counters = {}
        for fmt, total in (status.get("exports") or {}).items():
            if isinstance(total, int) and total > self._exports.get(fmt, 0):
                counters[("export", fmt)] = total - self._exports.get(fmt, 0)
                self._exports[fmt] = total
        values = []
        if isinstance(status.get("last_open_ms"), int | float):
            values.append(("open_file_ms", float(status["last_open_ms"]), None))
        return [MetricsObserved("myproduct", counters=counters, values=values)]
