"""The ``ceip`` command's start-up and its views of a full spool (issue 11), against a bare
``python -c pass`` and the code this branch started from (checked out of git into a temporary folder),
measured in the same run, with the issue's figures beside them.

    python bench/cli.py                 # 9 runs per command, 100,000 queued reports
    python bench/cli.py --runs 5 --queued 20000 --baseline HEAD~3

What it measures, each in a fresh interpreter (the median of ``--runs``):

1. start-up: ``ceip --help``, ``ceip status`` (empty state folder) and ``ceip consent out analyst``
   (opted in again, untimed, before each run): <= 120 ms each.
2. ``consent out`` to silence: from starting the command until a recorder's consent watcher in this
   process hears that the product may no longer record, idle and with every core kept busy by a
   bounded spinning loop: <= 1 s.
3. ``ceip status`` on 100,000 queued reports: <= 0.15 s, the whole command.
4. ``ceip review`` and ``ceip review --json`` on 100,000 queued reports: time to the first line, peak
   RSS (the child's own, from ``wait4``) and reports per second: <= 1 s, <= 100 MB, >= 5,000/s.

The spool is seeded in bulk (one transaction of plain SQL inserts of real encoded reports, one template
with a fresh id each, as a long offline period fills it); the bench prints how long that took. The
analyst product plugin must be installed (``pip install -e plugins/ceip-analyst``). Byte code is compiled
first, as an installed package has it.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The commit this work started from: the CLI as one module that imports every command.
BASELINE = "7bf65bb"
PRODUCT = "analyst"
#: The figures issue 11 measured on the development machine ("today").
ISSUE = {
    "help": "410 ms",
    "status": "340 ms",
    "out": "270-870 ms",
    "status@full": "480 ms",
    "review": "25 s, 925 MB",
    "review --json": "48 s, 4.3 GB",
}


# -- seeding ------------------------------------------------------------------------------------------


def seed(home: Path, n: int) -> float:
    """Opt the product in and queue ``n`` real encoded reports in one transaction; returns the seconds."""
    from ceip_core import wire
    from ceip_core.consent import Consent
    from ceip_core.records import CounterValue, Period, Problem, ProcessSession, Report, SystemInfo
    from ceip_core.statedb import StateDB

    db = StateDB(home)
    consent = Consent(db)
    consent.opt_in(PRODUCT)
    guid = consent.guid()
    assert guid is not None
    now = datetime.now(UTC)
    template = Report(
        report_id=str(uuid.UUID(int=0)),
        guid=guid,
        product=PRODUCT,
        product_version="2.4.1",
        period=Period(now - timedelta(hours=1), now),
        system=SystemInfo(4, 2, "8-16 GiB", "Linux", "6.8", "x86_64", 2, True, "1-7 days"),
        counters=[CounterValue("open_file", 12), CounterValue("export", 3, "pdf"), CounterValue("export", 1, "csv")],
        problems=[Problem("crash", "KeyError@load.py:12", 1)],
        config={"theme": "dark", "autosave": True},
        sessions=[ProcessSession("analyst", now - timedelta(minutes=30), 1800.0, 12.5, 200_000_000)],
        diagnostics={"scrubbed": 1},
    )
    encoded = wire.encode_item(template)
    zero = str(uuid.UUID(int=0)).encode()
    start = time.perf_counter()
    conn = db.connect()
    conn.execute("BEGIN IMMEDIATE")
    rows = []
    for _ in range(n):
        item_id = str(uuid.uuid4())
        rows.append((item_id, PRODUCT, guid, time.time(), encoded.replace(zero, item_id.encode())))
    conn.executemany(
        "INSERT INTO spool (item_id, kind, product, guid, created, size, data) VALUES (?, 'report', ?, ?, ?, ?, ?)",
        ((i, p, g, c, len(d), d) for i, p, g, c, d in rows),
    )
    conn.execute("COMMIT")
    db.close()
    return time.perf_counter() - start


# -- running the command --------------------------------------------------------------------------------


def checkout(revision: str, into: Path) -> Path:
    """The ``ceip_core`` package as of ``revision``, extracted into ``into`` and compiled."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", revision, "ceip_core"], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    compileall.compile_dir(into / "ceip_core", quiet=1)
    return into


