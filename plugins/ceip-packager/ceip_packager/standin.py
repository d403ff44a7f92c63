"""A stand-in for Packager: a process called ``packager`` that uses the recording API as Packager would, and
appends each run to its run log (``ceip_packager.runlog``) for the plugin's collector.

Installed as the ``packager`` console script, for the demo and the tests (see ``ceip_core.standin``):
``packager --seconds 5``, ``packager --crash``. It is also a short example of recording a utility's runs.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Sequence
from typing import Any

import ceip_core
from ceip_core import standin
from ceip_packager.runlog import FAILURES, append_run, log_path


def main(argv: Sequence[str] | None = None) -> int:
    opts = standin.start("packager", argv)
    rng = random.Random(opts.seed)
    # Packager records how it was started and its settings itself; what a run did (packages, sizes, its
    # duration, a failure) goes to its run log, which the plugin's collector reads from outside.
    run: dict[str, Any] = {"package_sizes": [], "failure": None}
    started = time.monotonic()
    with ceip_core.recorder("packager", "3.0.1", seal_every=None) as rec:
        rec.feature("runs", rng.choice(["interactive", "scheduled", "command_line"]))
        rec.config("compression", rng.choice(["zstd", "gzip", "none"]))
        rec.config("parallel_jobs", rng.choice([1, 2, 4, 8]))
        for tick in opts.ticks():
            if tick % 4 == 3:  # a package every fifth of a second
                run["package_sizes"].append(round(rng.lognormvariate(17, 1.5)))
                rec.observe("transfer_speed_bps", rng.lognormvariate(16, 1))
            if run["failure"] is None and rng.random() < 0.02:
                run["failure"] = rng.choice(FAILURES)
        opts.crash_if_asked()
    run["duration_ms"] = round((time.monotonic() - started) * 1000, 3)
    append_run(log_path(), run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
