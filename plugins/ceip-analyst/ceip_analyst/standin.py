"""A stand-in for Analyst: a process called ``analyst`` that uses the recording API as Analyst would.

Installed as the ``analyst`` console script, for the demo and the tests (see ``ceip_core.standin``):
``analyst --seconds 5``, ``analyst --crash``. It is also a short example of recording a desktop
application's use.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Sequence

import ceip_core
from ceip_core import standin


def main(argv: Sequence[str] | None = None) -> int:
    opts = standin.start("analyst", argv)
    rng = random.Random(opts.seed)
    with ceip_core.recorder("analyst", "5.2", seal_every=None) as rec:
        rec.config("theme", rng.choice(["light", "dark"]))
        rec.config("default_chart", rng.choice(["bar", "line", "table"]))
        rec.config("auto_save", rng.random() < 0.7)
        rec.feature("open_session")
        rec.observe("open_file_ms", rng.lognormvariate(6, 0.8))
        for tick in opts.ticks():
            action = rng.choice(["filter", "chart", "summarise", "export", "help_opened"])
            if action == "filter":
                rec.feature("filter", rng.choice(["text", "range", "date", "category"]))
            elif action == "chart":
                rec.feature("chart", rng.choice(["bar", "line", "pie", "scatter", "table"]))
                rec.observe("render_chart_ms", rng.lognormvariate(4.5, 0.7))
            elif action == "export":
                rec.feature("export", rng.choice(["pdf", "csv", "xlsx", "png"]))
            else:
                rec.feature(action)
            rec.observe("click_to_response_ms", rng.lognormvariate(4, 0.6))
            if tick % 50 == 49:
                rec.feature("feedback_options_opened")
            if rng.random() < 0.01:
                rec.problem("FileNotFoundError@loader.py:88")
        opts.crash_if_asked()
    return 0


if __name__ == "__main__":
    sys.exit(main())
