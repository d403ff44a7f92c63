"""A stand-in for Packager: a process called ``packager`` that uses the recording API as Packager would.

Installed as the ``packager`` console script, for the demo and the tests (see ``ceip_core.standin``):
``packager --seconds 5``, ``packager --crash``. It is also a short example of recording a utility's runs.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Sequence

import ceip_core
from ceip_core import standin


def main(argv: Sequence[str] | None = None) -> int:
    opts = standin.start("packager", argv)
    rng = random.Random(opts.seed)
    with ceip_core.recorder("packager", "3.0.1", seal_every=None) as rec:
        rec.feature("runs", rng.choice(["interactive", "scheduled", "command_line"]))
        rec.config("compression", rng.choice(["zstd", "gzip", "none"]))
        rec.config("parallel_jobs", rng.choice([1, 2, 4, 8]))
        with rec.timed("run_duration_ms"):
            for tick in opts.ticks():
                if tick % 4 == 3:  # a package every fifth of a second
                    rec.count("packages_built")
                    rec.observe("package_size_bytes", rng.lognormvariate(17, 1.5))
                    rec.observe("transfer_speed_bps", rng.lognormvariate(16, 1))
                if rng.random() < 0.02:
                    rec.problem(rng.choice(["source-unreadable", "disk-full", "transfer-timeout"]), "failure")
            opts.crash_if_asked()
    return 0


if __name__ == "__main__":
    sys.exit(main())
