"""Where a report's CPU goes in the receiving service, stage by stage, in one process on SQLite.

    python bench/service_stages.py [--reports 2000]   # a few seconds; no server, no network

``bench/service.py`` measures the whole service over HTTP, and this says which stage to make cheaper. It
takes that bench's generated reports (each from a new machine, as in that bench) and times each
stage the service runs, in order, on the same reports: splitting the batch, validation, the second pass,
making the storage writes, the durable insert (20 reports per commit, as at batch 20), and the fold (500
per step); then it folds each machine's report of the next day (a machine seen before: the usual case).
It then times the fold's Python parts again on their own: the other rollup rows (``rollups.fold``) and
filing the reach groups (``Fold.rows``). The collector is tuned as in a worker (``serve.tune_collector``)
unless ``--default-collector`` is given. The figure beside the fold is the budget ``bench/service.py``
sets at batch 20: 60 % of the minimal pipeline's rate, given with ``--minimal``
(reports/s, default the last figure in docs/operations.md).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import orjson

sys.path.insert(0, str(Path(__file__).parent))
from service import ALLOWLIST, make_report

from ceip_core.plugins import get_plugins
from ceip_core.service import reach, rollups
from ceip_core.service.config import ConfigFiles
from ceip_core.service.groupcommit import GroupCommitter
from ceip_core.service.ingest import Ingest, _to_write
from ceip_core.service.serve import tune_collector
from ceip_core.service.sqlite_store import SQLiteStorage
from ceip_core.service.validation import Valid, decode_batch

_R = TypeVar("_R")


def timed(rows: list[tuple[str, float]], label: str, count: int, fn: Callable[[], _R]) -> _R:
    started = time.perf_counter()
    result = fn()
    rows.append((label, (time.perf_counter() - started) / count * 1e6))
    return result


async def store_and_fold(
    storage: SQLiteStorage, writes: list[Any], again: list[Any], rows: list[tuple[str, float]]
) -> None:
    """Store and fold ``writes``, then ``again`` (the same machines' next day) on top of them."""
    await storage.open()
    try:
        started = time.perf_counter()
        for at in range(0, len(writes), 20):
            await storage.write(writes[at : at + 20])
        rows.append(("durable insert, 20 per commit", (time.perf_counter() - started) / len(writes) * 1e6))
        for label, batch in (("new machines", writes), ("the same a day later", again)):
            if batch is again:
                await storage.write(again)
            started = time.perf_counter()
            while await storage.roll_up(500):
                pass
            rows.append((f"fold, 500 per step: {label}", (time.perf_counter() - started) / len(batch) * 1e6))
    finally:
        await storage.close()


def next_day(item: dict[str, Any]) -> dict[str, Any]:
    """The report its machine sends a day after ``item``: another id, the period a day later."""
    period = {k: (datetime.fromisoformat(v) + timedelta(days=1)).isoformat() for k, v in item["period"].items()}
    return {**item, "report_id": str(uuid.uuid4()), "period": period}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=int, default=2000)
    parser.add_argument("--minimal", type=float, default=16170, help="the minimal pipeline's reports/s at batch 20")
    parser.add_argument("--default-collector", action="store_true", help="keep CPython's collector thresholds")
    args = parser.parse_args()
    rng, yesterday = random.Random(1), datetime.now(UTC) - timedelta(days=1)
    items = [make_report(rng, yesterday) for _ in range(args.reports)]
    body = orjson.dumps({"schema": 1, "items": items})
    rows: list[tuple[str, float]] = []
    if not args.default_collector:
        tune_collector()  # as a worker does once it has started
    with tempfile.TemporaryDirectory(prefix="ceip-bench-") as tmp:
        folder = Path(tmp)
        (folder / "allowlist.toml").write_text(ALLOWLIST)
        config = ConfigFiles(folder / "allowlist.toml", None, (), tuple(get_plugins().products.values())).load()
        storage = SQLiteStorage(f"sqlite://{folder / 'stages.db'}")
        ingest = Ingest(config, GroupCommitter(storage))
        received, n = time.time(), args.reports
        raws = timed(rows, "split the batch", n, lambda: decode_batch(body))
        verdicts = timed(rows, "validation", n, lambda: ingest.check(raws, None, received))
        screened = timed(rows, "second pass", n, lambda: ingest.screen(verdicts, received))
        valid = [v for v in screened if isinstance(v, Valid)]
        assert len(valid) == n, f"{n - len(valid)} reports refused"
        writes = timed(rows, "storage writes made", n, lambda: [_to_write(v, received, config) for v in valid])
        raws = decode_batch(orjson.dumps({"schema": 1, "items": [next_day(item) for item in items]}))
        later = [v for v in ingest.screen(ingest.check(raws, None, received), received) if isinstance(v, Valid)]
        assert len(later) == n, f"{n - len(later)} reports of the next day refused"
        again = [_to_write(v, received, config) for v in later]
        asyncio.run(store_and_fold(storage, writes, again, rows))
    plan = timed(rows, "  fold: other rollup rows", n, lambda: rollups.fold([v.item for v in valid]))
    ids = reach.Groups()  # every group numbered first, as in a worker that has seen them (reach_groups)
    _, unnamed = plan.rows({}, ids)
    ids.learn([(i + 1, *fields) for i, fields in enumerate(ids.unknown_keys(unnamed.values()))])
    tables, _ = timed(rows, "  fold: filing reach groups", n, lambda: plan.rows({}, ids))
    sizes = [len(runs) for _, _, runs in tables["reach_state"]]
    groups = statistics.mean(sum(len(keys) for _, keys in state.parts) for state in unnamed.values())
    width = max(len(label) for label, _ in rows)
    print(f"{'stage'.ljust(width)}  µs/report")
    for label, us in rows:
        print(f"{label.ljust(width)}  {us:9.1f}")
    budget = 1e6 / (0.6 * args.minimal)  # µs per report at 60 % of the rate
    print(
        f"\n{n} reports, each from a new machine: {groups:.0f} reach groups per report, "
        f"{statistics.mean(sizes):,.0f} bytes of reach state per machine ({len(ids.id_of):,} groups in all).\n"
        f"Budget for everything per report at batch 20 (60 % of {args.minimal:,.0f} reports/s): {budget:.0f} µs."
    )


if __name__ == "__main__":
    main()
