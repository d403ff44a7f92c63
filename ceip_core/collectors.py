"""The Collector contract: producers of facts that the agent turns into reports.

A collector runs in the agent (never in a product's process) on its own schedule. What it returns is
merged into the next report of the product it concerns, or of every opted-in product for machine facts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from attrs import frozen

from ceip_core.allowlist import Entry
from ceip_core.records import ProcessSession, ProductSpec, SystemInfo


@frozen
class SessionObserved:
    """A process session of one product's executable, seen by an observer."""

    product: str
    session: ProcessSession


Observation = SystemInfo | SessionObserved
"""What a collector may return: machine configuration, or a product's process session."""


@frozen
class CollectContext:
    """What a collector may look at: only the products that are allowlisted and opted in."""

    products: tuple[ProductSpec, ...]
    executables: tuple[Entry, ...] = ()
    """The allowlist entries of those products that name an executable the product declares: everything
    a process observer may watch, with the path pattern and hash each one must match."""


@runtime_checkable
class Collector(Protocol):
    """Produces observations. ``interval_s`` is how often the agent calls ``collect``."""

    name: str
    interval_s: float

    async def collect(self, ctx: CollectContext) -> Sequence[Observation]:
        """Observe once and return what was seen. Must not raise for ordinary failures: skip and log."""
        ...
