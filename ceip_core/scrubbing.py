"""The scrubbing pipeline: every report passes through every scrubber, in order, before it touches disk.

Scrubbers are registered by plugins (the built-in ones live in ``ceip_core.default_plugins``). They run
sorted by ``(order, name)``, so the order is deterministic and documented (docs/scrubbing.md). Each
takes a report and returns a new one (``attrs.evolve``) or None to drop it. A scrubber that raises drops
the report: when in doubt, nothing is written (fail closed).
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import socket
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import attrs
from attrs import field, frozen

from ceip_core.records import ProductSpec, Report

log = logging.getLogger(__name__)


@frozen
class ScrubLimits:
    """Size limits applied by the limits scrubber (docs/scrubbing.md, "`limits`")."""

    max_string_bytes: int = 255
    max_labels_per_metric: int = 16
    max_signatures_per_kind: int = 100
    """Most distinct signatures kept per problem kind, ``__other__`` included."""


def _strings(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


_NOT_NAMES = frozenset({"localhost", "localhost.localdomain", "localdomain"})


@frozen
class MachineIdentifiers:
    """Names that identify this machine or its people and must never appear in a report."""

    host_names: tuple[str, ...] = field(default=(), converter=_strings)
    user_names: tuple[str, ...] = field(default=(), converter=_strings)
    home_dirs: tuple[str, ...] = field(default=(), converter=_strings)

    @classmethod
    def of_this_machine(cls) -> MachineIdentifiers:
        """The host name (short and qualified), the current and login user names and home folders."""
        hosts = {socket.gethostname()}
        with contextlib.suppress(OSError):
            hosts.add(socket.getfqdn())
        hosts |= {h.split(".")[0] for h in hosts}
        users = set()
        for getter in (getpass.getuser, os.getlogin):
            with contextlib.suppress(OSError, KeyError):
                users.add(getter())
        users.update(filter(None, (os.environ.get(v) for v in ("USER", "USERNAME", "LOGNAME"))))
        homes = {str(Path.home())}
        # Short names (a host called "vm") and "root" identify the machine too and are scrubbed as whole
        # words; only one-letter names, which would scrub every such word, and "localhost" are left out.
        return cls(
            host_names=sorted(h for h in hosts if len(h) >= 2 and h.lower() not in _NOT_NAMES),
            user_names=sorted(u for u in users if len(u) >= 2),
            home_dirs=sorted(h for h in homes if h not in ("/", "")),
        )


@frozen
class ScrubContext:
    """What a scrubber may consult: the product's declared spec and this machine's identifiers."""

    spec: ProductSpec
    machine: MachineIdentifiers = field(factory=MachineIdentifiers)
    limits: ScrubLimits = field(factory=ScrubLimits)


@runtime_checkable
class Scrubber(Protocol):
    """Transforms a report before it is stored. ``order`` places it in the pipeline (lower runs first)."""

    name: str
    order: int

    def scrub(self, report: Report, ctx: ScrubContext) -> Report | None:
        """Return the scrubbed report (a new object), or None to drop it. Count what you change with
        :func:`add_diagnostics` so that nothing is scrubbed silently."""
        ...


def add_diagnostics(report: Report, counts: Mapping[str, int]) -> Report:
    """The report with ``counts`` added to its diagnostics (zero counts are left out)."""
    counts = {k: v for k, v in counts.items() if v}
    if not counts:
        return report
    merged = Counter(report.diagnostics)
    merged.update(counts)
    return attrs.evolve(report, diagnostics=dict(sorted(merged.items())))


def ordered(scrubbers: Iterable[Scrubber]) -> list[Scrubber]:
    """Scrubbers in pipeline order: by ``order``, then by name."""
    return sorted(scrubbers, key=lambda s: (s.order, s.name))


@frozen
class ScrubOutcome:
    """The pipeline's result: the report to store, or None and the reason it was dropped."""

    report: Report | None
    dropped_by: str | None = None


def run_pipeline(report: Report, scrubbers: Sequence[Scrubber], ctx: ScrubContext) -> ScrubOutcome:
    """Pass ``report`` through ``scrubbers`` (already in order). Never raises."""
    for scrubber in scrubbers:
        try:
            result = scrubber.scrub(report, ctx)
        except Exception:
            log.exception("scrubber %s failed; dropping the report", scrubber.name)
            return ScrubOutcome(None, f"scrubber-error:{scrubber.name}")
        if result is None:
            return ScrubOutcome(None, f"scrubbed:{scrubber.name}")
        report = result
    return ScrubOutcome(report)
