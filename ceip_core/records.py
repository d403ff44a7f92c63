"""The records ceip passes around: what a product declares, and what a report contains.

Every record is a frozen attrs class. Nothing mutates a record after it is built; a scrubber that changes
a report returns a new one made with :func:`attrs.evolve`. The wire format (``ceip_core.wire``) turns
these into JSON and back, strictly; the classes here know nothing about JSON.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from datetime import datetime

from attrs import field, frozen, validators

#: Version of the report schema. Bump when a field changes meaning or a required field is added;
#: the receiving service uses it to pick a decoder.
SCHEMA_VERSION = 1

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
    """The three kinds of information a CEIP collects, as the programs' own notices name them."""

    CONFIGURATION = "configuration"
    PERFORMANCE = "performance and reliability"
    PROGRAM_USE = "program use"


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


@frozen
class DeletionRequest:
    """Asks the receiving service to delete everything it holds for (guid, product). Sent after opt-out."""

    request_id: str
    guid: str
    product: str
    requested: datetime
    schema: int = SCHEMA_VERSION


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
