"""A stand-in for a test product: tests install it under a name such as ``sample-1f2e3d4c``
(``helpers.shebang_executable``), and the part before the dash says which product it plays.

Usage: ``sample-1f2e3d4c [--seconds S] [--crash [exception|abort]]`` (see ``ceip_core.standin``).
"""

import os
import sys

import ceip_core
from ceip_core import standin

METRICS = {"sample": "open_file", "other": "used"}

executable = os.path.basename(sys.argv[0])
product = executable.split("-")[0]
opts = standin.start(executable)
with ceip_core.recorder(product, "1.0", seal_every=None) as rec:
    for _ in opts.ticks(0.1):
        rec.feature(METRICS[product])
    opts.crash_if_asked()
