"""The rate limiter's cost per request as the number of machines it holds grows, for the baseline code (loaded
out of git) and this checkout, in the same run.

    python bench/limiter.py                     # baseline: the commit issue 16 was found on
    python bench/limiter.py --baseline HEAD~3   # any other revision

The load is the one issue 16 describes: every request comes from a machine never seen before (made-up
GUIDs) with a batch of 100 items, at a steady rate, so the limiter holds the buckets of the last
``100 / 25 per second = 4 s`` of requests, the ones that have not refilled yet. Each level sets that
rate so that the limiter holds the level's number of buckets, starts from that steady state (written into
the limiter's table directly: filling the baseline through its API would take hours at 200,000), then
times requests on a fake clock that moves on by one request's share of a second each time. The baseline
rebuilds its whole table on every request once it holds more than 100,000 buckets.

Target (issue 16): the cost per request at 200,000 buckets at most 2x the cost at 1,000.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
#: The commit on which issue 16 was found ("today").
BASELINE = "7bf65bb"
LEVELS = (1_000, 10_000, 100_000, 200_000)
BURST, PER_S = 1000.0, 25.0
#: Items per request (one made-up machine's batch).
COST = 100


def baseline_limiter(revision: str) -> type:
    """``RateLimiter`` as it was at ``revision``."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{revision}:ceip_core/service/limits.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    module = types.ModuleType(f"limits_{revision}")
    exec(compile(source, f"{revision}:ceip_core/service/limits.py", "exec"), module.__dict__)
    limiter: type = module.RateLimiter
    return limiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def per_request_us(limiter_class: type, buckets: int, requests: int) -> tuple[float, int]:
    """Microseconds per request (the best of 7 runs of ``requests``: the least disturbed on a shared
    machine) with about ``buckets`` buckets held, and how many it holds afterwards."""
    clock = Clock()
    limiter: Any = limiter_class(BURST, PER_S, clock=clock)
    step = (COST / PER_S) / buckets  # seconds between requests: ``buckets`` of them in one refill time
    # The steady state: the last ``buckets`` requests' machines, oldest first, each charged COST.
    steady = {f"machine-{i}": (BURST - COST, (i - buckets) * step) for i in range(1, buckets + 1)}
    limiter._buckets = type(limiter._buckets)(steady)
    serial = buckets

    def request() -> None:
        nonlocal serial
        serial += 1
        clock.now += step
        assert limiter.take({f"machine-{serial}": COST}) == 0

    runs = []
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(requests):
            request()
        runs.append((time.perf_counter() - start) / requests * 1e6)
    return min(runs), len(limiter._buckets)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default=BASELINE, help=f"git revision of the baseline (default {BASELINE})")
    args = parser.parse_args()
    from ceip_core.service.limits import RateLimiter

    old = baseline_limiter(args.baseline)
    rows = []
    for level in LEVELS:
        before, _ = per_request_us(old, level, 5 if level >= 100_000 else 2000)
        now, held = per_request_us(RateLimiter, level, 2000)
        rows.append((level, before, now, held))
    print(f"{'buckets held':>12}  {'baseline ' + args.baseline:>18}  {'this checkout':>14}  {'held after':>10}")
    for level, before, now, held in rows:
        print(f"{level:>12,}  {before:>15.2f} us  {now:>11.2f} us  {held:>10,}")
    flat = rows[-1][2] / rows[0][2]
    ok = flat <= 2.0
    print(
        f"\ncost at {LEVELS[-1]:,} / cost at {LEVELS[0]:,} buckets: {flat:.2f}x (target <= 2x): {'yes' if ok else 'NO'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
