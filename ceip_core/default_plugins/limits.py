"""The ``limits`` scrubber (order 300): bounds the size of every report.

It runs last, so that it bounds exactly what is stored: strings are cut to ``max_string_bytes`` of UTF-8,
each metric keeps at most ``max_labels_per_metric`` labels and each problem kind at most
``max_signatures_per_kind`` signatures, the rest folded into ``__other__``. A label that is
common on many machines is worth more than a long tail, so the heaviest series are the ones kept.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from ceip_core.default_plugins._series import (
    OTHER,
    combine_counters,
    combine_histograms,
    combine_problems,
    fold_to_limit,
    label_order,
    merge_counters,
    merge_histograms,
    merge_problems,
    with_label,
    with_signature,
)
from ceip_core.hookspecs import hookimpl
from ceip_core.records import CounterValue, Histogram, Problem, Report, SystemInfo
from ceip_core.scrubbing import ScrubContext, add_diagnostics

_PREFIX = "scrub.limits."
_L = TypeVar("_L", CounterValue, Histogram)


def truncate_utf8(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` bytes of UTF-8, never inside a character. (A lone surrogate,
    which UTF-8 cannot carry, is dropped if the text is cut; the identifiers scrubber removes them.)"""
    if len(text) * 4 <= max_bytes:
        return text
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= max_bytes:
        return text
    return data[: max(max_bytes, 0)].decode("utf-8", "ignore")


class LimitsScrubber:
    """Truncates long strings and folds the long tail of labels and signatures into ``__other__``."""

    name = "limits"
    order = 300

    def scrub(self, report: Report, ctx: ScrubContext) -> Report | None:
        counts: Counter[str] = Counter()
        max_bytes = ctx.limits.max_string_bytes

        def cut(text: str) -> str:
            short = truncate_utf8(text, max_bytes)
            if short != text:
                counts["truncated"] += 1
            return short

        counters = _cut_labels(report.counters, cut, merge_counters)
        histograms = _cut_labels(report.histograms, cut, merge_histograms)
        problems = _cut_signatures(report.problems, cut)
        limit = ctx.limits.max_labels_per_metric
        counters, folded_counters = _fold_labels(counters, limit, lambda c: c.value, combine_counters)
        histograms, folded_histograms = _fold_labels(histograms, limit, lambda h: h.count, combine_histograms)
        problems, counts["problems_folded"] = _fold_signatures(problems, ctx.limits.max_signatures_per_kind)
        counts["labels_folded"] = folded_counters + folded_histograms
        scrubbed = attrs.evolve(
            report,
            product_version=cut(report.product_version),
            counters=counters,
            histograms=histograms,
            problems=problems,
            config={k: cut(v) if isinstance(v, str) else v for k, v in report.config.items()},
            system=None if report.system is None else _system(report.system, cut),
        )
        return add_diagnostics(scrubbed, {_PREFIX + k: n for k, n in counts.items()})

    def keeps(self, report: Report, ctx: ScrubContext) -> bool:
        """Whether :meth:`scrub` would return ``report`` as it is: no string too long, no metric with too
        many labels, no problem kind with too many signatures.

        A test that changes nothing: the receiving service asks it before running the pipeline again and runs
        the pipeline only for a report some scrubber would change (``ceip_core.service.screening``). It reads
        fields by name, so it takes the service's decoded structs as well as records.
        """
        max_bytes = ctx.limits.max_string_bytes

        def fits(text: str) -> bool:
            return truncate_utf8(text, max_bytes) == text

        system = report.system
        strings = [report.product_version, *(v for v in report.config.values() if isinstance(v, str))]
        if system is not None:
            strings += (v for v in (getattr(system, n) for n in _SYSTEM_TEXT) if isinstance(v, str))
            strings += system.features.values()
        markers = [c.label for c in report.counters if c.label is not None]
        markers += (h.label for h in report.histograms if h.label is not None)
        markers += (p.signature for p in report.problems)  # __other__ among them is never cut
        limit = ctx.limits.max_labels_per_metric
        return (
            all(map(fits, strings))
            and all(text == OTHER or fits(text) for text in markers)
            and _none_above([c.name for c in report.counters if c.label is not None], limit)
            and _none_above([h.name for h in report.histograms if h.label is not None], limit)
            and _none_above([p.kind for p in report.problems], ctx.limits.max_signatures_per_kind)
        )


