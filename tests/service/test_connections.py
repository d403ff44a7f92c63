"""The log of repeated connection errors: one line per kind and minute, the rest counted, no addresses."""

from __future__ import annotations

import logging
import re
import socket

import pytest

from ceip_core.service.connections import RepeatLog


def test_a_flood_of_accept_errors_is_one_line_a_minute_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    repeats = RepeatLog(logging.getLogger("test.repeats"), every=60, clock=lambda: now[0])
    peer = socket.socket()
    context = {"message": "socket.accept() out of system resource", "exception": OSError(24, "Too many open files")}
    with caplog.at_level(logging.DEBUG, logger="test.repeats"), peer:
        for _ in range(100_000):  # what one second of a descriptor-starved accept loop can produce
            repeats.loop_exception(None, {**context, "socket": peer})  # type: ignore[arg-type]
            now[0] += 0.001
        repeats.flush()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines  # t=0, t=60, and the rest at shutdown
    assert lines[0] == "socket.accept() out of system resource: OSError: [Errno 24] Too many open files"
    first = re.search(r"\(and (\d+) more in the last 60 s\)$", lines[1])
    rest = re.search(r": (\d+) more time\(s\) not logged$", lines[2])
    assert first and rest and 2 + int(first[1]) + int(rest[1]) == 100_000  # every one counted
    assert "laddr" not in " ".join(lines)  # the socket (which names addresses) is never described
