"""A product's exit: how much later a program that records a session and exits normally ends, whole
process, than the same program without ceip; for the baseline code (checked out of git into a temporary
folder) and this checkout, in the same run.

    python bench/exit.py                     # needs plugins/ceip-analyst installed
    python bench/exit.py --baseline HEAD~3

The product is opted in and allowlisted; it records a typical session (the one ``bench/run.py`` seals)
and exits, leaving the seal to the interpreter's exit. "Without ceip" is the same program counting into a
``collections.Counter``. Each run is a fresh interpreter, started in a temporary folder (so that the code
under test is the one on PYTHONPATH, not the current folder's) and timed from start to end by the parent;
the programs (and the two implementations) alternate, and after each run with ceip the bench waits (with
a deadline) until its report is in the spool, so that no sealing goes on behind the next measurement.
Target (issue 11): exit delayed by ceip <= 30 ms over the program without ceip.
"""

from __future__ import annotations

import argparse
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The commit on which issue 11's figures were taken ("today").
BASELINE = "745c7c6"

SESSION = """
for name in ("open_session", "summarise", "help_opened", "feedback_options_opened"):
    for _ in range(5):
        feature(name)
for label in ("pdf", "csv", "xlsx", "png"):
    feature("export", label)
for label in ("bar", "line", "pie", "scatter", "table"):
    feature("chart", label)
"""

WITH_CEIP = (
    "import ceip_core\nrec = ceip_core.recorder('analyst', '5.2')\nfeature = rec.feature\n"
    + SESSION
    + "for v in range(1, 40):\n    rec.observe('open_file_ms', v * 7.3)\nrec.problem('KeyError@loader.py:100')\n"
    "rec.config('theme', 'dark')\n"
)
WITHOUT = (
    "import collections\nc = collections.Counter()\ndef feature(name, label=None):\n    c[name, label] += 1\n" + SESSION
)


def queued(home: Path) -> int:
    try:
        conn = sqlite3.connect(home / "ceip.db")
        try:
            return int(conn.execute("SELECT COUNT(*) FROM spool WHERE kind = 'report'").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


class Setup:
    """One implementation on its own state folder, with the product opted in and allowlisted."""

    def __init__(self, source: Path, home: Path) -> None:
        self.home = home
        # Bytecode is cached, as it is for an installed product (this machine's shell may turn that off).
        self.env = {
            **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
            "PYTHONPATH": str(source),
            "CEIP_HOME": str(home),
            "CEIP_POLICY_FILE": str(home / "no-policy.toml"),
            "CEIP_ALLOWLIST": str(home / "allowlist.toml"),
            # Only the product's plugin: other installed plugins (the mail transport) may need newer code
            # than the baseline's, and neither side sends anything here.
            "CEIP_LOAD_PLUGINS": "analyst",
        }
        setup = (
            "from ceip_core.allowlist import Allowlist, make_entry\nfrom ceip_core.consent import Consent\n"
            "from ceip_core.statedb import StateDB\nimport os\nfrom pathlib import Path\n"
            "Allowlist((make_entry('analyst', 'analyst'),)).write(Path(os.environ['CEIP_ALLOWLIST']))\n"
            "Consent(StateDB()).opt_in('analyst')\n"
        )
        self.run(setup)
        self.times: dict[str, list[float]] = {k: [] for k in ("without", "with", "arrived", "cpu_without", "cpu_with")}

    def run(self, code: str, name: str | None = None) -> tuple[float, float]:
        """Wall and CPU seconds of ``code`` in a fresh interpreter; with ``name``, as a script of that name
        (the process is then called ``name``, as an installed product's is: ceip records only in a
        product's declared executable)."""
        command = [sys.executable, "-c", code]
        if name is not None:
            script = self.home / name
            script.write_text(f"#!{sys.executable}\n{code}")
            script.chmod(0o755)
            command = [str(script)]
        used = _children_cpu()
        start = time.perf_counter()
        subprocess.run(command, env=self.env, check=True, cwd=self.home)
        return time.perf_counter() - start, _children_cpu() - used

    def round(self, n: int) -> None:
        """Run both programs, then wait (with a deadline) for the ``n``-th report to reach the spool."""
        wall, cpu = self.run(WITHOUT, "plain")
        self.times["without"].append(wall)
        self.times["cpu_without"].append(cpu)
        start = time.perf_counter()
        wall, cpu = self.run(WITH_CEIP, "analyst")
        self.times["with"].append(wall)
        self.times["cpu_with"].append(cpu)
        deadline = time.monotonic() + 30
        while queued(self.home) < n:
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.home}: report {n} did not reach the spool within 30 s")
            time.sleep(0.005)
        self.times["arrived"].append(time.perf_counter() - start)

    def median(self, key: str) -> float:
        return statistics.median(self.times[key][1:])  # the first round is a warm-up: bytecode caches


def _children_cpu() -> float:
    """CPU seconds of the waited-for children so far (the detached sealer is not one: it is not waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def checkout(revision: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", revision, "ceip_core"], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default=BASELINE, help="git revision to compare with (default %(default)s)")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ceip-bench-exit-") as tmp:
        base = Path(tmp)
        for sub in ("src", "old", "new"):
            (base / sub).mkdir()
        old = Setup(checkout(args.baseline, base / "src"), base / "old")
        new = Setup(ROOT, base / "new")
        for n in range(1, args.runs + 2):  # the two alternate, so that both meet the same machine load
            old.round(n)
            new.round(n)
        rows = [("what", f"baseline {args.baseline}", "this checkout", "target", "ok")]

        def row(what: str, key: str) -> None:
            rows.append((what, f"{old.median(key) * 1000:.0f} ms", f"{new.median(key) * 1000:.0f} ms", "", "-"))

        row("program without ceip (whole process, median)", "without")
        row("same program recording, opted in", "with")
        delay = new.median("with") - new.median("without")
        before = old.median("with") - old.median("without")
        ok = "yes" if delay <= 0.030 else "NO"
        rows.append(("exit delayed by ceip", f"{before * 1000:.0f} ms", f"{delay * 1000:.0f} ms", "<= 30 ms", ok))
        cpu = [(s.median("cpu_with") - s.median("cpu_without")) * 1000 for s in (old, new)]
        rows.append(("  CPU time added by ceip (user + system)", f"{cpu[0]:.0f} ms", f"{cpu[1]:.0f} ms", "(info)", "-"))
        row("report in the spool, from the product's start", "arrived")
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in [rows[0], tuple("-" * w for w in widths), *rows[1:]]:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()
