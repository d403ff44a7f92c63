"""The rollups: what every query reads instead of raw reports, filled when queued reports are folded.

Three kinds of table:

- **per machine** (keys start ``product, day, guid``): ``machine_days`` (a machine used a product version
  on a day) and ``problem_days`` (its problem occurrences, first and last seen). No query reads them: they
  say which days and problems to take back out when the machine's deletion request comes. What can be
  subtracted (feature uses, timing buckets) keeps no per-machine row: a deletion reads it from the
  machine's folded raw reports, still stored then (:func:`totals_removal`), and the fold writes a third
  fewer rows.
- **totals** per product, day and version, summed over machines: ``counter_totals`` (feature uses),
  ``problem_totals`` (occurrences, first and last seen), ``histogram_buckets`` (timing bucket counts).
- **reach** (``ceip_core.service.reach``): distinct machines over any range of days, with ``reach_state``
  (per machine, its active days per group) to keep it exact.

So a query's cost grows with products, groups and days, not with the number of machines or reports. Rows
are aggregated in Python per key first and written sorted by key, so one statement never touches a row
twice and concurrent writers (PostgreSQL workers) take row locks in the same order.

The fold reads reports as validation decoded them (``validation.Valid.item``, or ``validation.decode_stored``
for a stored one): the structs generated from the records, whose fields it reads by name (the records
themselves have the same fields, which is what ``bench/dashboard.py`` folds). It parses nothing: a
timestamp is already an aware ``datetime``, a bucket index already an int. A report the fold still cannot
take is quarantined by the store (see ``storage``), never retried forever.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from itertools import groupby
from typing import Any

from attrs import frozen

from ceip_core.service import reach

_T, _I, _F = "TEXT", "BIGINT", "DOUBLE PRECISION"
DAY_S = 86400


@frozen
class Table:
    """One rollup table: its key columns, and how each value column merges with a stored row."""

    name: str
    keys: tuple[tuple[str, str], ...]
    values: tuple[tuple[str, str, str], ...] = ()
    """``(column, sql type, merge)`` with merge ``sum``, ``min``, ``max`` or ``replace``."""

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.keys) + tuple(v for v, _, _ in self.values)

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(t for _, t in self.keys) + tuple(t for _, t, _ in self.values)

    def ddl(self) -> list[str]:
        cols = [f"{name} {kind} NOT NULL" for name, kind in self.keys]
        cols += [f"{name} {kind} NOT NULL" for name, kind, _ in self.values]
        key = ", ".join(k for k, _ in self.keys)
        return [f"CREATE TABLE IF NOT EXISTS {self.name} ({', '.join(cols)}, PRIMARY KEY ({key}))"]

    def delete(self, guid: str, product: str) -> str:
        """The statement deleting one machine's rows of one product, with the dialect's parameter marks.

        The days come from machine_days, so the delete is a key lookup; machine_days itself goes last.
        """
        mine = f"guid = {guid} AND product = {product}"
        if self.name == "machine_days" or "day" not in self.columns:
            return f"DELETE FROM {self.name} WHERE {mine}"
        return f"DELETE FROM {self.name} WHERE {mine} AND day IN (SELECT day FROM machine_days WHERE {mine})"

    def upsert(self, source: str) -> str:
        """The insert-or-merge statement for rows from ``source`` (the dialect's ``VALUES (...)`` or ``SELECT``)."""
        key = ", ".join(k for k, _ in self.keys)
        head = f"INSERT INTO {self.name} ({', '.join(self.columns)}) {source} "
        if not self.values:
            return head + f"ON CONFLICT ({key}) DO NOTHING"
        sets = []
        for col, _, merge in self.values:
            old, new = f"{self.name}.{col}", f"excluded.{col}"
            if merge == "sum":
                sets.append(f"{col} = {old} + {new}")
            elif merge == "replace":
                sets.append(f"{col} = {new}")
            else:  # LEAST/GREATEST and SQLite's MIN/MAX differ; CASE is the same in both
                op = "<" if merge == "min" else ">"
                sets.append(f"{col} = CASE WHEN {new} {op} {old} THEN {new} ELSE {old} END")
        return head + f"ON CONFLICT ({key}) DO UPDATE SET {', '.join(sets)}"


# Every per-machine key starts (product, day, guid): the rows of one report sit together (a few pages
# written per report, not one per row), a day range is a key range, and a deletion finds a machine's
# rows from its days in machine_days (the one table with an index on guid).
_MACHINE_DAY = (("product", _T), ("day", _I), ("guid", _T))
# (product, family, scope, version, day ...): one family's counts of a product are one key range, and a
# day range within it is one too.
_REACH_KEY = tuple((c, _I if c in ("day", "prev") else _T) for c in reach.COLUMNS)
_PROBLEM_VALUES = (("occurrences", _I, "sum"), ("first_seen", _F, "min"), ("last_seen", _F, "max"))
TABLES = (
    Table("machine_days", (*_MACHINE_DAY, ("version", _T))),
    Table("problem_days", (*_MACHINE_DAY, ("kind", _T), ("signature", _T), ("version", _T)), _PROBLEM_VALUES),
    Table(
        "counter_totals",
        (("product", _T), ("day", _I), ("name", _T), ("label", _T), ("version", _T)),
        (("uses", _I, "sum"),),
    ),
    Table(
        "problem_totals",
        (("product", _T), ("day", _I), ("kind", _T), ("signature", _T), ("version", _T)),
        _PROBLEM_VALUES,
    ),
    Table(
        "histogram_buckets",
        (("product", _T), ("day", _I), ("name", _T), ("version", _T), ("bucket", _I)),
        (("count", _I, "sum"),),
    ),
    Table("reach", _REACH_KEY, (("machines", _I, "sum"),)),
    Table("reach_state", (("product", _T), ("guid", _T)), (("runs", _T, "replace"),)),
)
#: The tables that hold a GUID, machine_days last: what a deletion request deletes from, in order.
PER_MACHINE = tuple(sorted((t for t in TABLES if "guid" in t.columns), key=lambda t: t.name == "machine_days"))
#: machine_days is indexed on (guid, product), so a deletion finds a machine's days without a scan.
MACHINE_INDEX = "CREATE INDEX IF NOT EXISTS machine_days_guid ON machine_days (guid, product)"
#: Tables of older schemas. Schema 1 had per-machine rows for configuration and timings, and no totals
#: or reach; schema 3 had per-machine feature uses (``counter_days``). :func:`upgrade` drops them.
RETIRED = ("config_days", "histogram_days", "counter_days")

_MINE = "guid = :guid AND product = :product"
_MY_DAYS = f"day IN (SELECT day FROM machine_days WHERE {_MINE})"
#: The problem totals a deleted machine contributed to: recomputed from the other machines' rows after.
MY_PROBLEMS = f"SELECT day, kind, signature, version FROM problem_days WHERE {_MINE} AND {_MY_DAYS}"
_PROBLEM_KEY = "product = :product AND day = :day AND kind = :kind AND signature = :signature AND version = :version"
RECOMPUTE_PROBLEM = (
    f"DELETE FROM problem_totals WHERE {_PROBLEM_KEY}",
    "INSERT INTO problem_totals (product, day, kind, signature, version, occurrences, first_seen, last_seen) "
    "SELECT product, day, kind, signature, version, SUM(occurrences), MIN(first_seen), MAX(last_seen) "
    f"FROM problem_days WHERE {_PROBLEM_KEY} GROUP BY product, day, kind, signature, version",
)
#: A reach group's columns, in the order of ``reach.Fields``.
GROUP_FIELDS = ("family", "scope", "version", "name", "value")
GROUP_COLUMNS = ", ".join(GROUP_FIELDS)
#: The ids that name groups in reach states (``reach.Groups``), with the dialect's id column. Not a rollup:
#: a rebuild keeps it (every worker may hold ids it read), and so does a deletion, as the ``reach`` rows
#: of the machine's groups stay (at the counts the other machines make).
GROUPS_DDL = (
    "CREATE TABLE IF NOT EXISTS reach_groups (id {} PRIMARY KEY, "
    + ", ".join(f"{c} TEXT NOT NULL" for c in GROUP_FIELDS)
    + f", UNIQUE ({GROUP_COLUMNS}))"
)
#: A machine's reach state, read before its deletion is applied.
MY_STATE = "SELECT runs FROM reach_state WHERE product = :product AND guid = :guid"


def rebuild(since_day: int = 0) -> list[str]:
    """Statements that empty the rollups from ``since_day`` on and queue every stored report to be folded again.

    Days before ``since_day`` aged out (their raw reports are gone), so their rollups stay. Every machine's
    reach state goes: a machine seen again is filed as new from ``since_day`` on (at the window's edge a
    range reaching across it may count such a machine on each side).
    """
    return [
        *(f"DROP TABLE IF EXISTS {name}" for name in RETIRED),
        *(
            f"DELETE FROM {table.name}" + (f" WHERE day >= {int(since_day)}" if "day" in table.columns else "")
            for table in TABLES
        ),
        f"INSERT INTO rollup_queue (seq) SELECT seq FROM reports WHERE day >= {int(since_day)} "
        "AND seq NOT IN (SELECT seq FROM rollup_queue)",
    ]


def upgrade(schema: int, held_since: int) -> list[str]:
    """Statements that bring the rollups of a database of an older ``schema`` to this one's.

    Before schema 3 the reach state had another form, so every report still held (from ``held_since``
    on) is folded again (:func:`rebuild`); from 3 on only ``counter_days`` goes, which nothing reads now
    (schemas 5 and 6 changed how a state is written, and ``reach.parse`` reads the forms of 3 to 5 as well;
    the ``reach_groups`` table of 6 is made with the others).
    """
    if schema < 3:
        return rebuild(held_since)
    return [f"DROP TABLE IF EXISTS {name}" for name in RETIRED]


def counter_rows(reports: Iterable[Any]) -> list[tuple[Any, ...]]:
    """``counter_totals`` rows of reports (as validation decoded them), summed per key, sorted."""
    totals: dict[tuple[Any, ...], int] = {}
    for r in reports:
        product, version, day = r.product, r.product_version, int(r.period.end.timestamp() // DAY_S)
        for c in r.counters:
            key = (product, day, c.name, c.label or "", version)
            totals[key] = totals.get(key, 0) + c.value
    return sorted((*k, v) for k, v in totals.items())


def totals_removal(reports: Iterable[Any], withdrawn: Callable[[str], bool] | None = None) -> dict[str, list[Any]]:
    """The rows (negative counts) that take reports back out of ``counter_totals`` and
    ``histogram_buckets``: a deleted machine's folded reports, or with ``withdrawn`` only the metrics it
    names (a withdrawal). Reports that aged out took their machine's rows with them: their uses and
    timings stay in the anonymous totals."""
    items = list(reports)
    # Both tables' keys are (product, day, name, ...): the metric's name is the third column.
    return {
        table: [(*key, -n) for *key, n in made(items) if withdrawn is None or withdrawn(key[2])]
        for table, made in (("counter_totals", counter_rows), ("histogram_buckets", bucket_rows))
    }


def bucket_rows(reports: Iterable[Any]) -> list[tuple[Any, ...]]:
    """``histogram_buckets`` rows of reports (as validation decoded them), summed per key, sorted."""
    buckets: dict[tuple[Any, ...], int] = {}
    for r in reports:
        product, version, day = r.product, r.product_version, int(r.period.end.timestamp() // DAY_S)
        for h in r.histograms:
            for bucket, count in h.buckets.items():
                key = (product, day, h.name, version, bucket)
                buckets[key] = buckets.get(key, 0) + count
    return sorted((*k, v) for k, v in buckets.items())


def _add_problem(table: dict[tuple[Any, ...], list[Any]], key: tuple[Any, ...], count: int, end: float) -> None:
    found = table.get(key)
    if found is None:
        table[key] = [count, end, end]
    else:
        found[0] += count
        found[1], found[2] = min(found[1], end), max(found[2], end)


def _rows(reports: list[tuple[Any, float]]) -> dict[str, list[tuple[Any, ...]]]:
    machines: set[tuple[Any, ...]] = set()
    problems: dict[tuple[Any, ...], list[Any]] = {}
    problem_totals: dict[tuple[Any, ...], list[Any]] = {}
    for r, end in reports:
        product, version, guid = r.product, r.product_version, r.guid
        day = int(end // DAY_S)
        machines.add((product, day, guid, version))
        for p in r.problems:
            _add_problem(problems, (product, day, guid, p.kind, p.signature, version), p.count, end)
            _add_problem(problem_totals, (product, day, p.kind, p.signature, version), p.count, end)
    return {
        "machine_days": sorted(machines),
        "problem_days": sorted((*k, *v) for k, v in problems.items()),
        "counter_totals": counter_rows(r for r, _ in reports),
        "problem_totals": sorted((*k, *v) for k, v in problem_totals.items()),
        "histogram_buckets": bucket_rows(r for r, _ in reports),
    }


@frozen
class Fold:
    """Folding a set of reports: the rollup rows, once the reach state of their machines is known."""

    tables: dict[str, list[tuple[Any, ...]]]
    dated: list[tuple[Any, int]]
    """(report, day) by machine and day."""

    @property
    def machines(self) -> list[reach.Machine]:
        """The (product, guid) pairs whose ``reach_state`` :meth:`rows` needs, in lock order."""
        return sorted({(r.product, r.guid) for r, _ in self.dated})

    def rows(
        self, stored: Mapping[reach.Machine, reach.Stored], groups: reach.Groups
    ) -> tuple[dict[str, list[tuple[Any, ...]]], dict[reach.Machine, reach.State]]:
        """Every table's rows, given the stored states of :attr:`machines` that have one (parsed, every id
        known to ``groups``); and the machines whose new state names a group without an id, filed but not
        in ``reach_state``'s rows (the caller adds the groups and encodes them).

        Each machine's state is decoded, filed and encoded in turn, so only one is alive at a time: a step
        that held all of its states first took ~40 % longer here, its memory out of the processor's caches.
        """
        deltas: reach.Deltas = reach.Deltas()
        new_states, unnamed = [], {}
        for machine, reports in groupby(self.dated, key=lambda rd: (rd[0].product, rd[0].guid)):
            state = reach.decode(stored.get(machine, []), machine[0], groups)
            for report, day in reports:
                reach.add(state, report, day, deltas)
            try:
                new_states.append((*machine, reach.encode(state, groups)))
            except KeyError:  # a group this process has no id for
                unnamed[machine] = state
        return {**self.tables, "reach": reach.rows(deltas), "reach_state": new_states}, unnamed


def fold(reports: Iterable[Any]) -> Fold:
    """Start folding reports as validation decoded them (see the module docstring)."""
    dated = [(r, r.period.end.timestamp()) for r in reports]
    by_machine = sorted(((r, int(end // DAY_S)) for r, end in dated), key=lambda rd: (rd[0].product, rd[0].guid, rd[1]))
    return Fold(_rows(dated), by_machine)


def removal(state: reach.State) -> list[tuple[Any, ...]]:
    """The ``reach`` rows (negative counts) that take a deleted machine's entries out, from its state."""
    deltas: reach.Deltas = reach.Deltas()
    reach.remove(state, deltas)
    return reach.rows(deltas)
