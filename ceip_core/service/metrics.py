"""What operators watch, from :meth:`Storage.stats`: ``GET /metrics`` (Prometheus text format, behind the query
token) and ``ceip report storage`` print the same figures.

Database size, rows per table, the fold's backlog and lag (how long ago the oldest report still waiting to
be folded into the rollups arrived: queries fold it before answering, so a lag only costs them time), the
quarantine, and the counters the database keeps across workers (reports refused by a tombstone, rows aged
out). Gauges are read from the database at each scrape, so every worker of a deployment answers the same.
"""

from __future__ import annotations

from typing import Any

from ceip_core.service.storage import EXPIRED, TOMBSTONED, Storage

#: The exposition format's media type (version 0.0.4 of the text format).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def figures(storage: Storage, now: float) -> dict[str, Any]:
    """:meth:`Storage.stats` with the quarantine count and the fold lag (seconds, 0 when nothing is queued)."""
    stats = await storage.stats()
    oldest = stats["oldest_queued"]
    return {**stats, "quarantined": await storage.quarantined(), "fold_lag_s": 0.0 if oldest is None else now - oldest}


def _metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    return lines + [f"{name}{labels} {value:g}" for labels, value in samples]


def prometheus(found: dict[str, Any]) -> str:
    """The figures in the Prometheus text exposition format."""
    counters = found["counters"]
    lines = [
        *_metric("ceip_database_bytes", "gauge", "Size of the database on disk.", [("", found["bytes"])]),
        *_metric(
            "ceip_table_rows",
            "gauge",
            "Rows per table.",
            [(f'{{table="{table}"}}', n) for table, n in sorted(found["rows"].items())],
        ),
        *_metric(
            "ceip_fold_queue_reports",
            "gauge",
            "Stored reports not yet folded into the rollups.",
            [("", found["queued"])],
        ),
        *_metric(
            "ceip_fold_lag_seconds", "gauge", "Age of the oldest report not yet folded.", [("", found["fold_lag_s"])]
        ),
        *_metric(
            "ceip_quarantined_reports", "gauge", "Stored reports the fold could not take.", [("", found["quarantined"])]
        ),
        *_metric(
            "ceip_tombstoned_reports_total",
            "counter",
            "Reports refused because their machine had asked for deletion before they were recorded.",
            [("", counters.get(TOMBSTONED, 0))],
        ),
        *_metric(
            "ceip_expired_rows_total",
            "counter",
            "Raw reports and per-machine rows aged out.",
            [("", counters.get(EXPIRED, 0))],
        ),
    ]
    return "\n".join(lines) + "\n"
