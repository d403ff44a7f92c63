"""Loaded only by ``.ci/clock`` (on ``PYTHONPATH``), in every Python process the tests start under faketime.

Debian's libfaketime 0.9.10 cannot fake the wall clock alone without breaking Python: with the monotonic
clock faked too, a lock or event wait with a timeout never returns (CPython waits with ``sem_clockwait``,
which libfaketime does not translate); with ``FAKETIME_DONT_FAKE_MONOTONIC=1``, ``time.sleep`` fails with
EINVAL (its absolute ``clock_nanosleep`` deadline is translated as if it were faked). The clock runs use
the second mode, so this module lets ``time.sleep`` wait on an event instead: the same pause, measured on
the real monotonic clock. Nothing in ceip itself is changed for these runs.
"""

import threading
import time


def _sleep(seconds: float) -> None:
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    threading.Event().wait(seconds)


time.sleep = _sleep
