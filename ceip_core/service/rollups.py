"""The rollups: small per-machine, per-day tables that every query reads instead of raw reports.

Counting *distinct machines* is the point of the GUID, and it needs the GUID in the rollup: adoption is
machines using a feature over machines active, ranking is machines hit by a problem. So the rollups keep
one row per (machine, day, thing) and the queries ``COUNT(DISTINCT guid)`` over a day range:

- ``machine_days``: a machine was active for a product version on a day (participation, denominators);
- ``counter_days``: uses of a feature (counter and label) by a machine on a day;
- ``problem_days``: occurrences of a problem signature on a machine on a day, with first and last seen;
- ``histogram_days``: a machine reported a timing metric on a day (who is behind a percentile);
- ``config_days``: a machine reported a configuration or system value on a day;
- ``histogram_buckets``: bucket counts per metric, version and day, summed over machines (percentiles).

Rows are aggregated in Python per key first and written sorted by key, so one statement never touches a
row twice and concurrent writers (PostgreSQL workers) take row locks in the same order.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from attrs import frozen

_T, _I, _F = "TEXT", "BIGINT", "DOUBLE PRECISION"
DAY_S = 86400


@frozen
class Table:
    """One rollup table: its key columns, and how each value column merges with a stored row."""

    name: str
    keys: tuple[tuple[str, str], ...]
    values: tuple[tuple[str, str, str], ...] = ()
    """``(column, sql type, merge)`` with merge ``sum``, ``min`` or ``max``."""

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
        if self.name == "machine_days":
            return f"DELETE FROM machine_days WHERE {mine}"
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
            else:  # LEAST/GREATEST and SQLite's MIN/MAX differ; CASE is the same in both
                op = "<" if merge == "min" else ">"
                sets.append(f"{col} = CASE WHEN {new} {op} {old} THEN {new} ELSE {old} END")
        return head + f"ON CONFLICT ({key}) DO UPDATE SET {', '.join(sets)}"


# Every per-machine key starts (product, day, guid): the rows of one report sit together (a few pages
# written per report, not one per row), a day range is a key range, and a deletion finds a machine's
# rows from its days in machine_days (the one table with an index on guid).
_MACHINE_DAY = (("product", _T), ("day", _I), ("guid", _T))
TABLES = (
    Table("machine_days", (*_MACHINE_DAY, ("version", _T))),
    Table("counter_days", (*_MACHINE_DAY, ("name", _T), ("label", _T), ("version", _T)), (("uses", _I, "sum"),)),
    Table(
        "problem_days",
        (*_MACHINE_DAY, ("kind", _T), ("signature", _T), ("version", _T)),
        (("occurrences", _I, "sum"), ("first_seen", _F, "min"), ("last_seen", _F, "max")),
    ),
    Table("histogram_days", (*_MACHINE_DAY, ("name", _T), ("version", _T)), (("count", _I, "sum"),)),
    Table("config_days", (*_MACHINE_DAY, ("key", _T), ("value", _T), ("version", _T))),
    Table(
        "histogram_buckets",
        (("product", _T), ("day", _I), ("name", _T), ("version", _T), ("bucket", _I)),
        (("count", _I, "sum"),),
    ),
)
#: The tables that hold a GUID, machine_days last: what a deletion request deletes from, in order.
PER_MACHINE = tuple(sorted((t for t in TABLES if "guid" in t.columns), key=lambda t: t.name == "machine_days"))
#: machine_days is indexed on (guid, product), so a deletion finds a machine's days without a scan.
MACHINE_INDEX = "CREATE INDEX IF NOT EXISTS machine_days_guid ON machine_days (guid, product)"

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


def display(value: Any) -> str:
    """A configuration value as the distributions show it: strings as they are, others as JSON."""
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else repr(value)


def day_of(timestamp: str) -> int:
    """Days since 1970-01-01 (UTC) of an ISO 8601 timestamp with offset."""
    return int(datetime.fromisoformat(timestamp).timestamp() // DAY_S)


def rows(reports: Iterable[dict[str, Any]]) -> dict[str, list[tuple[Any, ...]]]:
    """Rollup rows for validated report items (decoded JSON), aggregated per key and sorted, by table."""
    machines: set[tuple[Any, ...]] = set()
    config: set[tuple[Any, ...]] = set()
    counters: dict[tuple[Any, ...], int] = {}
    histograms: dict[tuple[Any, ...], int] = {}
    buckets: dict[tuple[Any, ...], int] = {}
    problems: dict[tuple[Any, ...], list[Any]] = {}
    for r in reports:
        product, version, guid = r["product"], r["product_version"], r["guid"]
        end = datetime.fromisoformat(r["period"]["end"]).timestamp()
        day = int(end // DAY_S)
        machines.add((product, day, guid, version))
        for c in r.get("counters", ()):
            key = (product, day, guid, c["name"], c.get("label") or "", version)
            counters[key] = counters.get(key, 0) + c["value"]
        for p in r.get("problems", ()):
            key = (product, day, guid, p["kind"], p["signature"], version)
            found = problems.get(key)
            if found is None:
                problems[key] = [p["count"], end, end]
            else:
                found[0] += p["count"]
                found[1], found[2] = min(found[1], end), max(found[2], end)
        for h in r.get("histograms", ()):
            hkey = (product, day, guid, h["name"], version)
            histograms[hkey] = histograms.get(hkey, 0) + h["count"]
            for bucket, count in h["buckets"].items():
                bkey = (product, day, h["name"], version, int(bucket))
                buckets[bkey] = buckets.get(bkey, 0) + count
        for k, v in r.get("config", {}).items():
            config.add((product, day, guid, f"config.{k}", display(v), version))
        system = r.get("system")
        if system is not None:
            for name in SYSTEM_FIELDS:
                config.add((product, day, guid, f"system.{name}", display(system.get(name)), version))
            for k, v in system.get("features", {}).items():
                config.add((product, day, guid, f"system.features.{k}", display(v), version))
    return {
        "machine_days": sorted(machines),
        "counter_days": sorted((*k, v) for k, v in counters.items()),
        "problem_days": sorted((*k, *v) for k, v in problems.items()),
        "histogram_days": sorted((*k, v) for k, v in histograms.items()),
        "config_days": sorted(config),
        "histogram_buckets": sorted((*k, v) for k, v in buckets.items()),
    }
