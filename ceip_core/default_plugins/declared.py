"""The ``declared`` scrubber (order 100): only what the product's spec declares survives.

It runs first and fails closed, an allowlist rather than a denylist: whatever the product's
:class:`~ceip_core.records.ProductSpec` does not declare (a metric, a label, an executable, a hardware
feature) is dropped or folded, so a bug or a new field in a recorder can never widen what leaves the
machine. Every drop is counted under ``scrub.declared.<reason>`` (docs/scrubbing.md).

It also keeps only the categories the report says the person consented to (``Report.categories``; None:
all), by the one rule ``records.only_categories`` (``not_consented``): the client stamps that field when
sealing, and the receiving service runs this scrubber again, so neither stores what consent left out.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

import attrs

from ceip_core.default_plugins._series import OTHER, merge_counters, merge_histograms, merge_problems, with_label
from ceip_core.hookspecs import hookimpl
from ceip_core.records import (
    Category,
    CounterValue,
    Histogram,
    MetricKind,
    MetricSpec,
    Problem,
    ProcessSession,
    ProductSpec,
    Report,
    SystemInfo,
    only_categories,
    outside_categories,
)
from ceip_core.scrubbing import ScrubContext, add_diagnostics

#: Hardware features a report may carry in ``system.features``; any other key is dropped.
HARDWARE_FEATURES = ("bluetooth", "usb_high_speed")
#: The only values a hardware feature may have.
FEATURE_VALUES = ("present", "absent", "unknown")

_PREFIX = "scrub.declared."
_UNDECLARED = {
    MetricKind.COUNTER: "undeclared_counter",
    MetricKind.HISTOGRAM: "undeclared_histogram",
    MetricKind.PROBLEM: "undeclared_problem",
    MetricKind.CONFIG: "undeclared_config",
}


class DeclaredFieldsScrubber:
    """Drops everything the product's spec does not declare, and values out of their declared range."""

    name = "declared"
    order = 100

    def scrub(self, report: Report, ctx: ScrubContext) -> Report | None:
        spec = ctx.spec
        if report.product != spec.id:
            return None
        counts: Counter[str] = Counter()
        check = _Checker(spec, counts)
        counters = merge_counters(c for c in map(check.counter, report.counters) if c is not None)
        histograms = merge_histograms(h for h in map(check.histogram, report.histograms) if h is not None)
        problems = merge_problems(p for p in report.problems if check.problem(p))
        config = {k: v for k, v in sorted(report.config.items()) if check.config(k, v)}
        sessions = tuple(s for s in report.sessions if check.session(s))
        system = None if report.system is None else _system(report.system, counts)
        scrubbed = attrs.evolve(
            report,
            counters=counters,
            histograms=histograms,
            problems=problems,
            config=config,
            sessions=sessions,
            system=system,
        )
        if report.categories is not None:
            scrubbed, counts["not_consented"] = only_categories(scrubbed, check.category_of, report.categories)
        return add_diagnostics(scrubbed, {_PREFIX + k: n for k, n in counts.items()})

    def keeps(self, report: Report, ctx: ScrubContext) -> bool:
        """Whether :meth:`scrub` would return ``report`` as it is, up to the order of its series: every name
        declared with its kind, every label allowed, every value in range, one series per name and label.

        A test that changes nothing: the receiving service asks it before running the pipeline again and runs
        the pipeline only for a report some scrubber would change (``ceip_core.service.screening``). It reads
        fields by name, so it takes the service's decoded structs as well as records.
        """
        if report.product != ctx.spec.id:
            return False
        check = _Checker(ctx.spec, Counter())
        for c in report.counters:
            metric = check.declared(c.name, MetricKind.COUNTER)
            if metric is None or not _counter_in_range(c, metric) or check.label(metric, c.label) != c.label:
                return False
        for h in report.histograms:
            metric = check.declared(h.name, MetricKind.HISTOGRAM)
            if metric is None or not _histogram_in_range(h, metric) or check.label(metric, h.label) != h.label:
                return False
        if report.categories is not None and outside_categories(report, check.category_of, report.categories):
            return False
        kept = (
            all(map(check.problem, report.problems))
            and all(check.config(k, v) for k, v in report.config.items())
            and all(map(check.session, report.sessions))
            and (report.system is None or _features_allowed(report.system.features))
        )
        return kept and _one_each(report)


