"""Distinct machines over any range of days, answered without looking at a single machine.

Every number the vendor reads counts *distinct machines* over a chosen range of days: machines hit by a
problem, machines using a feature, machines with a configuration value. Counting them at query time
(``COUNT(DISTINCT guid)`` over per-machine, per-day rows) costs time in proportion to machine-days:
seconds per page at a million reports. Per-day counts cannot simply be added up either, since a machine
active on two days would count twice. So each active day of a machine in a *group* (one problem, one
feature, one configuration value ...) is filed under that day **and the machine's previous active day in
the group** (``prev``; -1 for its first). A machine was active somewhere in ``[since, until]`` exactly
when its first active day in that range has ``prev < since``, and only that day does. Hence, exactly::

    machines in [since, until] = SUM(machines) WHERE since <= day <= until AND prev < since
    machines on day d          = SUM(machines) WHERE day = d

The ``reach`` table holds those counts summed over machines, per (family, scope, version, product, day,
name, value, prev): its size grows with groups, days and distinct gaps between active days, never with the
fleet. ``scope`` is ``version`` for a count within one product version and ``all`` for a count across
versions (a machine that upgraded within the range is one machine, not two).

Filing a new day needs the machine's previous and next active days in the group, so ``reach_state``
keeps, per (product, machine), each group's active days as runs of consecutive days (a machine that
reports daily has one run per group). A day that arrives late (a machine back online after weeks) lands
between two others, and the later day's entry moves from the old ``prev`` to the new day. A deletion
request takes every entry of the machine back out, one per active day, and deletes its state.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson

# What a group counts, by family, with its (name, value): ``active`` ('', '') the product was used;
# ``feature`` (counter, '') any use of a feature; ``feature_label`` (counter, label); ``problem`` (kind,
# signature); ``config`` (key, value); ``config_key`` (key, '') machines that reported the key at all;
# ``timing`` (metric, '').

#: Families counted within each version only: percentiles are always read per version.
VERSION_ONLY = frozenset({"timing"})

#: System fields reported as configuration distributions, under ``system.<field>``.
SYSTEM_FIELDS = (
    "os",
    "os_version",
    "arch",
    "cpu_logical",
    "cpu_physical",
    "memory_bucket",
    "net_interfaces_up",
    "net_connected",
    "boot_age_bucket",
)

Group = tuple[str, str, str, str, str, str]
"""(family, scope, version, product, name, value): what one count is about, in ``reach`` key order."""
Machine = tuple[str, str]
"""(product, guid)."""
State = dict[Group, list[int]]
"""A machine's active days per group, as runs (see :func:`add_day`)."""
NO_DAY = -1
"""``prev`` of a machine's first active day in a group."""
#: The key of a ``reach`` row: the group's columns around the day, then ``prev``.
COLUMNS = ("family", "scope", "version", "product", "day", "name", "value", "prev")
Deltas = Counter[tuple[Group, int, int]]
"""Changes to ``reach`` counts, by (group, day, prev)."""


def display(value: Any) -> str:
    """A configuration value as the distributions show it: strings as they are, others as JSON."""
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else repr(value)


def _named(report: Any) -> list[tuple[str, str, str]]:
    """(family, name, value) of every group a report (as validation decoded it) shows its machine in."""
    named = [("active", "", "")]
    for c in report.counters:
        named.append(("feature", c.name, ""))
        if c.label:
            named.append(("feature_label", c.name, c.label))
    named += [("problem", p.kind, p.signature) for p in report.problems]
    named += [("timing", h.name, "") for h in report.histograms]
    config = {f"config.{k}": display(v) for k, v in report.config.items()}
    system = report.system
    if system is not None:
        config.update((f"system.{name}", display(getattr(system, name))) for name in SYSTEM_FIELDS)
        config.update((f"system.features.{k}", display(v)) for k, v in system.features.items())
    for key, value in config.items():
        named += (("config", key, value), ("config_key", key, ""))
    return named


