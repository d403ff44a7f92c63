"""The records ceip passes around: what a product declares, and what a report contains.

Every record is a frozen attrs class. Nothing mutates a record after it is built; a scrubber that changes
a report returns a new one made with :func:`attrs.evolve`. The wire format (``ceip_core.wire``) turns
these into JSON and back, strictly; the classes here know nothing about JSON.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from attrs import evolve, field, frozen, validators

from ceip_core.version import SCHEMA_VERSION as SCHEMA_VERSION  # the wire schema's version, re-exported

# Every pattern here is applied with ``fullmatch``: ``$`` also matches before a final newline, so a
# ``match`` of ``^...$`` takes "analyst\n" for a product id.
_PRODUCT_ID = re.compile(r"[a-z][a-z0-9-]{0,39}")
_METRIC_NAME = re.compile(r"[a-z][a-z0-9_.]{0,63}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def is_uuid(text: str) -> bool:
    """True if ``text`` is a UUID in its one wire spelling: 36 characters, lower-case hex and hyphens,
    as ``str(uuid.uuid4())`` writes it. Nothing else is taken for a GUID or an item id (no upper case,
    braces, ``urn:uuid:``, missing hyphens or surrounding space), so one machine or one report cannot
    go by two spellings that the service would count, de-duplicate or delete as two."""
    return _UUID.fullmatch(text) is not None


class Category(enum.Enum):
    """The three kinds of information a CEIP collects, as the programs' own notices name them.

    A person may take part with some of them only (``ceip consent in analyst --only configuration``). Every
    declared metric has one; the parts of a report that are not declared metrics belong to one as well:
    the system information to :attr:`CONFIGURATION`, the process sessions (runs, durations, how they ended,
    CPU time and memory) to :attr:`PROGRAM_USE` (see :func:`only_categories`)."""

    CONFIGURATION = "configuration"
    PERFORMANCE = "performance and reliability"
    PROGRAM_USE = "program use"

    @property
    def short(self) -> str:
        """The short name the CLI takes and shows: ``configuration``, ``performance`` or ``use``."""
        return _SHORT[self]


_SHORT = {Category.CONFIGURATION: "configuration", Category.PERFORMANCE: "performance", Category.PROGRAM_USE: "use"}
#: The category of a report's system information (machine facts), which no spec declares.
SYSTEM_CATEGORY = Category.CONFIGURATION
#: The category of a report's process sessions, which no spec declares metric by metric.
SESSIONS_CATEGORY = Category.PROGRAM_USE


def parse_category(name: str) -> Category:
    """A category from its short name (``configuration``, ``performance``, ``use``) or its full value
    (``performance and reliability``); raises ``ValueError`` naming the valid names."""
    text = name.strip().lower()
    for category in Category:
        if text in (category.short, category.value):
            return category
    valid = ", ".join(c.short for c in Category)
    raise ValueError(f"unknown category {name!r} (valid: {valid}, or the full names: {_full_names()})")


def _full_names() -> str:
    return ", ".join(repr(c.value) for c in Category)


class MetricKind(enum.Enum):
    """How a declared metric is recorded and aggregated."""

    COUNTER = "counter"
    """A count of events, e.g. how often a feature was used (``rec.feature``, ``rec.count``)."""
    HISTOGRAM = "histogram"
    """A distribution of values in log buckets, e.g. timings (``rec.timed``, ``rec.observe``)."""
    PROBLEM = "problem"
    """Occurrences of problems of one kind, keyed by signature (``rec.problem``)."""
    CONFIG = "config"
    """A configuration value; the last value set wins (``rec.config``)."""


class EndKind(enum.Enum):
    """How an observed process session ended, as far as the operating system lets us know."""

    NORMAL = "normal"
    CRASHED = "crashed"
    UNKNOWN = "unknown"
    RUNNING = "running"


def _check_product_id(_inst: object, _attr: object, value: str) -> None:
    if not _PRODUCT_ID.fullmatch(value):
        raise ValueError(f"product id {value!r} must be lower-case letters, digits and '-', starting with a letter")


def _check_metric_name(_inst: object, _attr: object, value: str) -> None:
    if not _METRIC_NAME.fullmatch(value):
        raise ValueError(
            f"metric name {value!r} must be lower-case letters, digits, '_' and '.', starting with a letter"
        )


# Typed converters, so that records accept any iterable but always hold tuples (and type checkers know it).
def _strings(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


def _optional_strings(values: Iterable[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(values)


def _optional_categories(values: Iterable[Category] | None) -> tuple[Category, ...] | None:
    """Categories as a sorted tuple without repeats (the order of the enum), or None for all."""
    if values is None:
        return None
    chosen = set(values)
    return tuple(c for c in Category if c in chosen)


def _metrics(values: Iterable[MetricSpec]) -> tuple[MetricSpec, ...]:
    return tuple(values)


def _counters(values: Iterable[CounterValue]) -> tuple[CounterValue, ...]:
    return tuple(values)


def _histograms(values: Iterable[Histogram]) -> tuple[Histogram, ...]:
    return tuple(values)


def _problems(values: Iterable[Problem]) -> tuple[Problem, ...]:
    return tuple(values)


def _sessions(values: Iterable[ProcessSession]) -> tuple[ProcessSession, ...]:
    return tuple(values)


# --------------------------------------------------------------------------------------------------
# What a product declares
# --------------------------------------------------------------------------------------------------


@frozen
class MetricSpec:
    """One metric a product may record. Nothing that is not declared leaves the machine."""

    name: str = field(validator=_check_metric_name)
    """Name used in the recording API and on the wire, e.g. ``export_pdf``."""
    kind: MetricKind
    unit: str
    """Unit of the recorded value: ``uses``, ``ms``, ``bytes``, ``occurrences``, ``value`` ..."""
    category: Category
    description: str = field(validator=validators.min_len(1))
    """One sentence a customer can read in the data dictionary."""
    labels: tuple[str, ...] | None = field(default=None, converter=_optional_strings)
    """If set, the only labels allowed for this metric; anything else is folded into ``__other__``."""
    max_value: float | None = None
    """Largest plausible value (histograms and counters); larger values are dropped and counted."""


@frozen
class ProductSpec:
    """What a product plugin registers: who it is, which executables it observes, what it may record."""

    id: str = field(validator=_check_product_id)
    display_name: str
    executables: tuple[str, ...] = field(converter=_strings)
    """File names of the executables the agent may observe for this product, e.g. ``analyst.exe``."""
    metrics: tuple[MetricSpec, ...] = field(converter=_metrics)
    description: str = ""

    def __attrs_post_init__(self) -> None:
        names = [m.name for m in self.metrics]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"product {self.id!r} declares {', '.join(dupes)} more than once")

    def metric(self, name: str) -> MetricSpec | None:
        """The declared metric called ``name``, or None if the product does not declare it."""
        for m in self.metrics:
            if m.name == name:
                return m
        return None

    def category_of(self, name: str) -> Category | None:
        """The category of the declared metric called ``name``, or None if the product does not declare it."""
        metric = self.metric(name)
        return None if metric is None else metric.category


# --------------------------------------------------------------------------------------------------
# What a report contains
# --------------------------------------------------------------------------------------------------


@frozen
class Period:
    """The time span a report covers, in UTC."""

    start: datetime
    end: datetime


@frozen
class SystemInfo:
    """Coarse machine configuration. ``None`` means the OS would not tell; values are never guessed."""

    cpu_logical: int | None = None
    cpu_physical: int | None = None
    memory_bucket: str | None = None
    """Installed memory in coarse buckets such as ``8-16 GiB``, never the exact amount."""
    os: str | None = None
    os_version: str | None = None
    arch: str | None = None
    net_interfaces_up: int | None = None
    net_connected: bool | None = None
    boot_age_bucket: str | None = None
    features: dict[str, str] = field(factory=dict)
    """Selected hardware features, each ``present``, ``absent`` or ``unknown`` (e.g. ``bluetooth``)."""


@frozen
class CounterValue:
    """How often a counter metric was incremented, optionally split by one label."""

    name: str
    value: int
    label: str | None = None


@frozen
class Histogram:
    """A distribution in log buckets: bucket ``i`` holds values in ``[2**(i/4), 2**((i+1)/4))``."""

    name: str
    count: int
    sum: float
    min: float
    max: float
    buckets: dict[int, int]
    label: str | None = None


@frozen
class Problem:
    """Occurrences of one problem: a kind declared by the product, and a signature such as a crash site."""

    kind: str
    signature: str
    count: int


@frozen
class ProcessSession:
    """One run of an observed executable, as the agent saw it from outside the process."""

    executable: str
    started: datetime
    duration_s: float
    cpu_s: float | None = None
    peak_rss_bytes: int | None = None
    ended: EndKind = EndKind.UNKNOWN


@frozen
class Report:
    """One sealed report about one product on one machine. ``report_id`` makes delivery idempotent."""

    report_id: str
    guid: str
    product: str
    product_version: str
    period: Period
    schema: int = SCHEMA_VERSION
    system: SystemInfo | None = None
    counters: tuple[CounterValue, ...] = field(default=(), converter=_counters)
    histograms: tuple[Histogram, ...] = field(default=(), converter=_histograms)
    problems: tuple[Problem, ...] = field(default=(), converter=_problems)
    config: dict[str, str | int | float | bool] = field(factory=dict)
    sessions: tuple[ProcessSession, ...] = field(default=(), converter=_sessions)
    diagnostics: dict[str, int] = field(factory=dict)
    """The recorder's and scrubbers' own counts: errors, dropped and scrubbed values, by reason."""
    spec_digest: str | None = None
    """Which declaration of the product the report was scrubbed against: the content hash of its
    :class:`ProductSpec` (``wire.spec_digest``), so the receiving service validates it against the same
    one. None in reports from clients that predate the field."""
    categories: tuple[Category, ...] | None = field(default=None, converter=_optional_categories)
    """The categories the person consented to for the product when the report was sealed, sorted; None
    means all of them (and is what clients that predate the field send, by leaving it out). The report
    holds nothing of any other category, and the receiving service stores nothing of one."""


@frozen
class DeletionRequest:
    """Asks the receiving service to delete everything it holds for (guid, product), or only the data of
    some categories. Sent after an opt-out, or after consent for some categories is withdrawn."""

    request_id: str
    guid: str
    product: str
    requested: datetime
    schema: int = SCHEMA_VERSION
    categories: tuple[Category, ...] | None = field(default=None, converter=_optional_categories)
    """Delete only the data of these categories (sent when a person narrows their consent); None means
    everything held for the pair (an opt-out, and what clients that predate the field send)."""


@frozen
class UnknownItem:
    """A batch item of a type this version does not know. Kept so that one new item type from a newer
    client is rejected on its own instead of failing the whole batch."""

    type: str
    item_id: str | None = None


Item = Report | DeletionRequest | UnknownItem
"""What a batch carries: reports, deletion requests, or something newer than this version."""


def item_id(item: Item) -> str:
    """The idempotency key of a batch item."""
    if isinstance(item, Report):
        return item.report_id
    if isinstance(item, DeletionRequest):
        return item.request_id
    return item.item_id or ""


def item_product(item: Item) -> str | None:
    """The product an item is about (None for unknown items)."""
    if isinstance(item, Report | DeletionRequest):
        return item.product
    return None


def only_categories(
    report: Report, category_of: Callable[[str], Category | None], keep: Iterable[Category]
) -> tuple[Report, int]:
    """``report`` with only the parts that belong to a category in ``keep``, and how many parts were left out.

    ``category_of`` names the category of a declared metric (counters and histograms by name, problems by
    kind, configuration values by key); a name it does not know (None) is left out: fail closed. The system
    information is :data:`SYSTEM_CATEGORY`, the sessions :data:`SESSIONS_CATEGORY`. The envelope (ids,
    product and version, period), the diagnostics and the ``categories`` field itself are kept. One rule
    for every side: the client's sealing, the rewrite of queued reports when consent narrows, and the
    receiving service.
    """
    kept = frozenset(map(Category, keep))
    dropped = outside_categories(report, category_of, kept)
    if not dropped:
        return report, 0

    def mine(name: str) -> bool:
        return category_of(name) in kept

    return evolve(
        report,
        counters=tuple(c for c in report.counters if mine(c.name)),
        histograms=tuple(h for h in report.histograms if mine(h.name)),
        problems=tuple(p for p in report.problems if mine(p.kind)),
        config={k: v for k, v in report.config.items() if mine(k)},
        sessions=report.sessions if SESSIONS_CATEGORY in kept else (),
        system=report.system if SYSTEM_CATEGORY in kept else None,
    ), dropped


def outside_categories(report: Any, category_of: Callable[[str], Category | None], keep: Iterable[Any]) -> int:
    """How many parts of ``report`` :func:`only_categories` would leave out. Reads fields by name, so it
    takes the receiving service's decoded structs as well as records (and categories as values)."""
    kept = frozenset(map(Category, keep))

    def out(name: str) -> bool:
        return category_of(name) not in kept

    return (
        sum(out(c.name) for c in report.counters)
        + sum(out(h.name) for h in report.histograms)
        + sum(out(p.kind) for p in report.problems)
        + sum(map(out, report.config))
        + (0 if SESSIONS_CATEGORY in kept else len(report.sessions))
        + (report.system is not None and SYSTEM_CATEGORY not in kept)
    )


def holds_data(report: Report) -> bool:
    """Whether ``report`` holds anything beyond its envelope and diagnostics (a report emptied by
    :func:`only_categories` is not worth keeping)."""
    return bool(
        report.counters or report.histograms or report.problems or report.config or report.sessions
        or report.system is not None
    )  # fmt: skip