class _Checker:
    """The per-report checks, sharing the spec lookup and the drop counts."""

    def __init__(self, spec: ProductSpec, counts: Counter[str]) -> None:
        self.metrics, self.executables = _index(spec)
        self.counts = counts

    def declared(self, name: str, kind: MetricKind) -> MetricSpec | None:
        """The metric if it is declared with ``kind``; otherwise count why not and return None."""
        metric = self.metrics.get(name)
        if metric is None:
            self.counts[_UNDECLARED[kind]] += 1
            return None
        if metric.kind is not kind:
            self.counts["wrong_kind"] += 1
            return None
        return metric

    def category_of(self, name: str) -> Category | None:
        metric = self.metrics.get(name)
        return None if metric is None else metric.category

    def drop(self, reason: str) -> None:
        self.counts[reason] += 1

    def label(self, metric: MetricSpec, label: str | None) -> str | None:
        if label is None or metric.labels is None or label in metric.labels or label == OTHER:
            return label
        self.counts["label_not_allowed"] += 1
        return OTHER

    def counter(self, c: CounterValue) -> CounterValue | None:
        metric = self.declared(c.name, MetricKind.COUNTER)
        if metric is None:
            return None
        if not _counter_in_range(c, metric):
            self.drop("out_of_range")
            return None
        label = self.label(metric, c.label)
        return c if label == c.label else with_label(c, label)

    def histogram(self, h: Histogram) -> Histogram | None:
        metric = self.declared(h.name, MetricKind.HISTOGRAM)
        if metric is None:
            return None
        if not _histogram_in_range(h, metric):
            self.drop("out_of_range")
            return None
        label = self.label(metric, h.label)
        return h if label == h.label else with_label(h, label)

    def problem(self, p: Problem) -> bool:
        if self.declared(p.kind, MetricKind.PROBLEM) is None:
            return False
        if not _is_int(p.count) or p.count < 0:
            self.drop("out_of_range")
            return False
        return True

    def config(self, key: str, value: object) -> bool:
        metric = self.declared(key, MetricKind.CONFIG)
        if metric is None:
            return False
        if not isinstance(value, str | int | float):
            self.drop("invalid_value")
            return False
        if isinstance(value, float) and not math.isfinite(value):
            self.drop("out_of_range")
            return False
        if not isinstance(value, str | bool) and _above(value, metric):
            self.drop("out_of_range")
            return False
        return True

    def session(self, s: ProcessSession) -> bool:
        if s.executable not in self.executables:
            self.drop("undeclared_executable")
            return False
        optional = (s.cpu_s, s.peak_rss_bytes)
        if not _non_negative(s.duration_s) or not all(v is None or _non_negative(v) for v in optional):
            self.drop("out_of_range")
            return False
        return True


_INDEXES: dict[int, tuple[ProductSpec, dict[str, MetricSpec], frozenset[str]]] = {}


def _index(spec: ProductSpec) -> tuple[dict[str, MetricSpec], frozenset[str]]:
    """The spec's metrics by name and its executables, built once per spec object. Keyed by identity:
    hashing a whole spec on every report would cost more than the lookups it saves."""
    hit = _INDEXES.get(id(spec))
    if hit is None or hit[0] is not spec:
        if len(_INDEXES) >= 64:
            _INDEXES.clear()
        hit = _INDEXES[id(spec)] = (spec, {m.name: m for m in spec.metrics}, frozenset(spec.executables))
    return hit[1], hit[2]


def _feature_allowed(key: str, value: str) -> bool:
    return key in HARDWARE_FEATURES and value in FEATURE_VALUES


def _features_allowed(features: dict[str, str]) -> bool:
    return all(_feature_allowed(k, v) for k, v in features.items())


def _one_each(report: Report) -> bool:
    """One counter and one histogram per (name, label), one problem per (kind, signature): nothing to merge."""
    return (
        len({(c.name, c.label) for c in report.counters}) == len(report.counters)
        and len({(h.name, h.label) for h in report.histograms}) == len(report.histograms)
        and len({(p.kind, p.signature) for p in report.problems}) == len(report.problems)
    )


def _system(system: SystemInfo, counts: Counter[str]) -> SystemInfo:
    """The system info with only the allowed hardware features, sorted."""
    features = {k: v for k, v in sorted(system.features.items()) if _feature_allowed(k, v)}
    counts["undeclared_feature"] += len(system.features) - len(features)
    if list(features.items()) == list(system.features.items()):
        return system
    return attrs.evolve(system, features=features)


def _is_int(value: object) -> bool:
    return type(value) is int


def _non_negative(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _above(value: float, metric: MetricSpec) -> bool:
    return metric.max_value is not None and value > metric.max_value


def _counter_in_range(c: CounterValue, metric: MetricSpec) -> bool:
    return _is_int(c.value) and c.value >= 0 and not _above(c.value, metric)


def _histogram_in_range(h: Histogram, metric: MetricSpec) -> bool:
    return _valid_histogram(h) and not _above(h.max, metric)


def _valid_histogram(h: Histogram) -> bool:
    """Non-negative counts, and values that are finite (JSON has no infinity) and non-negative."""
    if not _is_int(h.count) or h.count < 0 or not all(_is_int(n) and n >= 0 for n in h.buckets.values()):
        return False
    return all(_non_negative(v) for v in (h.sum, h.min, h.max))


@hookimpl
def ceip_register_scrubbers(register: Callable[[DeclaredFieldsScrubber], None]) -> None:
    register(DeclaredFieldsScrubber())