def add(state: State, report: Any, day: int, deltas: Deltas) -> None:
    """File a machine's report of ``day`` into its ``state``, and what that changes into ``deltas``.

    Reports of one machine are cheapest in day order (the usual order): each new day is then appended
    to its runs. This loop runs for every group of every report folded, so it is written for speed.
    """
    product, version = report.product, report.product_version
    named = _named(report)
    groups = [(f, "version", version, product, n, v) for f, n, v in named]
    groups += [(f, "all", "", product, n, v) for f, n, v in named if f not in VERSION_ONLY]
    get, find = deltas.get, state.get  # ``deltas[k] += 1`` would call Counter.__missing__ for every new key
    for group in groups:
        runs = find(group)
        if runs is None:
            state[group] = [day, day]
            key = (group, day, NO_DAY)
            deltas[key] = get(key, 0) + 1
            continue
        last = runs[-1]
        if last < day:  # the usual case: a day after every day seen so far
            if last == day - 1:
                runs[-1] = day
            else:
                runs += (day, day)
            key = (group, day, last)
            deltas[key] = get(key, 0) + 1
        elif last != day:
            _insert(runs, group, day, deltas)


def _insert(runs: list[int], group: Group, day: int, deltas: Deltas) -> None:
    """A day before the last one: it may fall inside a run, or between two (a late report)."""
    found = add_day(runs, day)
    if found is not None:
        prev, nxt = found
        deltas[group, day, prev] += 1
        if nxt != NO_DAY:  # the next active day's previous one is now this day
            deltas[group, nxt, prev] -= 1
            deltas[group, nxt, day] += 1


# -- a machine's active days, as runs ----------------------------------------------------------------


def add_day(runs: list[int], day: int) -> tuple[int, int] | None:
    """Add ``day`` to ``runs`` (flat ``[start, end, start, end ...]``, sorted, disjoint, not touching).

    :returns: None if the day was there already, else (previous active day, next active day), each
        ``NO_DAY`` if there is none.
    """
    lo, hi = 0, len(runs) // 2  # the last run starting at or before the day: binary search over starts
    while lo < hi:
        mid = (lo + hi) // 2
        if runs[2 * mid] <= day:
            lo = mid + 1
        else:
            hi = mid
    i = lo - 1
    if i >= 0 and runs[2 * i + 1] >= day:
        return None
    prev = runs[2 * i + 1] if i >= 0 else NO_DAY
    after = 2 * i + 2
    nxt = runs[after] if after < len(runs) else NO_DAY
    joins_prev, joins_next = prev != NO_DAY and prev == day - 1, nxt != NO_DAY and nxt == day + 1
    if joins_prev and joins_next:
        del runs[after - 1 : after + 1]
    elif joins_prev:
        runs[after - 1] = day
    elif joins_next:
        runs[after] = day
    else:
        runs[after:after] = [day, day]
    return prev, nxt


def decode(text: str | None, product: str) -> State:
    """A machine's stored state (its ``runs`` column)."""
    if not text:
        return {}
    return {(f, s, v, product, n, val): runs for f, s, v, n, val, runs in orjson.loads(text)}


def encode(state: State) -> str:
    return orjson.dumps([[f, s, v, n, val, runs] for (f, s, v, _, n, val), runs in state.items()]).decode()


def remove(state: State, deltas: Deltas) -> None:
    """Take every entry of a machine out (its deletion request): one per active day per group."""
    for group, runs in state.items():
        prev = NO_DAY
        for start, end in zip(runs[0::2], runs[1::2], strict=True):
            for day in range(start, end + 1):
                deltas[group, day, prev] -= 1
                prev = day


def rows(deltas: Deltas) -> list[tuple[Any, ...]]:
    """Rows to add into ``reach`` (machines summed on conflict), sorted by key, changes of zero left out."""
    return sorted((f, s, v, p, day, n, val, prev, d) for ((f, s, v, p, n, val), day, prev), d in deltas.items() if d)
