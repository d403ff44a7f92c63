"""The fault campaign: does ceip lose or duplicate a report when processes die, the service is down, or the
network and the service misbehave? One command, one table.

    python bench/faults.py            # 30 trials per kill scenario; several minutes on 2 cores; loopback only
    python bench/faults.py --quick    # a few trials each, about a minute

Scenarios (the code is tests/campaign.py, shared with the fast version in tests/test_faults.py):

1. kill -9 of ``ceip upload`` at a random moment of its run, then the upload run again;
2. kill -9 of ``ceip agent`` (sealing and uploading every 0.3 s) after a random time, then ``ceip upload``;
3. kill -9 of ``ceip serve`` at a random moment of an upload, restarted on the same port and database;
4. an outage: the service down for ``--down`` s while machines keep trying with the client's real backoff,
   then up; the drain time is until every spool is empty;
5. a fault proxy in front of the service: 503, 429 + Retry-After, resets mid-request and mid-answer,
   garbled answers, stalls past the client's timeout.

Targets (docs/operations.md, "Bad input and faults"): lost 0, duplicated 0, 5xx 0 in every row. Needs ceip
and the product plugins installed (the machines report for ``analyst``); works in a temporary folder it
removes.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import campaign

PRODUCT = "analyst"


def _allowlist(work: Path) -> None:
    """Allowlist the product for every machine of the run, and keep any machine policy of the host away."""
    from ceip_core.allowlist import Allowlist, make_entry
    from ceip_core.plugins import get_plugins

    path = work / "allowlist.toml"
    os.environ["CEIP_ALLOWLIST"] = str(path)
    os.environ["CEIP_POLICY_FILE"] = str(work / "no-policy.toml")
    spec = get_plugins().product(PRODUCT)
    Allowlist.read(path).add(make_entry(PRODUCT, name) for name in spec.executables).write(path)


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f}" if n else "-"


def table(outcomes: list[campaign.Outcome]) -> str:
    head = ["scenario", "trials", "created", "stored", "lost", "dup", "queued", "5xx", "crashes", "RSS MiB svc/cli"]
    rows = [
        [
            o.scenario,
            str(o.trials),
            str(o.created),
            str(o.stored),
            str(o.lost),
            str(o.duplicated),
            str(o.queued),
            str(o.server_errors),
            str(o.crashes),
            f"{_mib(o.peak_service)}/{_mib(o.peak_client)}",
        ]
        for o in outcomes
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(head, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few trials each (about a minute)")
    parser.add_argument("--trials", type=int, help="trials per kill scenario (default 30; --quick: 4)")
    parser.add_argument("--reports", type=int, default=100, help="reports per machine in the kill scenarios")
    parser.add_argument("--machines", type=int, help="machines in the outage and proxy scenarios (default 10)")
    parser.add_argument("--down", type=float, help="seconds the service is down in the outage (default 20)")
    parser.add_argument("--drain-deadline", type=float, default=300, help="longest wait for the drain, seconds")
    parser.add_argument("--client-timeout", type=float, default=2.0, help="the client's timeout behind the proxy")
    parser.add_argument("--seed", type=int, default=1, help="random seed (kill moments, faults drawn)")
    parser.add_argument("--only", nargs="*", choices=["uploader", "agent", "serve", "outage", "proxy"])
    args = parser.parse_args()
    trials = args.trials or (4 if args.quick else 30)
    machines = args.machines or (4 if args.quick else 10)
    down = args.down if args.down is not None else (3.0 if args.quick else 20.0)
    # Per machine, at most what the service's per-machine burst takes (200 items) counting one resend.
    reports = min(args.reports, 100)
    chosen = set(args.only or ["uploader", "agent", "serve", "outage", "proxy"])
    # The in-process clients warn about every fault they meet; the table says what came of them.
    logging.basicConfig(level=logging.ERROR)

    outcomes: list[campaign.Outcome] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ceip-faults-") as tmp:
        work = Path(tmp)
        _allowlist(work)
        c = campaign.Campaign(work, PRODUCT, seed=args.seed)
        runs = {
            "uploader": lambda: campaign.kill_uploader(c, trials, reports),
            "agent": lambda: campaign.kill_agent(c, trials),
            "serve": lambda: campaign.kill_serve(c, trials, reports),
            "outage": lambda: campaign.outage(c, machines, reports, down, args.drain_deadline),
            "proxy": lambda: campaign.flaky_proxy(c, machines * 5, 20, args.client_timeout, args.drain_deadline),
        }
        for name, run in runs.items():
            if name in chosen:
                print(f"running: {name} ...", file=sys.stderr, flush=True)
                outcomes.append(run())
    print(table(outcomes))
    print()
    for o in outcomes:
        seeding = f"; seeding {o.seeding_s:.1f} s" if o.seeding_s else ""
        notes = "; ".join(o.notes)
        print(f"{o.scenario}: {o.seconds:.0f} s{seeding}{'; ' + notes if notes else ''}")
    print(f"total {time.monotonic() - started:.0f} s. Targets: lost 0, dup 0, 5xx 0, crashes 0 in every row.")
    bad = [o.scenario for o in outcomes if o.lost or o.duplicated or o.server_errors or o.crashes]
    if bad:
        print(f"FAILED: {', '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
