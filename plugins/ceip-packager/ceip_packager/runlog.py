"""Packager's run log, and the ceip collector that reads it from outside Packager (in the ceip agent).

Packager appends one JSON line per finished run: the packages it made (their sizes), how long the run
took and how it failed, if it did. The collector hands the agent what was appended since its previous
pass, as Packager's own declared metrics. It keeps its place by byte offset; a log that was replaced or
truncated (rotation) is read again from its start. A line that is not a run is skipped and logged.
Nothing in a line names a user, a file or a machine.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ceip_core.collectors import CollectContext, MetricsObserved, Observation

log = logging.getLogger(__name__)

PRODUCT = "packager"
#: Where the run log is, if set; else :func:`log_path`'s default.
LOG_ENV = "PACKAGER_RUN_LOG"
#: The kinds of failure Packager declares it may report.
FAILURES = ("source-unreadable", "disk-full", "transfer-timeout")


def log_path() -> Path:
    """``$PACKAGER_RUN_LOG``, else ``packager/runs.jsonl`` in the user's log folder."""
    if os.environ.get(LOG_ENV):
        return Path(os.environ[LOG_ENV])
    import platformdirs

    return platformdirs.user_log_path("packager") / "runs.jsonl"


def append_run(path: Path, run: dict[str, Any]) -> None:
    """Append one run as one line (one ``write`` of a whole line, so a reader never sees half of one
    unless the line is still being written: the collector leaves an unfinished last line for later)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(run) + "\n")


class RunLogCollector:
    """Packages built, their sizes, run durations and failures, from Packager's run log."""

    name = "packager-run-log"
    product = PRODUCT
    interval_s = 300.0
    timeout_s = 10.0

    def __init__(self) -> None:
        self._file: tuple[int, int] | None = None
        """(device, inode) of the log read so far."""
        self._offset = 0

    async def collect(self, ctx: CollectContext) -> Sequence[Observation]:
        path = log_path()
        try:
            with open(path, "rb") as handle:
                st = os.fstat(handle.fileno())
                if self._file != (st.st_dev, st.st_ino) or st.st_size < self._offset:
                    self._file, self._offset = (st.st_dev, st.st_ino), 0  # a new or truncated log
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.warning("cannot read Packager's run log %s: %s", path, exc)
            return []
        complete = data[: data.rfind(b"\n") + 1]  # an unfinished last line waits for the next pass
        self._offset += len(complete)
        runs = [run for line in complete.splitlines() if (run := _run(line)) is not None]
        return [_observed(runs)] if runs else []


def _run(line: bytes) -> dict[str, Any] | None:
    try:
        run = json.loads(line)
    except ValueError:
        log.warning("skipping a line of Packager's run log that is not JSON")
        return None
    if not isinstance(run, dict):
        return None
    return run


def _observed(runs: list[dict[str, Any]]) -> MetricsObserved:
    built = 0
    values: list[tuple[str, float, str | None]] = []
    problems: dict[tuple[str, str], int] = {}
    for run in runs:
        sizes = [s for s in run.get("package_sizes") or () if _number(s)]
        built += len(sizes)
        values += [("package_size_bytes", float(s), None) for s in sizes]
        if _number(run.get("duration_ms")):
            values.append(("run_duration_ms", float(run["duration_ms"]), None))
        failure = run.get("failure")
        if failure in FAILURES:
            problems[("failure", failure)] = problems.get(("failure", failure), 0) + 1
    return MetricsObserved(
        PRODUCT, counters={("packages_built", None): built} if built else {}, values=values, problems=problems
    )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
