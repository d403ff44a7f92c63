"""Merging and folding of metric series, shared by the built-in scrubbers.

A scrubber that changes a label (to ``__other__``, to a placeholder, by truncation) can make two series
collide. They are merged, never left as duplicates, so that a report holds one series per
``(name, label)`` and one problem per ``(kind, signature)``, always in the same (sorted) order.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import attrs

from ceip_core.records import CounterValue, Histogram, Problem

#: The label (or problem signature) that collects everything that was not allowed or did not fit.
OTHER = "__other__"

_S = TypeVar("_S", CounterValue, Histogram, Problem)
_L = TypeVar("_L", CounterValue, Histogram)


def label_order(label: str | None) -> tuple[bool, str]:
    """Sort key for labels: the unlabelled series first, then by text."""
    return (label is not None, label or "")


def with_label(series: _L, label: str | None) -> _L:
    """``series`` under another label."""
    return attrs.evolve(series, label=label)


def with_signature(problem: Problem, signature: str) -> Problem:
    """``problem`` under another signature."""
    return Problem(problem.kind, signature, problem.count)


def combine_counters(a: CounterValue, b: CounterValue) -> CounterValue:
    """One counter holding both counts, under ``a``'s label."""
    return CounterValue(name=a.name, value=a.value + b.value, label=a.label)


def combine_histograms(a: Histogram, b: Histogram) -> Histogram:
    """One histogram holding both distributions, under ``a``'s label. An empty histogram's min and max
    mean nothing, so they do not take part."""
    buckets = dict(a.buckets)
    for index, count in b.buckets.items():
        buckets[index] = buckets.get(index, 0) + count
    filled = [h for h in (a, b) if h.count > 0] or [a, b]
    return Histogram(
        name=a.name,
        count=a.count + b.count,
        sum=a.sum + b.sum,
        min=min(h.min for h in filled),
        max=max(h.max for h in filled),
        buckets=dict(sorted(buckets.items())),
        label=a.label,
    )


def combine_problems(a: Problem, b: Problem) -> Problem:
    """One problem holding both occurrence counts, under ``a``'s signature."""
    return Problem(kind=a.kind, signature=a.signature, count=a.count + b.count)


def _merge(
    items: Iterable[_S],
    key: Callable[[_S], tuple[str, str | None]],
    combine: Callable[[_S, _S], _S],
    canonical: Callable[[_S], Any],
) -> tuple[_S, ...]:
    items = tuple(items)
    order = [(k[0], k[1] is not None, k[1] or "") for k in map(key, items)]
    if all(a < b for a, b in itertools.pairwise(order)):
        return items  # already one per key and sorted: the common case
    groups: dict[tuple[str, str | None], list[_S]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    merged: list[_S] = []
    for k in sorted(groups, key=lambda k: (k[0], label_order(k[1]))):
        group = groups[k]
        if len(group) > 1:
            # Combined in a fixed order, so that float sums do not depend on the order of the input.
            group.sort(key=canonical)
        item = group[0]
        for other in group[1:]:
            item = combine(item, other)
        merged.append(item)
    return tuple(merged)


def merge_counters(counters: Iterable[CounterValue]) -> tuple[CounterValue, ...]:
    """Counters with one entry per ``(name, label)``, sorted. Unchanged entries are the same objects."""
    return _merge(counters, lambda c: (c.name, c.label), combine_counters, lambda c: c.value)


def merge_histograms(histograms: Iterable[Histogram]) -> tuple[Histogram, ...]:
    """Histograms with one entry per ``(name, label)``, sorted."""
    return _merge(
        histograms,
        lambda h: (h.name, h.label),
        combine_histograms,
        lambda h: (h.count, h.sum, h.min, h.max, sorted(h.buckets.items())),
    )


def merge_problems(problems: Iterable[Problem]) -> tuple[Problem, ...]:
    """Problems with one entry per ``(kind, signature)``, sorted."""
    return _merge(problems, lambda p: (p.kind, p.signature), combine_problems, lambda p: p.count)


def fold_to_limit(
    group: Sequence[_S],
    limit: int,
    label: Callable[[_S], str],
    weight: Callable[[_S], float],
    relabel: Callable[[_S, str], _S],
    combine: Callable[[_S, _S], _S],
) -> tuple[list[_S], int]:
    """Keep at most ``limit`` distinct labels in ``group`` (labelled items of one metric, one item per
    label), ``__other__`` included: the heaviest ``limit - 1`` survive (ties by label text) and the rest
    are combined under ``__other__``. A limit below 1 counts as 1.

    :returns: the kept items and how many labels were folded (an ``__other__`` already present is not
        counted again).
    """
    if len(group) <= max(limit, 1):
        return list(group), 0
    keep: int = max(limit - 1, 0)
    ranked: list[_S] = [s for s in group if label(s) != OTHER]
    ranked.sort(key=lambda s: (-weight(s), label(s)))
    folded: list[_S] = [s for s in group if label(s) == OTHER]
    folded += ranked[keep:]
    other = relabel(folded[0], OTHER)
    for s in folded[1:]:
        other = combine(other, s)
    kept = ranked[:keep]
    kept.append(other)
    return kept, len(ranked) - keep
