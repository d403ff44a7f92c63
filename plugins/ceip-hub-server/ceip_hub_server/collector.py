"""Hub Server's ceip collector: reads the server's status file from outside its process (in the ceip agent)
and hands the agent the server's declared metrics, as the server's own recorder would have recorded them.

Totals in the file become the increase since the previous pass (a smaller total means the server
restarted: then the whole total is new); each recent response time is taken once, by its sequence number.
A missing, half-written or malformed file gives nothing this pass and is logged, never raised.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ceip_core.collectors import CollectContext, MetricsObserved, Observation
from ceip_hub_server.status import status_path

log = logging.getLogger(__name__)

PRODUCT = "hub-server"
_KINDS = ("api", "web", "sync")


class HubStatusCollector:
    """The Hub Server's requests, response times, connected clients, hosted repositories and errors."""

    name = "hub-server-status"
    product = PRODUCT
    interval_s = 60.0
    timeout_s = 5.0

    def __init__(self) -> None:
        self._totals: dict[tuple[str, str], int] = {}
        self._seen = 0
        """The sequence number of the last response time taken."""

    async def collect(self, ctx: CollectContext) -> Sequence[Observation]:
        path = status_path()
        try:
            status = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []  # the server has not run here (yet)
        except (OSError, ValueError) as exc:
            log.warning("cannot read Hub Server's status file %s: %s", path, exc)
            return []
        if not isinstance(status, dict):
            log.warning("Hub Server's status file %s holds no status object", path)
            return []
        return [self._observed(status)]

    def _observed(self, status: Mapping[str, Any]) -> MetricsObserved:
        counters = {
            ("requests_served", kind): n
            for kind in _KINDS
            if (n := self._increase("requests", kind, _count(status, "requests", kind)))
        }
        errors = status.get("errors")
        problems = {
            ("error", signature): n
            for signature in (errors if isinstance(errors, dict) else {})
            if isinstance(signature, str)
            and (n := self._increase("errors", signature, _count(status, "errors", signature)))
        }
        recent = status.get("recent_response_ms")
        responses = [
            (seq, kind, float(ms))
            for seq, kind, ms in (e for e in (recent if isinstance(recent, list) else []) if _response(e))
        ]
        if responses and max(seq for seq, _, _ in responses) < self._seen:
            self._seen = 0  # the server restarted and numbers its responses from 1 again
        values: list[tuple[str, float, str | None]] = [
            ("response_time_ms", ms, kind) for seq, kind, ms in responses if seq > self._seen
        ]
        self._seen = max([self._seen, *(seq for seq, _, _ in responses)])
        for name in ("connected_clients", "hosted_repositories"):
            value = status.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                values.append((name, float(value), None))
        version = status.get("version")
        return MetricsObserved(
            PRODUCT,
            counters=counters,
            values=values,
            problems=problems,
            version=version if isinstance(version, str) else None,
        )

    def _increase(self, group: str, key: str, total: int) -> int:
        last = self._totals.get((group, key), 0)
        self._totals[(group, key)] = total
        return total - last if total >= last else total


def _count(status: Mapping[str, Any], group: str, key: str) -> int:
    table = status.get(group)
    value = table.get(key) if isinstance(table, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _response(entry: Any) -> bool:
    """True for a ``[sequence number, kind of request, milliseconds]`` entry."""
    return (
        isinstance(entry, list)
        and len(entry) == 3
        and isinstance(entry[0], int)
        and entry[1] in _KINDS
        and isinstance(entry[2], int | float)
        and not isinstance(entry[2], bool)
    )