def _none_above(names: list[str], limit: int) -> bool:
    """Whether no name is in ``names`` more than ``limit`` times; counted only when there are more names
    than that in all (a report's handful of series almost never are), since counting is what costs."""
    return len(names) <= limit or max(Counter(names).values()) <= limit


def _cut_labels(
    series: tuple[_L, ...], cut: Callable[[str], str], merge: Callable[[list[_L]], tuple[_L, ...]]
) -> tuple[_L, ...]:
    """The series with truncated labels, merged if one was cut (two may now collide). ``__other__`` is a
    marker, not data: it is never cut, even below 9 bytes."""
    out = [
        s if s.label is None or s.label == OTHER or (label := cut(s.label)) == s.label else with_label(s, label)
        for s in series
    ]
    return series if all(a is b for a, b in zip(out, series, strict=True)) else merge(out)


def _cut_signatures(problems: tuple[Problem, ...], cut: Callable[[str], str]) -> tuple[Problem, ...]:
    out = [
        p if p.signature == OTHER or (sig := cut(p.signature)) == p.signature else with_signature(p, sig)
        for p in problems
    ]
    return problems if all(a is b for a, b in zip(out, problems, strict=True)) else merge_problems(out)


def _fold_labels(
    series: tuple[_L, ...], limit: int, weight: Callable[[_L], float], combine: Callable[[_L, _L], _L]
) -> tuple[tuple[_L, ...], int]:
    """Series (one per name and label, sorted) with at most ``limit`` labels per name. The unlabelled
    series is not a label and is always kept."""
    groups: defaultdict[str, list[_L]] = defaultdict(list)
    for s in series:
        if s.label is not None:
            groups[s.name].append(s)
    if all(len(g) <= limit for g in groups.values()):
        return series, 0
    kept = [s for s in series if s.label is None]
    folded = 0
    for group in groups.values():
        survivors, n = fold_to_limit(group, limit, lambda s: s.label or "", weight, with_label, combine)
        kept += survivors
        folded += n
    return tuple(sorted(kept, key=lambda s: (s.name, label_order(s.label)))), folded


def _fold_signatures(problems: tuple[Problem, ...], limit: int) -> tuple[tuple[Problem, ...], int]:
    """Problems (one per kind and signature, sorted) with at most ``limit`` signatures per kind."""
    groups: defaultdict[str, list[Problem]] = defaultdict(list)
    for p in problems:
        groups[p.kind].append(p)
    if all(len(g) <= limit for g in groups.values()):
        return problems, 0
    kept: list[Problem] = []
    folded = 0
    for group in groups.values():
        survivors, n = fold_to_limit(
            group,
            limit,
            lambda p: p.signature,
            lambda p: p.count,
            with_signature,
            combine_problems,
        )
        kept += survivors
        folded += n
    return tuple(sorted(kept, key=lambda p: (p.kind, p.signature))), folded


#: The strings of the system info that are cut (its feature values are too).
_SYSTEM_TEXT = ("memory_bucket", "os", "os_version", "arch", "boot_age_bucket")


def _system(system: SystemInfo, cut: Callable[[str], str]) -> SystemInfo:
    changes: dict[str, Any] = {}
    for name in _SYSTEM_TEXT:
        value = getattr(system, name)
        if isinstance(value, str) and (short := cut(value)) != value:
            changes[name] = short
    features = {k: cut(v) for k, v in system.features.items()}
    if features != system.features:
        changes["features"] = features
    return attrs.evolve(system, **changes) if changes else system


@hookimpl
def ceip_register_scrubbers(register: Callable[[LimitsScrubber], None]) -> None:
    register(LimitsScrubber())