def environment(home: Path, source: Path | None) -> dict[str, str]:
    env = {**os.environ, "CEIP_HOME": str(home)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if source is not None:
        env["PYTHONPATH"] = str(source)  # before the editable install of this checkout
    return env


def ceip(args: Sequence[str]) -> list[str]:
    # From a neutral folder: ``-m`` puts the current folder first on the path.
    return [sys.executable, "-m", "ceip_core", *args]


def wall(command: Sequence[str], env: dict[str, str], runs: int, before: Callable[[], object] = lambda: None) -> float:
    """The median wall seconds of ``runs`` runs of ``command`` (``before`` runs, untimed, before each)."""
    times = []
    for _ in range(runs):
        before()
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True, cwd=tempfile.gettempdir())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def streamed(command: Sequence[str], env: dict[str, str]) -> tuple[float, float, float, int]:
    """Run ``command`` reading its output as it comes: seconds to the first line, seconds in all, the
    child's own peak RSS in MB (``wait4``) and how many lines it printed."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, cwd=tempfile.gettempdir())
    assert proc.stdout is not None
    first = None
    lines = 0
    for _ in proc.stdout:
        if first is None:
            first = time.perf_counter() - start
        lines += 1
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    total = time.perf_counter() - start
    assert proc.returncode == 0, proc.returncode
    return first or total, total, usage.ru_maxrss / 1024, lines  # ru_maxrss: KiB on Linux


@contextmanager
def busy_cores(seconds: float) -> Iterator[None]:
    """Every core kept busy by a spinning process, for at most ``seconds``."""
    spin = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"
    procs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(os.cpu_count() or 2)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def to_silence(home: Path, env: dict[str, str], runs: int) -> float:
    """The median seconds from starting ``ceip consent out`` until a consent watcher in this process (as
    a recorder in a running product has) hears that the product may no longer record."""
    from ceip_core.consent import Consent, ConsentWatcher
    from ceip_core.statedb import StateDB

    class Listener:
        def __init__(self) -> None:
            self.silenced = threading.Event()

        def consent_changed(self, allowed: object) -> None:
            if PRODUCT not in allowed:  # type: ignore[operator]
                self.silenced.set()

    times = []
    for _ in range(runs):
        Consent(StateDB(home)).opt_in(PRODUCT)
        watcher = ConsentWatcher(home)
        listener = Listener()
        assert PRODUCT in watcher.subscribe(listener)
        start = time.perf_counter()
        proc = subprocess.Popen(ceip(["consent", "out", PRODUCT]), env=env, stdout=subprocess.DEVNULL)
        heard = listener.silenced.wait(30)
        times.append(time.perf_counter() - start)
        watcher.stop()
        assert proc.wait() == 0 and heard
    return statistics.median(times)


# -- the table ------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=9, help="runs per command (default %(default)s)")
    parser.add_argument("--queued", type=int, default=100_000, help="reports in the full spool (default %(default)s)")
    parser.add_argument("--baseline", default=BASELINE, help="git revision to compare with (default %(default)s)")
    parser.add_argument("--seed", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seed is not None:
        print(seed(Path(args.seed[0]), int(args.seed[1])))
        return
    compileall.compile_dir(ROOT / "ceip_core", quiet=1)
    rows: list[tuple[str, ...]] = []

    def row(what: str, issue: str, before: str, after: str, target: str, ok: bool | None) -> None:
        rows.append((what, issue, before, after, target, "-" if ok is None else ("yes" if ok else "NO")))

    with tempfile.TemporaryDirectory(prefix="ceip-bench-cli-") as tmp:
        base = Path(tmp)
        old_source = checkout(args.baseline, base / "baseline")
        empty, full = base / "empty", base / "full"
        # In a child: the seeding's memory must not count in the RSS of the commands this process forks.
        seeding = [sys.executable, __file__, "--seed", str(full), str(args.queued)]
        seeded = float(subprocess.run(seeding, check=True, capture_output=True, text=True).stdout)
        Path(empty).mkdir()
        opt_in = [sys.executable, "-c", f"from ceip_core.consent import Consent; Consent().opt_in({PRODUCT!r})"]

        def measure(source: Path | None) -> dict[str, float]:
            env = environment(empty, source)
            again = lambda: subprocess.run(opt_in, env=env, check=True, cwd=tmp)  # noqa: E731
            return {
                "pass": wall([sys.executable, "-c", "pass"], env, args.runs),
                "help": wall(ceip(["--help"]), env, args.runs),
                "status": wall(ceip(["status"]), env, args.runs),
                "out": wall(ceip(["consent", "out", PRODUCT]), env, args.runs, again),
                "status@full": wall(ceip(["status"]), environment(full, source), args.runs),
            }

        old, new = measure(old_source), measure(None)
        for key, what in (("help", "ceip --help"), ("status", "ceip status"), ("out", f"ceip consent out {PRODUCT}")):
            over = new[key] - new["pass"]
            row(
                f"{what} (median; over python -c pass)",
                ISSUE[key],
                f"{old[key] * 1000:.0f} ms ({(old[key] - old['pass']) * 1000:+.0f})",
                f"{new[key] * 1000:.0f} ms ({over * 1000:+.0f})",
                "<= 120 ms",
                new[key] <= 0.120,
            )
        row("python -c pass (the floor)", "-", f"{old['pass'] * 1000:.0f} ms", f"{new['pass'] * 1000:.0f} ms", "", None)
        row(
            f"ceip status, {args.queued:,} queued (whole command)",
            ISSUE["status@full"],
            f"{old['status@full'] * 1000:.0f} ms",
            f"{new['status@full'] * 1000:.0f} ms",
            "<= 150 ms",
            new["status@full"] <= 0.150,
        )
        silence_env = environment(empty, None)
        idle = to_silence(empty, silence_env, args.runs)
        with busy_cores(30 + 10 * args.runs):
            loaded = to_silence(empty, silence_env, args.runs)
        for label, seconds in (("idle", idle), ("every core busy", loaded)):
            row(
                f"consent out to silence, {label}",
                "-",
                "-",
                f"{seconds * 1000:.0f} ms",
                "<= 1 s",
                seconds <= 1,
            )

        full_env = environment(full, None)
        for what, extra in (("review", []), ("review --json", ["--json"])):
            first, total, rss, lines = streamed(ceip(["review", *extra]), full_env)
            rate = args.queued / total
            row(
                f"ceip {what}, {args.queued:,} queued: first line; peak RSS",
                ISSUE[what],
                "-",
                f"{first * 1000:.0f} ms; {rss:.0f} MB",
                "<= 1 s; <= 100 MB",
                first <= 1 and rss <= 100,
            )
            row(f"  reports/s ({total:.1f} s, {lines:,} lines)", "", "-", f"{rate:,.0f}", ">= 5,000", rate >= 5000)
        row(f"seeding {args.queued:,} reports in bulk", "", "", f"{seeded:.1f} s", "(info)", None)

    head = ("what", "issue 11", f"baseline {args.baseline}", "this checkout", "target", "ok")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()
