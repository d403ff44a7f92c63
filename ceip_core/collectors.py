"""The Collector contract: producers of facts that the agent turns into reports.

A collector runs in the agent (never in a product's process) on its own schedule. What it returns is
merged into the next report of the product it concerns, or of every opted-in product for machine facts.

Two kinds exist. Built-in collectors (the process observer, the machine facts) see every active product.
A **product's collector** (``product`` set) is registered by that product's own plugin and observes the
product from outside its process (a status endpoint, a run log): it runs only while its product is
allowlisted and opted in, sees only that product, and may return only that product's sessions and
:class:`MetricsObserved`, whose metrics must be ones the product declares (the same scrubbers that check a
recorder's report drop and count the rest). It runs in a worker thread with a time budget
(``timeout_s``), so a slow or stuck collector is counted and never stalls the agent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from attrs import field, frozen

from ceip_core.allowlist import Entry
from ceip_core.records import ProcessSession, ProductSpec, SystemInfo


@frozen
class SessionObserved:
    """A process session of one product's executable, seen by an observer."""

    product: str
    session: ProcessSession


@frozen
class MetricsObserved:
    """A product's own declared metrics, observed from outside its process since the collector's last pass:
    what the product's recorder would have recorded, in the recorder's terms."""

    product: str
    counters: Mapping[tuple[str, str | None], int] = field(factory=dict)
    """How often each counter (name, label) went up since the last pass."""
    values: Sequence[tuple[str, float, str | None]] = ()
    """Values of histogram metrics: (name, value, label), e.g. a request latency in ms."""
    config: Mapping[str, str | int | float | bool] = field(factory=dict)
    """Configuration values, as the product would set them with ``Recorder.config``."""
    problems: Mapping[tuple[str, str], int] = field(factory=dict)
    """How often each problem (kind, signature) happened since the last pass."""
    version: str | None = None
    """The product's version, if the collector can tell (else the agent's ``unknown``)."""


Observation = SystemInfo | SessionObserved | MetricsObserved
"""What a collector may return: machine configuration, a product's process session, or its own metrics."""


#: A product's collector's time budget per pass, unless it sets ``timeout_s``.
PRODUCT_COLLECTOR_TIMEOUT_S = 10.0


@frozen
class CollectContext:
    """What a collector may look at: only the products that are allowlisted and opted in."""

    products: tuple[ProductSpec, ...]
    executables: tuple[Entry, ...] = ()
    """The allowlist entries of those products that name an executable the product declares: everything
    a process observer may watch, with the path pattern and hash each one must match."""


@runtime_checkable
class Collector(Protocol):
    """Produces observations. ``interval_s`` is how often the agent calls ``collect``.

    Optional attributes, read with their defaults when absent: ``product`` (None; a product id makes this
    that product's collector, see the module's docstring), ``timeout_s`` (a product's collector's time
    budget per pass, default :data:`PRODUCT_COLLECTOR_TIMEOUT_S`) and ``machine_facts`` (False; True for
    the one collector that gives :class:`SystemInfo`: a second one is an error when the plugins load, and
    machine facts from any other collector are dropped and counted)."""

    name: str
    interval_s: float

    async def collect(self, ctx: CollectContext) -> Sequence[Observation]:
        """Observe once and return what was seen. Must not raise for ordinary failures: skip and log."""
        ...
