"""Stand-in executables: small programs that play a product on this machine, for the demo and the tests.

A product plugin ships one as a console script named exactly like the product's executable, so that the
agent observes it as it would observe the product::

    [project.scripts]
    analyst = "ceip_analyst.standin:main"

The stand-in records through the public recording API as the real product would, runs for ``--seconds``,
then exits normally, or crashes if asked: ``--crash`` raises an uncaught exception (the recorder records
it as a crash and seals; exit status 1), ``--crash abort`` aborts (SIGABRT: nothing is sealed, as in a
hard crash).

How the process gets the product's name: on Linux the process observer matches the kernel's short
process name. A console script started by its path has the right one already: the kernel names a
process after the file it executes, and for a script that is the script, not its interpreter. Started
any other way (``python -m ceip_analyst.standin``) the process would be called ``python3``, so
:func:`start` also sets the name with ``prctl(PR_SET_NAME)``.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

#: prctl(2) option that sets the calling thread's name (the process's, for the main thread).
PR_SET_NAME = 15


class StandinCrash(RuntimeError):
    """The crash a stand-in was asked for."""


@dataclass(frozen=True)
class Options:
    """What the stand-in was asked to do."""

    executable: str
    seconds: float
    crash: str | None
    seed: int | None

    def ticks(self, every: float = 0.05) -> Iterator[int]:
        """0, 1, 2 ... one every ``every`` seconds, until ``seconds`` have passed."""
        deadline = time.monotonic() + self.seconds
        tick = 0
        while time.monotonic() < deadline:
            yield tick
            tick += 1
            time.sleep(max(0.0, min(every, deadline - time.monotonic())))

    def crash_if_asked(self) -> None:
        """Crash the way ``--crash`` asked; call it inside the recorder's ``with`` block."""
        if self.crash == "abort":
            os.abort()
        if self.crash == "exception":
            raise StandinCrash(f"the {self.executable} stand-in crashed, as asked")


def set_process_name(name: str) -> bool:
    """Give this process the short name ``name`` (Linux; at most 15 bytes are kept). True if it was set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 86400")
    return value


def start(executable: str, argv: Sequence[str] | None = None) -> Options:
    """Parse the stand-in's command line (exits with a usage message if it is wrong) and name the process."""
    parser = argparse.ArgumentParser(
        prog=executable, description=f"A stand-in for {executable}: records plausible use, for demos and tests."
    )
    parser.add_argument("--seconds", type=_seconds, default=2.0, help="how long to run (default: 2)")
    parser.add_argument(
        "--crash",
        nargs="?",
        const="exception",
        choices=("exception", "abort"),
        help="crash at the end: an uncaught exception (default) or abort()",
    )
    parser.add_argument("--seed", type=int, help="seed for the random use, for repeatable runs")
    args = parser.parse_args(argv)
    set_process_name(executable)
    return Options(executable, args.seconds, args.crash, args.seed)
