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
keeps, per (product, machine), each group's active days as runs of consecutive days. Most of a
machine's groups are active on the same days (every group a daily report names), so the groups that
share their days share one list of runs: a :class:`State` is a few *parts*, each a list of runs and the
set of groups active on exactly those days. Filing a report then costs a set intersection per part and
a counter update per changed part, both in C, rather than Python work per group; and the stored state
names each group once, beside the runs it shares, by its id in the ``reach_groups`` table (:class:`Groups`),
so it takes a few hundred bytes rather than kilobytes of keys. A day that arrives late (a machine back
online after weeks) lands between two others, and the later day's entry moves from the old ``prev`` to the
new day.
A deletion request takes every entry of the machine back out, one per active day, and deletes its state.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
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

Key = str
"""What one count is about, within one product (a state's, or a ``Deltas`` entry's): family, scope,
version, name and value joined by NUL (:func:`add` makes them, :func:`fields` takes one apart).
Validation refuses NUL in every string, so the join is unambiguous; and a str hashes once and keeps its
hash, where a tuple of five would be hashed again at each set and counter operation of a fold. A
``reach`` row puts the product and the day between version and name (:data:`COLUMNS`)."""
Fields = tuple[str, str, str, str, str]
"""(family, scope, version, name, value): a :data:`Key` taken apart."""
Machine = tuple[str, str]
"""(product, guid)."""
NO_DAY = -1
"""``prev`` of a machine's first active day in a group."""
#: The key of a ``reach`` row: the group's columns around the day, then ``prev``.
COLUMNS = ("family", "scope", "version", "product", "day", "name", "value", "prev")


def fields(key: Key) -> Fields:
    """A :data:`Key`'s (family, scope, version, name, value)."""
    family, scope, version, name, value = key.split("\0")
    return family, scope, version, name, value


class Deltas(defaultdict[tuple[str, int, int], Counter[Key]]):
    """Changes to ``reach`` counts: per (product, day, prev), by group (see :func:`rows`)."""

    def __init__(self) -> None:
        super().__init__(Counter)


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


class State:
    """A machine's active days in each group of one product: :attr:`parts` of (runs, groups active on
    exactly those days), the runs as :func:`add_day` keeps them, no group in two parts."""

    __slots__ = ("parts", "product")

    def __init__(self, product: str, parts: list[tuple[list[int], set[Key]]] | None = None) -> None:
        self.product = product
        self.parts = parts if parts is not None else []

    def days(self) -> dict[Fields, list[int]]:
        """Each group's runs: what the state means, however its groups happen to be split into parts."""
        return {fields(key): runs for runs, keys in self.parts for key in keys}

    def split(self, leaves: Callable[[Fields], bool]) -> tuple[State, State]:
        """The groups ``leaves`` picks (given their fields), and the others, as two states."""
        gone, kept = State(self.product), State(self.product)
        for runs, keys in self.parts:
            picked = {key for key in keys if leaves(fields(key))}
            for state, part in ((gone, picked), (kept, keys - picked)):
                if part:
                    state.parts.append((runs.copy(), part))
        return gone, kept

    def __eq__(self, other: object) -> bool:
        return isinstance(other, State) and (self.product, self.days()) == (other.product, other.days())

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"State({self.product!r}, {self.days()!r})"


def add(state: State, report: Any, day: int, deltas: Deltas) -> None:
    """File a machine's report of ``day`` into its ``state``, and what that changes into ``deltas``.

    Each part the report's groups meet is split in two when only some of its groups are in the report:
    those get a copy of the runs with the day added (one counter update for all of them), the others keep
    the runs as they were. Groups the machine never had before make one new part.
    """
    product, version = state.product, report.product_version
    named = _named(report)
    new = {f"{f}\0version\0{version}\0{n}\0{v}" for f, n, v in named}
    new.update(f"{f}\0all\0\0{n}\0{v}" for f, n, v in named if f not in VERSION_ONLY)
    parts: list[tuple[list[int], set[Key]]] = []
    for runs, keys in state.parts:
        hit = keys & new if new else None
        if not hit:
            parts.append((runs, keys))
            continue
        new -= hit
        if len(hit) < len(keys):
            parts.append((runs, keys - hit))
            runs = runs.copy()
        found = add_day(runs, day)
        if found is not None:
            prev, nxt = found
            deltas[product, day, prev].update(hit)
            if nxt != NO_DAY:  # the next active day's previous one is now this day
                deltas[product, nxt, prev].subtract(hit)
                deltas[product, nxt, day].update(hit)
        parts.append((runs, hit))
    if new:
        parts.append(([day, day], new))
        deltas[product, day, NO_DAY].update(new)
    state.parts = _merged(parts) if len(parts) > 1 else parts


def _merged(parts: list[tuple[list[int], set[Key]]]) -> list[tuple[list[int], set[Key]]]:
    """``parts`` with the groups of parts whose runs became equal in one part (two groups whose days met)."""
    by_runs: dict[tuple[int, ...], tuple[list[int], set[Key]]] = {}
    for runs, keys in parts:
        found = by_runs.setdefault(tuple(runs), (runs, keys))
        if found[1] is not keys:
            by_runs[tuple(runs)] = (runs, found[1] | keys)
    return list(by_runs.values())


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


# -- stored states, and the ids that name their groups -------------------------------------------------

Stored = list[list[Any]]
"""A state's ``runs`` column as :func:`parse` read it: ``[runs, [group, ...]]`` per part, each group an id
(:class:`Groups`) or, in a state an older schema wrote, a :data:`Key`."""


def parse(text: str | None) -> Stored:
    """A stored state (its ``runs`` column), before its group ids are named: as :func:`encode` writes it, as
    schema 5 did (``{"parts": ...}``, each group a :data:`Key`) or as schemas 3 and 4 did (a list of parts,
    each group the list of its fields). A fold writes an older form back in this one."""
    if not text:
        return []
    found = orjson.loads(text)
    if isinstance(found, dict):
        parts: Stored = found["ids"] if "ids" in found else found["parts"]
        return parts
    return [[runs, ["\0".join(fields) for fields in groups]] for runs, groups in found]


def decode(stored: Stored, product: str, groups: Groups) -> State:
    """The state ``stored`` holds, in ``product``; every id in it must be known to ``groups``
    (:meth:`Groups.unknown_ids` says which to read first; ``KeyError`` otherwise)."""
    key_of, parts = groups.key_of, []
    for runs, named in stored:
        try:
            keys = set(map(key_of.__getitem__, named))  # the usual case: ids this process has seen before
        except KeyError:
            keys = {i if isinstance(i, str) else key_of[i] for i in named}
        parts.append((runs, keys))
    return State(product, parts)


def encode(state: State, groups: Groups) -> str:
    """The ``runs`` column: ``{"ids": [[runs, [id, ...]], ...]}``, groups in no particular order; every group
    of the state must have an id in ``groups`` (``KeyError`` otherwise: :meth:`Groups.unknown_keys` says
    which to add).

    A group is named by its id, not its key: a machine's state is then a few hundred bytes instead of ~5 KB
    (JSON escapes each NUL of a key into six bytes), which SQLite writes within a page and PostgreSQL keeps
    out of TOAST. An object under a key of its own: a worker of schema 5, still running during an
    upgrade, fails on it (and quarantines what it folds) instead of misreading it."""
    id_of = groups.id_of.__getitem__
    return orjson.dumps({"ids": [[runs, list(map(id_of, keys))] for runs, keys in state.parts]}).decode()


#: Groups a worker keeps named in memory at most (about 200 bytes each); past it, it starts again.
GROUPS_KEPT = 200_000


class Groups:
    """The ids that name groups in stored states (table ``reach_groups``), as far as this process read them.

    A committed id names one group for good (the table's rows are never changed or deleted, a rebuild
    included), so every worker keeps what it read, and a new group gets its id from the table's unique
    key, whichever worker adds it first. Only an id added in a transaction that was then rolled back would
    be wrong to keep (SQLite gives it to the next group added). SQLite's store, whose one writer thread
    adds ids inside its folds, calls :meth:`clear` whenever such a transaction or savepoint is rolled back;
    PostgreSQL's, whose folds run concurrently, adds ids in a transaction of their own, committed before a
    state names them.
    """

    __slots__ = ("id_of", "key_of")

    def __init__(self) -> None:
        self.key_of: dict[int, Key] = {}
        self.id_of: dict[Key, int] = {}

    def unknown_ids(self, stored: Iterable[Stored]) -> list[int]:
        """The ids ``stored`` names that this process has not read yet, sorted."""
        named: set[int | Key] = set()
        for state in stored:
            for _, ids in state:
                named.update(ids)
        named.difference_update(self.key_of)
        return sorted(i for i in named if not isinstance(i, str))

    def unknown_keys(self, states: Iterable[State]) -> list[Fields]:
        """The groups of ``states`` without an id known here, as fields, sorted (the order writers lock in)."""
        keys: set[Key] = set()
        for state in states:
            for _, part in state.parts:
                keys.update(part.difference(self.id_of))
        return sorted(map(fields, keys))

    def learn(self, rows: Iterable[Sequence[Any]]) -> None:
        """Take in ``reach_groups`` rows: (id, family, scope, version, name, value)."""
        for i, *named in rows:
            key = "\0".join(named)
            self.key_of[i], self.id_of[key] = key, i

    def trim(self) -> None:
        """Start again if more than :data:`GROUPS_KEPT` groups are known. Called as a fold begins, never
        between reading a state and writing it back, which needs the ids of both."""
        if len(self.id_of) > GROUPS_KEPT:
            self.clear()

    def clear(self) -> None:
        self.key_of.clear()
        self.id_of.clear()


def remove(state: State, deltas: Deltas) -> None:
    """Take every entry of a machine out (its deletion request): one per active day per group."""
    for runs, keys in state.parts:
        prev = NO_DAY
        for start, end in zip(runs[0::2], runs[1::2], strict=True):
            for day in range(start, end + 1):
                deltas[state.product, day, prev].subtract(keys)
                prev = day


def rows(deltas: Deltas) -> list[tuple[Any, ...]]:
    """Rows to add into ``reach`` (machines summed on conflict), sorted by key, changes of zero left out."""
    return sorted(
        (f, s, v, product, day, n, val, prev, d)
        for (product, day, prev), counts in deltas.items()
        for key, d in counts.items()
        if d
        for f, s, v, n, val in (fields(key),)
    )
